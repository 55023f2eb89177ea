"""int8-static recipes x attention blocks: accuracy against fp32 and paired speed.

    .venv/bin/python benchmarks/int8_recipes.py [--tokens 1024] [--methods softmax,sima_qk,sima_kv]

For each method, the float32 block (exported by the bench, cached) is quantised with each recipe
the quantiser offers a practitioner (``edgeattn.export.precision_convert.INT8_RECIPES``: default
QDQ with MinMax calibration, per-channel weights, MatMuls only, Entropy or Percentile
calibration), each with the keep-fp32 groups int8-static keeps by default (among them
``softmax_long``: a Softmax over >= 511 entries stays float32 between its DQ/Q), and once more as
``qdq_softmax``: the default recipe with every Softmax quantised (ORT's QLinearSoftmax), the
default before softmax_long (blocks without a long Softmax skip it). Each recipe is selectable
as ``--precision int8-static:<recipe>`` (``export``, ``bench``).

Accuracy: each variant in ONNX Runtime against the float32 file on 8 seeded inputs (the
verification seed): the cosine of the block's output *minus the output projection's bias*
(min over inputs). A random-init SimA block's output is 99.99 % its projection bias (the
attention term is ~1e-4 of it: l1-normalised Q and K over N tokens), so the plain cosine, which
the export's verification reports, is ~1.0 for any recipe and says nothing; both are printed.
Speed: one paired group per method (one process, rounds in shuffled order,
edgeattn.runtime.paired): fp32 time / variant time, median of per-round ratios [95 % interval].
Nothing else may run on the machine meanwhile. Records go to --out; quantised files to --workdir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from edgeattn.bench import core, pairs  # noqa: E402
from edgeattn.export.precision_convert import (  # noqa: E402
    INT8_RECIPES,
    VERIFY_SEED,
    seeded_inputs,
    to_int8,
)
from edgeattn.export.precision_groups import resolve_keep_fp32, select_nodes  # noqa: E402

QDQ_SOFTMAX = "qdq_softmax"


def variants() -> list[tuple[str, str, list[str]]]:
    """(name, recipe, keep-fp32 groups): each recipe with int8-static's default groups, and
    ``qdq_softmax``: the default recipe with every Softmax quantised (QLinearSoftmax), the
    default before the softmax_long group."""
    default = resolve_keep_fp32("int8-static", None)
    out = [(r, r, default) for r in INT8_RECIPES]
    qdq = [g for g in default if g != "softmax_long"]
    return out[:1] + [(QDQ_SOFTMAX, "default", qdq)] + out[1:]


def quantise(fp32: Path, name: str, recipe: str, groups: list[str], shape, workdir: Path):
    """The int8-static file of one variant, or None when it is the default's graph."""
    model = onnx.load(str(fp32))
    if name == QDQ_SOFTMAX and not any(select_nodes(model, ["softmax_long"]).values()):
        return None  # no long Softmax: the same file as the default recipe
    out, _, _, _ = to_int8(
        model,
        "int8-static",
        lambda m: [n for v in select_nodes(m, groups).values() for n in v],
        "x",
        shape,
        None,
        recipe=recipe,
    )
    path = workdir / f"{fp32.stem}_{name}.onnx"
    onnx.save(out, str(path))
    return path


def accuracy(fp32: Path, q8: Path, shape) -> tuple[float, float]:
    """(min cosine of the outputs, min cosine of the outputs minus the projection bias)."""
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.load(str(fp32))
    bias = next(
        (numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("proj.bias")), 0.0
    )
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s0, s1 = (
        ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in (fp32, q8)
    )
    plain, free = [], []
    for x in seeded_inputs(shape, 8, VERIFY_SEED):
        y0, y1 = (s.run(None, {"x": x})[0] for s in (s0, s1))
        for acc, a, b in ((plain, y0, y1), (free, y0 - bias, y1 - bias)):
            a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
            acc.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300)))
    return min(plain), min(free)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--methods", default="softmax,sima_qk,sima_kv")
    ap.add_argument(
        "--variants", default=None, help="comma list of variants (default: all of them)"
    )
    ap.add_argument("--pair-time", type=float, default=2.0, help="seconds per paired try (min)")
    ap.add_argument("--out", default="results/int8_recipes.jsonl")
    ap.add_argument("--workdir", default="results/int8_recipes")
    a = ap.parse_args()
    methods = core.parse_methods(a.methods)
    names = [v[0] for v in variants()]
    wanted = names if a.variants is None else [v.strip() for v in a.variants.split(",") if v]
    unknown = [v for v in wanted if v not in names]
    if unknown or not wanted:
        sys.exit(f"--variants {(unknown or [''])[0]!r}: valid: {', '.join(names)}")
    bad = [m for m in methods if core.METHODS[m].is_graph]
    if bad:
        sys.exit(f"--methods {bad[0]!r} is a graph, not an attention block")
    # absolute: the runner measures in a directory of its own (core.run_local)
    out, workdir = Path(a.out).resolve(), Path(a.workdir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    st = core.Settings(
        pair_min_time_s=a.pair_time, pair_max_time_s=max(30.0, 4 * a.pair_time), pair_profile=False
    )
    shape = core.Shape(a.tokens, a.dim, a.heads)
    x_shape = (shape.batch, shape.tokens, shape.dim)
    rows = []
    for m in methods:
        (job,) = core.prepare([core.Job(core.METHODS[m], shape)], st)
        fp32 = Path(job.onnx_path)
        print(f"{m}: quantising {len(wanted)} variants", file=sys.stderr, flush=True)
        files, acc = {}, {}
        for name, recipe, extra in [v for v in variants() if v[0] in wanted]:
            try:
                p = quantise(fp32, name, recipe, extra, x_shape, workdir)
                if p is not None:
                    files[name], acc[name] = p, accuracy(fp32, p, x_shape)
            except Exception as exc:  # a recipe ORT cannot run is a finding, not a crash
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                rows.append(f"{m:<9} {name:<13} fails: {msg.split('was false.')[-1].strip()[:100]}")
        base = core.job_run_spec(job, st)
        specs = [dict(base, id=f"{m}/fp32")]
        for name, p in files.items():
            meta = dict(base["meta"], precision="int8-static", recipe=name)
            specs.append(dict(base, id=f"{m}/{name}", model=str(p), meta=meta))
        group = pairs.group_spec(
            f"paired/int8_recipes/{m}/N{shape.tokens}", [(s["id"], s["id"]) for s in specs], st
        )
        group["ratios"] = [
            {"name": f"speedup/{n}", "num": f"{m}/fp32", "den": f"{m}/{n}"} for n in files
        ]
        group["profile"] = []
        if hasattr(st, "group_fields"):
            group.update(st.group_fields())
        print(f"{m}: measuring fp32 and {len(files)} variants paired", file=sys.stderr, flush=True)
        recs = core.run_local(specs, out=out, paired=[group])
        rec = next(r for r in recs if r.get("kind") == "paired")
        res = pairs.ratio_results(rec)
        lat = rec["paired"]["latency_ms"]
        for name in files:
            r = res[f"speedup/{name}"]
            plain, free = acc[name]
            rows.append(
                f"{m:<9} {name:<13} {free:>10.4f} {plain:>10.5f}  {pairs.fmt_ratio(r):<20} "
                f"{lat[f'{m}/{name}']['median']:8.2f}  {r['stability_text']}"
            )
        rows.append(
            f"{m:<9} {'fp32':<13} {1:>10.4f} {1:>10.5f}  {'1':<20} {lat[f'{m}/fp32']['median']:8.2f}"
        )
    print(
        f"N={a.tokens}, D={a.dim}, h={a.heads}, batch 1; cosine = min over 8 seeded inputs vs fp32"
    )
    print(
        f"{'method':<9} {'recipe':<13} {'cos-bias':>10} {'cos':>10}  "
        f"{'fp32/variant [95 %]':<20} {'ms':>8}  verdict"
    )
    print("\n".join(rows))
    print(f"records: {out}")


if __name__ == "__main__":
    main()
