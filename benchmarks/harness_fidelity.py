"""Harness fidelity: does edgeattn's timing agree with a bare `session.run` loop?

On ONE session and one set of inputs, alternate blocks of (a) the runtime's timed loop
(`edgeattn.runtime.measure.timed_runs`) and (b) a bare `time.perf_counter()` loop around
`session.run`, and compare medians. Then, from a profiled measurement of the same model, compare
the sum of per-node kernel times with the profiled wall time per run.

    .venv/bin/python benchmarks/harness_fidelity.py [--method softmax] [--tokens 1024]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeattn.bench import core  # noqa: E402
from edgeattn.runtime import measure  # noqa: E402
from edgeattn.runtime.measure import make_inputs, timed_runs  # noqa: E402
from edgeattn.runtime.session import create_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--method", default="softmax", choices=sorted(core.METHODS))
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks of each kind")
    ap.add_argument("--block-s", type=float, default=1.0, help="seconds per block")
    a = ap.parse_args()

    settings = core.Settings(min_time_s=a.block_s)
    [job] = core.prepare(
        [core.Job(core.METHODS[a.method], core.Shape(a.tokens, a.dim, a.heads))], settings
    )
    info = create_session(str(job.onnx_path), "cpu")
    sess = info.session
    feeds, _ = make_inputs(sess, {"x": [1, a.tokens, a.dim]}, seed=0)
    for _ in range(5):
        sess.run(None, feeds)

    harness: list[float] = []
    bare: list[float] = []
    for _ in range(a.rounds):
        raw, _reason = timed_runs(
            lambda: sess.run(None, feeds), 10, 100000, a.block_s, 10 * a.block_s
        )
        harness += raw
        t_end = time.perf_counter() + a.block_s
        while True:
            t0 = time.perf_counter()
            sess.run(None, feeds)
            t1 = time.perf_counter()
            bare.append((t1 - t0) * 1e3)
            if t1 >= t_end and len(bare) >= 10:
                break
    mh, mb = statistics.median(harness), statistics.median(bare)
    print(f"model: {job.id}  ({job.onnx_path.name})")
    print(
        f"harness median {mh:.4f} ms over {len(harness)} runs; bare loop median {mb:.4f} ms over {len(bare)} runs"
    )
    print(f"harness / bare = {mh / mb:.4f}  ({(mh / mb - 1) * 100:+.2f}%)")

    rec = measure(
        {
            "model": str(job.onnx_path),
            "inputs": {"x": [1, a.tokens, a.dim]},
            "min_time_s": a.block_s,
            "profile": True,
            "profile_runs": 20,
        }
    )
    prof = rec["profile"]
    print(
        f"measure(): unprofiled median {rec['latency_ms']['median']:.4f} ms; profiled wall {prof['wall_ms']:.4f} ms/run; "
        f"sum of node times {prof['total_node_ms']:.4f} ms/run; node sum / profiled wall = {prof['coverage']:.3f}"
    )
    print(
        f"profiling overhead: profiled wall / unprofiled median = {prof['wall_ms'] / rec['latency_ms']['median']:.3f}"
    )


if __name__ == "__main__":
    main()
