"""SOFT block scaling: median latency and peak memory at N = 1024, 4096, 16384 with a fixed
landmark count (m = 49, adaptive pooling), against softmax MSA at the same N.

    .venv/bin/python benchmarks/soft_scaling.py [--tokens 1024,4096,16384] [--softmax-max 4096]

Softmax at N=16384 needs a 6 x 16384² float32 attention map (6.4 GB) and minutes per run on a
2-core machine, so it is skipped above --softmax-max unless you raise it. Each point is measured in
its own `python -m edgeattn.runtime` process, so peak RSS is that measurement's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeattn.bench import core  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--softmax-max", type=int, default=4096)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--out", default="results/soft_scaling.jsonl")
    a = ap.parse_args()
    settings = core.Settings(min_time_s=a.min_time, max_time_s=60, min_runs=5, warmup=2)
    rows = []
    for n in [int(v) for v in a.tokens.split(",")]:
        methods = ["soft"] + (["softmax"] if n <= a.softmax_max else [])
        jobs = core.prepare(
            [core.Job(core.METHODS[m], core.Shape(n, a.dim, a.heads)) for m in methods], settings
        )
        recs = core.run_local([core.job_run_spec(j, settings) for j in jobs], out=Path(a.out))
        by = {r["meta"]["method"]: r for r in recs if r["status"] == "ok"}
        rows.append((n, by.get("soft"), by.get("softmax")))
    print(
        f"D={a.dim} h={a.heads}, SOFT with m=49 adaptive landmarks; medians of one run; peak RSS per process"
    )
    print(
        f"{'N':>6} {'SOFT ms':>10} {'SOFT MB':>8} {'softmax ms':>11} {'softmax MB':>10} {'softmax/SOFT':>13}"
    )
    for n, s, m in rows:
        sm = s["latency_ms"]["median"] if s else None
        mm = m["latency_ms"]["median"] if m else None
        print(
            f"{n:>6} {sm if sm is None else f'{sm:.2f}':>10} {s['memory']['peak_rss_mb'] if s else '-':>8} "
            f"{'skipped' if mm is None else f'{mm:.2f}':>11} {m['memory']['peak_rss_mb'] if m else '-':>10} "
            f"{'-' if not (sm and mm) else f'{mm / sm:.2f}x':>13}"
        )
    if len(rows) >= 2 and rows[0][1] and rows[-1][1]:
        n0, n1 = rows[0][0], rows[-1][0]
        t0, t1 = rows[0][1]["latency_ms"]["median"], rows[-1][1]["latency_ms"]["median"]
        print(f"SOFT time ratio N={n1} / N={n0}: {t1 / t0:.2f}x for {n1 / n0:.0f}x tokens")


if __name__ == "__main__":
    main()
