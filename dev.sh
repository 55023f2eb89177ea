#!/usr/bin/env bash
# One entry point that does its own set-up on a fresh machine:
#   ./dev.sh bench [ARGS...]   create .venv if needed, install edgeattn, run `edgeattn bench ARGS`
#   ./dev.sh test  [ARGS...]   same set-up plus test tools and openssh-server, then ruff + pytest
#   ./dev.sh edgeattn ARGS...  any edgeattn command inside the venv
set -euo pipefail
cd "$(dirname "$0")"
VENV="${EDGEATTN_VENV:-.venv}"
PY="${PYTHON:-python3}"

stamp_of() { cat pyproject.toml constraints.txt | sha256sum | cut -c1-16; }

setup() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local want; want="$(stamp_of)-$extras"
  if [ "$(cat "$VENV/.edgeattn-stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # constraints.txt pins torch to the CPU build (a bare `torch` would pull a multi-GB CUDA build).
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$extras]"
    echo "$want" > "$VENV/.edgeattn-stamp"
  fi
}

ensure_sshd() {
  if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing openssh-server (for the SSH tests)..." >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null) \
        || echo "warning: could not install openssh-server; the SSH tests will fail" >&2
    else
      echo "warning: sshd not found and cannot apt-get install it; the SSH tests will fail" >&2
    fi
  fi
}

cmd="${1:-bench}"; shift || true
case "$cmd" in
  bench)
    setup "plot"
    exec "$VENV/bin/edgeattn" bench "$@" ;;
  test)
    setup "dev,plot"
    ensure_sshd
    "$VENV/bin/ruff" check edgeattn tests benchmarks
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  edgeattn)
    setup "plot"
    exec "$VENV/bin/edgeattn" "$@" ;;
  *)
    echo "usage: ./dev.sh {bench|test|edgeattn} [ARGS...]  (got '$cmd')" >&2; exit 2 ;;
esac
