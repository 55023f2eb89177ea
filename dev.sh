#!/usr/bin/env bash
# One entry point that does its own set-up on a fresh machine:
#   ./dev.sh bench [ARGS...]   create .venv if needed, install edgeattn, run `edgeattn bench ARGS`
#   ./dev.sh test  [ARGS...]   same set-up plus openssh-server, then ruff + pytest
#   ./dev.sh edgeattn ARGS...  any edgeattn command inside the venv
# One venv state serves all three (edgeattn with the plot and dev extras), so switching between them
# reinstalls nothing; it is reinstalled only when pyproject.toml or constraints.txt change.
# EDGEATTN_NO_APT=1 skips the openssh-server install that `test` would otherwise do as root.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${EDGEATTN_VENV:-.venv}"
PY="${PYTHON:-python3}"
EXTRAS="plot,dev"

say() { echo "dev.sh: $*" >&2; }
stamp_of() { cat pyproject.toml constraints.txt | sha256sum | cut -c1-16; }

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
  fi
  local want; want="$(stamp_of)-$EXTRAS"
  if [ "$(cat "$VENV/.edgeattn-stamp" 2>/dev/null)" != "$want" ]; then
    say "installing edgeattn, CPU torch 2.13 (constraints.txt) and the plot/test tools into $VENV" \
      "(first time 1-3 min; again only when pyproject.toml or constraints.txt change)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # constraints.txt pins torch to the CPU build (a bare `torch` would pull a multi-GB CUDA build).
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
    echo "$want" > "$VENV/.edgeattn-stamp"
    say "ready; to call edgeattn directly: export PATH=\"$PWD/$VENV/bin:\$PATH\""
  fi
}

ensure_sshd() {
  if { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } && command -v chromium >/dev/null 2>&1; then
    return
  fi
  if [ "${EDGEATTN_NO_APT:-0}" = 1 ]; then
    say "warning: no sshd and EDGEATTN_NO_APT=1: the SSH tests will fail"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing openssh-server for the SSH tests (apt-get; skip with EDGEATTN_NO_APT=1)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client chromium >/dev/null) \
      || say "warning: could not install openssh-server; the SSH tests will fail"
  else
    say "warning: sshd not found and cannot apt-get install it (not root); the SSH tests will fail"
  fi
}

cmd="${1:-bench}"; shift || true
case "$cmd" in
  bench)
    setup
    exec "$VENV/bin/edgeattn" bench "$@" ;;
  test)
    setup
    ensure_sshd
    say "ruff, then pytest (default tier; -m slow and -m boards are separate tiers)"
    "$VENV/bin/ruff" check edgeattn tests benchmarks
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  edgeattn)
    setup
    exec "$VENV/bin/edgeattn" "$@" ;;
  *)
    echo "usage: ./dev.sh {bench|test|edgeattn} [ARGS...]  (got '$cmd')" >&2; exit 2 ;;
esac
