#!/usr/bin/env bash
# Command 2: install everything, then run the whole test suite. The tests start
# their own MariaDB servers and etcd on free ports and stop them at the end.
#
# With no arguments: the whole suite on CPython (.venv), then again on PyPy
# (.venv-pypy), the proxy's faster runtime, all but the reliability suite.
# Extra arguments go to pytest and run on CPython only (e.g. --long, -k name,
# tests/unit); `--pypy ARGS...` runs them on PyPy instead.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh

run() {  # run PYTHON ARGS...: pytest's exit code, with "nothing collected" (5) called a failure
  local py=$1 rc
  shift
  set +e
  "$py" -m pytest -q -p no:cacheprovider --durations=15 "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "test: no tests were collected; that is a failure" >&2
  fi
  return "$rc"
}

need_pypy() {
  [ -x .venv-pypy/bin/python ] || { echo "test: .venv-pypy is missing (scripts/install.sh installs Debian's pypy3)" >&2; exit 1; }
}

if [ "${1:-}" = "--pypy" ]; then
  shift
  need_pypy
  [ "$#" -gt 0 ] || set -- tests --ignore=tests/reliability
  run .venv-pypy/bin/python "$@" && exit 0 || exit $?
fi
if [ "$#" -gt 0 ]; then
  run .venv/bin/python "$@" && exit 0 || exit $?
fi

rc=0
run .venv/bin/python tests || rc=$?
need_pypy
echo "test: the suite again on PyPy, all but tests/reliability"
prc=0
run .venv-pypy/bin/python tests --ignore=tests/reliability || prc=$?
if [ "$rc" -ne 0 ] || [ "$prc" -ne 0 ]; then
  echo "test: failed (CPython: exit $rc, PyPy: exit $prc)" >&2
  exit 1
fi
