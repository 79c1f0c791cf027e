"""`sysmetrics status`: the health of each component of this machine's pipeline, as lines: the
broker, the lake writers and ingest receivers (from their status files), the alert evaluators
(from their live files), the warehouse's last hour and the hosts its data-quality checks
flagged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sysmetrics.alerts.live import read_firing, summarize
from sysmetrics.config import Settings
from sysmetrics.ingest.status import read_ingest_status
from sysmetrics.lake.status import read_writer_status
from sysmetrics.orchestration.up_state import read_up_state
from sysmetrics.stream.admin import under_replicated
from sysmetrics.stream.broker import EmbeddedBroker

if TYPE_CHECKING:  # the warehouse extra may be missing: status then says so
    from sysmetrics.warehouse.base import Warehouse


def report(settings: Settings) -> Iterator[str]:
    yield from _data_dir(settings)
    yield from _up(settings)
    info = EmbeddedBroker(settings.data_dir, settings.broker_port).running()
    yield (
        f"broker       {'running pid ' + str(info.pid) if info else 'not running (embedded)'}"
        f"  {settings.bootstrap_servers}"
    )
    try:
        lagging = under_replicated(settings)
        if lagging:
            yield (
                f"replication  {len(lagging)} partitions below their replicas: "
                + ", ".join(lagging)
            )
    except (ConnectionError, PermissionError) as exc:
        yield f"kafka        unreachable: {exc}"
    yield from _writers(settings)
    yield from ingest_receivers(settings)
    yield from alert_evaluators(settings)
    from sysmetrics.warehouse import NoWarehouseYet, open_warehouse, sql

    try:
        wh = open_warehouse(settings, read_only=True)
        try:
            last = wh.rows(sql.LAST_COMPLETE_HOUR)[0]["hour"]
            latest = wh.rows(sql.LATEST_SAMPLE)[0]["ts"]
            yield f"warehouse    last complete hour {last or '-'}, newest sample {latest or '-'}"
            yield from flagged_hosts(wh)
        finally:
            wh.close()
    except NoWarehouseYet as exc:
        yield f"warehouse    {exc}"
    except Exception as exc:
        yield f"warehouse    unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]})"


def _data_dir(settings: Settings) -> Iterator[str]:
    """Where this status reads from, said only when nothing is there: run in another folder
    than the pipeline's (the default ``./data`` is relative), every line said "not running"."""
    if settings.data_dir.exists():
        return
    yield (
        f"data dir     {settings.data_dir.absolute()} does not exist: the pipeline keeps its "
        "files in the folder `up` (or `consume`, `collect`) was started in; run status there, "
        "or set SYSMETRICS_DATA_DIR"
    )


def _up(settings: Settings) -> Iterator[str]:
    """`sysmetrics up`, when one ran here: whether it runs, and components a killed one left
    running unsupervised (nothing restarts them; the next `up` stops them first)."""
    state = read_up_state(settings.data_dir)
    if state is None:
        return
    components = ", ".join(f"{name} {pid}" for name, pid in state.components.items())
    if state.running:
        yield f"up           running pid {state.pid}: {components or 'no component running'}"
    elif components:
        yield (
            f"up           not running (pid {state.pid} ended without stopping its "
            f"components): {components} run unsupervised; `sysmetrics up` stops them first"
        )


def _writers(settings: Settings) -> Iterator[str]:
    writers = read_writer_status(settings.data_dir)
    if not writers:
        yield "lake writer  not running"
    for w in writers:
        lag = w.total_lag if w.total_lag is not None else "?"
        yield (
            f"lake writer  pid {w.pid} partitions {w.assigned}: {w.records} records, "
            f"{w.files} files, {w.quarantined} quarantined, {w.commit_failures} commit "
            f"failures, lag ~{lag}, last file {w.last_file or '-'}"
        )
        if w.clock_ahead or w.late_files:
            yield (
                f"             {w.clock_ahead} events ahead of their arrival (a host clock is "
                f"wrong), {w.late_files} files into hours beyond the look-back"
            )


def ingest_receivers(settings: Settings) -> Iterator[str]:
    """The `sysmetrics ingest` receivers of this data dir (nothing when none runs: most
    machines do not run one)."""
    now = time.time()
    for r in read_ingest_status(settings.data_dir):
        last = "none yet" if r.last_request_at is None else f"{now - r.last_request_at:.0f} s ago"
        where = r.url if r.grpc is None else f"{r.url} and gRPC {r.grpc}"
        yield (
            f"ingest       pid {r.pid} {where}: {r.accepted} requests taken, {r.refused} "
            f"refused (4xx), {r.failed} answered 5xx (the sender retries), last request {last}"
        )
        yield (
            f"             {r.events} events, {r.hosts_retired} hosts retired, "
            f"{r.pending_samples} samples assembling, {r.spool_depth} events in the spool "
            f"waiting for Kafka (status {now - r.updated_at:.0f} s old)"
        )


def alert_evaluators(settings: Settings) -> Iterator[str]:
    """What the alert evaluators on this machine page now, from their live files."""
    live = read_firing(settings)
    if live is None:
        yield "alert        not running here"
        return
    first, *more = summarize(live, datetime.now(UTC))
    yield f"alert        {first}"
    for line in more:
        yield f"             {line}"


def flagged_hosts(wh: Warehouse) -> Iterator[str]:
    """Hosts whose data was odd in the last 24 h; duplicates by name, the rest counted."""
    from sysmetrics.warehouse import sql

    since = datetime.now(UTC) - timedelta(hours=24)
    flagged = wh.rows(sql.FLAGGED_HOSTS, since=since, anomaly="", host="")
    for f in flagged:
        if f["anomaly"] == "duplicate_host_id":
            yield (
                f"duplicate id {f['host_id']!r}: about {f['value']:.0f} machines ({f['detail']}), "
                f"{f['hours']} h in the last 24 h"
            )
    others: dict[str, int] = {}
    for f in flagged:
        if f["anomaly"] != "duplicate_host_id":
            others[f["anomaly"]] = others.get(f["anomaly"], 0) + 1
    if others:
        counts = ", ".join(f"{n} {anomaly}" for anomaly, n in sorted(others.items()))
        yield f"data quality hosts flagged in the last 24 h: {counts} (see host_data_quality)"
