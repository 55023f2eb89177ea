"""Issue 21's one-answer rules on hand-made records: the unstable note, the op table's verdicts,
the isolated-vs-paired disagreement line, the reference rule, and records without per-run
profiles (older files) read without an interval rather than wrongly."""

from __future__ import annotations

from edgeattn.bench import pairs, report


def test_reference_is_softmax_else_the_first_block():
    assert pairs.reference_method(["sima", "softmax", "xca"]) == "softmax"
    assert pairs.reference_method(["sima", "xca"]) == "sima"
    assert pairs.reference_method(["floor_qk", "sima_qk"]) == "sima_qk"
    assert pairs.reference_method(["op_softmax", "op_l1"]) == "op_softmax"
    got = pairs.vs_ref_ratios({"sima": "a", "softmax": "b", "floor_qk": "c"})
    assert got == [{"name": "vs_ref/sima", "num": "b", "den": "a"}]  # graphs: never vs a block


def test_unstable_verdict_explains_itself():
    stab = {"verdict": "unstable", "tries": 3, "tolerance": 0.05, "deltas": [None, 0.18, 0.25]}
    note = pairs.stability_note(stab)
    assert note.startswith("unstable: the 3 tries' figures differed by up to 25% (tolerance 5%)")
    assert "rerun" in note
    assert pairs.stability_note({"verdict": "stable"}) is None


def _prof(norm_runs, other_runs):
    n = 8
    return {
        "total_node_ms": sum(norm_runs) / len(norm_runs) + sum(other_runs) / len(other_runs),
        "runs": len(norm_runs),
        "nodes": [
            {"op": "Softmax", "ms": sum(norm_runs) / len(norm_runs), "runs_ms": norm_runs},
            {
                "op": "MatMul",
                "ms": sum(other_runs) / len(other_runs),
                "runs_ms": other_runs,
                "in_shapes": [[1, 2, n, 4], [1, 2, 4, n]],
                "out_shapes": [[1, 2, n, n]],
            },
        ],
    }


def test_op_verdicts_consistent_and_noisy():
    steady = pairs.op_breakdown(_prof([1.0, 1.01, 0.99, 1.0, 1.02, 0.98], [3.0] * 6), "exp", 8)
    assert steady["norm_ms_runs"]["verdict"] == "consistent"
    assert pairs.op_verdict(steady) == "consistent"
    # one profiled run 20x the others (a busy machine): the median holds, the interval says so
    swing = [0.136, 0.14, 2.78, 0.13, 0.138, 0.135]
    noisy = pairs.op_breakdown(_prof(swing, [3.0] * 6), "exp", 8)
    assert noisy["norm_ms_runs"]["median"] < 0.2
    assert pairs.op_verdict(noisy).startswith("noisy ±")
    # older records: no per-run times, no interval, said so
    old = _prof([1.0] * 6, [3.0] * 6)
    for nd in old["nodes"]:
        nd.pop("runs_ms")
    assert pairs.op_verdict(pairs.op_breakdown(old, "exp", 8)) == "no interval"


def test_op_lines_give_the_tables_median_not_a_mean_a_stall_inflates():
    """The per-op line and the table read the same profiled runs the same way: one stalled run
    (20x) moved the line's mean-based Softmax time while the table's median held (a fresh-clone
    bench printed 'Softmax 34.8 ms' under a table saying 23.3)."""
    swing = [0.136, 0.14, 2.78, 0.13, 0.138, 0.135, 0.137]
    b = pairs.op_breakdown(_prof(swing, [3.0] * 7), "exp", 8)
    med = sorted(swing)[3]  # 0.136, by hand
    assert b["norm_ops"] == {"Softmax": med} and b["norm_ms"] == med
    assert b["norm_ms_runs"]["median"] == med
    assert b["node_ms"] == round(med + 3.0, 6) and b["other_ms"] == 0.0  # 2 N×N MatMul ms apart
    assert b["nxn_matmul_ms"] == 3.0


def test_isolated_outside_the_paired_interval_is_one_note():
    iso = {
        "softmax": {"latency_ms": {"median": 10.0}},
        "sima": {"latency_ms": {"median": 10.0}},  # alone: 1.00x
        "xca": {"latency_ms": {"median": 5.0}},  # alone: 2.00x, inside its interval
    }
    vs = {
        "sima": {"median": 1.13, "ci_low": 1.11, "ci_high": 1.16},
        "xca": {"median": 2.0, "ci_low": 1.9, "ci_high": 2.1},
    }
    d = report._disagreements("softmax", vs, iso)
    assert [x["method"] for x in d] == ["sima"] and d[0]["isolated"] == 1.0
    lines = report.summary_lines(
        {"source": "paired", "reference": "softmax", "disagreements": d, "missing": {}}
    )
    assert len(lines) == 1 and lines[0].startswith("note: alone, against softmax: sima 1.00×")


def test_op_table_keeps_one_row_per_precision():
    """A bench of one method at two precisions profiles both files: the op table has a row for
    each (``softmax`` and ``softmax@int8-static``), each from its own profile; one used to overwrite
    the other under the bare method name."""
    fp32, int8 = _prof([1.0] * 5, [3.0] * 5), _prof([4.0] * 5, [2.0] * 5)

    def member(mid, prec):
        meta = {"method": "softmax", "normaliser": "exp", "tokens": 8, "precision": prec}
        return {"id": mid, "meta": meta}

    rec = {
        "paired": {
            "members": [member("a", "fp32"), member("b", "int8-static")],
            "profiles": {"a": fp32, "b": int8},
        }
    }
    rows = pairs.op_breakdowns(rec)
    assert set(rows) == {"softmax", "softmax@int8-static"}
    assert rows["softmax"]["norm_ms"] == 1.0 and rows["softmax@int8-static"]["norm_ms"] == 4.0
    assert [line.split(":")[0] for line in pairs.op_lines(rec)] == [
        "softmax",
        "softmax@int8-static",
    ]
