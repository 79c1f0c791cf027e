"""`sysmetrics up`: the whole pipeline on one machine, supervised, stopped cleanly on Ctrl-C.

Components run as child processes of ``sysmetrics`` itself (broker, collector, simulator,
ingest receiver, lake writer, alert evaluator, dashboard) plus the hourly scheduler in this
process. They stop in pipeline order so nothing in flight is lost: sources first, then the
writer (which flushes), then the broker.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sysmetrics.alerts.live import read_firing, summarize
from sysmetrics.config import Settings
from sysmetrics.ingest.status import grpc_address, read_ingest_status, receiver_url
from sysmetrics.lake.status import read_writer_status
from sysmetrics.logs import LOG_COPIES_KEPT
from sysmetrics.observability import MetricsEndpoint, serve_metrics
from sysmetrics.orchestration.scheduler import HourlyScheduler
from sysmetrics.orchestration.up_state import read_up_state, state_file
from sysmetrics.status_files import write_status
from sysmetrics.stream.broker import PORT_SETTINGS as BROKER_PORT_SETTINGS
from sysmetrics.stream.broker import (
    BrokerError,
    EmbeddedBroker,
    process_group_alive,
    stop_pid,
)

log = logging.getLogger(__name__)

STOP_ORDER = (
    "ingest",
    "collector",
    "simulator",
    "lake writer",
    "alert evaluator",
    "dashboard",
    "airflow",
)
"""Sources first, then the writer (which flushes what they sent), the readers last."""

AIRFLOW_LOG_SWEEP_S = 3600.0
"""How often `up` deletes Airflow's old log files (Airflow itself never does)."""


@dataclass
class Component:
    name: str
    args: list[str]
    command: list[str] | None = None  # default: this sysmetrics
    env: dict[str, str] = field(default_factory=dict)
    process_group: bool = False  # stop the whole group (Airflow forks many processes)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log_file: Path | None = None
    started_at: float = field(default_factory=time.monotonic)  # a clock no NTP step moves

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def sysmetrics_command() -> list[str]:
    return [sys.executable, "-m", "sysmetrics"]


class LocalPipeline:
    def __init__(
        self,
        settings: Settings,
        simulate_hosts: int = 0,
        history_hours: int = 0,
        collect: bool = True,
        dashboard: bool = True,
        ingest: bool = False,
        scheduler_refresh_s: float = 60.0,
        airflow: bool = False,
    ) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.log_dir = settings.data_dir / "logs"
        self.broker = EmbeddedBroker(settings.data_dir, settings.broker_port)
        self.own_broker = False
        self.components: list[Component] = []
        if collect:
            self.components.append(Component("collector", ["collect"]))
        if ingest:
            self.components.append(Component("ingest", ["ingest"]))
        if simulate_hosts:
            self.components.append(
                Component(
                    "simulator",
                    [
                        "simulate",
                        "--hosts",
                        str(simulate_hosts),
                        "--duration",
                        "30d",
                        "--speedup",
                        "1",
                        "--history",
                        f"{history_hours}h",
                    ],
                )
            )
        self.components.append(Component("lake writer", ["consume"]))
        self.components.append(Component("alert evaluator", ["alert"]))
        if dashboard:
            self.components.append(Component("dashboard", ["dashboard"]))
        if airflow:
            self.components.append(self._airflow_component())
        # With Airflow running the finished hours, the built-in scheduler only keeps the
        # current hour fresh for the dashboard.
        self.scheduler = HourlyScheduler(
            settings,
            self.stop,
            scheduler_refresh_s,
            finished_hours=not airflow,
            history_hours=history_hours if simulate_hosts else 0,
        )
        self._scheduler_thread = threading.Thread(
            target=self.scheduler.run, name="hourly-scheduler", daemon=True
        )
        self.state_file = state_file(settings.data_dir)
        self.metrics: MetricsEndpoint | None = None
        self._airflow_swept_at: float | None = None

    @classmethod
    def for_up(
        cls,
        settings: Settings,
        simulate_hosts: int,
        history_hours: int,
        demo: bool,
        collect: bool,
        dashboard: bool,
        ingest: bool,
        airflow: bool | None,
    ) -> LocalPipeline:
        """The pipeline `sysmetrics up` runs: ``demo`` flushes and refreshes faster; Airflow
        runs the finished hours when asked, or by default when its extra is installed."""
        if airflow is None:
            airflow = importlib.util.find_spec("airflow") is not None
        if demo:
            settings = settings.model_copy(update={"flush_seconds": 10.0})
        return cls(
            settings,
            simulate_hosts,
            history_hours=history_hours,
            collect=collect,
            dashboard=dashboard,
            ingest=ingest,
            scheduler_refresh_s=20.0 if demo else 60.0,
            airflow=airflow,
        )

    def server_ports(self) -> list[tuple[str, int, str]]:
        """(host, port, what to change) of each server a component starts: a port another
        process holds would make that component exit at each start, restarted for ever."""
        s = self.settings
        names = {c.name for c in self.components}
        ports = []
        if self._starts_broker():
            ports.append(("127.0.0.1", s.broker_port, BROKER_PORT_SETTINGS))
        if "dashboard" in names:
            ports.append(
                (s.dashboard_host, s.dashboard_port, "SYSMETRICS_DASHBOARD_PORT, or --no-dashboard")
            )
        if "ingest" in names:
            ports.append((s.ingest_host, s.ingest_port, "SYSMETRICS_INGEST_PORT"))
            if s.ingest_grpc_port is not None:
                ports.append((s.ingest_host, s.ingest_grpc_port, "SYSMETRICS_INGEST_GRPC_PORT"))
        if "airflow" in names:
            ports.append(("127.0.0.1", s.airflow_port, "SYSMETRICS_AIRFLOW_PORT, or --no-airflow"))
        return ports

    def take_over_leftovers(self) -> list[str]:
        """A previous `up` of this data directory that was killed (``kill -9``, a crash) left
        its components running with no one to restart or stop them, holding their ports: stop
        them, in pipeline order (the lake writer flushes on SIGTERM), and own its broker, which
        goes on serving what the stopped writer has not read. Returns what was stopped.
        Raises :class:`UpAlreadyRunning` when that `up` still runs."""
        previous = read_up_state(self.settings.data_dir)
        if previous is None:
            return []
        if previous.running:
            raise UpAlreadyRunning(
                f"`sysmetrics up` already runs for {self.settings.data_dir.resolve()} "
                f"(pid {previous.pid}): stop it first (Ctrl-C in its terminal, or kill -TERM it)"
            )
        stopped = []
        for name in STOP_ORDER:
            pid = previous.components.get(name)
            if pid is None:
                continue
            if name == "airflow":
                stop_process_group(pid)
            else:
                stop_pid(pid, timeout_s=30.0)
            stopped.append(f"{name} (pid {pid})")
        broker = self.broker.running()
        if previous.own_broker and broker is not None and broker.pid == previous.broker_pid:
            self.own_broker = True
        self.state_file.unlink(missing_ok=True)
        return stopped

    def _starts_broker(self) -> bool:
        """Whether `up` starts the embedded broker: it is the one configured, and this data
        directory's is not already running (`sysmetrics broker start`)."""
        embedded = self.settings.bootstrap_servers == self.broker.bootstrap
        return embedded and self.broker.running() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self._starts_broker():
            self.broker.start()
            self.own_broker = True
        for component in self.components:
            self._spawn(component)
        self.metrics = serve_metrics(
            "up", [self.scheduler.readings], self.settings.metrics_addr, self.settings.metrics_port
        )
        self._scheduler_thread.start()
        self._write_state()

    def _airflow_component(self) -> Component:
        home = (self.settings.data_dir / "airflow").resolve()
        bin_dir = Path(sys.executable).parent
        return Component(
            "airflow",
            ["standalone"],
            command=[str(bin_dir / "airflow")],
            env={
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).parent / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": "4",
                # Local only: no login on 127.0.0.1.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.settings.airflow_port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                    f"http://127.0.0.1:{self.settings.airflow_port}/execution/"
                ),
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            process_group=True,
        )

    def _spawn(self, component: Component) -> None:
        component.log_file = self.log_dir / f"{component.name.replace(' ', '-')}.log"
        command = component.command or sysmetrics_command()
        with component.log_file.open("ab") as out:
            component.process = subprocess.Popen(
                [*command, *component.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
                env=self._env(component),
            )
        component.started_at = time.monotonic()

    def _env(self, component: Component) -> dict[str, str]:
        env = {**os.environ, **self._child_env(), **component.env}
        # A port given to `up` is its own; each child serves /metrics on its role's default.
        if self.settings.metrics_port:
            env.pop("SYSMETRICS_METRICS_PORT", None)
        return env

    def _child_env(self) -> dict[str, str]:
        values = self.settings.masked()
        env = {}
        for name in (
            "bootstrap_servers",
            "topic",
            "data_dir",
            "lake_url",
            "warehouse_url",
            "flush_records",
            "flush_seconds",
            "sample_interval_s",
            "dashboard_host",
            "dashboard_port",
            "ingest_host",
            "ingest_port",
            "lake_compression",
            "watermark_grace_s",
            "watermark_wait_s",
            "metrics_addr",
        ):
            value = str(values[name])
            if name in ("data_dir", "lake_url", "warehouse_url") and "://" not in value:
                value = str(Path(value).resolve())  # children (Airflow tasks) run elsewhere
            env[f"SYSMETRICS_{name.upper()}"] = value
        return env

    def supervise(self) -> None:
        """Restart a component that died (with a growing delay) and keep the logs bounded;
        call this periodically."""
        self._bound_logs()
        for component in self.components:
            if component.process is not None and not component.running and not self.stop.is_set():
                code = component.process.returncode
                delay = min(30.0, 2.0**component.restarts)
                if time.monotonic() - component.started_at < delay:
                    continue
                log.warning(
                    "%s exited with %s (%s): restarting (see %s)",
                    component.name,
                    code,
                    _last_line(component.log_file) or "no output",
                    component.log_file,
                )
                component.restarts += 1
                self._spawn(component)
                self._write_state()

    def _bound_logs(self) -> None:
        """Rotate each component's log past ``up_log_max_mb``; every hour, delete Airflow's own
        log files older than ``up_airflow_log_days`` (a folder per task run, kept for ever)."""
        max_bytes = int(self.settings.up_log_max_mb * 1024 * 1024)
        if max_bytes:
            for component in self.components:
                if component.log_file is not None:
                    rotate_log(component.log_file, max_bytes)
        days = self.settings.up_airflow_log_days
        now = time.monotonic()
        due = self._airflow_swept_at is None or now - self._airflow_swept_at >= AIRFLOW_LOG_SWEEP_S
        if days and due and any(c.name == "airflow" for c in self.components):
            self._airflow_swept_at = now
            delete_old_files(self.settings.data_dir / "airflow" / "logs", days * 86400)

    def shutdown(self) -> None:
        """Stop everything in pipeline order; nothing is left running when this returns."""
        self.stop.set()
        if self.metrics is not None:
            self.metrics.close()
        for name in STOP_ORDER:
            for component in self.components:
                if component.name == name and component.process is not None:
                    if component.process_group:
                        stop_process_group(component.process.pid, component.process.poll)
                    elif component.running:
                        component.process.send_signal(signal.SIGTERM)
                        try:
                            component.process.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            stop_pid(component.process.pid, timeout_s=1)
                    component.process.wait()
        if self._scheduler_thread.ident is not None:  # a start that failed never began it
            self._scheduler_thread.join(timeout=60)
        if self.own_broker:
            self.broker.stop()
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        broker = self.broker.running()
        state = {
            "pid": os.getpid(),
            "broker_pid": broker.pid if broker else None,
            "own_broker": self.own_broker,
            "components": {c.name: c.pid for c in self.components},
        }
        write_status(self.state_file, state)  # atomic: `status` and tests read it any time

    # ------------------------------------------------------------------ status
    def rows(self) -> list[tuple[str, str, str]]:
        """(component, state, detail) for the live status table."""
        out = []
        broker = self.broker.running()
        out.append(("broker", "running" if broker else "external", self.settings.bootstrap_servers))
        writer_stats = read_writer_status(self.settings.data_dir)
        receivers = {r.pid: r for r in read_ingest_status(self.settings.data_dir)}
        for c in self.components:
            state = (
                "running" if c.running else f"exited ({c.process.returncode})" if c.process else "-"
            )
            detail = f"pid {c.pid}" + (f", {c.restarts} restarts" if c.restarts else "")
            if c.name == "lake writer" and writer_stats:
                s = writer_stats[0]
                detail += f", {s.records} records, {s.files} files, {s.quarantined} quarantined"
            if c.name == "dashboard":
                detail += f", http://{self.settings.dashboard_host}:{self.settings.dashboard_port}"
            if c.name == "alert evaluator" and (live := read_firing(self.settings)):
                detail += ", " + "; ".join(summarize(live, datetime.now(UTC)))
            if c.name == "ingest":
                url = receiver_url(self.settings)
                detail += f", {url}/api/v1/write, {url}/v1/metrics"
                if (grpc := grpc_address(self.settings)) is not None:
                    detail += f", OTLP/gRPC {grpc}"
                if (receiver := receivers.get(c.pid or -1)) is not None:
                    detail += f", {receiver.accepted} requests taken, {receiver.events} events"
            out.append((c.name, state, detail))
        sched = self.scheduler
        detail = f"{sched.runs} runs" + (f", error: {sched.last_error}" if sched.last_error else "")
        if sched.history_progress:
            detail += f", {sched.history_progress}"
        if sched.last_hour_done:
            # Its run after the hour ended, not "complete" as `status` says of the warehouse
            # (an hour whose data is all in): an hour before the first sample is run too.
            detail += f", last ended hour run {sched.last_hour_done:%Y-%m-%dT%H}Z"
        out.append(
            ("hourly job", "running" if self._scheduler_thread.is_alive() else "stopped", detail)
        )
        return out


def run_live(pipeline: LocalPipeline, run_for: float | None = None) -> None:
    """Start ``pipeline``, supervise it with a live status table until Ctrl-C / SIGTERM (or
    ``run_for`` seconds), then stop every component cleanly."""
    from rich.live import Live
    from rich.table import Table

    from sysmetrics.terminal import as_is

    stopping: list[int] = []  # a plain flag: a signal handler must not take a lock
    # SIGHUP: the terminal went away (a dropped SSH session); it ended `up` at once and left
    # every component running unsupervised. Under `nohup` (SIGHUP ignored) `up` runs on.
    hangup = getattr(signal, "SIGHUP", None)
    heeded = [hangup] if hangup is not None and signal.getsignal(hangup) == signal.SIG_DFL else []
    for signum in (signal.SIGINT, signal.SIGTERM, *heeded):
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    try:
        pipeline.start()
    except BrokerError:
        pipeline.shutdown()
        raise

    def table() -> Table:
        t = Table(title="sysmetrics up  (Ctrl-C stops everything)", expand=False)
        for column in ("component", "state", "detail"):
            t.add_column(column)
        for row in pipeline.rows():  # a component's last log line is in it
            t.add_row(*map(as_is, row))
        return t

    started = time.monotonic()
    try:
        with Live(table(), refresh_per_second=1, transient=False) as live:
            while not stopping:
                if run_for is not None and time.monotonic() - started >= run_for:
                    break
                pipeline.supervise()
                live.update(table())
                time.sleep(1.0)
    finally:
        print(
            "stopping: collector, simulator, lake writer (flushing), dashboard, broker…", flush=True
        )
        pipeline.shutdown()


def stop_process_group(
    pgid: int, reap: Callable[[], object] = lambda: None, grace_s: float = 20.0
) -> None:
    """Airflow standalone: SIGINT to the group, wait, then SIGTERM and SIGKILL the group
    (SIGTERM alone leaves its children running). ``pgid`` is the leader's pid (started in a
    session of its own); ``reap`` collects the leader when it is our child."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            reap()
            if not process_group_alive(pgid):
                return
            time.sleep(0.2)


def rotate_log(log_file: Path, max_bytes: int, copies: int = LOG_COPIES_KEPT) -> bool:
    """Once ``log_file`` holds more than ``max_bytes``: its copies shift (``.1`` to ``.2`` …,
    the oldest dropped), it is copied to ``.1`` and emptied. Copied, not renamed: the component
    keeps writing to its open descriptor, in append mode, so its next line lands at the start of
    the emptied file. A line written between the copy's last read and the emptying is lost, as
    with logrotate's ``copytruncate``; the copy reads again just before to keep that short."""
    try:
        if log_file.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(copies - 1, 0, -1):
        older = log_file.with_name(f"{log_file.name}.{n}")
        if older.exists():
            older.replace(log_file.with_name(f"{log_file.name}.{n + 1}"))
    with log_file.open("rb") as source, log_file.with_name(f"{log_file.name}.1").open("wb") as copy:
        shutil.copyfileobj(source, copy)
        copy.write(source.read())  # what the component wrote during the copy
        os.truncate(log_file, 0)
    return True


def delete_old_files(folder: Path, older_than_s: float) -> int:
    """Delete the files under ``folder`` last written more than ``older_than_s`` ago, and the
    folders left empty for over an hour (a younger one may be a task run's, about to get its
    log); returns how many files went."""
    now = time.time()
    deleted = 0
    for path in sorted(folder.rglob("*"), reverse=True):  # a folder's entries before it
        try:
            age = now - path.stat().st_mtime
            if path.is_dir():
                if age > AIRFLOW_LOG_SWEEP_S and not any(path.iterdir()):
                    path.rmdir()
            elif age > older_than_s:
                path.unlink()
                deleted += 1
        except OSError:
            continue  # gone meanwhile, or in use: the next sweep sees it again
    return deleted


class UpAlreadyRunning(RuntimeError):
    """Another `sysmetrics up` runs for this data directory."""


def _last_line(log_file: Path | None) -> str:
    """The last line a component wrote to its log: usually why it exited."""
    if log_file is None:
        return ""
    try:
        with log_file.open("rb") as fh:
            fh.seek(max(0, log_file.stat().st_size - 4096))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""
