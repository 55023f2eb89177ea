"""Issue 22's method table: a method is one declaration that bench, sweep, pairs, report,
preflight and the CLI's help all read. A toy method registered here (no other file touched) goes
through bench planning, a tiny real bench (real exports, real ONNX Runtime), sweep planning, the
report and the help; and no bench module names a method outside the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeattn.bench import core, methods, pairs, report, run, sweep
from edgeattn.bench.methods import BenchMethod, NamedRatio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    """'toy': softmax MSA with a bias-free projection, its own label, order text, regime and set,
    and one named ratio (softmax / toy) printed as a summary line."""
    m = methods.register_method(
        BenchMethod(
            "toy", "block_msa", "toy: softmax MSA without qkv bias", "exp",
            {"qkv_bias": False}, order="toy-order", regimes=("tokens",), sets=("toys",),
            floor="floor_qk", nxn_map=True,
        )
    )  # fmt: skip
    methods.register_ratio(
        NamedRatio("softmax_vs_toy", "softmax", "toy", "softmax / toy", ("tokens",), True)
    )
    try:
        yield m
    finally:
        methods.unregister("toy")
    assert "toy" not in core.METHODS and "softmax_vs_toy" not in pairs.RATIO_BY_NAME


def test_a_toy_method_goes_everywhere_from_its_one_entry(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATTN_CACHE", str(tmp_path / "cache"))
    # planning: --methods names it, its set names it, the sweep's tokens regime takes it
    assert core.parse_methods("softmax,toy") == ["softmax", "toy"]
    assert core.parse_methods("toys") == ["toy"]
    assert "toy" in core.parse_methods("all")
    shape = core.Shape(64, 32, 2)
    jobs = run.bench_jobs(shape, ["softmax", "toy"])
    assert [j.method.key for j in jobs] == ["softmax", "toy"]
    plan = sweep.plan_sweep("tokens", dim=32, heads=2, tokens_grid=[64])
    assert "toy" in {j.method.key for j in plan.jobs}
    assert "softmax_vs_toy" in sweep.REGIME_RATIOS["tokens"]
    # the help lists it, in its set too
    assert "toy" in methods.help_text() and "toys (toy)" in methods.help_text()
    # a tiny real bench: exported, measured alone and paired; its ratios and its line
    st = run.settings(
        min_time_s=0.05, max_time_s=0.5, min_runs=3, pair_min_time_s=0.1, pair_max_time_s=2.0,
        pair_budget_s=1.0,
        pair_profile=False,
    )  # fmt: skip
    res = run.run_bench(shape, st, methods="softmax,toy", out=tmp_path / "b.jsonl")
    (summary,) = res.summaries.values()
    assert summary["reference"] == "softmax"
    r = summary["vs_reference"]["toy"]
    assert r["ci_low"] <= r["median"] <= r["ci_high"]
    assert summary["softmax_vs_toy"]["median"] == pytest.approx(r["median"])
    lines = report.summary_lines(summary)
    assert any(ln.startswith("softmax / toy = ") for ln in lines), lines
    # the report: its order text, its row, from the same records
    recs = run.read_record_files([tmp_path / "b.jsonl"])
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(report.bench_table(recs))
    text = con.export_text()
    assert re.search(r"^\s*toy\s+toy-order\s", text, re.M), text
    prec = report.latest_paired(recs)
    assert [x["name"] for x in prec["paired"]["ratios"]] == ["softmax_vs_toy", "vs_ref/toy"]
    assert pairs.member_keys(prec) and report.run_summaries(recs)[0]["summary"]["methods"] == [
        "softmax",
        "toy",
    ]


def test_registering_twice_or_badly_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method(methods.METHODS["softmax"])
    with pytest.raises(ValueError, match="needs a build function"):
        BenchMethod("g", "g", "g", "none", kind="floor")
    with pytest.raises(ValueError, match="regime 'space'"):
        BenchMethod("g", "block_msa", "g", "none", regimes=("space",))


def test_no_bench_module_names_a_method_outside_the_table():
    """grep: no method key as a string literal in bench/ (but the table), report, sweep or cli
    code (docstrings and comments aside)."""
    import ast

    keys = set(methods.METHODS)
    # the table itself, and the graph builders, which define the graphs the table's op and
    # floor entries name (as models/ defines the blocks)
    own = {"methods.py", "ops.py", "floor.py", "floor_zoo.py"}
    files = [p for p in (ROOT / "edgeattn" / "bench").glob("*.py") if p.name not in own]
    files += list((ROOT / "edgeattn" / "cli").glob("*.py"))
    found = []
    for f in files:
        tree = ast.parse(f.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        lines = f.read_text().splitlines()
        for node in ast.walk(tree):
            if "ExportFacts.method" in lines[getattr(node, "lineno", 1) - 1]:
                continue  # a registry family's method name (another namespace), said so
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in keys
                and id(node) not in docstrings
            ):
                found.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


#: What ORT's profile (opt level all, as the bench) shows as each zoo block's normalisation at a
#: small shape, written by hand from the blocks' algebra: softmax's Softmax; SimA's Abs, token
#: ReduceSum, eps Clip and Div; SOFT's Gaussian kernel as exp(-(‖q‖² - 2qk + ‖k‖²)/2) with a
#: stabilising ReduceMax/Sub and its row sums; XCA's d×d Softmax and its q, k l2 norms;
#: MobileViTv2's one Softmax over N scalars; LiteMLA's ReLU kernel, eps Add and Div (its ones
#: row is a product, a MatMul); Hydra's two φ fused into SimplifiedLayerNormalization. ORT's fused MHA keeps
#: its softmax inside the fused op: it declares no op.
ZOO_NORM_OPS = {
    "softmax": {"Softmax"},
    "softmax_fused": set(),
    "sima": {"Abs", "ReduceSum", "Clip", "Div"},
    "soft": {"Exp", "ReduceMax", "Sub", "ReduceSum", "Div"},
    "xca": {"Softmax", "ReduceSum", "Sqrt", "Clip", "Div"},
    "mobilevitv2": {"Softmax"},
    "litemla": {"Relu", "Add", "Div"},
    # φ(Q) as one fused RMS-norm; φ(K) never written: its row scale from ReduceL2, Sqrt, Div
    "hydra": {"SimplifiedLayerNormalization", "ReduceL2", "Sqrt", "Div"},
}


def test_op_table_finds_every_zoo_blocks_normalisation_ops_in_a_real_profile(tmp_path):
    """Each zoo block exported (8×8 tokens, D 32, 4 heads), profiled by ONNX Runtime as the
    bench does, and read by the op table: it counts exactly the normalisation ops above."""
    import numpy as np
    import onnxruntime as ort

    from edgeattn.export import export_onnx
    from edgeattn.runtime import profile as P

    assert set(methods.sets()["zoo"]) == set(ZOO_NORM_OPS)
    n, c = 64, 32
    x = np.random.default_rng(0).standard_normal((1, n, c)).astype(np.float32)
    for key in methods.sets()["zoo"]:
        m = methods.method(key)
        ov = dict(m.overrides)
        if m.needs_grid:
            ov["grid"] = (8, 8)
        order = ov.pop("order", "auto")
        res = export_onnx(
            m.model, opset=17, tokens=n, dim=c, heads=4, order=order, overrides=ov,
            output=tmp_path / f"{key}.onnx", verify=False, cache_dir=tmp_path / "cache",
        )  # fmt: skip
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp_path / f"prof_{key}")
        sess = ort.InferenceSession(str(res.path), so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, {sess.get_inputs()[0].name: x})
        summary = P.summarize_file(sess.end_profiling(), skip_runs=1)
        got = pairs.op_breakdown(summary, m.normaliser, n, m.ops())
        assert set(got["norm_ops"]) == ZOO_NORM_OPS[key], key
        assert (got["norm_ms"] > 0) == bool(ZOO_NORM_OPS[key]), key


def _paired_record(ms: dict[str, float]) -> dict:
    """A paired record of ``ms`` = {method: its time in every one of 12 rounds}."""
    ids = {k: f"r{i}" for i, k in enumerate(ms)}
    members = [{"id": ids[k], "meta": {"method": k}} for k in ms]
    rounds = [[ms[k] for k in ms] for _ in range(12)]
    return {
        "kind": "paired", "status": "ok", "created_utc": "2026-12-05T00:00:00Z",
        "paired": {
            "members": members, "rounds_ms": rounds, "ratios": [], "stability": {},
            "latency_ms": {ids[k]: {"median": v} for k, v in ms.items()},
        },
    }  # fmt: skip


def _table_text(rec: dict) -> str:
    from rich.console import Console

    con = Console(width=240, record=True)
    con.print(report.bench_table([rec]))
    return con.export_text()


def test_bench_table_has_ratio_to_the_fastest_without_softmax():
    """No softmax measured: a 'fastest ÷ method' column, by hand: 1.0 / 2.0 and 1.0 / 4.0."""
    text = _table_text(_paired_record({"hydra": 2.0, "mobilevitv2": 1.0, "sima": 4.0,
                                       "floor_hydra": 0.5}))  # fmt: skip
    assert "fastest ÷ method" in text
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}
    assert "1 (fastest)" in rows["mobilevitv2"]
    assert "0.50× [0.50–0.50]" in rows["hydra"] and "0.25× [0.25–0.25]" in rows["sima"]
    assert "fastest" not in rows["floor_hydra"]  # a graph: never the fastest attention


def test_bench_table_ratio_to_the_fastest_only_without_softmax_or_for_a_named_set():
    few = _table_text(_paired_record({"softmax": 3.0, "hydra": 2.0, "sima": 4.0}))
    assert "fastest ÷ method" not in few  # softmax is the reference; not a whole set
    keys = methods.sets()["zoo"]  # the whole set, softmax in it: the column too
    zoo = {k: 1.0 + i for i, k in enumerate(keys)}
    zoo[keys[-1]] = 0.5  # the last one fastest: softmax (1.0 ms) is 0.5 / 1.0 of it
    text = _table_text(_paired_record(zoo))
    assert "softmax ÷ method" in text and "fastest ÷ method" in text
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}
    assert "1 (fastest)" in rows[keys[-1]]
    assert "1 (reference)" in rows["softmax"] and "0.50× [0.50–0.50]" in rows["softmax"]


def test_the_op_table_profiles_the_pair_or_else_every_normalising_block():
    """Default set: only the exp-vs-l1 pair is profiled; the zoo (no such pair): every block
    whose normalisation ops a profile can find gets one (its row in the op table); a fused
    attention op and graphs never."""
    from edgeattn.bench import core, methods, pairs

    st = core.Settings()
    default = methods.default_methods()
    spec = pairs.group_spec("g", [(m, f"{m}/N") for m in default], st)
    assert sorted(spec["profile"]) == sorted(f"{m}/N" for m in methods.profiled())
    zoo = methods.sets()["zoo"]
    spec = pairs.group_spec("g", [(m, f"{m}/N") for m in zoo], st)
    want = [f"{m}/N" for m in zoo if methods.method(m).kind == "block" and methods.method(m).ops()]
    assert spec["profile"] == want and len(want) >= 3
    fused = [m for m in zoo if methods.method(m).kind == "block" and not methods.method(m).ops()]
    assert fused and not any(
        f"{m}/N" in spec["profile"] for m in fused
    )  # softmax inside a fused op
    assert (
        pairs.group_spec("g", [(m, f"{m}/N") for m in zoo], core.Settings(pair_profile=False))[
            "profile"
        ]
        == []
    )


def test_unregister_takes_the_method_ratios_at_any_precision():
    methods.register_method(
        BenchMethod("toy_p", "block_msa", "toy at a precision", "exp", order="toy")
    )
    methods.register_ratio(NamedRatio("toy_p_int8", "toy_p@int8-static", "softmax", "toy int8"))
    methods.register_ratio(NamedRatio("toy_p_plain", "softmax", "toy_p", "softmax / toy"))
    methods.unregister("toy_p")
    assert "toy_p" not in methods.METHODS
    assert not {"toy_p_int8", "toy_p_plain"} & set(methods.RATIOS)
