"""The ingest receiver's status file: each running `sysmetrics ingest` publishes where it
stands in the data dir, and `sysmetrics status` reads it (no HTTP, no token: the receiver's
`/metrics` may need one). Light on purpose: no web server, no Kafka client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from sysmetrics import status_files

if TYPE_CHECKING:
    from sysmetrics.config import Settings

STATUS_EVERY_S = 5.0
"""How often a running receiver rewrites its status file."""


class IngestStatus(msgspec.Struct, kw_only=True):
    pid: int
    process_start: str | None = None
    """The receiver process's :func:`~sysmetrics.status_files.process_start`."""
    url: str
    topic: str
    grpc: str | None = None
    """Where it takes OTLP over gRPC (host:port; None: it does not). Since 2026-12-04."""
    started_at: float
    updated_at: float
    accepted: int = 0
    """Requests answered 2xx (their events durable)."""
    refused: int = 0
    """Payloads refused with a 4xx (never retried by the sender)."""
    failed: int = 0
    """Requests answered 5xx (the sender retries them)."""
    events: int = 0
    hosts_retired: int = 0
    pending_samples: int = 0
    """Samples being assembled (journaled, not emitted yet)."""
    spool_depth: int = 0
    """Events in the spool that Kafka has not acknowledged."""
    last_request_at: float | None = None


def receiver_url(settings: Settings) -> str:
    """Where the receiver these settings start listens (its write paths follow)."""
    scheme = "https" if settings.ingest_tls_cert is not None else "http"
    return f"{scheme}://{_bracketed(settings.ingest_host)}:{settings.ingest_port}"


def grpc_address(settings: Settings) -> str | None:
    """Where the receiver these settings start takes OTLP over gRPC (None: it does not)."""
    if settings.ingest_grpc_port is None:
        return None
    return f"{_bracketed(settings.ingest_host)}:{settings.ingest_grpc_port}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def status_path(data_dir: Path, pid: int) -> Path:
    """Where the receiver with process id ``pid`` publishes its status."""
    return status_files.status_path(data_dir, "ingest", pid)


def read_ingest_status(data_dir: Path) -> list[IngestStatus]:
    """The status of every live receiver of this data dir (a dead one's file is skipped)."""
    return status_files.read_statuses(data_dir, "ingest", IngestStatus)


def remove_dead_receivers(data_dir: Path) -> None:
    """Delete the status files of receivers that are gone (see status_files.remove_dead)."""
    status_files.remove_dead(data_dir, "ingest", IngestStatus)
