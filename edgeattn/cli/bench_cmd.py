"""`edgeattn bench`, `sweep`, `profile`, `report`, `env`: each parses its options, calls one
library function (``edgeattn.bench.run`` / ``edgeattn.bench.sweep``) and prints the result."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeattn.bench.core import Settings
from edgeattn.cli import options as opts
from edgeattn.defaults import OPSET
from edgeattn.errors import EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_TERMINATED

#: the one default of each measurement knob (``Settings``: the runtime's and the paired group's)
DEFAULTS = Settings()


def pair_budget(pair_time: float) -> float:
    """The paired group's budget for extra rounds scales with ``--pair-time`` (the default's 20 s
    at the default 2 s per try): a quick bench stays quick."""
    return DEFAULTS.pair_budget_s * pair_time / DEFAULTS.pair_min_time_s


def _console() -> Any:
    from edgeattn.cli.console import console

    return console()


def _warn(con: Any) -> Any:
    return lambda message: con.print(f"[yellow]warning:[/] {message}")


@contextlib.contextmanager
def interruptible(command: str) -> Iterator[Any]:
    """SIGTERM behaves like Ctrl-C (the runtime subprocess is killed by ``run_local``); either
    prints how many records were kept, where, and the exact ``--resume`` command, and exits 130
    (SIGINT) or 143 (SIGTERM). Yields the ``bench.run.Kept`` to hand to the library."""
    from edgeattn.bench.run import Kept
    from edgeattn.cli import invocation
    from edgeattn.signals import Terminated, sigterm_as_interrupt

    kept = Kept()
    try:
        with sigterm_as_interrupt():
            yield kept
    except KeyboardInterrupt as exc:
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        what = "terminated" if code == EXIT_TERMINATED else "interrupted"
        typer.echo(kept.message(what, invocation() or [command]), err=True)
        raise typer.Exit(code) from None


def _exit_on_failures(records: list[dict]) -> None:
    """The failed measurements, one line each with the runtime's own message, on stderr."""
    from edgeattn.bench.run import failures

    bad = failures(records)
    if not bad:
        return
    typer.echo(f"{len(bad)} measurement(s) failed:", err=True)
    for r in bad:
        typer.echo(f"  {r.get('id')}: {r.get('error') or 'no error message'}", err=True)
    raise typer.Exit(EXIT_RUN_FAILED)


# ------------------------------------------------------------------------------------------ bench

BENCH_EXAMPLES = opts.examples(
    "edgeattn bench --tokens 1024 --methods softmax,sima -o results/b.jsonl",
    "edgeattn bench --precision fp32,int8-dynamic --ops",
    "edgeattn bench --host pi@raspberrypi.local --remote-python /usr/bin/python3",
)


@opts.remote_options()
def bench(
    device: opts.Device = "cpu",
    tokens: Annotated[int, typer.Option("--tokens", "-n", metavar="N", help="Tokens N.")] = 4096,
    dim: Annotated[int, typer.Option("--dim", "-d", metavar="D", help="Channels D.")] = 384,
    heads: Annotated[
        int, typer.Option("--heads", metavar="H", help="Heads h (head_dim = D/h).")
    ] = 6,
    batch: Annotated[int, typer.Option("--batch", metavar="B", help="Batch size.")] = 1,
    methods: opts.Methods = None,
    threads: opts.Threads = DEFAULTS.intra_op_threads,
    out: opts.RecordsOut = None,
    resume: opts.Resume = False,
    plot: opts.Plot = None,
    warmup: opts.Warmup = DEFAULTS.warmup,
    min_runs: opts.MinRuns = DEFAULTS.min_runs,
    min_time: opts.MinTime = DEFAULTS.min_time_s,
    max_time: opts.MaxTime = DEFAULTS.max_time_s,
    profile: Annotated[
        bool, opts.flag("--profile/--no-profile", help="Add a profiled pass (per-op breakdown).")
    ] = False,
    opt_level: opts.OptLevel = "all",
    opset: opts.Opset = OPSET,
    host: opts.HostOpt = None,
    remote: opts.RemoteOptions = opts.RemoteOptions(),
    quiet: opts.Quiet = False,
    as_json: Annotated[
        bool, opts.flag("--json", help="Print the summary as JSON instead of tables.")
    ] = False,
    no_memory_guard: opts.NoMemoryGuard = False,
    force: opts.ForceOut = False,
    paired: Annotated[
        bool,
        opts.flag(
            "--paired/--no-paired",
            help="Also time all methods interleaved in one process; the ratios come from there.",
        ),
    ] = True,
    tries: opts.Tries = DEFAULTS.pair_tries,
    ops: Annotated[
        bool, opts.flag("--ops", help="Add the pure-op micro-bench: Softmax vs l1 over (B,h,N,N).")
    ] = False,
    pair_time: opts.PairTime = DEFAULTS.pair_min_time_s,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            metavar="LIST",
            help="Comma list of fp32, fp16, int8-dynamic, int8-static: each method at each "
            "(export --precision); speed-up vs fp32 from the paired rounds.",
        ),
    ] = "fp32",
    cpus: opts.Cpus = None,
    cooldown: opts.Cooldown = None,
    cooldown_within: opts.CooldownWithin = None,
    sustained: opts.Sustained = None,
    freq_floor: opts.FreqFloor = None,
) -> None:
    """Exp vs l1: time single attention blocks (softmax, SimA at fixed and dynamic order, SOFT, XCA, ORT fused softmax)."""
    # Long because of its option list (typer reads the signature); the body is parse, one library
    # call, print.
    from edgeattn.bench import core, preflight, run
    from edgeattn.bench.conditions import parse_duration
    from edgeattn.cli.console import progress

    con = _console()
    shape = core.Shape(tokens, dim, heads, batch)
    st = run.settings(
        cpus=cpus, cooldown_s=cooldown, cooldown_within_c=cooldown_within,
        sustained_s=parse_duration(sustained), freq_floor=freq_floor,
        device=device, intra_op_threads=threads, warmup=warmup, min_runs=min_runs, min_time_s=min_time,
        max_time_s=max_time, profile=profile, opt_level=opt_level, opset=opset, paired=paired,
        pair_tries=tries, pair_min_time_s=pair_time,
        pair_max_time_s=max(DEFAULTS.pair_max_time_s, 4 * pair_time),
        pair_budget_s=pair_budget(pair_time),
    )  # fmt: skip
    on_hosts = None
    if host or remote.inventory is not None or remote.group is not None:
        on_hosts = _remote(host, remote, quiet)
    with (
        preflight.appending_anyway(force),
        interruptible("bench") as kept,
        progress(con, "bench", quiet, err=as_json) as step,
    ):
        res = run.run_bench(
            shape, st, methods=methods, precision=precision, ops=ops, out=out, resume=resume,
            plot=plot, remote=on_hosts, memory_guard=not no_memory_guard, on_progress=step,
            on_warning=_warn(con), kept=kept,
        )  # fmt: skip
    if as_json:
        from edgeattn.bench.conditions import conditions_summary
        from edgeattn.bench.report import latest_paired
        from edgeattn.bench.run import group_by_device

        conds = {
            d: conditions_summary(latest_paired(r)) for d, r in group_by_device(res.records).items()
        }
        typer.echo(
            json.dumps(
                {
                    "shape": res.shape,
                    "out": str(res.out),
                    "summary": res.summaries,
                    **({"conditions": conds} if any(conds.values()) else {}),
                },
                indent=2,
            )
        )
    else:
        _print_bench(con, res, tries)
    if res.plot:
        con.print(f"plot: {res.plot}")
    _exit_on_failures(res.records)


def _remote(hosts: list[str] | None, remote: opts.RemoteOptions, quiet: bool) -> Any:
    """``bench.run.Remote`` from ``--host`` and the SSH options (the set ``remote run`` takes)."""
    from edgeattn.bench.run import Remote

    t = remote.targets(hosts)
    return Remote(
        t.hosts, remote.ssh(t), remote.python_for(t), remote.remote_dir, remote.remote_cache,
        remote.keep_remote, quiet,
    )  # fmt: skip


def _print_bench(con: Any, res: Any, tries: int) -> None:
    from edgeattn.bench import pairs, report
    from edgeattn.bench.run import group_by_device
    from edgeattn.cli.console import keep_whole

    for dev, recs in group_by_device(res.records).items():
        from edgeattn.bench.conditions import placement_line

        place = placement_line(recs)
        if place:
            con.print(place)
        table = report.bench_table(recs, title=f"{res.shape} on {dev}")
        con.print(keep_whole(table, *range(len(table.columns))))
        con.print("[dim]" + report.table_note(recs) + "[/]")
        alone = report.deployed_table(recs)
        shown = alone is not None and bool(report.isolated(recs))  # sustained: no alone pass
        if shown:
            con.print(keep_whole(alone, *range(len(alone.columns))))
        words = report.legend(recs)
        if words:
            fused = ". F = fused attention op." if shown and report.shows_fused(recs) else "."
            con.print("[dim]" + "; ".join(words) + fused + "[/]")
        for line in report.summary_lines(res.summaries[dev], res.shape):
            con.print("  " + line)
        if res.summaries[dev].get("op_level"):
            prec = report.latest_paired(recs)
            op_table = pairs.op_table(prec)
            con.print(keep_whole(op_table, *range(len(op_table.columns))))
            for line in pairs.op_lines(prec):
                con.print("  " + line)
            note = pairs.op_note(prec)
            if note:
                con.print("  " + note)
        for r in (x for rec in recs for x in (rec.get("paired") or {}).get("ratios", [])):
            if r.get("name", "").startswith("speedup_vs_fp32/"):
                _, m, p = r["name"].split("/")
                con.print(
                    f"  speed-up vs fp32: {m} at {p} = {r['median']:.2f}× "
                    f"[{r['ci_low']:.2f}–{r['ci_high']:.2f}] (95 % CI, {r['rounds']} paired "
                    "rounds)" + (" no measurable difference" if r.get("contains_one") else "")
                )
        _print_conditions(con, report.latest_paired(recs))
    if getattr(res, "timing", None):
        con.print("[dim]" + res.timing + "[/]", soft_wrap=True)
    if getattr(res, "sustained_plot", None):
        con.print(f"sustained plot: {res.sustained_plot}", soft_wrap=True)
    con.print(f"records: {res.out}", soft_wrap=True)


def _print_conditions(con: Any, prec: dict | None) -> None:
    """The paired group's conditions lines, and the sustained table and lines (issue 23)."""
    from edgeattn.bench import conditions as cond

    if prec is None:
        return
    if cond.is_sustained(prec):
        con.print(cond.sustained_table(prec))
        for line in cond.sustained_lines(prec):
            con.print("  " + line, soft_wrap=True)
    for line in cond.condition_lines(prec):
        con.print("  " + line, soft_wrap=True)


# ------------------------------------------------------------------------------------------ sweep

SWEEP_EXAMPLES = opts.examples(
    "edgeattn sweep --regime tokens --tokens-grid 64,256,1024 -o results/tokens.jsonl",
    "edgeattn sweep --regime crossover --write-crossover xo.json",
    "edgeattn sweep --plot sweep.png",
)


def sweep(
    regime: Annotated[
        str,
        typer.Option(
            "--regime",
            metavar="REGIME",
            help="tokens (N > D), channels (N < D), crossover, or both (tokens+channels+crossover).",
        ),
    ] = "both",
    dim: Annotated[
        int,
        typer.Option("--dim", "-d", metavar="D", help="D for the tokens regime and the crossover."),
    ] = 384,
    heads: Annotated[int, typer.Option("--heads", metavar="H", help="Heads h.")] = 6,
    tokens_grid: Annotated[
        str,
        typer.Option("--tokens-grid", metavar="LIST", help="Token counts N of the tokens regime."),
    ] = "64,256,1024,4096",
    channels_grid: Annotated[
        str,
        typer.Option("--channels-grid", metavar="LIST", help="Channels D of the channels regime."),
    ] = "384,768,1536,3072",
    channels_tokens: Annotated[
        int, typer.Option("--channels-tokens", metavar="N", help="Fixed N for the channels regime.")
    ] = 64,
    crossover_heads: Annotated[
        str | None,
        typer.Option(
            "--crossover-heads",
            metavar="LIST",
            help="Comma list of head counts for the crossover (default: --heads and 1).",
        ),
    ] = None,
    crossover_tokens: Annotated[
        str | None,
        typer.Option(
            "--crossover-grid",
            metavar="LIST",
            help="Token grid for the crossover (default: geometric around head_dim).",
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods", metavar="LIST", help="Override the methods of the tokens/channels regimes."
        ),
    ] = None,
    device: opts.Device = "cpu",
    threads: opts.Threads = DEFAULTS.intra_op_threads,
    out: opts.RecordsOut = None,
    resume: opts.Resume = False,
    plot: opts.Plot = None,
    write_crossover: Annotated[
        Path | None,
        typer.Option(
            "--write-crossover",
            metavar="FILE",
            help="Write the measured crossover (JSON) for `edgeattn export --crossover`.",
        ),
    ] = None,
    min_time: opts.MinTime = 0.3,
    max_time: opts.MaxTime = 5.0,
    min_runs: opts.MinRuns = 5,
    opset: opts.Opset = OPSET,
    pair_time: opts.PairTime = 1.0,
    tries: opts.Tries = DEFAULTS.pair_tries,
    no_memory_guard: opts.NoMemoryGuard = False,
    force: opts.ForceOut = False,
) -> None:
    """Grids over tokens and channels, and the measured crossover where Q(KᵀV) beats (QKᵀ)V."""
    # Long because of its option list (typer reads the signature); the body is parse, one library
    # call, print.
    from edgeattn.bench import preflight, run
    from edgeattn.bench import sweep as sw
    from edgeattn.cli.console import progress

    con = _console()
    st = run.settings(
        device=device, intra_op_threads=threads, min_time_s=min_time, max_time_s=max_time,
        min_runs=min_runs, opset=opset, pair_tries=tries, pair_min_time_s=pair_time,
        pair_max_time_s=max(10.0, 4 * pair_time), pair_budget_s=pair_budget(pair_time),
    )  # fmt: skip
    plan = sw.plan_sweep(
        regime, dim, heads, tokens_grid, channels_grid, channels_tokens, crossover_heads,
        crossover_tokens, methods,
    )  # fmt: skip
    with (
        preflight.appending_anyway(force),
        interruptible("sweep") as kept,
        progress(con, "sweep") as step,
    ):
        res = sw.run_sweep(
            plan, st, out=out, resume=resume, plot=plot, write_crossover_to=write_crossover,
            memory_guard=not no_memory_guard, on_progress=step, on_warning=_warn(con), kept=kept,
        )  # fmt: skip
    _print_sweep(con, res)
    _exit_on_failures(res.records)


def _print_sweep(con: Any, res: Any) -> None:
    from edgeattn.bench import report
    from edgeattn.bench import sweep as sw

    con.print(report.compare_sweep_table(res.records))
    if any(r.get("kind") == "paired" for r in res.records):
        con.print(sw.ratio_table(res.records))
    npe = sw.ns_per_element_line(res.records)
    if npe:
        con.print(npe)
    counts = sw.verdict_counts(res.records)
    con.print("stability verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for x in res.crossovers:
        meas = "none in grid" if x.crossover is None else f"N ≈ {x.crossover}"
        con.print(
            f"crossover D={x.dim} h={x.heads} (head_dim {x.head_dim}): measured {meas} "
            f"({x.note}); rule N < head_dim → {x.rule}"
        )
    if res.crossover_file:
        con.print(
            f"wrote {res.crossover_file}; use: edgeattn export block_sima --dynamic --crossover "
            f"{res.crossovers[0].crossover}"
        )
    if res.plot:
        con.print(f"plot: {res.plot}")
    con.print(f"[dim]records: {res.out}[/]")


# ---------------------------------------------------------------------------------------- profile

PROFILE_EXAMPLES = opts.examples(
    "edgeattn profile soft_tiny --depth stage",
    "edgeattn profile sima_tiny_12_p16 --img-size 224 --opt-level basic",
    "edgeattn profile exports/soft_tiny_op17.onnx",
)


def profile_cmd(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET", help="A registered model name or a path to an .onnx file."
        ),
    ],
    img_size: opts.ImgSize = None,
    device: opts.Device = "cpu",
    threads: opts.Threads = DEFAULTS.intra_op_threads,
    runs: Annotated[
        int, typer.Option("--runs", metavar="N", help="Profiled runs (node times are averaged).")
    ] = 10,
    min_time: opts.MinTime = 1.0,
    depth: Annotated[
        str,
        typer.Option("--depth", metavar="DEPTH", help="Table depth: stage, block, sub, or all."),
    ] = "all",
    opt_level: Annotated[
        str,
        typer.Option(
            "--opt-level",
            metavar="LEVEL",
            help="ORT graph optimisation level of both passes: disable, basic, extended, all "
            "(default: what users deploy; fused nodes are mapped back to their blocks).",
        ),
    ] = "all",
    out: opts.RecordsOut = None,
    opset: opts.Opset = OPSET,
    set_: opts.Set = None,
    force: opts.ForceOut = False,
    no_memory_guard: opts.NoMemoryGuard = False,
) -> None:
    """Per-block latency of a whole net or an .onnx file (stage / block / attention vs MLP)."""
    from edgeattn.bench import profile as prof
    from edgeattn.bench import run
    from edgeattn.cli.console import progress
    from edgeattn.overrides import parse_set

    con = _console()
    overrides = parse_set(set_)
    st = run.settings(
        device=device, intra_op_threads=threads, min_time_s=min_time, profile=True, profile_runs=runs,
        opset=opset, opt_level=opt_level,
    )  # fmt: skip
    with interruptible("profile") as kept, progress(con, f"profile {target}") as step:
        rec, out = run.run_profile(
            target, st, img_size=img_size, overrides=overrides, out=out, on_progress=step,
            on_warning=_warn(con), kept=kept, depth=depth, memory_guard=not no_memory_guard,
            force=force,
        )  # fmt: skip
    for table in prof.profile_tables(rec, depth):
        con.print(table)
    for line in prof.profile_summary_lines(rec):
        con.print("  " + line)
    con.print(f"[dim]record: {out}[/]")


# ----------------------------------------------------------------------------------------- report

REPORT_EXAMPLES = opts.examples(
    "edgeattn report results/bench-20260101-120000.jsonl",
    "edgeattn report laptop.jsonl pi.jsonl --csv all.csv --plot all.png",
)


def report_cmd(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...", help="JSON Lines record files (from bench, sweep, profile, remote)."
        ),
    ],
    csv_out: Annotated[
        Path | None, typer.Option("--csv", metavar="FILE", help="Also write all records as CSV.")
    ] = None,
    plot: opts.Plot = None,
    check: Annotated[
        bool,
        opts.flag(
            "--check",
            help="Only validate FILES against docs/records.schema.json (sidecars too) and tell "
            "complete, partial and edited runs apart: FILE:LINE: field: problem; exit 1 on any.",
        ),
    ] = False,
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write one self-contained HTML page (device cards, ratios with intervals, "
            "sweeps, op table, profiles, precision, run integrity); works offline.",
        ),
    ] = None,
) -> None:
    """Tables (and plots) from records: devices or runs side by side."""
    if check:
        from edgeattn.bench.check import run_check

        code = run_check(files, typer.echo)
        if code:
            raise typer.Exit(code)
        return
    from edgeattn.bench import report, run
    from edgeattn.bench.sweep import ratio_compare_table

    con = _console()
    records = run.read_record_files(files, on_warning=_warn(con))
    con.print(report.compare_table(records))
    if any(r.get("kind") == "paired" for r in records):
        con.print(ratio_compare_table(records))
    for item in report.run_summaries(records):
        lines = report.summary_lines(item["summary"])
        if lines:
            con.print(f"[bold]{item['label']}[/] at {item['shape']}")
            for line in lines:
                con.print("  " + line)
    from edgeattn.bench import conditions as cond

    for label, prec in cond.conditions_records(records):
        con.print(f"[bold]{label}[/] conditions")
        _print_conditions(con, prec)
    bad = run.failures(records)
    if bad:
        con.print(f"[yellow]{len(bad)} error record(s) not shown[/]")
    if csv_out:
        con.print(f"csv: {run.write_csv(records, csv_out)}")
    if plot:
        from edgeattn.bench.plot import plot_records

        con.print(f"plot: {plot_records(records, plot)}")
    if html_out:
        from edgeattn.bench.html import write_page

        con.print(f"html: {write_page(records, files, html_out)}")


# -------------------------------------------------------------------------------------------- env

ENV_EXAMPLES = opts.examples("edgeattn env", "edgeattn env --json > device.json")


def env_cmd(
    as_json: Annotated[
        bool, opts.flag("--json", help="Print the fingerprint as JSON instead of a table.")
    ] = False,
) -> None:
    """This device's fingerprint and the available ONNX Runtime execution providers."""
    from edgeattn.cli.env_view import env_table
    from edgeattn.runtime.sysinfo import fingerprint

    fp = fingerprint()
    if as_json:
        typer.echo(json.dumps(fp, indent=2))
        return
    _console().print(env_table(fp))


def register(app: typer.Typer) -> None:
    app.command(
        "bench", epilog=BENCH_EXAMPLES, short_help="Exp vs l1: time single attention blocks."
    )(bench)
    app.command(
        "sweep",
        epilog=SWEEP_EXAMPLES,
        short_help="Token/channel grids and the measured order crossover.",
    )(sweep)
    app.command(
        "profile",
        epilog=PROFILE_EXAMPLES,
        short_help="Per-block latency of a net or an .onnx file.",
    )(profile_cmd)
    app.command(
        "report", epilog=REPORT_EXAMPLES, short_help="Tables, CSV and plots from record files."
    )(report_cmd)
    app.command(
        "env",
        epilog=ENV_EXAMPLES,
        short_help="This device's fingerprint and ONNX Runtime providers.",
    )(env_cmd)
