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
