"""The programs the host runs on a device, and the device paths they work in.

Each is a fixed one-line ``sh`` script; every user-derived value reaches it as a ``shlex.quote``d
positional argument (``$1``, ``$2``, ...: :func:`edgeattn.remote.ssh.sh_words`). Their own exit
statuses (88-97) mean what :data:`SCRIPT_ERRORS` says; :func:`script_error` turns one into a
one-line error. Host side only: these strings are sent, never imported, by the device.
"""

from __future__ import annotations

from edgeattn.errors import RemoteError
from edgeattn.remote.ssh_errors import REMAPPED_255, DeviceCommandError

DEFAULT_CACHE = ".cache/edgeattn"  # relative paths on the device are relative to $HOME
RUNS_SUBDIR = "runs"
VENV_SUBDIR = "venv"

# the device python: <cache>/venv/bin/python3 when `remote setup` made it, else python3 (PATH);
# "~/x" and relative paths with a "/" are made absolute (the run happens in another directory)
_AUTO_PY = (
    'if [ -z "$py" ]; then if [ -x "$cache/venv/bin/python3" ]; then py=$cache/venv/bin/python3; '
    "else py=python3; fi; fi; "
    'case $py in "~/"*) py=$HOME/${py#??};; /*) ;; */*) py=$(pwd)/$py;; esac; '
)

# probe: cache root run_id python file... -> "cache DIR", "rundir DIR", "python PY", "missing F"
PROBE_SH = (
    "cache=$1; root=$2; run=$3; py=$4; shift 4; umask 022; "
    'mkdir -p -- "$cache/models" || exit 97; cache=$(cd -- "$cache" && pwd -P) || exit 97; '
    'if [ -n "$run" ]; then mkdir -p -- "$root/$run/models" || exit 97; '
    'rd=$(cd -- "$root/$run" && pwd -P) || exit 97; printf "rundir %s\\n" "$rd"; fi; '
    + _AUTO_PY
    + 'printf "cache %s\\n" "$cache"; printf "python %s\\n" "$py"; '
    'for f in "$@"; do [ -f "$cache/$f" ] || printf "missing %s\\n" "$f"; done'
)

# upload: cache rundir run_id [dir sha name]... ; a tar archive on stdin
UPLOAD_SH = (
    "cache=$1; rd=$2; run=$3; shift 3; umask 022; inc=$cache/.incoming-$run; "
    'rm -rf -- "$inc"; mkdir -p -- "$inc" || exit 97; '
    'if ! tar -x -f - -C "$inc"; then rm -rf -- "$inc"; exit 96; fi; '
    'for f in "$inc"/c/*; do if [ -f "$f" ]; then mv -f -- "$f" "$cache/" || exit 95; fi; done; '
    'for f in "$inc"/c/models/*; do if [ -f "$f" ]; then mv -f -- "$f" "$cache/models/" || exit 95; '
    "fi; done; "
    'if [ -f "$inc/spec.json" ]; then mv -f -- "$inc/spec.json" "$rd/spec.json" || exit 95; fi; '
    'rm -rf -- "$inc"; '
    'while [ "$#" -ge 3 ]; do mkdir -p -- "$rd/models/$1" || exit 94; '
    'ln -f -- "$cache/models/$2.onnx" "$rd/models/$1/$3" 2>/dev/null '
    '|| cp -- "$cache/models/$2.onnx" "$rd/models/$1/$3" || exit 94; shift 3; done'
)

# run: rundir keep(0|1) command... ; stdin kept open by the host and watched
RUN_SH = (
    'rd=$1; keep=$2; shift 2; cd -- "$rd" || exit 97; exec 3<&0; '
    '"$@" 0</dev/null 3<&- & child=$!; '
    '{ while read -r _l; do :; done; kill -TERM "$child" 2>/dev/null; n=0; '
    'while kill -0 "$child" 2>/dev/null && [ "$n" -lt 5 ]; do sleep 1; n=$((n+1)); done; '
    'kill -KILL "$child" 2>/dev/null; '
    'if [ "$keep" != 1 ]; then cd / && rm -rf -- "$rd"; fi; } 0<&3 1>/dev/null 2>&1 3<&- & '
    "watcher=$!; exec 3<&-; "
    'wait "$child"; rc=$?; kill "$watcher" 2>/dev/null; '
    'if [ "$keep" != 1 ]; then cd / && rm -rf -- "$rd"; fi; '
    f'if [ "$rc" -eq 255 ]; then rc={REMAPPED_255}; fi; exit "$rc"'
)

# put: dir name ; the file's bytes on stdin (written to a temp name, then renamed)
PUT_SH = 'c=$1; n=$2; umask 022; cat > "$c/.$n.part" && mv -f -- "$c/.$n.part" "$c/$n"'

# cleanup: rundir incoming_dir
CLEANUP_SH = 'cd / && rm -rf -- "$1" "$2"'

# check: cache python pyz probe_code ; prints @-prefixed lines
CHECK_SH = (
    'cache=$1; py=$2; pyz=$3; code=$4; mkdir -p -- "$cache" 2>/dev/null; '
    'cache=$(cd -- "$cache" 2>/dev/null && pwd -P) || cache=$1; '
    + _AUTO_PY
    + 'cd -- "$cache" 2>/dev/null || cd; printf "@python %s\\n" "$py"; printf "@machine %s\\n" "$(uname -m 2>/dev/null)"; '
    'printf "@os %s\\n" "$(. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME")"; '
    'printf "@df %s\\n" "$(df -Pk . 2>/dev/null | tail -n 1)"; '
    'if ! command -v -- "$py" >/dev/null 2>&1; then printf "@nopython\\n"; exit 0; fi; '
    'p=$("$py" -c "$code" 2>&1); printf "@probe %s\\n" "$(printf "%s" "$p" | tail -n 1)"; '
    'if [ -n "$pyz" ]; then '
    'c=$("$py" "$pyz" check 2>/dev/null); rc=$?; '
    'if [ "$rc" -eq 0 ]; then printf "@check 0 %s\\n" "$(printf "%s" "$c" | tr "\\n" " ")"; '
    'printf "@env %s\\n" "$("$py" "$pyz" env 2>/dev/null | tr "\\n" " ")"; '
    'else printf "@check %s %s\\n" "$rc" "$("$py" "$pyz" check 2>&1 | tail -n 3 | tr "\\n" " ")"; fi; '
    "fi; exit 0"
)

# setup: python venv upgrade_pip(0|1) fixup_code pip_arg... ; progress on stderr, "@venv DIR" at the end.
# Atomic: the venv is built at a temporary sibling path and moved into place only after numpy and
# onnxruntime import in it; on any failure (or a dropped session) the temporary tree is removed and
# an earlier venv, or the system python3 that was used without one, keeps working.
SETUP_SH = (
    'py=$1; venv=$2; up=$3; fix=$4; shift 4; if [ -z "$py" ]; then py=python3; fi; '
    'case $py in "~/"*) py=$HOME/${py#??};; esac; '
    'if ! command -v -- "$py" >/dev/null 2>&1; then echo "edgeattn-setup: $py not found" >&2; '
    "exit 93; fi; "
    'printf "edgeattn-setup: device %s, python %s\\n" "$(uname -m)" '
    '"$("$py" -c "import platform; print(platform.python_version())" 2>&1)" >&2; '
    'if ! "$py" -c "import venv, ensurepip" >/dev/null 2>&1; then '
    'echo "edgeattn-setup: No module named venv/ensurepip for $py" >&2; exit 92; fi; '
    'mkdir -p -- "$(dirname -- "$venv")" || exit 97; '
    'abs=$(cd -- "$(dirname -- "$venv")" && pwd -P)/$(basename -- "$venv"); '
    "tmp=$abs.new-$$; old=$abs.old-$$; trap 'rm -rf -- \"$tmp\"' EXIT; "
    "trap 'exit 130' HUP INT TERM; "
    'rm -rf -- "$tmp"; echo "edgeattn-setup: creating venv $tmp (moved to $abs when it works)" >&2; '
    '"$py" -m venv "$tmp" 1>&2 || exit 92; vp=$tmp/bin/python3; '
    'upg=; if [ "$up" = 1 ]; then upg="--upgrade pip"; fi; '
    '"$vp" -m pip install $upg "$@" 1>&2 || exit 90; '
    '"$vp" -c "import numpy, onnxruntime; print(\'edgeattn-setup: imports ok: numpy\', '
    "numpy.__version__, 'onnxruntime', onnxruntime.__version__)\" 1>&2 || exit 89; "
    '"$vp" -c "$fix" "$tmp" "$abs" 1>&2 || exit 88; '
    'if [ -e "$abs" ] || [ -L "$abs" ]; then mv -- "$abs" "$old" || exit 95; fi; '
    'if ! mv -- "$tmp" "$abs"; then mv -- "$old" "$abs" 2>/dev/null; exit 95; fi; '
    'rm -rf -- "$old"; printf "@venv %s\\n" "$abs"'
)

# rewrites the temporary venv path to the final one in bin/ scripts and pyvenv.cfg (shebangs,
# activate): run by the new venv's python as `-c FIXUP TMP FINAL` (one line: exec of a literal)
_SETUP_FIXUP_CODE = (
    "import os, sys\n"
    "tmp, final = sys.argv[1].encode(), sys.argv[2].encode()\n"
    "paths = [os.path.join(sys.argv[1], 'pyvenv.cfg')]\n"
    "bindir = os.path.join(sys.argv[1], 'bin')\n"
    "paths += [os.path.join(bindir, n) for n in os.listdir(bindir)]\n"
    "for p in paths:\n"
    "    if os.path.islink(p) or not os.path.isfile(p):\n"
    "        continue\n"
    "    with open(p, 'rb') as f:\n"
    "        data = f.read()\n"
    "    if tmp in data and b'\\0' not in data[:4096]:\n"
    "        st = os.stat(p)\n"
    "        with open(p, 'wb') as f:\n"
    "            f.write(data.replace(tmp, final))\n"
    "        os.chmod(p, st.st_mode)\n"
)
SETUP_FIXUP = "exec(" + repr(_SETUP_FIXUP_CODE) + ")"

# an inline probe that runs on any Python (2.7 too): used by remote_check besides the zipapp
PY_PROBE = (
    'exec("import sys, platform, json, os\\nr = {}\\n'
    "r['version'] = platform.python_version()\\nr['executable'] = sys.executable\\n"
    "r['machine'] = platform.machine()\\nr['in_venv'] = sys.prefix != getattr(sys, 'base_prefix', sys.prefix)\\n"
    "for m in ('numpy', 'onnxruntime', 'venv', 'ensurepip'):\\n"
    "    try:\\n        mod = __import__(m)\\n        r[m] = getattr(mod, '__version__', True)\\n"
    "    except Exception as e:\\n        r[m] = None\\n"
    "try:\\n    import sysconfig\\n"
    "    r['externally_managed'] = os.path.exists(os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED'))\\n"
    "except Exception:\\n    r['externally_managed'] = None\\n"
    'print(json.dumps(r))\\n")'
)

SCRIPT_ERRORS = {
    97: "cannot create or enter the remote directory",
    96: "cannot unpack the upload on the device (is `tar` installed? is the disk full?)",
    95: "cannot move uploaded files into the device cache (disk full?)",
    94: "cannot place the model files in the run directory (disk full?)",
    93: "the remote python was not found",
    92: "`python3 -m venv` failed on the device",
    91: "`pip install --upgrade pip` failed on the device",
    90: "`pip install` failed on the device",
    89: "numpy/onnxruntime installed but do not import in the new venv",
    88: "cannot finish the new venv (path rewrite)",
}


def script_error(exc: DeviceCommandError, what: str) -> DeviceCommandError:
    """``exc`` with the script's own exit status (:data:`SCRIPT_ERRORS`) said in words."""
    msg = SCRIPT_ERRORS.get(exc.returncode or 0)
    if msg is None:
        return exc
    detail = f": {exc.stderr_tail}" if exc.stderr_tail else ""
    return DeviceCommandError(
        f"{exc.host}: {what}: {msg}{detail}",
        returncode=exc.returncode,
        stderr_tail=exc.stderr_tail,
        host=exc.host,
        hint=exc.hint,
    )


def parse_kv_lines(data: bytes) -> list[tuple[str, str]]:
    """A script's ``KEY VALUE`` answer lines (probe, setup) as pairs, in order."""
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        k, _, v = line.partition(" ")
        out.append((k, v))
    return out


def remote_path(path: str | None, default: str) -> str:
    """Validate a device path; ``~`` and ``~/x`` become home-relative (the ssh session's cwd)."""
    p = default if path is None else str(path)
    if not p or any(ord(c) < 32 or c == "\x7f" for c in p):
        raise RemoteError(f"bad remote directory {p!r}: empty or contains control characters")
    if p == "~":
        return "."
    if p.startswith("~/"):
        p = p[2:] or "."
    elif p.startswith("~"):
        raise RemoteError(
            f"bad remote directory {p!r}: ~user is not supported; give an absolute path"
        )
    p = p.rstrip("/") or "/"
    if p.startswith("-"):
        p = "./" + p  # never an option to mkdir/cd/rm (they also get "--")
    return p
