"""The precision acceptance table (issue 16): error vs fp32 and speed-up vs fp32, per precision.

    .venv/bin/python benchmarks/precision_table.py [--quick] [--out results/precision.jsonl]

For the nets sima_tiny_12_p16, soft_tiny, xcit_tiny_12_p16, deit_tiny_patch16_224 (224x224)
and the single attention blocks (softmax MSA, SimA, SOFT; D=384, h=6) at N = 196, 1024, 4096,
each precision (fp32, fp16, int8-dynamic, int8-static) is exported with ``edgeattn export``'s
code (``export_onnx(precision=..., allow_degraded=True)``: a degraded variant is measured and
marked, not dropped). Errors come from the export's own verification (the sidecar): max rel
error (max|err| / max|ref|) and min per-sample cosine vs the fp32 PyTorch model over the
seeded batch, top-1 agreement over 64 inputs for nets. Speed-ups come from the runtime's
paired pass (``python -m edgeattn.runtime``, one process per model: all precisions of it in
interleaved, shuffled rounds; fp32 time / precision time, median of per-round ratios with a
95 % interval), like ``edgeattn bench``'s ratios.

Random-init weights (no checkpoint): the errors say how much each precision perturbs these
networks; ImageNet accuracy needs real weights and images. fp16 on a CPU without native fp16
arithmetic is emulated by ONNX Runtime (casts to float32), so its time here is not a fp16
device's. Markdown on stdout; records to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgeattn.bench.core import Settings, default_cache_dir, grid_for, run_local
from edgeattn.export import export_onnx
from edgeattn.export.precision import PRECISIONS

NETS = ["sima_tiny_12_p16", "soft_tiny", "xcit_tiny_12_p16", "deit_tiny_patch16_224"]
BLOCKS = [("block_msa", "softmax"), ("block_sima", "SimA"), ("block_soft", "SOFT")]
TOKENS = [196, 1024, 4096]


def export_all(model: str, kw: dict, cache: Path) -> dict[str, dict]:
    out = {}
    for prec in PRECISIONS:
        t0 = time.perf_counter()
        res = export_onnx(model, precision=prec, allow_degraded=True, cache_dir=cache, **kw)
        side = json.loads(res.sidecar_path.read_text())
        out[prec] = {"path": str(res.path), "sidecar": side}
        print(f"  exported {model} {prec} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    return out


def measure(
    label: str,
    files: dict[str, dict],
    in_name: str,
    dims: list,
    st: Settings,
    profile: bool = False,
) -> dict:
    runs = []
    for prec, f in files.items():
        runs.append(
            {
                "id": f"{label}/{prec}",
                "model": f["path"],
                "meta": {"name": label, "precision": prec},
                "inputs": {in_name: dims},
                **st.runtime_fields(),
            }
        )
    ids = {prec: f"{label}/{prec}" for prec in files}
    group = {
        "id": f"paired/{label}",
        "runs": list(ids.values()),
        "ratios": [
            {"name": f"fp32/{p}", "num": ids["fp32"], "den": ids[p]} for p in ids if p != "fp32"
        ],
        "min_rounds": st.pair_min_rounds,
        "max_rounds": st.pair_max_rounds,
        "min_time_s": st.pair_min_time_s,
        "max_time_s": st.pair_max_time_s,
        "tries": st.tries,
        "tolerance": st.stability_tolerance,
        "seed": st.seed,
        "profile": list(ids.values()) if profile else [],
        "profile_runs": st.profile_runs,
        "meta": {"model": label, "precisions": list(ids)},
    }
    recs = run_local(runs, out=None, paired=[group])
    rec = next(r for r in recs if r.get("kind") == "paired")
    p = rec["paired"]
    lat = {rid.rsplit("/", 1)[1]: v for rid, v in p["latency_ms"].items()}
    return {
        "profiles": {rid.rsplit("/", 1)[1]: v for rid, v in (p.get("profiles") or {}).items()},
        "latency_ms": lat,
        "ratios": {r["name"].split("/", 1)[1]: r for r in p["ratios"]},
        "stability": p.get("stability"),
        "record": rec,
    }


def row(label: str, files: dict, m: dict | None) -> list[str]:
    cells = [label]
    for prec in PRECISIONS:
        side = files[prec]["sidecar"]
        if prec == "fp32":
            v = side["verification"]
            err = f"{v['max_rel']:.1e} (ORT vs torch)"
        else:
            v = side["precision"]["verification"]
            err = f"{v['max_rel']:.2g} / {v['cosine_min']:.4f}"
            if "top1_agreement" in v:
                err += f" / {v['top1_agreement']:.0%}"
            if v.get("degraded"):
                err += " **degraded**"
        sp = "1"
        if m is not None:
            lat = m["latency_ms"].get(prec, {})
            med = lat.get("median") if isinstance(lat, dict) else lat
            if prec == "fp32":
                sp = f"1 ({med:.2f} ms)" if med else "1"
            else:
                r = m["ratios"][prec]
                sp = f"{r['median']:.2f}× [{r['ci_low']:.2f}–{r['ci_high']:.2f}]"
                if med:
                    sp += f" ({med:.2f} ms)"
        cells.append(f"{err}; {sp}")
    return cells


NORM_OPS = {
    "softmax": ("Softmax", "QLinearSoftmax"),
    "l1": ("Abs", "ReduceSum", "Clip", "Div"),
}


def op_figure(n: int, cache: Path, st: Settings) -> list[str]:
    """Per-op time of Softmax (softmax block) vs SimA's l1 ops (SimA block, (QKᵀ)V) at fp32
    and int8-static: ORT's profiler in the runtime's paired pass (node time per run)."""
    lines = []
    for model, norm, order in (("block_msa", "softmax", "auto"), ("block_sima", "l1", "qk_first")):
        files = {}
        for prec in ("fp32", "int8-static"):
            res = export_onnx(
                model,
                tokens=n,
                dim=384,
                heads=6,
                order=order,
                precision=prec,
                allow_degraded=True,
                cache_dir=cache,
            )
            files[prec] = {"path": str(res.path)}
        m = measure(f"ops_{model}_N{n}", files, "x", [1, n, 384], st, profile=True)
        for prec, prof in m["profiles"].items():
            by_op = prof.get("by_op") or {}
            norm_ms = sum(v for k, v in by_op.items() if k in NORM_OPS[norm])
            qdq_ms = sum(v for k, v in by_op.items() if "Quantize" in k)
            lines.append(
                f"| {model} N={n} | {prec} | {norm}: {norm_ms:.3f} ms "
                f"({', '.join(f'{k} {v:.3f}' for k, v in by_op.items() if k in NORM_OPS[norm])}) "
                f"| {qdq_ms:.3f} ms | {prof.get('total_node_ms', 0):.2f} ms |"
            )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="nets only at 64px, blocks at N=196")
    ap.add_argument("--out", type=Path, default=None, help="JSON Lines of the paired records")
    ap.add_argument("--no-time", action="store_true", help="errors only, no timing")
    ap.add_argument("--only", default=None, help="rows whose label contains this string")
    ap.add_argument(
        "--ops-tokens",
        default="1024",
        help="N for the Softmax vs l1 per-op figure at fp32 and int8-static ('' to skip)",
    )
    args = ap.parse_args()
    cache = default_cache_dir()
    st = Settings(pair_min_time_s=1.0, pair_max_time_s=6.0, pair_min_rounds=10)
    rows = []
    nets = [(n, {"img_size": 64 if args.quick else 224}) for n in NETS]
    tokens = [196] if args.quick else TOKENS
    blocks = []
    for n in tokens:
        for model, lab in BLOCKS:
            kw = {"tokens": n, "dim": 384, "heads": 6}
            if model == "block_soft":
                kw["overrides"] = {"grid": grid_for(n)}
            blocks.append((model, kw, f"{lab} block N={n}"))
    todo = [(n, kw, n) for n, kw in nets] + blocks
    if args.only:
        todo = [t for t in todo if args.only in str(t[2])]
    for model, kw, label in todo:
        print(f"{label}:", file=sys.stderr)
        files = export_all(model, kw, cache)
        m = None
        if not args.no_time:
            side = files["fp32"]["sidecar"]["spec"]
            inp = side["inputs"][0]
            m = measure(str(label).replace(" ", "_"), files, inp["name"], inp["shape"], st)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(m["record"]) + "\n")
        rows.append(row(str(label), files, m))
        print(" | ".join(rows[-1]), file=sys.stderr)
    head = ["model"] + list(PRECISIONS)
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    ops_n = [int(v) for v in args.ops_tokens.split(",") if v.strip()]
    if ops_n and not args.no_time:
        print(
            "\n| block | precision | normalisation ops (node time per run) | Q/DQ ops | all nodes |"
        )
        print("|---|---|---|---|---|")
        for n in ops_n:
            for line in op_figure(n, cache, st):
                print(line)
    print(
        "\nCells: error vs fp32 PyTorch (max rel error / min cosine / top-1 agreement over 64 "
        "seeded inputs for nets); speed-up vs fp32 (fp32 time / this precision's time, paired "
        "median [95 % CI]) and the median latency. Random-init weights."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
