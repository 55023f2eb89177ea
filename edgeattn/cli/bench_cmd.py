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
    records: list[dict] = []
    with con.status("measuring...") as st:
        for i, job in enumerate(jobs, 1):
            st.update(f"measuring {job.id} ({i}/{len(jobs)})")
            records += core.run_local([core.job_run_spec(job, settings)], out=out, resume=resume)
    return records


def register(app: typer.Typer) -> None:
    @app.command("bench")
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
        as_json: bool = typer.Option(
            False, "--json", help="Print the summary as JSON instead of tables."
        ),
    ) -> None:
        """Exp vs l1: time single attention blocks (softmax, SimA at fixed and dynamic order, SOFT, XCA, ORT fused softmax)."""
        from edgeattn.bench import core, report

        con = _console()
        shape = core.Shape(tokens, dim, heads, batch)
        names = core.parse_methods(methods)
        settings = _settings(
            device=device,
            threads=threads,
            warmup=warmup,
            min_runs=min_runs,
            min_time_s=min_time,
            max_time_s=max_time,
            profile=profile,
            opset=opset,
        )
        _check_device_early(device, host)
        out = out or _default_out("bench")
        jobs = [core.Job(core.METHODS[m], shape) for m in names]
        remote_opts = {}
        if host:
            from edgeattn.cli.remote_cmd import _ssh_options
            from edgeattn.remote.ssh import SSHOptions

            remote_opts = dict(
                ssh=_ssh_options(
                    ssh_option,
                    identity,
                    ssh_config,
                    accept_new_host_key,
                    SSHOptions.connect_timeout,
                    None,
                ),
                remote_python=remote_python,
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
        if as_json:
            typer.echo(
                json.dumps({"shape": shape_s, "out": str(out), "summary": summaries}, indent=2)
            )
        else:
            con.print(
                f"[dim]records: {out}  (medians of one run on a possibly shared machine; "
                "cv > 10% is flagged with !)[/]"
            )
        if plot:
            from edgeattn.bench.plot import plot_records

            con.print(f"plot: {plot_records(records, plot, title=shape_s)}")
        if any(r.get("status") != "ok" for r in records):
            raise typer.Exit(3)

    @app.command("sweep")
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
        )
        out = out or _default_out("sweep")
        out.parent.mkdir(parents=True, exist_ok=True)
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
        records: list[dict] = []
        with Progress(console=con, transient=True) as prog:
            task = prog.add_task("export", total=len(uniq))
            prepared = []
            for j in uniq:
                prog.update(task, description=f"export {j.id}")
                prepared += core.prepare([j], settings)
                prog.advance(task)
            task = prog.add_task("measure", total=len(prepared))
            for j in prepared:
                prog.update(task, description=f"measure {j.id}")
                records += core.run_local([core.job_run_spec(j, settings)], out=out, resume=resume)
                prog.advance(task)
        if resume:
            from edgeattn.runtime.records import read_jsonl

            records = [r for r in read_jsonl(out) if r.get("id") in seen]
        con.print(report.compare_sweep_table(records))
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

    @app.command("profile")
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
        _check_device_early(device, None)
        settings = _settings(
            device=device,
            threads=threads,
            min_time_s=min_time,
            profile=True,
            profile_runs=runs,
            opset=opset,
            warmup=3,
        )
        out = out or _default_out("profile")
        out.parent.mkdir(parents=True, exist_ok=True)
        with con.status(f"exporting {target}..."):
            run = prof.prepare_profile_run(target, img_size, settings, overrides=_parse_sets(set_))
        with con.status(f"measuring {target} (unprofiled pass, then {runs} profiled runs)..."):
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
        from edgeattn.runtime.records import read_jsonl

        con = _console()
        records: list[dict] = []
        for f in files:
            if not f.is_file():
                raise BenchError(f"no such records file: {f}")
            records += read_jsonl(f)
        if not records:
            raise BenchError(f"no records in {', '.join(map(str, files))}")
        con.print(report.compare_table(records))
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
