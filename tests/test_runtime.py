"""edgeattn.runtime: real ONNX Runtime sessions on tiny models (tests/onnx_factory.py)."""

from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx_factory import ATTENTION_NODES, attention_model, int_model

from edgeattn.runtime import profile as P
from edgeattn.runtime import records as R
from edgeattn.runtime import session as S
from edgeattn.runtime import sysinfo

M = importlib.import_module("edgeattn.runtime.measure")

FAST = {"warmup": 1, "min_runs": 5, "max_runs": 200, "min_time_s": 0.02, "max_time_s": 2.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "attn": str(attention_model(d / "attn.onnx")),
        "dyn": str(attention_model(d / "dyn.onnx", dynamic=True)),
        "int": str(int_model(d / "ints.onnx")),
    }


@pytest.fixture(scope="module")
def attn_record(models):
    return M.measure(dict(FAST, model=models["attn"], meta={"batch": 1, "method": "softmax"}))


# ------------------------------------------------------------------------------------ measure


def test_record_shape_and_stats_match_numpy(attn_record):
    rec = attn_record
    assert rec["status"] == "ok", rec["error"]
    assert rec["schema"] == R.SCHEMA == "edgeattn.record/1"
    assert list(rec) == list(R.RECORD_FIELDS)
    lat = rec["latency_ms"]
    raw = np.asarray(lat["raw"])
    assert lat["runs"] == raw.size >= FAST["min_runs"]
    approx = dict(abs=2e-6)
    assert lat["median"] == pytest.approx(np.median(raw), **approx)
    assert lat["mean"] == pytest.approx(raw.mean(), **approx)
    assert lat["std"] == pytest.approx(raw.std(ddof=1), **approx)
    assert lat["min"] == pytest.approx(raw.min(), **approx)
    assert lat["max"] == pytest.approx(raw.max(), **approx)
    assert lat["p90"] == pytest.approx(np.percentile(raw, 90), **approx)
    assert lat["p99"] == pytest.approx(np.percentile(raw, 99), **approx)
    assert lat["cv"] == pytest.approx(raw.std(ddof=1) / raw.mean(), rel=1e-4)
    assert lat["low_cv"] == (lat["cv"] <= 0.1) and "stable" not in lat
    assert rec["throughput_per_s"] == pytest.approx(1e3 / lat["mean"], rel=1e-6)
    assert rec["samples_per_s"] == pytest.approx(rec["throughput_per_s"])
    # first run and session creation reported apart from the timed runs
    assert lat["first_run"] > 0 and rec["session"]["create_ms"] > 0
    assert lat["warmup"] == 1 and len(lat["warmup_raw"]) == 1
    assert rec["inputs"] == {"x": {"shape": [1, 16, 32], "dtype": "float32"}}
    assert rec["model"]["opset"] == 17 and len(rec["model"]["sha256"]) == 64
    assert rec["meta"] == {"batch": 1, "method": "softmax"}
    mem = rec["memory"]
    assert mem["method"] in ("procfs", "psutil+getrusage", "getrusage")
    assert mem["peak_rss_mb"] >= mem["rss_after_create_mb"] > 0
    assert rec["device"]["fingerprint_id"]
    assert rec["session"]["node_providers"] == {"CPUExecutionProvider": len(ATTENTION_NODES)} or (
        rec["session"]["node_providers_method"] != "ort_assignment_info"
    )
    assert rec["session"]["fallback"] is False
    json.loads(R.dumps(rec))  # strict JSON


def test_stats_small_lists():
    st = M.stats([2.0], cv_threshold=0.1)
    assert st["std"] == 0.0 and st["cv"] == 0.0 and st["low_cv"] and st["median"] == 2.0
    st = M.stats([1.0, 2.0, 3.0, 4.0], cv_threshold=0.1)
    assert st["median"] == 2.5 and st["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert not st["low_cv"]


def test_timed_runs_bounds():
    def nap():
        time.sleep(0.002)

    raw, why = M.timed_runs(nap, min_runs=3, max_runs=1000, min_time_s=0.0, max_time_s=5.0)
    assert (len(raw), why) == (3, "min_reached")
    t0 = time.perf_counter()
    raw, why = M.timed_runs(nap, min_runs=1, max_runs=1000, min_time_s=0.03, max_time_s=5.0)
    assert why == "min_reached" and time.perf_counter() - t0 >= 0.03 and len(raw) > 3
    raw, why = M.timed_runs(nap, min_runs=1, max_runs=4, min_time_s=5.0, max_time_s=10.0)
    assert (len(raw), why) == (4, "max_runs")
    t0 = time.perf_counter()
    raw, why = M.timed_runs(nap, min_runs=10**6, max_runs=10**6, min_time_s=0.0, max_time_s=0.03)
    assert why == "max_time_s" and time.perf_counter() - t0 < 0.5
    assert all(v >= 2.0 for v in raw)


def test_measure_honours_max_runs(models):
    rec = M.measure(
        dict(FAST, model=models["attn"], min_runs=3, max_runs=3, min_time_s=1.0, tries=1)
    )
    assert rec["latency_ms"]["runs"] == 3 and rec["protocol"]["stop_reason"] == "max_runs"
    assert rec["latency_ms"]["stability"]["verdict"] == "untested"


def test_measure_tries_until_two_agree(models):
    """max_runs bounds each try; the record keeps every try and the stability verdict."""
    rec = M.measure(
        dict(FAST, model=models["attn"], min_runs=3, max_runs=3, min_time_s=1.0, tries=4)
    )
    lat = rec["latency_ms"]
    tries = lat["tries"]
    assert 2 <= len(tries) <= 4 and all(t["runs"] == 3 for t in tries)
    assert lat["runs"] == 3 * len(tries) == len(lat["raw"])
    stab = lat["stability"]
    assert stab["tries"] == len(tries) and stab["max_tries"] == 4
    assert stab["verdict"] in ("stable", "unstable")
    last, prev = tries[-1]["median"], tries[-2]["median"]
    agreed = abs(last / prev - 1) <= 0.05
    assert (stab["verdict"] == "stable") == agreed
    assert stab["verdict"] == "stable" or len(tries) == 4
    assert rec["protocol"]["pass"] == "isolated"
    assert set(rec["conditions"]) == {"before", "after"}


def test_inputs_seeded_and_int_inputs(models):
    sess = ort.InferenceSession(models["int"], providers=["CPUExecutionProvider"])
    a, desc = M.make_inputs(sess, seed=7, int_range=(2, 5))
    b, _ = M.make_inputs(sess, seed=7, int_range=(2, 5))
    c, _ = M.make_inputs(sess, seed=8, int_range=(2, 5))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["x"], c["x"])
    assert desc == {
        "ids": {"shape": [1, 4], "dtype": "int64"},
        "x": {"shape": [1, 4, 8], "dtype": "float32"},
    }
    assert a["ids"].dtype == np.int64 and 2 <= a["ids"].min() and a["ids"].max() <= 5
    assert sess.run(None, a)[0].shape == (1, 4, 8)
    rec = M.measure(dict(FAST, model=models["int"], int_range=[0, 9]))
    assert rec["status"] == "ok", rec["error"]


def test_dynamic_dim_needs_a_value(models):
    sess = ort.InferenceSession(models["dyn"], providers=["CPUExecutionProvider"])
    with pytest.raises(S.RuntimeSpecError, match=r"input 'x' dim 1 \('tokens'\) is dynamic"):
        M.make_inputs(sess)
    with pytest.raises(S.RuntimeSpecError, match="model fixes it to 32"):
        M.make_inputs(sess, {"x": [1, 8, 16]})
    with pytest.raises(S.RuntimeSpecError, match="its inputs: x"):
        M.make_inputs(sess, {"img": [1, 8, 32]})
    rec = M.measure(dict(FAST, model=models["dyn"]))
    assert rec["status"] == "error" and "dim 1 ('tokens')" in rec["error"]
    rec = M.measure(dict(FAST, model=models["dyn"], inputs={"x": [1, 50, None]}))
    assert rec["status"] == "ok" and rec["inputs"]["x"]["shape"] == [1, 50, 32]


# ------------------------------------------------------------------------------ providers


@pytest.mark.parametrize("device", ["tensorrt", "coreml"])
def test_unavailable_provider_fails_naming_available(models, device):
    provider = S.DEVICES[device]
    assert provider not in ort.get_available_providers()
    with pytest.raises(S.ProviderUnavailableError) as err:
        S.create_session(models["attn"], device)
    msg = str(err.value)
    assert provider in msg and "CPUExecutionProvider" in msg and "\n" not in msg
    rec = M.measure(dict(FAST, model=models["attn"], device=device))
    assert rec["status"] == "error" and rec["error_type"] == "ProviderUnavailableError"
    assert provider in rec["error"] and rec["latency_ms"] is None


def test_unknown_device_and_bad_values(models):
    with pytest.raises(S.RuntimeSpecError, match=r"device 'gpu' is not one of: .*cpu"):
        M.RunSpec.from_dict({"model": models["attn"], "device": "gpu"})
    bad = {
        "opt_level": ("fast", "opt_level 'fast'.*disable, basic, extended, all"),
        "min_runs": (0, "min_runs 0"),
        "max_runs": (3, "max_runs 3.*min_runs"),
        "min_time_s": (-1, "min_time_s -1"),
        "warmup": (1.5, "warmup 1.5"),
        "profile": ("yes", "profile 'yes'"),
        "inputs": ({"x": [1, 0]}, r"inputs\['x'\]"),
        "fallback": ("maybe", "fallback 'maybe'.*error, allow, forbid"),
        "execution_mode": ("async", "execution_mode 'async'"),
        "warmups": (3, "unknown field 'warmups'; valid fields: model"),
    }
    for field, (value, pattern) in bad.items():
        with pytest.raises(S.RuntimeSpecError, match=pattern):
            M.RunSpec.from_dict({"model": models["attn"], field: value})
    with pytest.raises(S.RuntimeSpecError, match="'model' is missing"):
        M.RunSpec.from_dict({"device": "cpu"})


def test_fallback_policy():
    def info(counts, providers=("CUDAExecutionProvider", "CPUExecutionProvider")):
        return S.SessionInfo(
            session=None,
            device="cuda",
            provider="CUDAExecutionProvider",
            providers_requested=list(providers),
            providers_session=list(providers),
            options={},
            create_ms=1.0,
            node_providers=counts,
        )

    with pytest.raises(S.ProviderFallbackError, match="got 0 of 5 nodes"):
        S.apply_fallback_policy(info({"CPUExecutionProvider": 5}), "error")
    i = info({"CPUExecutionProvider": 5})
    S.apply_fallback_policy(i, "allow")
    assert i.fallback is True
    i = info({"CUDAExecutionProvider": 3, "CPUExecutionProvider": 2})
    S.apply_fallback_policy(i, "error")
    assert i.fallback is True and "2 of 5" in i.notes[0]
    with pytest.raises(S.ProviderFallbackError, match="forbid"):
        S.apply_fallback_policy(
            info({"CUDAExecutionProvider": 3, "CPUExecutionProvider": 2}), "forbid"
        )
    with pytest.raises(S.ProviderFallbackError, match="only has CPUExecutionProvider"):
        S.apply_fallback_policy(info(None, providers=("CPUExecutionProvider",)), "error")


def test_node_providers_api_and_probe_agree(models):
    info = S.create_session(models["attn"], "cpu", opt_level="disable")
    feeds, _ = M.make_inputs(info.session)
    probed = S.probe_node_providers(models["attn"], feeds, "cpu", opt_level="disable")
    assert probed == {"CPUExecutionProvider": len(ATTENTION_NODES)}
    if info.node_providers_method == "ort_assignment_info":
        assert info.node_providers == probed
    with pytest.raises(S.RuntimeSpecError, match="opt_level 'max'"):
        S.create_session(models["attn"], "cpu", opt_level="max")


# -------------------------------------------------------------------------------- profile


def test_profile_aggregation_adds_up(models):
    rec = M.measure(
        dict(FAST, model=models["attn"], profile=True, profile_runs=3, opt_level="disable")
    )
    assert rec["status"] == "ok", rec["error"]
    prof = rec["profile"]
    assert prof["runs"] == 3 and prof["skipped_runs"] == 2
    assert prof["node_count"] == len(ATTENTION_NODES)
    total = prof["total_node_ms"]
    assert total > 0 and 0 < prof["coverage"] <= 1.5
    for depth, groups in prof["blocks"].items():
        assert sum(g["ms"] for g in groups) == pytest.approx(total, abs=1e-5 * len(groups)), depth
        assert sum(g["share"] for g in groups) == pytest.approx(1.0, abs=1e-4)
    assert sum(prof["by_op"].values()) == pytest.approx(total, abs=1e-4)
    names2 = [g["name"] for g in prof["blocks"]["2"]]
    assert names2 == ["blocks.0/attn", "(top)", "blocks.0/mlp", "head"]
    blk = prof["blocks"]["1"][0]
    assert blk["name"] == "blocks.0" and set(blk["components"]) == {"attention", "mlp"}
    assert {g["name"]: g["component"] for g in prof["blocks"]["2"]}["blocks.0/mlp"] == "mlp"
    assert prof["blocks"]["2"][0]["ops"].keys() == {"MatMul", "Transpose", "Softmax"}
    assert prof["node_providers"] == {"CPUExecutionProvider": len(ATTENTION_NODES)}
    json.dumps(prof)


def _ev(name, op, dur, ts, cat="Node"):
    return {
        "cat": cat,
        "name": name if cat != "Node" else f"{name}_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "provider": "CPUExecutionProvider"} if cat == "Node" else {},
    }


def test_profile_skips_warmup_and_averages():
    events = []
    ts = 0
    for scale in (100, 1, 1):  # the first run is warm-up, 100x slower
        start = ts
        for name, op, dur in (
            ("/blocks.0/attn/MatMul", "MatMul", 10),
            ("/blocks.0/attn/ReduceL1", "ReduceL1", 4),
            ("/blocks.0/mlp/fc1/MatMul", "MatMul", 6),
            ("/norm/LayerNorm/LayerNormFusion/", "LayerNormalization", 2),
            ("Add_3", "Add", 3),
        ):
            ts += 1
            events.append(_ev(name, op, dur * scale, ts))
            ts += dur * scale
        events.append(_ev("model_run", None, ts - start + 1, start, cat="Session"))
        ts += 5
    s = P.summarize(events, skip_runs=1)
    assert s["runs"] == 2 and s["total_node_ms"] == pytest.approx(0.025)
    by = {g["name"]: g for g in s["blocks"]["2"]}
    assert by["blocks.0/attn"]["ms"] == pytest.approx(0.014)
    assert by["blocks.0/attn"]["ops"] == {"MatMul": 0.01, "ReduceL1": 0.004}
    assert by["norm"]["ms"] == pytest.approx(0.002) and by["norm"]["component"] == "norm"
    assert by["(top)"]["ms"] == pytest.approx(0.003)
    assert s["components"]["attention"] == pytest.approx(0.014)
    assert 0.8 < s["coverage"] <= 1.0
    assert s["by_op"]["MatMul"] == pytest.approx(0.016)


@pytest.mark.parametrize(
    "path, component",
    [
        ("/block1.0/att/mha/attn/MatMul_2", "attention"),
        ("/blocks.3/attn/ReduceL1", "attention"),
        ("/attn/Softmax", "attention"),
        ("blocks.2/xca", "attention"),
        ("/blocks.0/mlp/fc1/MatMul", "mlp"),
        ("/block2.1/ff2/Conv", "mlp"),
        # SOFT's `att` is the whole post-norm layer: its FFN and norms are not attention.
        ("/block1.0/att/ff1/MatMul", "mlp"),
        ("/block1.0/att/norm2/LayerNormalization", "norm"),
        ("/blocks.0/norm1/ReduceMean", "norm"),
        ("/blocks.0/local_mp/conv1/Conv", "lpi"),
        ("/patch_embed/proj/Conv", "embed"),
        ("/pos_embed/Add", "embed"),
        ("/head/Gemm", "head"),
        ("MatMul_12", "other"),
        ("blocks.0", "other"),
    ],
)
def test_classify(path, component):
    assert P.classify(path) == component


def test_scope_and_group_names():
    assert P.scope("/blocks.3/attn/MatMul_2") == ["blocks.3", "attn"]
    assert P.scope("MatMul_12") == []
    assert P.group_name("Add_3", 2) == "(top)"
    assert P.group_name("/block1.0/att/mha/attn/MatMul_2", 2) == "block1.0/att"
    assert P.group_name("/blocks.0/norm1/Mul/LayerNormFusion/", 5) == "blocks.0/norm1"


# -------------------------------------------------------------------------------- records


def test_append_jsonl_appends_in_place(tmp_path):
    """One line appended to the same file (same inode, earlier bytes untouched): no rewrite.
    Faults (concurrent writers, kills, cut lines, full disk): tests/test_records_faults.py."""
    out = tmp_path / "r.jsonl"
    R.append_jsonl(str(out), R.new_record(id="a", key="k1"))
    before, inode = out.read_bytes(), out.stat().st_ino
    R.append_jsonl(str(out), R.new_record(id="c", key="k3", status="error", error="x"))
    assert out.read_bytes().startswith(before) and out.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]
    assert [r["id"] for r in R.read_jsonl(str(out))] == ["a", "c"]
    assert R.done_keys(str(out)) == {"k1"}
    assert R.done_keys(str(out), include_errors=True) == {"k1", "k3"}


def test_read_jsonl_skips_partial_last_line(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a", "key": "k", "status": "ok"}\n{"id": "b", "ke')
    warnings = []
    assert [r["id"] for r in R.read_jsonl(str(out), warn=warnings.append)] == ["a"]
    assert "partial last line" in warnings[0]
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    warnings = []
    assert [r["id"] for r in R.read_jsonl(str(out), warn=warnings.append)] == ["a", "b"]
    assert warnings == [f"{out}:2: not a JSON record; skipped"]
    assert R.done_keys(str(tmp_path / "missing.jsonl")) == set()


def test_key_depends_on_knobs_not_protocol(models):
    base = M.RunSpec.from_dict({"model": models["attn"]})
    same = M.RunSpec.from_dict({"model": models["attn"], "min_runs": 50, "max_time_s": 60})
    other = M.RunSpec.from_dict({"model": models["attn"], "intra_op_threads": 1})
    assert M.spec_key(base) == M.spec_key(same) != M.spec_key(other)
    assert M.spec_key(M.RunSpec.from_dict({"model": "/nonexistent.onnx"})) is None


def test_nan_written_as_null():
    line = R.dumps(R.new_record(id="a", latency_ms={"cv": math.nan}))
    assert json.loads(line)["latency_ms"]["cv"] is None


# -------------------------------------------------------------------------------- sysinfo


def test_fingerprint_never_raises_and_is_stable():
    a, b = sysinfo.fingerprint(), sysinfo.fingerprint()
    assert a["fingerprint_id"] == b["fingerprint_id"] and len(a["fingerprint_id"]) == 16
    assert a["onnxruntime_version"] == ort.__version__
    assert "CPUExecutionProvider" in a["providers"]
    assert a["cores_logical"] >= 1
    json.dumps(a)
    json.dumps(sysinfo.conditions())


def test_placement_without_assignment_api_comes_from_profile(models, monkeypatch):
    # onnxruntime < 1.23 (e.g. JetPack 5 wheels) has no get_provider_graph_assignment_info
    monkeypatch.setattr(S, "_has_assignment_api", lambda: False)
    rec = M.measure(dict(FAST, model=models["attn"], opt_level="disable"))
    assert rec["session"]["node_providers"] is None
    assert rec["session"]["node_providers_method"] == "unavailable"
    rec = M.measure(dict(FAST, model=models["attn"], opt_level="disable", profile=True))
    assert rec["session"]["node_providers_method"] == "profile"
    assert rec["session"]["node_providers"] == {"CPUExecutionProvider": len(ATTENTION_NODES)}


def test_package_measure_is_the_function(models):
    import edgeattn.runtime as rt

    assert callable(rt.measure) and rt.measure is M.measure
    rec = rt.measure({"model": "attn.onnx", **FAST}, base_dir=str(Path(models["attn"]).parent))
    assert rec["status"] == "ok" and rec["id"] == "attn"


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        # Raspberry Pi 4 (Cortex-A72, ARMv8.0): no half-precision arithmetic
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n", False),
        # Raspberry Pi 5 / Jetson Orin (Cortex-A76/A78AE, ARMv8.2): fphp + asimdhp
        (
            "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
            "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n",
            True,
        ),
        # only the scalar half: not enough for vectorised kernels
        ("processor\t: 0\nFeatures\t: fp asimd fphp\n", False),
        # x86 with and without AVX512-FP16
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n", False),
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512fp16\n", True),
        ("", None),
    ],
)
def test_fp16_arithmetic_from_cpuinfo(cpuinfo, native, monkeypatch):
    from edgeattn.runtime import sysinfo

    monkeypatch.setattr(sysinfo.sys, "platform", "linux")
    monkeypatch.setattr(sysinfo, "read_text", lambda p: cpuinfo if p == "/proc/cpuinfo" else None)
    got = sysinfo.fp16_arithmetic()
    assert got["native"] is native and got["evidence"]
    fp = sysinfo.fingerprint()
    assert fp["fp16_native"] is native
