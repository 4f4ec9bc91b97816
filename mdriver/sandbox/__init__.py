"""Local MariaDB servers for a routing config: the ``mdriver-sandbox`` CLI and the test fixtures.

- :mod:`.cluster`: one private ``mariadbd`` (install, start, readiness, stop by pid).
- :mod:`.layout`: every physical database and table of a config, from logical CREATE TABLEs.
- :mod:`.etcd`: one private etcd member for config-center tests.
- :mod:`.configfile`: a copy of a config file with other ports.
- :mod:`.cli`: ``mdriver-sandbox up|down|status``.
"""
from mdriver.sandbox.cluster import (
    MariaDBInstance,
    MariaDBNotInstalled,
    PortInUseError,
    SandboxError,
    ServerStartError,
    find_binaries,
    free_port,
    port_in_use,
    start_all,
    stop_all,
)

__all__ = [
    "MariaDBInstance", "MariaDBNotInstalled", "PortInUseError", "SandboxError", "ServerStartError",
    "find_binaries", "free_port", "port_in_use", "start_all", "stop_all",
]
