"""Where `sysmetrics status`, `up` and the receiver's log say it listens."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
