#!/usr/bin/env bash
# Command 1: install everything, start the sandbox (two MariaDB servers with the
# full 32 x 32 layout of config/sharding.yaml), then run the proxy in the
# foreground on 127.0.0.1:3307 (on CPython; .venv-pypy/bin/mdriver-proxy is the
# same proxy on PyPy, faster for single-shard statements: README, Performance).
# MDRIVER_CONFIG and MDRIVER_SANDBOX_STATE choose another config / state folder.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG="${MDRIVER_CONFIG:-config/sharding.yaml}"
STATE="${MDRIVER_SANDBOX_STATE:-.state/sandbox}"

bash scripts/install.sh
.venv/bin/mdriver-sandbox up --config "$CONFIG" --state "$STATE"

listen="$(.venv/bin/python - "$CONFIG" <<'PY'
import sys
from mdriver.config import load_config
p = load_config(sys.argv[1]).proxy
user = next(iter(p.users.values()), None)
who = f"-u{user.name} -p{user.password} {user.schemas[0] if user.schemas else ''}" if user else ""
print(f"mariadb -h{p.listen_host} -P{p.listen_port} {who}".strip())
PY
)"
echo "proxy: starting; connect with:"
echo "    $listen"
exec .venv/bin/mdriver-proxy --config "$CONFIG"
