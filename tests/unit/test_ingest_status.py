"""Where `sysmetrics status`, `up` and the receiver's log say it listens."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from sysmetrics.config import Settings
from sysmetrics.ingest.status import IngestStatus, grpc_address, receiver_url, status_path
from sysmetrics.status_files import write_status


def test_the_receivers_url_names_its_scheme_and_brackets_an_ipv6_address(tmp_path: Path) -> None:
    assert receiver_url(Settings(ingest_port=4318)) == "http://127.0.0.1:4318"
    tls = {"ingest_tls_cert": tmp_path / "c.pem", "ingest_tls_key": tmp_path / "k.pem"}
    assert receiver_url(Settings(ingest_host="0.0.0.0", **tls)) == "https://0.0.0.0:4318"
    assert receiver_url(Settings(ingest_host="::", ingest_port=9)) == "http://[::]:9"


def test_the_grpc_address_is_there_only_when_a_port_is_set() -> None:
    assert grpc_address(Settings()) is None
    assert grpc_address(Settings(ingest_grpc_port=4317)) == "127.0.0.1:4317"
    assert grpc_address(Settings(ingest_host="::", ingest_grpc_port=4317)) == "[::]:4317"


def test_status_names_the_grpc_port_of_a_receiver_that_has_one(tmp_path: Path) -> None:
    from sysmetrics.orchestration.health import ingest_receivers

    settings = Settings(data_dir=tmp_path)
    now = time.time()
    for pid, grpc in ((os.getpid(), "127.0.0.1:4317"), (os.getppid(), None)):
        status = IngestStatus(
            pid=pid,
            url="http://127.0.0.1:4318",
            topic="t",
            grpc=grpc,
            started_at=now,
            updated_at=now,
        )
        write_status(status_path(tmp_path, pid), status)
    lines = [line for line in ingest_receivers(settings) if "pid" in line]
    assert sorted(line.split(": ", 1)[0] for line in lines) == sorted(
        [
            f"ingest       pid {os.getpid()} http://127.0.0.1:4318 and gRPC 127.0.0.1:4317",
            f"ingest       pid {os.getppid()} http://127.0.0.1:4318",
        ]
    ), lines


_STATUS_ON_A_FULL_DISK = """
import resource, sys
from pathlib import Path
from sysmetrics.ingest.status import IngestStatus
from sysmetrics.status_files import write_status

path = Path(sys.argv[1])
def status(events):
    return IngestStatus(pid=1, url="u", topic="t", started_at=0.0, updated_at=0.0, events=events)
write_status(path, status(1))
# Files may grow to half the status: the next one is cut short by the kernel (EFBIG), as a full
# disk cuts a write.
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size // 2, resource.RLIM_INFINITY))
try:
    write_status(path, status(2))
except OSError as exc:
    print("refused", exc.errno)
"""


def test_a_status_file_the_disk_refuses_leaves_the_last_one_whole(tmp_path: Path) -> None:
    """The receiver's status file on a full disk (a real file-size limit): the write is refused
    (the receiver logs it once and goes on), `sysmetrics status` still reads the last status
    whole, and no temporary file is left behind; once there is room the next write replaces
    it."""
    path = status_path(tmp_path, 1)
    done = subprocess.run(
        [sys.executable, "-c", _STATUS_ON_A_FULL_DISK, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", str(errno.EFBIG)]
    assert msgspec.json.decode(path.read_bytes(), type=IngestStatus).events == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    write_status(
        path, IngestStatus(pid=1, url="u", topic="t", started_at=0, updated_at=0, events=3)
    )
    assert msgspec.json.decode(path.read_bytes(), type=IngestStatus).events == 3
