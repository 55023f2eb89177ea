"""Issue 13's figures: how much of a net's node time lands in ``(top)`` (attributed to no block)
with names-only attribution (before) and with attribution through ORT's fusions (after), per
model and optimisation level, and the profiler's own overhead.

    python benchmarks/profile_attribution.py [--models soft_tiny,sima_tiny_12_p16,...]
        [--levels basic,all] [--runs 10] [--out DIR] [--path-too]

Each (model, level) is one ``edgeattn profile`` run (unprofiled pass, then the profiled pass).
"before" is computed from the same trace by names only, which is what ``profile`` did before
issue 13 (node names -> module paths), so both columns come from one measurement. ``--path-too``
also profiles the first model's exported .onnx given as a path (the export cache must have it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXE = [sys.executable, "-m", "edgeattn.cli", "profile"]


def profile(target: str, level: str, runs: int, out: Path) -> dict:
    cmd = [*EXE, target, "--opt-level", level, "--runs", str(runs), "--depth", "block"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    recs = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    return recs[-1]


def row(label: str, level: str, rec: dict) -> str:
    prof = rec["profile"]
    att = prof["attribution"]
    d1 = prof["blocks"]["1"]
    blocks = [b for b in d1 if "block" in b["name"]]
    normless = [b["name"] for b in blocks if not b["components"].get("norm")]
    med = rec["latency_ms"]["median"]
    return (
        f"| {label} | {level} | {att['names_only_top_share']:.1%} | {att['top_share']:.1%} | "
        f"{1 - att['names_only_top_share']:.1%} | {1 - att['top_share']:.1%} | "
        f"{att['fused_nodes']} / {att['split_nodes']} | {len(blocks) - len(normless)}/{len(blocks)} | "
        f"{med:.2f} | {prof['wall_ms']:.2f} | {prof['wall_ms'] / med:.2f}× |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="soft_tiny,sima_tiny_12_p16,deit_tiny_patch16_224")
    ap.add_argument("--levels", default="basic,all")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=None, help="directory for the records (default: a temp dir)")
    ap.add_argument("--path-too", action="store_true")
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="profile-attribution-"))
    out.mkdir(parents=True, exist_ok=True)
    print(
        "| model | opt level | (top) before | (top) after | in blocks before | in blocks after | "
        "fused / split nodes | blocks with norm > 0 | unprofiled median ms | profiled wall ms | "
        "overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    first = None
    for m in a.models.split(","):
        for level in a.levels.split(","):
            rec = profile(m, level, a.runs, out / f"{m}-{level}.jsonl")
            first = first or rec
            print(row(m, level, rec), flush=True)
    if a.path_too and first:
        path = Path(os.environ.get("EDGEATTN_CACHE", "")) / first["model"]["path"]
        for level in a.levels.split(","):
            rec = profile(str(path), level, a.runs, out / f"path-{level}.jsonl")
            print(row(f"{path.name} (as a path)", level, rec), flush=True)
    print(f"records: {out}")


if __name__ == "__main__":
    main()
