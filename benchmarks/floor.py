"""Attention blocks against their matmul floors, and SOFT's growth in N; all timed interleaved.

    .venv/bin/python benchmarks/floor.py [--tokens 1024,4096,16384] [--qk-max 4096] [--no-int8]

For each N, one paired group (one process, rounds in shuffled order, see edgeattn.runtime.paired)
holds SimA Q(KᵀV) and its floor (the same matmuls alone, edgeattn.bench.floor), SOFT and its floor,
and up to --qk-max also softmax MSA, SimA (QKᵀ)V and the (QKᵀ)V floor (at N=16384 the N×N maps
are 6.4 GB each). With int8 (the default; ``--no-int8`` leaves it out) the same group also holds
each block at ``--precision int8-static`` and the int8 floors (the same products as integer
matmuls, edgeattn.bench.floor), and prints block int8 / int8 floor and each block's int8 speed-up
over its own fp32. Printed per ratio: median of per-round ratios [95 % interval], the stability
verdict, and the GFLOP/s (1 multiply-add = 1 FLOP) of block and floor from the same rounds. Then
SOFT at the smallest and largest N >= 4096 in one more paired group (their time ratio), with each
one's peak memory above the process's pre-session RSS from its own isolated run. Records go to
--out (JSON Lines). Nothing else may run on the machine meanwhile.

The zoo blocks (every method whose floor is one of ``edgeattn.bench.floor_zoo``'s: MobileViTv2,
Hydra, LiteMLA) are timed too, float32, in a paired group of their own per N (the blocks and their
floors; ``--no-zoo`` leaves them out), and printed as block / floor like the rows above.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeattn.bench import core, pairs  # noqa: E402

FLOOR_OF = {
    "softmax": "floor_qk",
    "sima_qk": "floor_qk",
    "sima_kv": "floor_kv",
    "soft": "floor_soft",
}


INT8 = "int8-static"


def _methods(n: int, qk_max: int) -> list[str]:
    names = ["sima_kv", "floor_kv", "soft", "floor_soft"]
    if n <= qk_max:
        names += ["softmax", "sima_qk", "floor_qk"]
    return names


def _jobs(n: int, dim: int, heads: int, qk_max: int, int8: bool) -> list[core.Job]:
    """fp32 blocks and floors; with ``int8`` also each block at int8-static and the int8 floors."""
    from edgeattn.bench.run import bench_jobs

    precision = f"fp32,{INT8}" if int8 else "fp32"
    return bench_jobs(core.Shape(n, dim, heads), _methods(n, qk_max), precision)


def _pairs_of() -> list[tuple[str, str, str]]:
    """(ratio name, block pair key, floor key): fp32, then int8."""
    out = [(f"{b}_vs_floor", b, f) for b, f in FLOOR_OF.items()]
    return out + [(f"{b}_int8_vs_floor", f"{b}@{INT8}", f"{f}_int8") for b, f in FLOOR_OF.items()]


def _paired(
    jobs: list[core.Job], settings: core.Settings, out: Path, tag: str = ""
) -> tuple[dict, dict[str, core.Job]]:
    """Export ``jobs``, measure them as one paired group (its id ``paired/<tag>N...``, so two
    groups of one N keep apart in the records) and return (the paired record, jobs by key)."""
    jobs = core.prepare(jobs, settings)
    by = {j.pair_key: j for j in jobs}
    print(
        f"N={jobs[0].shape.tokens}: measuring {', '.join(by)} paired", file=sys.stderr, flush=True
    )
    specs = core.paired_specs(jobs, settings)
    for spec in specs:
        spec["id"] = spec["id"].replace("paired/", f"paired/{tag}", 1)
    recs = core.run_local([core.job_run_spec(j, settings) for j in jobs], out=out, paired=specs)
    return next(r for r in recs if r.get("kind") == "paired"), by


def _zoo_methods() -> list[str]:
    """The zoo blocks and their floors, from the method table: each method whose floor is a
    ``floor_zoo`` graph, then those floors."""
    from edgeattn.bench.floor_zoo import FLOORS

    blocks = [k for k, m in core.METHODS.items() if m.kind == "block" and m.floor in FLOORS]
    return blocks + [core.METHODS[b].floor for b in blocks]


def _zoo_table(rec: dict, jobs: dict[str, core.Job]) -> list[str]:
    """block / floor rows of a zoo group (each ratio of the method table between a zoo block and
    its floor that the group's record carries)."""
    from edgeattn.bench import methods

    lat = rec["paired"]["latency_ms"]
    res = pairs.ratio_results(rec)
    rows = []
    for nr in methods.ratios_between(jobs):
        if nr.den != core.METHODS[nr.num].floor or nr.name not in res:
            continue
        r, b, f = res[nr.name], jobs[nr.num], jobs[nr.den]
        rows.append(
            f"{b.shape.tokens:>6}  {nr.label:<42} {pairs.fmt_ratio(r):<20} "
            f"{r['stability_text']:<22} {lat[b.id]['median']:9.2f} {lat[f.id]['median']:9.2f}"
        )
    return rows


def _group_table(rec: dict, jobs: dict[str, core.Job]) -> list[str]:
    lat = rec["paired"]["latency_ms"]
    res = pairs.ratio_results(rec)
    rows = []
    for name, block, fl in _pairs_of():
        if name not in res:
            continue
        r = res[name]
        rates = []
        for key in (block, fl):
            j = jobs[key]
            ms = lat[j.id]["median"]
            g = j.cost.get("gflops")
            rates.append(f"{g / (ms / 1e3):6.1f}" if g else "     -")
        rows.append(
            f"{j.shape.tokens:>6}  {pairs.RATIO_BY_NAME[name].label:<42} {pairs.fmt_ratio(r):<20} "
            f"{r['stability_text']:<22} {lat[jobs[block].id]['median']:9.2f} "
            f"{lat[jobs[fl].id]['median']:9.2f}   {rates[0]} / {rates[1]}"
        )
    for name in ("exp_vs_l1_fixed_order", "qk_vs_kv_order"):
        if name in res:
            rows.append(f"{'':>6}  {pairs.ratio_line(name, res[name])}")
    for block in FLOOR_OF:
        r = res.get(f"speedup_vs_fp32/{block}/{INT8}")
        if r:
            rows.append(
                f"{'':>6}  {block} int8-static speed-up over its fp32 = {pairs.fmt_ratio(r)}"
            )
    return rows


def _soft_scaling(
    ns: list[int], dim: int, heads: int, settings: core.Settings, out: Path
) -> list[str]:
    big = [n for n in ns if n >= 4096]
    if len(big) < 2:
        return []
    lo, hi = big[0], big[-1]
    jobs = core.prepare(
        [core.Job(core.METHODS["soft"], core.Shape(n, dim, heads)) for n in (lo, hi)], settings
    )
    floors = core.prepare(
        [core.Job(core.METHODS["floor_soft"], core.Shape(n, dim, heads)) for n in (lo, hi)],
        settings,
    )
    print(f"SOFT at N={lo} and N={hi}: alone, then paired", file=sys.stderr, flush=True)
    iso = core.run_local([core.job_run_spec(j, settings) for j in jobs], out=out)
    members = jobs + floors
    spec = pairs.group_spec(
        f"paired/soft_scaling/N{lo}-N{hi}",
        [(f"{j.method.key}@{j.shape.tokens}", j.id) for j in members],
        settings,
    )
    spec["ratios"] = [
        {"name": f"{js[0].method.key}_t{hi}_over_t{lo}", "num": js[1].id, "den": js[0].id}
        for js in (jobs, floors)
    ]
    spec["profile"] = []
    recs = core.run_local([core.job_run_spec(j, settings) for j in members], out=out, paired=[spec])
    rec = next(r for r in recs if r.get("kind") == "paired")
    res = pairs.ratio_results(rec)
    lines = []
    for key, what in (("soft", "SOFT"), ("floor_soft", "its matmul floor")):
        r = res[f"{key}_t{hi}_over_t{lo}"]
        lines.append(
            f"{what} t(N={hi}) / t(N={lo}) = {pairs.fmt_ratio(r)} ({r['rounds']} paired rounds, "
            f"{r['stability_text']}) for {hi / lo:.0f}x the tokens"
        )
    mem = {r["id"]: r["memory"] for r in iso if r.get("status") == "ok"}
    if all(j.id in mem for j in jobs):
        peak = [mem[j.id]["peak_rss_mb"] for j in jobs]
        own = [mem[j.id]["peak_rss_mb"] - mem[j.id]["rss_before_mb"] for j in jobs]
        lines.append(
            f"SOFT peak memory above the pre-session RSS: {own[0]:.0f} MB -> {own[1]:.0f} MB "
            f"({own[1] / own[0]:.2f}x); peak RSS {peak[0]:.0f} MB -> {peak[1]:.0f} MB "
            f"({peak[1] / peak[0]:.2f}x)"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--qk-max", type=int, default=4096, help="largest N with the N×N methods")
    ap.add_argument("--pair-time", type=float, default=4.0, help="seconds per paired try (min)")
    ap.add_argument("--out", default="results/floor.jsonl")
    ap.add_argument(
        "--no-int8", dest="int8", action="store_false", help="float32 blocks and floors only"
    )
    ap.add_argument(
        "--no-zoo", dest="zoo", action="store_false", help="leave the zoo blocks' group out"
    )
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = core.Settings(
        pair_min_time_s=a.pair_time, pair_max_time_s=max(30.0, 4 * a.pair_time), pair_profile=False
    )
    ns = [int(v) for v in a.tokens.split(",")]
    lines = []
    for n in ns:
        lines += _group_table(*_paired(_jobs(n, a.dim, a.heads, a.qk_max, a.int8), settings, out))
        if a.zoo:
            from edgeattn.bench.run import bench_jobs

            zoo = bench_jobs(core.Shape(n, a.dim, a.heads), _zoo_methods())
            lines += _zoo_table(*_paired(zoo, settings, out, "zoo/"))
    prec = (
        f"float32 and {INT8} (int8 rows: the block at {INT8} / the int8 floor)"
        if a.int8
        else "float32"
    )
    print(f"D={a.dim}, h={a.heads}, batch 1, {prec}; block / floor = median of per-round ratios")
    print(
        f"{'N':>6}  {'ratio':<42} {'median [95 % CI]':<20} {'verdict':<22} {'block ms':>9} "
        f"{'floor ms':>9}   GFLOP/s block / floor"
    )
    print("\n".join(lines))
    for line in _soft_scaling(ns, a.dim, a.heads, settings, out):
        print(line)
    print(f"records: {out}")


if __name__ == "__main__":
    main()
