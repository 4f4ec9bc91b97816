"""What differs between the Pythons mdriver runs on: CPython 3.10+ and PyPy 3.9 (the proxy's fast runtime)."""
from __future__ import annotations

import sys

# ``@dataclass(slots=True)`` arrived in 3.10; without it the classes work the same, only larger.
DATACLASS_SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}
