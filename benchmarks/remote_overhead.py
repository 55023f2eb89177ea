"""What a remote run costs over a local one: connection, deploy, run, collect, cleanup, bytes sent.

    python benchmarks/remote_overhead.py                      # a throwaway sshd on 127.0.0.1
    python benchmarks/remote_overhead.py --host pi@pi4 --remote-python python3   # a real device

The same tiny spec (MatMul/Softmax model, min_time_s 0.05) is run locally with
``python -m edgeattn.runtime measure`` and remotely with ``edgeattn.remote.run_remote``: once with
an empty device cache (the zipapp and the model are sent) and then warm (only the spec is sent).
Prints medians over --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

SPEC = {
    "defaults": {"warmup": 1, "min_runs": 3, "max_runs": 50, "min_time_s": 0.05},
    "runs": [
        {"model": "tiny.onnx", "inputs": {"x": [1, 8, 16]}},
        {"model": "tiny.onnx", "id": "b2", "inputs": {"x": [2, 8, 16]}},
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", help="a real device (default: a loopback sshd)")
    ap.add_argument("--ssh-config")
    ap.add_argument("--remote-python", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from conftest_remote import tiny_model

    from edgeattn.remote import SSHOptions, run_remote

    work = Path(tempfile.mkdtemp(prefix="edgeattn-overhead-"))
    tiny_model(work / "tiny.onnx")
    (work / "spec.json").write_text(json.dumps(SPEC))
    server = None
    if args.host is None:
        from sshd import SSHD

        server = SSHD(work / "sshd", "dev").start()
        host, cfg = "dev", str(server.client_config)
        py = args.remote_python or sys.executable
    else:
        host, cfg, py = args.host, args.ssh_config, args.remote_python
    opts = SSHOptions(ssh_config=cfg, timeout=300)
    try:
        local = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edgeattn.runtime",
                    "measure",
                    "--spec",
                    "spec.json",
                    "--quiet",
                ],
                cwd=work,
                check=True,
                capture_output=True,
            )
            local.append(time.perf_counter() - t0)
        rows = {"cold": [], "warm": []}
        for i in range(args.repeat):
            cache = f".cache/edgeattn-overhead-{i}" if args.host else str(work / f"cache-{i}")
            for kind in ("cold", "warm"):
                t0 = time.perf_counter()
                r = run_remote(
                    host, SPEC, base_dir=work, ssh=opts, remote_python=py, remote_cache=cache
                )
                rows[kind].append((time.perf_counter() - t0, r))
            if args.host:  # leave the device as it was
                from edgeattn.remote.ssh import SSHConnection, sh_words

                with SSHConnection(host, opts) as c:
                    c.run(sh_words('rm -rf -- "$1"', cache))
        print(f"device: {host} ({rows['cold'][0][1].target}); python {rows['cold'][0][1].python}")
        print(f"local  `python -m edgeattn.runtime measure`: {statistics.median(local):.3f} s wall")
        for kind, items in rows.items():
            med = {
                k: statistics.median(r.timings[k] for _, r in items)
                for k in ("connect", "deploy", "run", "collect", "cleanup")
            }
            wall = statistics.median(w for w, _ in items)
            sent = items[0][1].bytes_sent
            print(
                f"remote {kind}: {wall:.3f} s wall = "
                + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
                + f"; sent runtime {sent['runtime']} B, models {sent['models']} B, "
                f"spec {sent['spec']} B, on the wire (tar) {sent['stream']} B"
            )
        print(
            f"overhead (warm, median): {statistics.median(w for w, _ in rows['warm']) - statistics.median(local):+.3f} s"
        )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
