"""The bench, sweep, profile, report and env commands end to end on tiny shapes (real exports,
real ONNX Runtime sessions in `python -m edgeattn.runtime` subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeattn.bench import report
from edgeattn.bench.sweep import crossover_grid, find_crossover

EXE = [sys.executable, "-m", "edgeattn.cli"]
FAST = ["--min-time", "0.05", "--max-time", "2", "--pair-time", "0.2"]
TINY = ["--tokens", "64", "--dim", "32", "--heads", "2"]  # the tiny block every bench here times


def run_cli(*args: str, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, EDGEATTN_CACHE=str(cache))
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory, cache) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench") / "r.jsonl"
    r = run_cli(
        "bench",
        *TINY,
        "--out",
        str(out),
        "--min-runs",
        "3",
        *FAST,
        cache=cache,
    )
    return out, r


def read(path: Path, kind: str | None = "isolated") -> list[dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if kind is None or r.get("kind") == kind]


def test_bench_writes_one_record_per_method_with_summary(bench_out):
    out, r = bench_out
    assert r.returncode == 0, r.stderr[-2000:]
    recs = read(out)
    methods = [x["meta"]["method"] for x in recs]
    assert methods == ["softmax", "softmax_fused", "sima_qk", "sima", "soft", "xca"]
    # the fused method's census cell carries an F, and the legend says what it is
    assert "+1F" in r.stdout and "F = fused attention op." in r.stdout
    assert all(x["status"] == "ok" and x["schema"] == "edgeattn.record/1" for x in recs)
    for x in recs:
        assert x["meta"]["tokens"] == 64 and x["meta"]["dim"] == 32 and x["meta"]["heads"] == 2
        assert x["latency_ms"]["runs"] >= 3 and x["latency_ms"]["median"] > 0
        assert x["inputs"]["x"]["shape"] == [1, 64, 32]
    by = {x["meta"]["method"]: x for x in recs}
    # The audit travels with each record: softmax has a Softmax op, SimA has none and no Exp.
    assert by["softmax"]["meta"]["ops"]["Softmax"] == 1
    assert by["sima"]["meta"]["ops"]["Softmax"] == 0 and by["sima"]["meta"]["ops"]["Exp"] == 0
    assert by["softmax_fused"]["meta"]["fused_attention"] >= 1
    # N=64 > head_dim=16: the dynamic order resolves to Q(KᵀV) at this static shape.
    assert by["sima"]["meta"]["order"] == "kv_first"
    assert by["sima_qk"]["meta"]["order"] == "qk_first"
    assert "exp vs l1 at fixed (QKᵀ)V order" in r.stdout
    assert "dynamic ordering" in r.stdout
    # the ratios come from one paired record over the same six methods
    (pr,) = read(out, "paired")
    assert pr["status"] == "ok" and pr["protocol"]["pass"] == "paired"
    assert [m["id"] for m in pr["paired"]["members"]] == [x["id"] for x in recs]
    assert "paired rounds" in r.stdout and "× [" in r.stdout
    # the op-level table (profiled fixed-order pair) is printed by default
    assert "isolated from the matmuls" in r.stdout and "Softmax" in r.stdout


@pytest.mark.slow  # 7 s; --resume is tested in test_runtime_cli.py and test_sweep_plan.py too
def test_bench_resume_skips_done_measurements(bench_out, cache):
    out, _ = bench_out
    before = read(out)
    r = run_cli(
        "bench",
        *TINY,
        "--out",
        str(out),
        "--resume",
        "--methods",
        "softmax,sima",
        *FAST,
        cache=cache,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read(out)) == len(before)  # no isolated measurement repeated
    # the (softmax, sima) pair had not been measured paired: it is, once
    pairs_ = read(out, "paired")
    assert [len(p["paired"]["members"]) for p in pairs_] == [6, 2]


def test_report_reads_records_and_writes_csv(bench_out, tmp_path, cache):
    out, _ = bench_out
    csv_path = tmp_path / "r.csv"
    r = run_cli("report", str(out), "--csv", str(csv_path), cache=cache)
    assert r.returncode == 0, r.stderr
    assert "latency as deployed (each method alone, ms) by run" in r.stdout
    assert "paired ratios by run" in r.stdout
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("device,method,")
    assert len(lines) == 1 + len(read(out))


def test_summary_ratios_come_from_paired_rounds(bench_out):
    """The headline ratio is the median of per-round ratios of the paired record (recomputed
    here with numpy), with an interval around it; isolated medians give the unpaired fallback."""
    import numpy as np

    out, _ = bench_out
    recs = [r for r in read(out, None) if r.get("kind") == "isolated"]
    (pr,) = read(out, "paired")[:1]
    s = report.bench_summary([*recs, pr])
    ids = [m["id"] for m in pr["paired"]["members"]]
    rounds = np.array(pr["paired"]["rounds_ms"])
    col = {(m["meta"]["method"]): rounds[:, ids.index(m["id"])] for m in pr["paired"]["members"]}
    want = float(np.median(col["softmax"] / col["sima_qk"]))
    got = s["exp_vs_l1_fixed_order"]
    assert got["source"] == "paired" and got["median"] == pytest.approx(want, rel=1e-4)
    assert got["ci_low"] <= got["median"] <= got["ci_high"]
    assert got["rounds"] == len(rounds)
    assert s["dynamic_order_speedup"]["median"] == pytest.approx(
        float(np.median(col["sima_qk"] / col["sima"])), rel=1e-4
    )
    assert s["dynamic_order_taken"] == "kv_first"
    # every round ran every member once, in a permutation
    assert all(sorted(o) == list(range(len(ids))) for o in pr["paired"]["round_order"])
    # every method against the reference (softmax), reference / method, from the same rounds
    assert s["reference"] == "softmax"
    for meth, r in s["vs_reference"].items():
        assert r["median"] == pytest.approx(float(np.median(col["softmax"] / col[meth])), rel=1e-4)
    assert set(s["vs_reference"]) == set(col) - {"softmax"}
    # without the paired record there is no ratio at all (never a ratio of isolated medians)
    u = report.bench_summary(recs)
    assert u["source"] is None and u["vs_reference"] == {}
    assert "exp_vs_l1_fixed_order" not in u and report.summary_lines(u) == []


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--methods", "softmax,bogus"], "unknown method 'bogus'"),
        (["--device", "tensorrt"], "TensorrtExecutionProvider"),
        (["--device", "gpu"], "device 'gpu' is not one of"),
        (["--dim", "30", "--heads", "4"], "--dim 30 is not divisible by --heads 4"),
        (["--tokens", "0"], "--tokens 0 must be a positive integer"),
    ],
)
def test_bench_bad_input_is_one_line_and_nonzero(args, msg, tmp_path, cache):
    r = run_cli("bench", "--out", str(tmp_path / "x.jsonl"), *args, cache=cache, timeout=120)
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_profile_blocks_add_up_to_the_whole(tmp_path, cache):
    out = tmp_path / "p.jsonl"
    r = run_cli(
        "profile",
        "sima_nano_12_p16",
        "--img-size",
        "64",
        "--runs",
        "3",
        "--min-time",
        "0.1",
        "--out",
        str(out),
        cache=cache,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = read(out)
    prof = rec["profile"]
    blocks = prof["blocks"]["1"]
    names = [b["name"] for b in blocks]
    assert "blocks.0" in names and "blocks.11" in names and "cls_attn_blocks.1" in names
    assert sum(b["ms"] for b in blocks) == pytest.approx(prof["total_node_ms"], rel=1e-3)
    assert sum(b["share"] for b in blocks) == pytest.approx(1.0, abs=1e-3)
    # Inside a block, attention and MLP are told apart.
    b0 = next(b for b in blocks if b["name"] == "blocks.0")
    assert b0["components"].get("attention", 0) > 0 and b0["components"].get("mlp", 0) > 0
    assert 0 < prof["coverage"] <= 1.5
    assert "stages" in r.stdout and "blocks.11" in r.stdout
    # at the default opt level (all) fused nodes are mapped back to their blocks (issue 13)
    assert rec["session"]["opt_level"] == "all" and prof["attribution"]["method"] == "graph"
    att = prof["attribution"]
    assert att["fallback_nodes"] == 0 and att["names_only_top_share"] > att["top_share"]
    # what is left in (top) is the net's own top-level ops (/Add, /Concat: one path segment);
    # one scheduler hiccup on those can pass 2 % of this tiny net's time on a loaded machine
    top_level = all(u["name"].count("/") == 1 for u in att["unmapped"])
    assert att["top_share"] <= 0.02 or top_level, att["unmapped"]
    for b in blocks:
        if b["name"].startswith(("blocks.", "cls_attn_blocks.")):  # each has LayerNorms
            assert b["components"].get("norm", 0) > 0, b
    assert "in blocks" in r.stdout


def test_env_prints_fingerprint_and_providers(cache):
    r = run_cli("env", "--json", cache=cache, timeout=120)
    assert r.returncode == 0, r.stderr
    fp = json.loads(r.stdout)
    assert "CPUExecutionProvider" in fp["providers"]
    assert fp["cores_logical"] >= 1


def _rec(method, n, ms, dim=64, heads=1):
    return {
        "status": "ok",
        "meta": {"method": method, "tokens": n, "dim": dim, "heads": heads},
        "latency_ms": {"median": ms},
    }


def test_find_crossover_interpolates_the_sign_change():
    recs = []
    for n in (16, 32, 64, 128, 256):
        recs.append(_rec("sima_qk", n, n * n / 100))  # quadratic
        recs.append(_rec("sima_kv", n, n * 0.8))  # linear: crossover at N = 80
    x = find_crossover(recs, 64, 1)
    assert x.rule == 64 and x.head_dim == 64
    assert 65 <= x.crossover <= 128
    assert x.crossover == pytest.approx(80, abs=8)


def test_find_crossover_none_when_qk_always_wins():
    recs = [_rec("sima_qk", n, 1.0) for n in (8, 16)] + [_rec("sima_kv", n, 2.0) for n in (8, 16)]
    assert find_crossover(recs, 64, 1).crossover is None


def test_crossover_grid_brackets_head_dim():
    g = crossover_grid(64)
    assert g[0] <= 8 and g[-1] >= 512 and 64 in g and g == sorted(set(g))


@pytest.mark.slow  # 13 s; crossovers read/written at library level in test_sweep_plan.py
def test_sweep_crossover_writes_threshold(tmp_path, cache):
    out = tmp_path / "s.jsonl"
    xo = tmp_path / "x.json"
    r = run_cli(
        "sweep",
        "--regime",
        "crossover",
        "--dim",
        "32",
        "--heads",
        "2",
        "--crossover-heads",
        "2",
        "--crossover-grid",
        "4,16,64",
        "--out",
        str(out),
        "--write-crossover",
        str(xo),
        "--min-time",
        "0.05",
        "--min-runs",
        "3",
        cache=cache,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    from edgeattn.bench import methods

    data = json.loads(xo.read_text())
    found = {c["pair"]: c for c in data["crossovers"]}  # every pair the method table declares
    assert set(found) == set(methods.crossover_pairs()) >= {"sima", "litemla"}
    assert found["sima"]["head_dim"] == 16 and found["sima"]["rule_threshold"] == 16
    assert found["litemla"]["rule_threshold"] == 17  # the official H·W > dim
    for c in found.values():
        assert {p["tokens"] for p in c["points"]} == {4, 16, 64}
    assert len(read(out)) == 6 * len(found)


def test_plot_needs_a_known_suffix(bench_out, tmp_path):
    from edgeattn.bench.plot import plot_records
    from edgeattn.errors import BenchError

    out, _ = bench_out
    with pytest.raises(BenchError, match="use a .png, .svg or .pdf"):
        plot_records(read(out), tmp_path / "x.gif")
    p = plot_records(read(out), tmp_path / "x.png")
    assert p.stat().st_size > 1000


def test_sweep_ratio_points_and_verdicts_from_paired_records(bench_out):
    from edgeattn.bench import sweep as sw

    out, _ = bench_out
    allrecs = read(out, None)
    pts = sw.ratio_points(allrecs)
    # N=64 > D=32: the tokens regime's ratios, one row per paired record and ratio
    assert {p["regime"] for p in pts} == {"tokens"}
    names = {p["ratio"] for p in pts}
    assert {"exp_vs_l1_fixed_order", "dynamic_order_speedup", "softmax_vs_soft"} <= names
    for p in pts:
        assert p["ci_low"] <= p["median"] <= p["ci_high"]
    counts = sw.verdict_counts(allrecs)
    measured = [r for r in allrecs if r.get("kind") != "run_end"]  # the run's closing record
    assert sum(counts.values()) == len(measured)
    assert sum(v for k, v in counts.items() if k.startswith("paired")) == len(read(out, "paired"))


def test_report_puts_devices_side_by_side(bench_out, tmp_path, cache):
    """Two devices' records (the second tagged as another host) -> one ratio column each."""
    out, _ = bench_out
    recs = read(out, None)
    other = []
    for r in recs:
        r2 = json.loads(json.dumps(r))
        r2["host"] = {"spec": "pi4"}
        other.append(r2)
    f2 = tmp_path / "pi4.jsonl"
    f2.write_text("".join(json.dumps(r) + "\n" for r in other))
    res = run_cli("report", str(out), str(f2), cache=cache)
    assert res.returncode == 0, res.stderr
    assert "paired ratios by run" in res.stdout
    header = next(line for line in res.stdout.splitlines() if "ratio" in line and "pi4" in line)
    assert "pi4" in header
    row = next(line for line in res.stdout.splitlines() if "exp vs l1" in line)
    assert row.count("×") == 0 and row.count("[") == 2  # one 'median [low–high]' per device
    # the same files the other way round: the same report, byte for byte
    rev = run_cli("report", str(f2), str(out), cache=cache)
    assert rev.returncode == 0 and rev.stdout == res.stdout


def test_report_keeps_two_runs_of_one_device_apart_in_any_order(bench_out, tmp_path, cache):
    """Two runs on one device: two columns (never averaged), and the summary lines of each run
    under its own name, whatever the order of the files."""
    out, _ = bench_out
    recs = read(out, None)
    later = []
    for r in recs:  # a second run, a minute later, every latency 10 % slower
        r2 = json.loads(json.dumps(r))
        r2["created_utc"] = "2099" + r2["created_utc"][4:]
        r2.pop("run_id", None)
        if r2.get("kind") == "isolated" and r2.get("latency_ms"):
            r2["latency_ms"]["median"] *= 1.1
        later.append(r2)
    f2 = tmp_path / "b2.jsonl"
    f2.write_text("".join(json.dumps(r) + "\n" for r in later))
    a = run_cli("report", str(out), str(f2), cache=cache)
    b = run_cli("report", str(f2), str(out), cache=cache)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    iso = {r["meta"]["method"]: r["latency_ms"]["median"] for r in read(out)}
    row = next(ln for ln in a.stdout.splitlines() if ln.split("│")[1:2] == [" softmax       "])
    cells = [c.strip() for c in row.split("│")]
    # both runs' medians as recorded, neither their mean
    want = [report._fmt_ms(iso["softmax"]), report._fmt_ms(iso["softmax"] * 1.1)]
    assert cells[-3:-1] == want, row
    assert "unpaired" not in a.stdout
    # one block of named lines per run, the earlier run first
    heads = [ln for ln in a.stdout.splitlines() if " at N=64, D=32" in ln]
    assert len(heads) == 2 and "r.jsonl" in heads[0] and "b2.jsonl" in heads[1]


def test_regime_comes_from_the_ratios_a_point_holds():
    from edgeattn.bench.sweep import regime_of

    # a tokens-grid point below D (N=64 < D=384) is still read along N
    assert regime_of(["exp_vs_l1_fixed_order", "softmax_vs_soft"]) == "tokens"
    assert regime_of(["xca_vs_sima_kv", "xca_vs_sima_dynamic"]) == "channels"
    assert regime_of([]) == "tokens"


def _table_ratio(stdout: str, method: str) -> tuple[float, float, float]:
    """The 'ref ÷ method' cell of the bench table's row for ``method``: (median, low, high)."""
    import re

    for line in stdout.splitlines():
        cells = line.split()
        if cells[:1] == [method]:
            m = re.search(r"(\d+\.\d+)× \[(\d+\.\d+)–(\d+\.\d+)\]", line)
            if m:
                return float(m[1]), float(m[2]), float(m[3])
    raise AssertionError(f"no ratio cell for {method} in:\n{stdout}")


def test_table_and_lines_are_one_pass_one_direction(bench_out):
    """The table's ratio column and the named lines come from the same paired rounds and read the
    same way round (reference / method: > 1 = faster than softmax)."""
    import numpy as np

    out, r = bench_out
    (pr,) = read(out, "paired")
    rounds = np.array(pr["paired"]["rounds_ms"])
    ids = [m["id"] for m in pr["paired"]["members"]]
    col = {m["meta"]["method"]: rounds[:, ids.index(m["id"])] for m in pr["paired"]["members"]}
    assert "softmax ÷ method" in r.stdout and "reference time ÷ method time" in r.stdout
    for meth in ("softmax_fused", "sima_qk", "sima", "soft", "xca"):
        med, lo, hi = _table_ratio(r.stdout, meth)
        assert med == pytest.approx(float(np.median(col["softmax"] / col[meth])), abs=0.006)
        assert lo <= med <= hi
    # the exp-vs-l1 line is the sima_qk cell: same figure, same direction
    line = next(ln for ln in r.stdout.splitlines() if "exp vs l1 at fixed" in ln)
    assert f"{_table_ratio(r.stdout, 'sima_qk')[0]:.2f}× [" in line
    # the paired p50 column is the paired median, not the isolated one
    lat = pr["paired"]["latency_ms"]
    row = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["sima_qk"])
    assert report._fmt_ms(lat[ids[col_index(pr, "sima_qk")]]["median"]) in row.split()


def col_index(pr: dict, method: str) -> int:
    return [m["meta"]["method"] for m in pr["paired"]["members"]].index(method)


def test_two_method_bench_gives_its_ratio_and_says_what_the_lines_need(tmp_path, cache):
    """The help's own example (--methods softmax,sima): a ratio with an interval in the table and
    in --json, and the named lines that need sima_qk say so."""
    out = tmp_path / "two.jsonl"
    args = ["bench", *TINY, "--methods", "softmax,sima"]
    r = run_cli(*args, "--out", str(out), "--min-runs", "3", *FAST, cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    (pr,) = read(out, "paired")
    names = [x["name"] for x in pr["paired"]["ratios"]]
    assert names == ["vs_ref/sima"]
    med, lo, hi = _table_ratio(r.stdout, "sima")
    assert lo <= med <= hi
    assert "exp vs l1 at fixed (QKᵀ)V order: softmax / SimA (add sima_qk)" in r.stdout
    assert "F = fused" not in r.stdout  # no fused op in this census: no legend for one
    j = run_cli(*args, "--out", str(tmp_path / "j.jsonl"), "--json", *FAST, cache=cache)
    assert j.returncode == 0, j.stderr[-2000:]
    (summary,) = json.loads(j.stdout)["summary"].values()
    v = summary["vs_reference"]["sima"]
    assert summary["reference"] == "softmax" and v["ci_low"] <= v["median"] <= v["ci_high"]
    assert summary["direction"].startswith("ratios are reference time ÷ method time")
