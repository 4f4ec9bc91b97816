#!/usr/bin/env bash
# Command 2: install everything, then run the whole test suite. The tests start
# their own MariaDB servers and etcd on free ports and stop them at the end.
# Extra arguments go to pytest (e.g. --long, -k name, tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh

args=("$@")
[ "${#args[@]}" -gt 0 ] || args=(tests)
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "${args[@]}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test: no tests were collected; that is a failure" >&2
fi
exit "$rc"
