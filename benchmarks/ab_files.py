"""A/B timing of ONNX files in one process: a graph change's own effect, free of the VM's drift.

    .venv/bin/python benchmarks/ab_files.py NEW.onnx OLD.onnx [--rounds 200] [--seed 1]

Each file gets its own ONNX Runtime session (CPU provider, opt level all, thread-pool spinning off
as in the bench's paired pass: ``edgeattn.runtime.paired.NO_SPIN``) and seeded inputs (uint8 for
uint8 inputs); after a warm-up, every round runs each file once in a shuffled order. Printed per
file: its median ms and the median of its per-round time ratio to the **last** file with the 95 %
interval (``edgeattn.runtime.intervals.ratio_summary``): < 1 means faster than the last file.

The file whose session is created first has run 2-4 % slower here whichever it was (two copies
of one block), so time a pair in both orders and quote the range: this is how the "interleaved,
both orders, two runs each" figures of the README and the code comments were taken. To get the
"before" file of a change, export the block at the commit before it (``git stash`` or a worktree)
with the same ``edgeattn export`` arguments. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _session(path: str):
    import onnxruntime as ort

    from edgeattn.runtime.paired import NO_SPIN

    so = ort.SessionOptions()
    for k, v in NO_SPIN.items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _feeds(sess, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type == "tensor(uint8)":
            out[i.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main() -> None:
    import numpy as np

    from edgeattn.runtime.intervals import median, ratio_summary

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="ONNX files; ratios are to the last one")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if len(a.files) < 2:
        ap.error(f"need two or more files to compare, got {len(a.files)}")
    missing = [f for f in a.files if not Path(f).is_file()]
    if missing:
        ap.error(f"no such file: {missing[0]!r}")
    runs = [(s, _feeds(s, 0)) for s in map(_session, a.files)]
    for s, f in runs:
        for _ in range(a.warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in runs]
    rng = np.random.default_rng(a.seed)
    for _ in range(a.rounds):
        for j in rng.permutation(len(runs)):
            s, f = runs[j]
            t0 = time.perf_counter()
            s.run(None, f)
            times[j].append((time.perf_counter() - t0) * 1e3)
    for path, t in zip(a.files, times, strict=True):
        r = ratio_summary(t, times[-1])
        print(
            f"{median(t):8.3f} ms  to last {r['median']:.3f}x [{r['ci_low']:.3f}-{r['ci_high']:.3f}]"
            f"  {path}"
        )


if __name__ == "__main__":
    main()
