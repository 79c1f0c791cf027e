"""bqemulator (a DuckDB-backed BigQuery REST emulator) as a real process, in its own venv."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from sysmetrics.stream.broker import stop_pid
from tests.support.ports import free_port

BINARY = Path(__file__).resolve().parents[2] / ".bqemu" / "bin" / "bqemulator"


class BigQueryEmulator:
    def __init__(self, gcs_root: Path, log_file: Path, project: str = "test-proj") -> None:
        self.project = project
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.gcs_root = gcs_root
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self) -> None:
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BINARY),
                    "start",
                    "--rest-host",
                    "127.0.0.1",
                    "--rest-port",
                    str(self.rest_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--project",
                    self.project,
                ],
                env={**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(self.gcs_root)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"bqemulator did not start; see {self.log_file}")

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, timeout_s=10)
            self.process = None
