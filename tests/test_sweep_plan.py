"""The sweep and bench orchestration as library calls, without the CLI: the plan (grids,
de-duplication, errors), the crossover read and written, the interrupt bookkeeping, and one
tiny end-to-end ``run_sweep`` with its progress steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeattn.bench import run
from edgeattn.bench import sweep as sw
from edgeattn.errors import BenchError


def _ids(plan):
    return [j.id for j in plan.jobs]


def test_plan_tokens_regime_is_the_grid_times_the_methods():
    plan = sw.plan_sweep("tokens", dim=32, heads=2, tokens_grid="16,64", methods="softmax,sima")
    assert _ids(plan) == [
        "softmax/N16/D32/h2/B1",
        "sima/N16/D32/h2/B1",
        "softmax/N64/D32/h2/B1",
        "sima/N64/D32/h2/B1",
    ]
    assert not plan.has_crossover and sw.crossovers(plan, []) == []


def test_plan_both_deduplicates_a_crossover_point_on_the_grid():
    plan = sw.plan_sweep(
        "both",
        dim=32,
        heads=2,
        tokens_grid=[16, 64],
        channels_grid=[32],
        channels_tokens=16,
        crossover_heads="2",
        crossover_grid="16,64",
        methods="sima_qk,sima_kv",
    )
    ids = _ids(plan)
    assert len(ids) == len(set(ids))
    # the crossover's sima_qk/sima_kv at N=16 and 64 are the tokens grid's own jobs
    assert ids.count("sima_qk/N16/D32/h2/B1") == 1 and plan.crossover_heads == [2]
    assert plan.has_crossover


def test_plan_defaults_cross_at_heads_and_one():
    plan = sw.plan_sweep("crossover", dim=32, heads=2)
    assert plan.crossover_heads == [2, 1]
    assert {j.shape.heads for j in plan.jobs} == {1, 2}
    # every crossover pair the method table declares: SimA's and LiteMLA's
    assert plan.crossover_pairs == ["sima", "litemla"]
    assert {j.method.key for j in plan.jobs} == {
        "sima_qk", "sima_kv", "litemla_quadratic", "litemla_linear",
    }  # fmt: skip


def test_plan_moves_a_grid_pairs_tokens_to_counts_with_a_grid():
    """LiteMLA's blocks need an H×W grid: 23 (prime) -> 24, 83 -> 84; SimA keeps 23 and 83."""
    plan = sw.plan_sweep("crossover", dim=32, heads=2, crossover_heads="2",
                         crossover_grid="16,23,83")  # fmt: skip
    by = {}
    for j in plan.jobs:
        by.setdefault(j.method.key, []).append(j.shape.tokens)
    assert by["sima_qk"] == by["sima_kv"] == [16, 23, 83]
    assert by["litemla_quadratic"] == by["litemla_linear"] == [16, 24, 84]
    only = sw.plan_sweep("crossover", dim=32, heads=2, crossover_pairs="litemla")
    assert {j.method.key for j in only.jobs} == {"litemla_quadratic", "litemla_linear"}
    with pytest.raises(BenchError, match="crossover pair 'nope'; valid: sima, litemla"):
        sw.plan_sweep("crossover", dim=32, heads=2, crossover_pairs="nope")


def test_a_pair_declared_in_the_table_is_planned_and_read():
    """Two toy methods declaring a third pair (a bare side and an alias): planned with the
    others, its crossover read from its own records with its own rule."""
    from edgeattn.bench import methods as mt

    qk = mt.register_method(mt.BenchMethod(
        "toy_qk", "block_msa", "toy (QKᵀ)V", "exp", crossover=("toy", "quadratic"),
        crossover_rule=lambda hd: 2 * hd,
    ))  # fmt: skip
    kv = mt.register_method(mt.BenchMethod("toy_kv", "block_msa", "toy Q(KᵀV)", "exp",
                                           crossover=("toy", "kv")))  # fmt: skip
    try:
        assert qk.crossover == ("toy", "qk") and kv.crossover == ("toy", "kv")
        assert mt.crossover_pairs()["toy"] == ("toy_qk", "toy_kv")
        plan = sw.plan_sweep("crossover", dim=64, heads=1, crossover_heads="1",
                             crossover_grid="16,256")  # fmt: skip
        assert plan.crossover_pairs == ["sima", "litemla", "toy"]
        assert {"toy_qk/N16/D64/h1/B1", "toy_kv/N256/D64/h1/B1"} <= set(_ids(plan))
        recs = []
        for n in (16, 32, 64, 128, 256):
            recs += [_rec("toy_qk", n, n * n / 100), _rec("toy_kv", n, n * 0.8)]
        (x,) = sw.crossovers(sw.SweepPlan("crossover", 64, [], [1], ["toy"]), recs)
        assert x.pair == "toy" and x.rule == 128 and x.crossover == pytest.approx(80, abs=8)
        assert x.as_dict()["methods"] == ["toy_qk", "toy_kv"]
    finally:
        mt.unregister("toy_qk")
        mt.unregister("toy_kv")
    assert "toy" not in mt.crossover_pairs()
    with pytest.raises(ValueError, match="crossover 'sideways' is not a side"):
        mt.BenchMethod("bad", "block_msa", "bad", "exp", crossover="sideways")


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"regime": "diagonal"}, "--regime 'diagonal'; valid: tokens, channels, crossover, both"),
        ({"regime": "tokens", "tokens_grid": "16,x"}, "--tokens-grid: 'x' is not an integer"),
        ({"regime": "crossover", "dim": 30, "crossover_heads": "4"}, "not divisible"),
        ({"regime": "channels", "channels_grid": "33", "heads": 2}, "not divisible by heads"),
        ({"regime": "tokens", "methods": "bogus"}, "unknown method 'bogus'"),
    ],
)
def test_plan_errors_are_one_line(kw, msg):
    with pytest.raises(BenchError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        sw.plan_sweep(**kw)


def _rec(method, n, ms, dim=64, heads=1):
    return {
        "status": "ok",
        "kind": "isolated",
        "device": {"hostname": "here"},
        "meta": {"method": method, "tokens": n, "dim": dim, "heads": heads},
        "latency_ms": {"median": ms},
    }


def test_crossovers_are_read_and_written_for_export(tmp_path):
    recs = []
    for n in (16, 32, 64, 128, 256):
        recs += [_rec("sima_qk", n, n * n / 100), _rec("sima_kv", n, n * 0.8)]
    plan = sw.SweepPlan("crossover", 64, [], [1])
    (x,) = sw.crossovers(plan, recs)  # no pairs named: those with records (SimA's)
    assert x.crossover == pytest.approx(80, abs=8) and x.pair == "sima"
    payload = sw.write_crossover(tmp_path / "x.json", recs, [x])
    assert json.loads((tmp_path / "x.json").read_text()) == json.loads(json.dumps(payload))
    assert payload["crossovers"][0]["rule_threshold"] == 64


def test_every_pairs_crossover_is_read_with_its_own_rule():
    """SimA (rule N < d_h) and LiteMLA (official: linear when H·W > d, i.e. N < d + 1 stays
    quadratic) from the same records file: LiteMLA's linear form wins from N = 40 here."""
    recs = []
    for n in (16, 32, 64, 128, 256):
        recs += [_rec("sima_qk", n, n * n / 100), _rec("sima_kv", n, n * 0.8)]
        recs += [_rec("litemla_quadratic", n, n * n / 50), _rec("litemla_linear", n, n * 0.8)]
    plan = sw.SweepPlan("crossover", 64, [], [1], ["sima", "litemla"])
    sima, lite = sw.crossovers(plan, recs)
    assert (sima.pair, sima.rule) == ("sima", 64) and sima.crossover == pytest.approx(80, abs=8)
    assert (lite.pair, lite.rule) == ("litemla", 65) and lite.crossover == pytest.approx(40, abs=4)
    assert lite.note.startswith("litemla: between N=32 and N=64")


def test_kept_counts_new_records_and_says_how_to_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a"}\n')
    kept = run.Kept()
    assert kept.message("interrupted", ["sweep"]) == "interrupted: nothing was measured yet"
    kept.start(out)
    with out.open("a") as f:
        f.write('{"id": "b"}\n{"id": "c"}\n')
    line = kept.message("terminated", ["sweep", "--dim", "32", "-o", "old.jsonl", "--resume"])
    assert line == (
        f"terminated: 2 record(s) kept in {out}; rerun with: "
        f"edgeattn sweep --dim 32 --resume --out {out}"
    )


def test_default_results_location_is_one_folder():
    for kind in ("bench", "sweep", "profile", "remote"):
        p = run.default_out(kind)
        assert p.parent == Path("results") and p.name.startswith(f"{kind}-")
        assert p.suffix == ".jsonl"


def test_run_sweep_end_to_end_without_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATTN_CACHE", str(tmp_path / "cache"))
    plan = sw.plan_sweep("crossover", dim=16, heads=1, crossover_heads="1", crossover_grid="4,64",
                         crossover_pairs="sima")  # fmt: skip
    st = run.settings(min_time_s=0.02, max_time_s=0.5, min_runs=3, warmup=1,
                      pair_min_time_s=0.1, pair_max_time_s=1.0, pair_budget_s=1.0)  # fmt: skip
    steps, warnings, kept = [], [], run.Kept()
    res = sw.run_sweep(
        plan,
        st,
        out=tmp_path / "s.jsonl",
        write_crossover_to=tmp_path / "x.json",
        on_progress=steps.append,
        on_warning=warnings.append,
        kept=kept,
    )
    assert kept.out == tmp_path / "s.jsonl" and kept.before == 0
    isolated = [r for r in res.records if r.get("kind") == "isolated"]
    assert len(isolated) == 4 and all(r["status"] == "ok" for r in isolated)
    assert [r["kind"] for r in res.records].count("paired") == 2
    # one step per export and per measurement, numbered
    assert [s for s in steps if s.startswith("export ")] == [
        f"export {i}/4: {j.id}" for i, j in enumerate(plan.jobs, 1)
    ]
    assert sum("alone" in s for s in steps) == 4 and sum("paired" in s for s in steps) == 2
    assert steps[-1].startswith("point 2/2 N=64 D=16 h=1: ")
    (x,) = res.crossovers
    assert x.head_dim == 16 and res.crossover_file == tmp_path / "x.json"
    assert json.loads((tmp_path / "x.json").read_text())["crossovers"][0]["head_dim"] == 16
    # resume: nothing is measured again, the records are those of the file
    steps.clear()
    again = sw.run_sweep(plan, st, out=tmp_path / "s.jsonl", resume=True, on_progress=steps.append)
    assert len(again.records) == len(res.records)
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    # each sweep (the first and the resumed one) closes its run with one run_end record
    assert [x.get("kind") for x in lines].count("run_end") == 2
    assert len([x for x in lines if x.get("kind") != "run_end"]) == len(res.records)
