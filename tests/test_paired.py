"""Paired, interleaved measurement in the device runtime (real ORT sessions in a real
``python -m edgeattn.runtime`` process), the op-level table against ORT's own profile JSON, and the
pure-op micro-bench graphs against numpy."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx_factory import attention_model

from edgeattn.bench import ops, pairs
from edgeattn.runtime import profile as P

RT = [sys.executable, "-m", "edgeattn.runtime", "measure"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("paired")
    return (
        str(attention_model(d / "small.onnx", tokens=32, dim=32)),
        str(attention_model(d / "big.onnx", tokens=128, dim=32)),
    )


def _measure(spec: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out.jsonl"
    r = subprocess.run(
        [*RT, "--spec", str(path), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    recs = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    return r, recs


def _spec(a: str, b: str, **group) -> dict:
    g = {
        "id": "g",
        "runs": ["small", "big"],
        "ratios": [{"name": "big_vs_small", "num": "big", "den": "small"}],
        "min_rounds": 20,
        "min_time_s": 0.1,
        "tries": 3,
    }
    g.update(group)
    return {
        "defaults": {"warmup": 1, "min_runs": 3, "min_time_s": 0.01},
        "runs": [{"id": "small", "model": a}, {"id": "big", "model": b}],
        "paired": [g],
        "isolated": False,
    }


def test_paired_group_record(two_models, tmp_path):
    a, b = two_models
    r, recs = _measure(_spec(a, b, profile=["small"], profile_runs=2), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = recs  # isolated: false -> only the group's record
    assert rec["kind"] == "paired" and rec["status"] == "ok"
    p = rec["paired"]
    assert [m["id"] for m in p["members"]] == ["small", "big"]
    rounds = np.array(p["rounds_ms"])
    assert rounds.shape == (len(p["round_order"]), 2) and (rounds > 0).all()
    assert len(p["round_try"]) == len(rounds)
    assert sum(t["rounds"] for t in p["tries"]) == len(rounds) >= 20 * len(p["tries"])
    assert all(sorted(o) == [0, 1] for o in p["round_order"])
    # the order really is shuffled: both orders occur
    assert {tuple(o) for o in p["round_order"]} == {(0, 1), (1, 0)}
    (ratio,) = p["ratios"]
    want = float(np.median(rounds[:, 1] / rounds[:, 0]))
    assert ratio["median"] == pytest.approx(want, rel=1e-5)
    assert ratio["ci_low"] <= ratio["median"] <= ratio["ci_high"]
    # 4x the tokens: the big block is clearly slower, and the interval says so
    assert ratio["ci_low"] > 1.0 and not ratio["contains_one"]
    stab = p["stability"]
    agreeing = [t for t in p["tries"] if not t.get("extension")]
    assert stab["verdict"] in ("stable", "unstable") and stab["tries"] == len(agreeing)
    # extensions only after the tries agreed, and only while the interval was wider than asked
    assert all(t.get("extension") for t in p["tries"][len(agreeing) :])
    assert rec["protocol"]["pass"] == "paired"
    assert rec["protocol"]["session_config"]["session.intra_op.allow_spinning"] == "0"
    assert rec["memory"]["peak_scope"] == "group"
    assert set(rec["conditions"]) == {"before", "after"}
    assert set(p["profiles"]) == {"small"} and p["profiles"]["small"]["runs"] == 2


def test_adaptive_rounds_extend_only_while_the_interval_is_wide(two_models, tmp_path):
    """Once two tries agree, more rounds only while the widest ratio interval is wider than
    ±target_halfwidth and the budget lasts; with the target off (0), none."""
    a, b = two_models
    common = {"min_rounds": 10, "min_time_s": 0.05, "tries": 2, "tolerance": 0.5}
    r, (off,) = _measure(_spec(a, b, target_halfwidth=0, **common), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any(t.get("extension") for t in off["paired"]["tries"])
    # an unreachable target (±0.01 %) within a 1.5 s budget: extensions until the budget ends
    r, (ext,) = _measure(_spec(a, b, target_halfwidth=1e-4, budget_s=1.5, **common), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    p = ext["paired"]
    flags = [bool(t.get("extension")) for t in p["tries"]]
    assert flags[:2] == [False, False] and any(flags[2:]) and all(flags[2:])
    assert p["stability"]["verdict"] == "stable" and p["stability"]["tries"] == 2
    assert p["stability"]["halfwidth"] > p["stability"]["target_halfwidth"] == 1e-4
    assert sum(t["rounds"] for t in p["tries"]) == len(p["rounds_ms"])
    assert ext["protocol"]["target_halfwidth"] == 1e-4 and ext["protocol"]["budget_s"] == 1.5


@pytest.mark.parametrize(
    "group, msg",
    [
        ({"runs": ["small", "nope"]}, "'nope', which is not a run id"),
        ({"tries": 0}, "tries 0 is invalid"),
        ({"ratios": [{"name": "x", "num": "small", "den": "zzz"}]}, "ratios[0].den 'zzz'"),
        ({"bogus": 1}, "unknown field 'bogus'"),
    ],
)
def test_bad_group_is_one_line_exit_2(two_models, tmp_path, group, msg):
    a, b = two_models
    r, recs = _measure(_spec(a, b, **group), tmp_path)
    assert r.returncode == 2 and not recs
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_op_breakdown_sums_against_the_raw_profile(tmp_path):
    """The op table's figures, recomputed straight from ORT's chrome-trace JSON."""
    n = 96
    model = attention_model(tmp_path / "a.onnx", tokens=n, dim=16)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, n, 16)).astype(np.float32)
    runs = 6
    for _ in range(1 + runs):
        sess.run(None, {"x": x})
    path = sess.end_profiling()
    summary = P.summarize_file(path, skip_runs=1)
    got = pairs.op_breakdown(summary, "exp", n)

    events = json.loads(Path(path).read_text())
    run_ts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_end = [e["ts"] + e["dur"] for e in events if e.get("name") == "model_run"]
    cut = sorted(first_end)[0]  # events after the first (skipped) run
    kern = [
        e
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > cut
    ]
    assert len(run_ts) == 1 + runs
    softmax_us = sum(e["dur"] for e in kern if e["args"]["op_name"] == "Softmax")
    nxn_us = sum(
        e["dur"]
        for e in kern
        if e["args"]["op_name"] == "MatMul"
        and any(
            list(d.values())[0][-2:] == [n, n]
            for d in e["args"]["input_type_shape"] + e["args"]["output_type_shape"]
        )
    )
    total_us = sum(e["dur"] for e in kern)

    # with per-run times each node counts at its median run (the figure the table's interval is
    # about); every node ran once per run, so each is the median of its `runs` durations
    def med_ms(evs):
        by_node: dict = {}
        for e in evs:
            by_node.setdefault(e["name"], []).append(e["dur"] / 1e3)
        assert all(len(v) == runs for v in by_node.values())
        return sum(statistics.median(v) for v in by_node.values())

    softmax_med = med_ms([e for e in kern if e["args"]["op_name"] == "Softmax"])
    nxn_med = med_ms(
        [
            e
            for e in kern
            if e["args"]["op_name"] == "MatMul"
            and any(
                list(d.values())[0][-2:] == [n, n]
                for d in e["args"]["input_type_shape"] + e["args"]["output_type_shape"]
            )
        ]
    )
    assert softmax_us and nxn_us and total_us
    assert got["norm_ms"] == pytest.approx(softmax_med, abs=2e-6)
    assert got["nxn_matmul_ms"] == pytest.approx(nxn_med, abs=2e-6)
    assert got["nxn_matmuls"] == 2  # Q·Kᵀ (N×N out) and P·V (N×N in)
    assert got["node_ms"] == pytest.approx(med_ms(kern), abs=1e-5)
    assert got["norm_ms"] + got["nxn_matmul_ms"] + got["other_ms"] == pytest.approx(
        got["node_ms"], abs=1e-5
    )
    # per profiled run: the Softmax time of each run window, its median and order-statistic
    # interval (n = 6: the interval is the range, 96.9 % coverage)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[
        1:
    ]
    per_run = [
        sum(e["dur"] for e in kern if e["args"]["op_name"] == "Softmax" and w0 <= e["ts"] <= w1)
        / 1e3
        for w0, w1 in windows
    ]
    iv = got["norm_ms_runs"]
    assert iv["runs"] == runs
    assert iv["median"] == pytest.approx(float(np.median(per_run)), abs=1e-5)
    assert iv["ci_low"] == pytest.approx(min(per_run), abs=1e-5)
    assert iv["ci_high"] == pytest.approx(max(per_run), abs=1e-5)
    assert iv["verdict"] in ("consistent", "noisy")


@pytest.mark.parametrize("kind", ops.OPS)
def test_op_graphs_compute_softmax_and_l1(kind, tmp_path):
    path = ops.export(kind, 1, 2, 8, 17, tmp_path)
    assert ops.export(kind, 1, 2, 8, 17, tmp_path) == path  # cached by content
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    x[0, 0, 0] = 0.0  # an all-zero row: l1 must not divide by zero (eps, as F.normalize)
    (y,) = sess.run(None, {"x": x})
    x64 = x.astype(np.float64)
    if kind == "op_softmax":
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    else:
        want = x64 / np.maximum(np.abs(x64).sum(-1, keepdims=True), 1e-12)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-7)
