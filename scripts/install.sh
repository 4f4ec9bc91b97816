#!/usr/bin/env bash
# Install what mdriver needs on Debian/Ubuntu, and only what is missing:
#   - Debian packages: mariadb-server mariadb-client etcd-server sysbench socat pypy3
#     (their system services are neither started nor enabled: the sandbox and
#     the tests run their own servers on their own ports);
#   - a virtualenv in .venv with this package and its test extras;
#   - a PyPy virtualenv in .venv-pypy, the proxy's faster runtime (Debian's pypy3),
#     with the same package: the test command runs the suite on it too.
# Safe to run again: a second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

PACKAGES=(mariadb-server mariadb-client etcd-server sysbench socat pypy3 pypy3-dev)
# Node.js runs the proxy's test with a non-Python client (mysql2 from npm).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else NO_ROOT=1; fi
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${PACKAGES[@]}"; do installed "$pkg" || missing+=("$pkg"); done
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && [ ! -x .venv/bin/python ]; then
    missing+=(python3-venv)
  fi
elif ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  die "no dpkg/apt here: install MariaDB 10.11+, etcd 3.4, sysbench and socat yourself, then run this again"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  [ -z "${NO_ROOT:-}" ] || die "need root or sudo to install: ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  # Keep the distro's mariadb/etcd services from starting during the install
  # (policy-rc.d is honoured by invoke-rc.d and deb-systemd-invoke).
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup_policy() { if [ -n "$created_policy" ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  cleanup_policy
  trap - EXIT
  # Services of packages installed just now were not the user's: make sure
  # they neither run nor start at boot. Anything installed before is left alone.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for pkg in "${missing[@]}"; do
      case "$pkg" in
        mariadb-server) "${SUDO[@]}" systemctl disable --now mariadb.service >/dev/null 2>&1 || true ;;
        etcd-server) "${SUDO[@]}" systemctl disable --now etcd.service >/dev/null 2>&1 || true ;;
      esac
    done
  fi
else
  say "Debian packages already installed: ${PACKAGES[*]}"
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python 3.10 or newer is needed (python3 is $(python3 -V 2>&1))"

# venv PYTHON DIR EXTRAS [PIP_OPTION...]: make the virtualenv DIR with PYTHON if missing, and
# (re)install this package with EXTRAS only when its metadata changed since the last install.
want="$(cat setup.cfg setup.py | sha256sum | cut -d' ' -f1)"
venv() {
  local python=$1 dir=$2 extras=$3 stamp=$2/.mdriver-installed
  shift 3
  if [ ! -x "$dir/bin/python" ]; then
    say "creating the virtualenv $dir"
    "$python" -m venv "$dir"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
      || ! "$dir/bin/python" -c 'import mdriver, sqlglot, pymysql, pytest, etcd3gw, hypothesis, cryptography, yaml' >/dev/null 2>&1; then
    say "installing mdriver and its Python dependencies into $dir"
    "$dir/bin/python" -m pip install -q --upgrade pip || say "could not upgrade pip in $dir; continuing"
    "$dir/bin/python" -m pip install -q "$@" -e ".[$extras]"
    printf '%s\n' "$want" > "$stamp"
  else
    say "Python packages up to date in $dir"
  fi
}

venv python3 .venv test,etcd,fast,sqlalchemy
# PyPy 3.9 runs the proxy's own code about 7 times faster than CPython (README,
# Performance). --prefer-binary: the newest cryptography has no PyPy 3.9 wheel and its
# source build needs Rust crates from crates.io; 43.x has a wheel.
if command -v pypy3 >/dev/null 2>&1; then
  venv pypy3 .venv-pypy test,etcd,sqlalchemy --prefer-binary
else
  say "no pypy3 here: the proxy runs on CPython only (install Debian's pypy3 for its faster runtime)"
fi
say "done"
