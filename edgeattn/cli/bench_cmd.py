"""`edgeattn bench`, `sweep`, `profile`, `report`, `env`: thin wrappers over edgeattn.bench."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from edgeattn.errors import BenchError

DEVICE_HELP = (
    "Execution provider: cpu, cuda, tensorrt, coreml, xnnpack, openvino, ... (must be available)."
)


def _console():
    from edgeattn.cli.console import console

    return console()


def _default_out(kind: str) -> Path:
    return Path("results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def _settings(**kw: Any):
    from edgeattn.bench.core import Settings

    return Settings(**{k: v for k, v in kw.items() if v is not None})


def _check_opt_level(opt_level: str) -> None:
    from edgeattn.runtime.session import OPT_LEVELS

    if opt_level not in OPT_LEVELS:
        raise BenchError(f"--opt-level {opt_level!r} is not one of: {', '.join(OPT_LEVELS)}")


def _measure(
    jobs, settings, out: Path, resume: bool, hosts: list[str], remote_opts: dict, con
) -> list[dict]:
    """Export + measure ``jobs`` locally or on ``hosts``; records stream into ``out``."""
    from edgeattn.bench import core

    out.parent.mkdir(parents=True, exist_ok=True)
    with con.status("exporting (cached by content hash)...") as st:
        jobs = core.prepare(jobs, settings, on_progress=lambda m: st.update(m))
    if hosts:
        return core.run_on_hosts(
            hosts, jobs, settings, out=out, resume=resume, console=con, **remote_opts
        )
    with con.status("measuring...") as st:
        return core.measure_local(jobs, settings, out, resume, on_progress=st.update)


def register(app: typer.Typer) -> None:
    from edgeattn.cli import remote_cmd as _remote  # the remote options, shared with `remote run`

    @app.command("bench")
    @interruptible("bench")
    def bench(
        device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
        tokens: int = typer.Option(4096, "--tokens", "-n", help="Tokens N."),
        dim: int = typer.Option(384, "--dim", "-d", help="Channels D."),
        heads: int = typer.Option(6, "--heads", help="Heads h (head_dim = D/h)."),
        batch: int = typer.Option(1, "--batch"),
        methods: str = typer.Option(
            None,
            "--methods",
            help="Comma list: softmax, softmax_fused, sima_qk, sima_kv, sima, soft, xca, all.",
        ),
        threads: int = typer.Option(
            0, "--threads", help="Intra-op threads (0 = ONNX Runtime default)."
        ),
        out: Path = typer.Option(
            None,
            "--out",
            "-o",
            help="JSON Lines records file (appended atomically). Default: results/bench-<time>.jsonl",
        ),
        resume: bool = typer.Option(False, "--resume", help="Skip measurements already in --out."),
        plot: Path = typer.Option(
            None, "--plot", help="Also write a plot (.png/.svg); needs matplotlib."
        ),
        warmup: int = typer.Option(3, "--warmup"),
        min_runs: int = typer.Option(10, "--min-runs"),
        min_time: float = typer.Option(1.0, "--min-time", help="Minimum timed seconds per method."),
        max_time: float = typer.Option(
            10.0, "--max-time", help="Maximum timed seconds per method."
        ),
        profile: bool = typer.Option(
            False, "--profile/--no-profile", help="Add a profiled pass (per-op breakdown)."
        ),
        opt_level: str = typer.Option(
            "all",
            "--opt-level",
            help="ORT graph optimisation level of every pass: disable, basic, extended, all.",
        ),
        opset: int = typer.Option(17, "--opset"),
        host: list[str] = typer.Option(
            None,
            "--host",
            help="Measure on this SSH host instead (repeatable): user@host, host:port, ssh-config alias.",
        ),
        ssh_option: list[str] = typer.Option(
            None, "--ssh-option", help="Extra ssh -o KEY=VALUE (repeatable)."
        ),
        identity: Path = typer.Option(None, "--identity", help="SSH private key file."),
        ssh_config: Path = typer.Option(None, "--ssh-config", help="ssh_config file (ssh -F)."),
        remote_python: str = typer.Option(
            None, "--remote-python", help="Python on the device (default python3)."
        ),
        accept_new_host_key: bool = typer.Option(
            False,
            "--accept-new-host-key",
            help="Trust an unknown host key (StrictHostKeyChecking=accept-new).",
        ),
        inventory: Path = _remote._INVENTORY,
        group: str = _remote._GROUP,
        remote_dir: str = _remote._REMOTE_DIR,
        remote_cache: str = _remote._REMOTE_CACHE,
        keep_remote: bool = _remote._KEEP_REMOTE,
        connect_timeout: float = _remote._CONNECT_TIMEOUT,
        timeout: float = _remote._TIMEOUT,
        as_json: bool = typer.Option(
            False, "--json", help="Print the summary as JSON instead of tables."
        ),
        no_memory_guard: bool = typer.Option(
            False, "--no-memory-guard", help="Measure even what looks too big for the memory here."
        ),
        paired: bool = typer.Option(
            True,
            "--paired/--no-paired",
            help="Also time all methods interleaved in one process; the ratios come from there.",
        ),
        tries: int = typer.Option(
            3, "--tries", help="Stability rule: up to this many tries until two agree within ±5%."
        ),
        ops: bool = typer.Option(
            False, "--ops", help="Add the pure-op micro-bench: Softmax vs l1 over (B,h,N,N)."
        ),
        pair_time: float = typer.Option(
            2.0, "--pair-time", help="Minimum seconds per paired try (rounds of all methods)."
        ),
        precision: str = typer.Option(
            "fp32",
            "--precision",
            help="Comma list of fp32, fp16, int8-dynamic, int8-static: each method at each "
            "(export --precision); speed-up vs fp32 from the paired rounds.",
        ),
    ) -> None:
        """Exp vs l1: time single attention blocks (softmax, SimA at fixed and dynamic order, SOFT, XCA, ORT fused softmax)."""
        from edgeattn.bench import core, report

        con = _console()
        _check_opt_level(opt_level)
        shape = core.Shape(tokens, dim, heads, batch)
        names = core.parse_methods(methods)
        if ops:
            names += [m for m in core.OP_METHODS if m not in names]
        settings = _settings(
            device=device,
            threads=threads,
            warmup=warmup,
            min_runs=min_runs,
            min_time_s=min_time,
            max_time_s=max_time,
            profile=profile,
            opt_level=opt_level,
            opset=opset,
            paired=paired,
            tries=tries,
            pair_min_time_s=pair_time,
            pair_max_time_s=max(15.0, 4 * pair_time),
        )
        if inventory is not None or group is not None:  # hosts (and their python) from a file
            host, ssh_config, inv_python = _remote._inventory(host, inventory, group, ssh_config)
            remote_python = remote_python or inv_python or None
        _check_device_early(device, host)
        out = out or _default_out("bench")
        from edgeattn.errors import BenchError, ExportError
        from edgeattn.export.precision import parse_precisions

        try:
            precisions = parse_precisions(precision)
        except ExportError as exc:
            raise BenchError(str(exc).replace("precision=", "--precision ")) from None
        if "fp16" in precisions and not host and device == "cpu":
            from edgeattn.runtime.sysinfo import fp16_arithmetic

            f16 = fp16_arithmetic()
            if f16["native"] is not True:
                con.print(
                    f"[yellow]warning:[/] fp16 on this CPU is emulated on most CPUs "
                    f"({f16['evidence']}): expect it slower than fp32; int8 is the CPU precision"
                )
        jobs = [
            core.Job(core.METHODS[m], shape, precision=p)
            for p in precisions
            for m in names
            if p == "fp32" or m not in core.OP_METHODS
        ]
        _preflight(
            con,
            "check_bench",
            jobs=jobs,
            out=out,
            plot=plot,
            threads=threads,
            warmup=warmup,
            min_runs=min_runs,
            min_time=min_time,
            max_time=max_time,
            hosts=host,
            memory_guard=not no_memory_guard,
            methods=names,
        )
        remote_opts = {}
        if host:
            from edgeattn.cli.remote_cmd import _ssh_options

            remote_opts = dict(
                ssh=_ssh_options(
                    ssh_option,
                    identity,
                    ssh_config,
                    accept_new_host_key,
                    connect_timeout,
                    timeout,
                ),
                remote_python=remote_python,
                remote_dir=remote_dir,
                remote_cache=remote_cache,
                keep_remote=keep_remote,
            )
        records = _measure(jobs, settings, out, resume, list(host or []), remote_opts, con)
        if resume:
            from edgeattn.runtime.records import read_jsonl

            wanted = {j.id for j in jobs}
            records = [r for r in read_jsonl(out) if r.get("id") in wanted] or records
        shape_s = f"N={tokens}, D={dim}, h={heads}, batch={batch}"
        groups = _group_by_device(records)
        summaries = {}
        for dev, recs in groups.items():
            summaries[dev] = report.bench_summary(recs)
            if not as_json:
                con.print(report.bench_table(recs, title=f"{shape_s} on {dev}"))
                con.print("[dim]" + "; ".join(report.legend(recs)) + ". F = fused attention op.[/]")
                for line in report.summary_lines(summaries[dev], shape_s):
                    con.print("  " + line)
                if summaries[dev].get("op_level"):
                    from edgeattn.bench import pairs

                    con.print(pairs.op_table(pairs.paired(recs)[-1]))
                for r in (x for rec in recs for x in (rec.get("paired") or {}).get("ratios", [])):
                    if r.get("name", "").startswith("speedup_vs_fp32/"):
                        _, m, p = r["name"].split("/")
                        con.print(
                            f"  speed-up vs fp32: {m} at {p} = {r['median']:.2f}× "
                            f"[{r['ci_low']:.2f}–{r['ci_high']:.2f}] (95 % CI, {r['rounds']} "
                            "paired rounds)"
                            + (" no measurable difference" if r.get("contains_one") else "")
                        )
        if as_json:
            typer.echo(
                json.dumps({"shape": shape_s, "out": str(out), "summary": summaries}, indent=2)
            )
        else:
            con.print(
                f"[dim]records: {out}  (table: each method alone in its process, up to {tries} "
                "tries, cv > 10% flagged with !; ratios: all methods interleaved in one process, "
                "median of per-round ratios [95% interval])[/]"
            )
        if plot:
            from edgeattn.bench.plot import plot_records

            con.print(f"plot: {plot_records(records, plot, title=shape_s)}")
        if any(r.get("status") != "ok" for r in records):
            _report_failures(records)
            raise typer.Exit(3)

    @app.command("sweep")
    @interruptible("sweep")
    def sweep(
        regime: str = typer.Option(
            "both",
            "--regime",
            help="tokens (N > D), channels (N < D), crossover, or both (tokens+channels+crossover).",
        ),
        dim: int = typer.Option(
            384, "--dim", "-d", help="D for the tokens regime and the crossover."
        ),
        heads: int = typer.Option(6, "--heads"),
        tokens_grid: str = typer.Option(",".join(map(str, (64, 256, 1024, 4096))), "--tokens-grid"),
        channels_grid: str = typer.Option(
            ",".join(map(str, (384, 768, 1536, 3072))), "--channels-grid"
        ),
        channels_tokens: int = typer.Option(
            64, "--channels-tokens", help="Fixed N for the channels regime."
        ),
        crossover_heads: str = typer.Option(
            None,
            "--crossover-heads",
            help="Comma list of head counts for the crossover (default: --heads and 1).",
        ),
        crossover_tokens: str = typer.Option(
            None,
            "--crossover-grid",
            help="Token grid for the crossover (default: geometric around head_dim).",
        ),
        methods: str = typer.Option(
            None, "--methods", help="Override the methods of the tokens/channels regimes."
        ),
        device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
        threads: int = typer.Option(0, "--threads"),
        out: Path = typer.Option(None, "--out", "-o"),
        resume: bool = typer.Option(False, "--resume"),
        plot: Path = typer.Option(None, "--plot"),
        write_crossover: Path = typer.Option(
            None,
            "--write-crossover",
            help="Write the measured crossover (JSON) for `edgeattn export --crossover`.",
        ),
        min_time: float = typer.Option(0.3, "--min-time"),
        max_time: float = typer.Option(5.0, "--max-time"),
        min_runs: int = typer.Option(5, "--min-runs"),
        opset: int = typer.Option(17, "--opset"),
        pair_time: float = typer.Option(
            1.0, "--pair-time", help="Minimum seconds per paired try at each point."
        ),
        tries: int = typer.Option(3, "--tries", help="Stability rule: up to this many tries."),
        no_memory_guard: bool = typer.Option(
            False, "--no-memory-guard", help="Measure even what looks too big for the memory here."
        ),
    ) -> None:
        """Grids over tokens and channels, and the measured crossover where Q(KᵀV) beats (QKᵀ)V."""
        from rich.progress import Progress

        from edgeattn.bench import core, report
        from edgeattn.bench import sweep as sw

        con = _console()
        if regime not in ("tokens", "channels", "crossover", "both"):
            raise BenchError(f"--regime {regime!r}; valid: tokens, channels, crossover, both")
        _check_device_early(device, None)
        settings = _settings(
            device=device,
            threads=threads,
            min_time_s=min_time,
            max_time_s=max_time,
            min_runs=min_runs,
            warmup=2,
            opset=opset,
            tries=tries,
            pair_min_time_s=pair_time,
            pair_max_time_s=max(10.0, 4 * pair_time),
        )
        out = out or _default_out("sweep")
        jobs: list = []
        if regime in ("tokens", "both"):
            ms = core.parse_methods(methods) if methods else list(sw.TOKENS_METHODS)
            jobs += sw.tokens_jobs(dim, heads, sw.parse_int_list(tokens_grid, "--tokens-grid"), ms)
        if regime in ("channels", "both"):
            ms = core.parse_methods(methods) if methods else list(sw.CHANNELS_METHODS)
            jobs += sw.channels_jobs(
                channels_tokens, heads, sw.parse_int_list(channels_grid, "--channels-grid"), ms
            )
        xheads = sw.parse_int_list(crossover_heads, "--crossover-heads") or [heads, 1]
        if regime in ("crossover", "both"):
            for h in xheads:
                if dim % h:
                    raise BenchError(f"--crossover-heads {h}: --dim {dim} is not divisible by it")
                jobs += sw.crossover_jobs(
                    dim, h, sw.parse_int_list(crossover_tokens, "--crossover-grid") or None
                )
        # De-duplicate identical jobs (a crossover point can coincide with a grid point).
        seen, uniq = set(), []
        for j in jobs:
            if j.id not in seen:
                seen.add(j.id)
                uniq.append(j)
        _preflight(
            con,
            "check_sweep",
            jobs=uniq,
            out=out,
            plot=plot,
            write_crossover=write_crossover,
            threads=threads,
            min_runs=min_runs,
            min_time=min_time,
            max_time=max_time,
            memory_guard=not no_memory_guard,
        )
        records: list[dict] = []
        with Progress(console=con, transient=True) as prog:
            task = prog.add_task("export", total=len(uniq))
            prepared = []
            for j in uniq:
                prog.update(task, description=f"export {j.id}")
                prepared += core.prepare([j], settings)
                prog.advance(task)
            groups = core.shape_groups(prepared)
            task = prog.add_task("measure", total=len(groups))
            for grp in groups:
                prog.update(
                    task, description=f"measure N={grp[0].shape.tokens} D={grp[0].shape.dim}"
                )
                records += core.measure_local(grp, settings, out, resume)
                prog.advance(task)
        if resume:
            from edgeattn.runtime.records import read_jsonl

            pids = {g["id"] for g in core.paired_specs(prepared, settings)}
            records = [r for r in read_jsonl(out) if r.get("id") in seen | pids]
        con.print(report.compare_sweep_table(records))
        if any(r.get("kind") == "paired" for r in records):
            con.print(sw.ratio_table(records))
        npe = sw.ns_per_element_line(records)
        if npe:
            con.print(npe)
        counts = sw.verdict_counts(records)
        con.print("stability verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if regime in ("crossover", "both"):
            results = []
            for h in xheads:
                x = sw.find_crossover(records, dim, h)
                results.append(x.as_dict())
                meas = "none in grid" if x.crossover is None else f"N ≈ {x.crossover}"
                con.print(
                    f"crossover D={dim} h={h} (head_dim {x.head_dim}): measured {meas} ({x.note}); "
                    f"rule N < head_dim → {x.rule}"
                )
            if write_crossover:
                from edgeattn.runtime.records import write_atomic

                payload = {
                    "device": (records[0].get("device") if records else None),
                    "crossovers": results,
                }
                write_atomic(
                    str(write_crossover),
                    (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode(),
                )
                first = results[0]["crossover"]
                con.print(
                    f"wrote {write_crossover}; use: edgeattn export block_sima --dynamic --crossover {first}"
                )
        if plot:
            from edgeattn.bench.plot import plot_records

            con.print(f"plot: {plot_records(records, plot)}")
        con.print(f"[dim]records: {out}[/]")
        if any(r.get("status") != "ok" for r in records):
            _report_failures(records)
            raise typer.Exit(3)

    @app.command("profile")
    @interruptible("profile")
    def profile_cmd(
        target: str = typer.Argument(
            ..., help="A registered model name or a path to an .onnx file."
        ),
        img_size: int = typer.Option(
            None, "--img-size", help="Input resolution for nets (default: the model's)."
        ),
        device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
        threads: int = typer.Option(0, "--threads"),
        runs: int = typer.Option(10, "--runs", help="Profiled runs (node times are averaged)."),
        min_time: float = typer.Option(1.0, "--min-time"),
        depth: str = typer.Option("all", "--depth", help="Table depth: stage, block, sub, or all."),
        opt_level: str = typer.Option(
            "all",
            "--opt-level",
            help="ORT graph optimisation level of both passes: disable, basic, extended, all "
            "(default: what users deploy; fused nodes are mapped back to their blocks).",
        ),
        out: Path = typer.Option(None, "--out", "-o"),
        opset: int = typer.Option(17, "--opset"),
        set_: list[str] = typer.Option(
            None, "--set", help="Model override KEY=VALUE (repeatable)."
        ),
    ) -> None:
        """Per-block latency of a whole net or an .onnx file (stage / block / attention vs MLP)."""
        from edgeattn.bench import core
        from edgeattn.bench import profile as prof

        con = _console()
        _check_opt_level(opt_level)
        _check_device_early(device, None)
        settings = _settings(
            device=device,
            threads=threads,
            min_time_s=min_time,
            profile=True,
            profile_runs=runs,
            opset=opset,
            warmup=3,
            opt_level=opt_level,
        )
        out = out or _default_out("profile")
        _preflight(con, "check_profile", out=out, threads=threads, runs=runs, min_time=min_time)
        out.parent.mkdir(parents=True, exist_ok=True)
        with con.status(f"exporting {target}..."):
            run = prof.prepare_profile_run(target, img_size, settings, overrides=_parse_sets(set_))
        with con.status(
            f"measuring {target} (unprofiled pass, then {runs} profiled runs, opt level {opt_level})..."
        ):
            recs = core.run_local([run], out=out)
        rec = recs[0]
        if rec.get("status") != "ok":
            raise BenchError(f"measurement failed: {rec.get('error')}")
        for table in prof.profile_tables(rec, depth):
            con.print(table)
        for line in prof.profile_summary_lines(rec):
            con.print("  " + line)
        con.print(f"[dim]record: {out}[/]")

    @app.command("report")
    def report_cmd(
        files: list[Path] = typer.Argument(
            ..., help="JSON Lines record files (from bench, sweep, profile, remote)."
        ),
        csv_out: Path = typer.Option(None, "--csv", help="Also write all records as CSV."),
        plot: Path = typer.Option(None, "--plot"),
    ) -> None:
        """Tables (and plots) from records: devices or runs side by side."""
        from edgeattn.bench import report
        from edgeattn.runtime.records import read_records

        con = _console()
        records: list[dict] = []
        for f in files:
            if not f.is_file():
                raise BenchError(f"no such records file: {f}")
            try:
                records += read_records(
                    str(f), warn=lambda m: con.print(f"[yellow]warning:[/] {m}")
                )
            except (ValueError, OSError) as exc:
                raise BenchError(str(exc).splitlines()[0]) from None
        if not records:
            raise BenchError(f"no records in {', '.join(map(str, files))}")
        con.print(report.compare_table(records))
        if any(r.get("kind") == "paired" for r in records):
            from edgeattn.bench.sweep import ratio_compare_table

            con.print(ratio_compare_table(records))
        for dev, recs in _group_by_device(records).items():
            lines = report.summary_lines(report.bench_summary(recs), "as recorded")
            if lines:
                con.print(f"[bold]{dev}[/]")
                for line in lines:
                    con.print("  " + line)
        bad = [r for r in records if r.get("status") != "ok"]
        if bad:
            con.print(f"[yellow]{len(bad)} error record(s) not shown[/]")
        if csv_out:
            from edgeattn.runtime.records import write_atomic

            write_atomic(str(csv_out), report.to_csv(records).encode())
            con.print(f"csv: {csv_out}")
        if plot:
            from edgeattn.bench.plot import plot_records

            con.print(f"plot: {plot_records(records, plot)}")

    @app.command("env")
    def env_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
        """This device's fingerprint and the available ONNX Runtime execution providers."""
        from rich.table import Table

        from edgeattn.runtime.sysinfo import fingerprint

        fp = fingerprint()
        if as_json:
            typer.echo(json.dumps(fp, indent=2))
            return
        t = Table(title="edgeattn env", show_header=False, title_justify="left")
        for k, v in fp.items():
            t.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
        _console().print(t)


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise BenchError(f"--set {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _group_by_device(records: list[dict]) -> dict[str, list[dict]]:
    from edgeattn.bench.report import device_label

    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(device_label(r), []).append(r)
    return groups


def _check_device_early(device: str, hosts: list[str] | None) -> None:
    """Fail before exporting anything if the provider name is unknown or (locally) unavailable."""
    from edgeattn.runtime import session

    try:
        if hosts:
            session.provider_for(device)  # availability is checked on the device itself
        else:
            session.check_provider(device)
    except (session.RuntimeSpecError, session.ProviderUnavailableError) as exc:
        raise BenchError(str(exc).splitlines()[0], hint=getattr(exc, "hint", None)) from None


def _preflight(con, check: str, **kw: Any) -> None:
    """One preflight call (``edgeattn.bench.preflight.<check>``) before any export: raises
    BenchError on a bad request, prints its warnings; and remembers ``out`` for the interrupt
    message."""
    from edgeattn.bench import preflight

    for w in getattr(preflight, check)(**kw):
        con.print(f"[yellow]warning:[/] {w}")
    _INTERRUPT["out"] = kw["out"]
    _INTERRUPT["before"] = _count_records(kw["out"])


def _report_failures(records: list[dict]) -> None:
    """The failed measurements, one line each with the runtime's own message, on stderr."""
    bad = [r for r in records if r.get("status") != "ok"]
    typer.echo(f"{len(bad)} measurement(s) failed:", err=True)
    for r in bad:
        typer.echo(f"  {r.get('id')}: {r.get('error') or 'no error message'}", err=True)


# ------------------------------------------------------------------------------ Ctrl-C and SIGTERM

_INTERRUPT: dict[str, Any] = {}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


def _count_records(path: Path | None) -> int:
    if path is None or not Path(path).is_file():
        return 0
    from edgeattn.runtime.records import iter_jsonl

    try:
        return sum(1 for _ in iter_jsonl(str(path), warn=lambda m: None))
    except (OSError, ValueError):
        return 0


def _rerun_command(command: str, out: Path) -> str:
    import shlex

    from edgeattn.cli import invocation

    argv = list(invocation() or [command])
    words: list[str] = []
    skip = False
    for w in argv:
        if skip:
            skip = False
            continue
        if w in ("--out", "-o"):
            skip = True
            continue
        if w.startswith("--out=") or w == "--resume":
            continue
        words.append(w)
    words += ["--resume", "--out", str(out)]
    return "edgeattn " + " ".join(shlex.quote(w) for w in words)


def interruptible(command: str):
    """Decorator for bench/sweep/profile: SIGTERM behaves like Ctrl-C (the runtime subprocess is
    killed by run_local); either prints how many records were kept, where, and the exact
    ``--resume`` command, and exits 130 (SIGINT) or 143 (SIGTERM)."""
    import functools
    import signal

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any):
            def on_term(signum, frame):
                raise Terminated()

            _INTERRUPT.clear()
            try:
                old = signal.signal(signal.SIGTERM, on_term)
            except ValueError:  # not the main thread
                old = None
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt as exc:
                code = 143 if isinstance(exc, Terminated) else 130
                out = _INTERRUPT.get("out")
                what = "terminated" if code == 143 else "interrupted"
                if out is None:
                    typer.echo(f"{what}: nothing was measured yet", err=True)
                else:
                    kept = max(0, _count_records(out) - _INTERRUPT.get("before", 0))
                    typer.echo(
                        f"{what}: {kept} record(s) kept in {out}; rerun with: "
                        f"{_rerun_command(command, out)}",
                        err=True,
                    )
                raise typer.Exit(code) from None
            finally:
                if old is not None:
                    signal.signal(signal.SIGTERM, old)

        return run

    return wrap
