"""The hourly job as a library: load → checks → aggregate → host data quality → trends →
alerts, for hour H.

Each step is idempotent for its hour (delete-and-insert of that hour), so re-running an hour,
running hours out of order, or a backfill all give the same tables. A run for H also looks back
``lookback_hours``: any earlier hour whose lake partition has files the ledger has not seen
(late data) is reloaded and recomputed; older hours that the lake writer marked as receiving
late files are loaded too, and reported.

What fails a run is only what a broken pipeline produces (rows outside their hour, negative
rates after reset handling, rows lost between tables). An odd host (two machines behind one id,
another sample interval, a wrong clock, counters going backwards) is aggregated like every other
and flagged in ``host_data_quality``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sysmetrics.config import Settings
from sysmetrics.lake.catalog import (
    complete_before,
    complete_hours,
    delete_manifest_folder,
    late_markers,
    manifest_folders,
    read_manifests,
    read_watermarks,
)
from sysmetrics.lake.compaction import (
    Compacted,
    Verification,
    compact_hour,
    curated_uri,
    current_manifest,
    ensure_unchanged,
    hours_between,
    lacking,
    lake_files_explained,
    last_prunable_hour,
    prune_hour,
    prune_quarantine,
    raw_files,
)
from sysmetrics.lake.store import LakeStore
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.base import Warehouse

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)


class DataQualityError(RuntimeError):
    """An hour's aggregates broke an invariant; the run fails loudly instead of publishing."""


@dataclass
class HourResult:
    hour: datetime
    complete: bool = True
    files: int = 0
    rows: int = 0
    recomputed: list[datetime] = field(default_factory=list)
    beyond_lookback: list[datetime] = field(default_factory=list)
    """Hours older than the look-back window that received late files and were reloaded."""
    read: int = 0
    """The hour's files read by this run (all of them on a first load or a rebuild)."""
    added: int = 0
    """Rows those files added to the hour."""
    late_read: int = 0
    """Files of other hours (late data) read by this run."""
    hosts_recomputed: dict[datetime, int | None] = field(default_factory=dict)
    """Per recomputed hour, how many hosts were aggregated again (None: all)."""


# ---------------------------------------------------------------------------- watermark
def wait_for_watermark(
    store: LakeStore, topic: str, until: datetime, timeout_s: float, poll_s: float = 5.0
) -> bool:
    """Wait until the lake is complete up to ``until``; False when ``timeout_s`` ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        complete = complete_before(store, topic)
        if complete is not None and complete >= until:
            return True
        if time.monotonic() >= deadline:
            log.warning(
                "lake complete only up to %s, not %s: running a partial hour", complete, until
            )
            return False
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------------- steps
def ledger(wh: Warehouse, hour: datetime) -> set[str]:
    rows = wh.rows(sql.LEDGER, start=hour)
    return {row["file"] for row in rows}


@dataclass
class HourLoad:
    """One hour's load: its lake files, the ones read now, and the rows they added."""

    files: int
    read: int
    added: int
    rebuilt: bool
    hosts: frozenset[str] | None = frozenset()
    """Hosts whose rows may have changed; None: any host (a rebuild, or files loaded by a run
    that crashed before computing the hour)."""


@dataclass(frozen=True)
class HourScope:
    """An hour to compute, and for which of its hosts: aggregates are per host, so rows new
    to some hosts recompute those hosts only."""

    hour: datetime
    hosts: frozenset[str] | None = None
    """Hosts aggregated again; None: every host of the hour."""
    judge_all: bool = False
    """Judge every host's alerts again, whatever ``hosts`` is (the run's own hour: it may have
    finished since, which the completeness and silent-host rules depend on)."""

    @property
    def alert_hosts(self) -> frozenset[str] | None:
        return None if self.judge_all else self.hosts

    def to_json(self) -> dict[str, Any]:
        hosts = None if self.hosts is None else sorted(self.hosts)
        return {"hour": self.hour.isoformat(), "hosts": hosts, "judge_all": self.judge_all}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HourScope:
        hosts = None if data["hosts"] is None else frozenset(data["hosts"])
        return cls(datetime.fromisoformat(data["hour"]), hosts, bool(data["judge_all"]))


def _widen(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def _execute_scoped(
    wh: Warehouse, statement: str, hosts: frozenset[str] | None, **params: Any
) -> None:
    """Run a per-host statement for the hosts in scope (nothing to do for none)."""
    if hosts is not None and not hosts:
        return
    wh.execute(sql.scoped(statement, hosts is None), hosts=sorted(hosts or ()), **params)


def load(
    wh: Warehouse,
    store: LakeStore,
    topic: str,
    hour: datetime,
    rebuild: bool = False,
    candidates: list[str] | None = None,
) -> HourLoad:
    """Bring hour's raw rows up to date with its lake files.

    Incremental by default: only files the ledger has not seen are read (among
    ``candidates`` when the manifests named them, else the hour's listing), and an event
    already in the table is never doubled. From scratch (every file read again, the hour
    replaced) when asked, on the hour's first load, or when listed files the ledger knows
    have left the lake. Raises :class:`LakeFileUnreadable` for a line no load can take."""
    with lake_files_explained():
        return _load(wh, store, topic, hour, rebuild, candidates)


def _load(
    wh: Warehouse,
    store: LakeStore,
    topic: str,
    hour: datetime,
    rebuild: bool,
    candidates: list[str] | None,
) -> HourLoad:
    if not store.is_local:
        wh.use_filesystem(store.fs)
    known = ledger(wh, hour)
    if candidates is not None and known and not rebuild:
        new = sorted({f for f in candidates if f.rsplit("/", 1)[-1] not in known})
        # A named file already in the ledger: a run loaded it and crashed before computing
        # the hour, so which hosts changed is unknown.
        repair = len(new) < len(set(candidates))
        if not new:
            return HourLoad(len(known), 0, 0, rebuilt=False, hosts=None if repair else frozenset())
        appended = wh.append_files(
            hour, [store.uri(f) for f in new], [f.rsplit("/", 1)[-1] for f in new]
        )
        hosts = None if repair else appended.hosts
        return HourLoad(len(known) + len(new), len(new), appended.rows, False, hosts)
    files = raw_files(store, topic, hour)
    names = {f: f.rsplit("/", 1)[-1] for f in files}
    listed = set(names.values())
    if rebuild or not known or not known <= listed:
        # From scratch: the curated Parquet of the hour when there is one (its raw files may
        # be pruned), plus the raw files that arrived after it.
        curated = current_manifest(store, topic, hour)
        compacted = set(curated.sources) if curated else set()
        if rebuild or not known or not known <= listed | compacted:
            if curated is not None:
                ensure_unchanged(store, topic, curated)
            extra = [f for f in files if names[f] not in compacted]
            rows = wh.load_hour(
                hour,
                [store.uri(f) for f in extra],
                curated_uri(store, topic, curated) if curated else None,
                lacking(curated) if curated else (),
            )
            wh.execute(sql.delete_hour("loaded_files"), start=hour)
            wh.execute(sql.RECORD_LOADED_FILES, start=hour, files=sorted(listed | compacted))
            read = len(extra) + (curated is not None)
            return HourLoad(len(listed | compacted), read, rows, rebuilt=True, hosts=None)
    new = [f for f in files if names[f] not in known]
    if not new:
        return HourLoad(len(files), 0, 0, rebuilt=False)
    appended = wh.append_files(hour, [store.uri(f) for f in new], [names[f] for f in new])
    return HourLoad(len(files), len(new), appended.rows, False, appended.hosts)


def _check(wh: Warehouse, checks: dict[str, str], scope: HourScope) -> None:
    if scope.hosts is not None and not scope.hosts:
        return
    failures = {
        name: bad
        for name, check in checks.items()
        if (
            bad := wh.scalar(
                sql.scoped(check, scope.hosts is None),
                start=scope.hour,
                hosts=sorted(scope.hosts or ()),
            )
        )
    }
    if failures:
        detail = "; ".join(f"{name}: {count} rows" for name, count in failures.items())
        raise DataQualityError(
            f"hour {scope.hour:%Y-%m-%dT%H}Z failed data-quality checks: {detail}"
        )


def check_raw(wh: Warehouse, scopes: list[HourScope]) -> None:
    for scope in scopes:
        _check(wh, sql.RAW_CHECKS, scope)


def aggregate(wh: Warehouse, scopes: list[HourScope], default_interval_s: float) -> None:
    """Hourly aggregates, then the checks they must pass before anyone reads them.
    ``default_interval_s``: the interval of hosts whose collector does not declare one."""
    for scope in scopes:
        _execute_scoped(wh, sql.delete_hosts("hourly"), scope.hosts, start=scope.hour)
        _execute_scoped(
            wh, sql.AGGREGATE, scope.hosts, start=scope.hour, default_interval_s=default_interval_s
        )
        _check(wh, sql.AGGREGATE_CHECKS, scope)


def host_quality(wh: Warehouse, scopes: list[HourScope], settings: Settings) -> None:
    """Flag hosts whose data is odd (duplicate ids, clock skew...) in ``host_data_quality``."""
    for scope in scopes:
        _execute_scoped(wh, sql.delete_hosts("quality"), scope.hosts, start=scope.hour)
        _execute_scoped(
            wh,
            sql.HOST_QUALITY,
            scope.hosts,
            start=scope.hour,
            default_interval_s=settings.sample_interval_s,
            skew_tolerance_s=settings.clock_skew_tolerance_s,
        )


def trends(wh: Warehouse, scopes: list[HourScope]) -> None:
    for scope in scopes:
        _execute_scoped(wh, sql.delete_hosts("trends"), scope.hosts, start=scope.hour)
        _execute_scoped(wh, sql.TRENDS, scope.hosts, start=scope.hour)


HOURLY_FROM_RULES = {
    "alert_cpu_p95_pct": "cpu_pct",
    "alert_disk_used_pct": "disk_used_pct",
    "alert_temperature_celsius": "temperature_max_celsius",
    "alert_battery_health_pct": "battery_health_pct",
}
"""Hourly thresholds that the stream rules also define: one source of truth (the rules file),
unless the SYSMETRICS_ALERT_* variable is set, which then wins, said once in the log."""


def hourly_thresholds(settings: Settings) -> dict[str, float]:
    from sysmetrics.alerts.rules import load_rules

    rules = load_rules(settings.alert_rules)
    thresholds = {}
    for setting, metric in HOURLY_FROM_RULES.items():
        ruled = next(
            (r.threshold for r in rules if r.metric == metric and r.threshold is not None), None
        )
        if setting in settings.model_fields_set or ruled is None:
            thresholds[setting] = float(getattr(settings, setting))
            if ruled is not None and float(ruled) != thresholds[setting]:
                log.info(
                    "%s=%s overrides the rules' %s threshold %s for the hourly alerts",
                    f"SYSMETRICS_{setting.upper()}",
                    thresholds[setting],
                    metric,
                    ruled,
                )
        else:
            thresholds[setting] = float(ruled)
    return thresholds


def hourly_for_ms(settings: Settings) -> dict[str, int]:
    """The `for` of the stream rules the hourly disk_full and temperature_high answer for
    (DiskFull, HighTemperature: the first rule on the metric with ">"); 0 without one."""
    from sysmetrics.alerts.rules import load_rules

    rules = load_rules(settings.alert_rules)
    out = {}
    for metric in ("disk_used_pct", "temperature_max_celsius"):
        rule = next((r for r in rules if r.metric == metric and r.op == ">"), None)
        out[metric] = int(rule.for_.total_seconds() * 1000) if rule is not None else 0
    return out


def alert_params(settings: Settings) -> dict[str, Any]:
    thresholds = hourly_thresholds(settings)
    held_for = hourly_for_ms(settings)
    return {
        "cpu_p95": thresholds["alert_cpu_p95_pct"],
        "disk_pct": thresholds["alert_disk_used_pct"],
        "disk_for_ms": held_for["disk_used_pct"],
        "temperature": thresholds["alert_temperature_celsius"],
        "temperature_for_ms": held_for["temperature_max_celsius"],
        "battery_health": thresholds["alert_battery_health_pct"],
        "completeness": settings.alert_completeness_pct,
        "zscore": settings.alert_zscore,
        "skew_tolerance_s": settings.clock_skew_tolerance_s,
    }


def alerts(wh: Warehouse, scopes: list[HourScope], settings: Settings) -> None:
    params = alert_params(settings)
    for scope in scopes:
        hosts = scope.alert_hosts
        _execute_scoped(wh, sql.delete_hosts("alerts"), hosts, start=scope.hour)
        finished = scope.hour + HOUR <= datetime.now(UTC)
        _execute_scoped(wh, sql.ALERTS, hosts, start=scope.hour, hour_finished=finished, **params)


# ---------------------------------------------------------------------------- the run
def _computed(wh: Warehouse, hour: datetime) -> bool:
    return bool(wh.scalar(sql.HOUR_AGGREGATED, start=hour))


def hours_with_new_files(
    wh: Warehouse, store: LakeStore, topic: str, hour: datetime, lookback_hours: int
) -> list[datetime]:
    """Earlier hours in the look-back window whose lake files differ from the ledger."""
    late = []
    for back in range(lookback_hours, 0, -1):
        earlier = hour - back * HOUR
        names = {f.rsplit("/", 1)[-1] for f in raw_files(store, topic, earlier)}
        if names != ledger(wh, earlier):
            late.append(earlier)
    return late


MANIFESTS_KEPT = timedelta(days=7)
"""Manifest folders older than this, once loaded, are deleted (the lake writer's rounds)."""


@dataclass
class NewFiles:
    """What the lake writers' round manifests name that this warehouse has not loaded."""

    by_hour: dict[datetime, list[str]] = field(default_factory=dict)
    """Data files by event hour (some may be in the ledger already, after a crash)."""
    manifests: list[tuple[str, str]] = field(default_factory=list)
    """(folder, name) of the manifests read, recorded once their hours are computed."""
    folders_done: list[tuple[str, datetime]] = field(default_factory=list)
    """Write-hour folders (and their hour) no writer writes into any more, all of whose
    manifests are read."""
    retired: list[tuple[str, int]] = field(default_factory=list)
    """Host retirements the manifests list: (host id, Unix ms)."""


def new_files_from_manifests(
    wh: Warehouse, store: LakeStore, topic: str, now: datetime
) -> NewFiles | None:
    """The files written since the last run, from the writers' manifests: one listing of the
    manifest root and of the folders still open, one read per new manifest, whatever the size
    of the lake. None when the lake has no manifests (written by an older writer, or by
    other means): the caller then lists the look-back window's hours instead.

    A manifest is taken only once its partition's committed offset has passed the round
    (its files are durable then); until then it stays for the next run."""
    folders = manifest_folders(store, topic)
    if not folders:
        return None
    loaded: dict[str, set[str]] = defaultdict(set)
    for row in wh.rows(sql.LOADED_MANIFESTS, oldest=folders[0][0]):
        loaded[row["folder"]].add(row["manifest"])
    committed = {m.partition: m.committed_offset for m in read_watermarks(store, topic)}
    # Writers file a round under their own clock's hour: a folder an hour old is closed.
    closed_before = hour_floor(now) - HOUR
    found = NewFiles()
    for folder, written in folders:
        if "" in loaded[folder]:
            continue
        pending = False
        for name, manifest in read_manifests(store, topic, folder, skip=loaded[folder]):
            if committed.get(manifest.partition, -1) <= manifest.end:
                pending = True
                continue
            for hour, files in manifest.files_by_hour().items():
                found.by_hour.setdefault(hour, []).extend(files)
            found.retired.extend(manifest.retired)
            found.manifests.append((folder, name))
        if not pending and written < closed_before:
            found.folders_done.append((folder, written))
    return found


def record_retirements(wh: Warehouse, retired: list[tuple[str, int]]) -> None:
    """Keep the host retirements read (host id, Unix ms) where the silent-host rule and the
    dashboard find them; one read again (a run that crashed before recording its manifests)
    is kept once."""
    if retired:
        wh.execute(
            sql.RECORD_RETIREMENTS,
            hosts=[host for host, _ in retired],
            retired_ms=[at_ms for _, at_ms in retired],
        )


def record_manifests(wh: Warehouse, store: LakeStore, topic: str, found: NewFiles) -> None:
    """Remember the manifests whose hours are computed; delete folders loaded long ago."""
    for folder, name in found.manifests:
        wh.execute(sql.RECORD_MANIFEST, folder=folder, name=name)
    for folder, _written in found.folders_done:
        wh.execute(sql.RECORD_MANIFEST, folder=folder, name="")
    expired = datetime.now(UTC) - MANIFESTS_KEPT
    for folder, written in found.folders_done:
        if written < expired:
            delete_manifest_folder(store, topic, folder)


@dataclass
class Loaded:
    """What the load step did: the hours to (re)compute and for which hosts, hour's own files
    and rows, the hours beyond the look-back that late files reached, and the markers to
    clear once computed."""

    scopes: list[HourScope]
    files: int
    rows: int
    read: int = 0
    added: int = 0
    late_read: int = 0
    beyond_lookback: list[datetime] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    manifests: NewFiles | None = None
    """The manifests read, to record once the hours are computed (None: the lake was listed)."""
    rebuilt: list[datetime] = field(default_factory=list)
    """Hours loaded from scratch: their load stored them by host and time already."""

    def result(self, hour: datetime, complete: bool) -> HourResult:
        """The run of ``hour`` as this load leaves it (what ``batch_runs`` records)."""
        return HourResult(
            hour=hour,
            complete=complete,
            files=self.files,
            rows=self.rows,
            recomputed=[scope.hour for scope in self.scopes],
            beyond_lookback=self.beyond_lookback,
            read=self.read,
            added=self.added,
            late_read=self.late_read,
            hosts_recomputed={
                scope.hour: None if scope.hosts is None else len(scope.hosts)
                for scope in self.scopes
            },
        )

    def to_json(self) -> dict[str, Any]:
        """What the DAG's tasks pass on (XCom: JSON)."""
        return {
            "scopes": [scope.to_json() for scope in self.scopes],
            "files": self.files,
            "rows": self.rows,
            "read": self.read,
            "added": self.added,
            "late_read": self.late_read,
            "beyond_lookback": [h.isoformat() for h in self.beyond_lookback],
            "markers": self.markers,
            "manifests": None
            if self.manifests is None
            else {
                "read": [list(m) for m in self.manifests.manifests],
                "folders_done": [[f, w.isoformat()] for f, w in self.manifests.folders_done],
            },
            "rebuilt": [h.isoformat() for h in self.rebuilt],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Loaded:
        manifests = data["manifests"]
        return cls(
            scopes=[HourScope.from_json(scope) for scope in data["scopes"]],
            files=int(data["files"]),
            rows=int(data["rows"]),
            read=int(data["read"]),
            added=int(data["added"]),
            late_read=int(data["late_read"]),
            beyond_lookback=[datetime.fromisoformat(h) for h in data["beyond_lookback"]],
            markers=list(data["markers"]),
            manifests=None
            if manifests is None
            else NewFiles(
                manifests=[(folder, name) for folder, name in manifests["read"]],
                folders_done=[
                    (folder, datetime.fromisoformat(written))
                    for folder, written in manifests["folders_done"]
                ],
            ),
            # Absent when an earlier version's load task wrote it (a run across an upgrade).
            rebuilt=[datetime.fromisoformat(h) for h in data.get("rebuilt", [])],
        )


def load_with_late_data(
    settings: Settings,
    wh: Warehouse,
    store: LakeStore,
    hour: datetime,
    rebuild: bool = False,
    recompute: bool = False,
) -> Loaded:
    """Load ``hour`` (from scratch with ``rebuild``), the new files of every late hour of the
    look-back window and of every older hour the lake writer marked as late.

    Only the hosts whose rows changed are recomputed, unless the hour is new, rebuilt, or
    ``recompute`` asks for all of ``hour``'s hosts (an explicit run: settings that shape the
    aggregates may have changed). ``hour``'s alerts are always judged again for every host."""
    wh.ensure_tables()
    found = new_files_from_manifests(wh, store, settings.topic, datetime.now(UTC))
    if found is None:
        late = set(hours_with_new_files(wh, store, settings.topic, hour, settings.lookback_hours))
    else:
        late = set(found.by_hour) - {hour}
        record_retirements(wh, found.retired)
    # Markers are read before loading and cleared only after the hours are computed: a marker
    # written meanwhile stays for the next run.
    markers = late_markers(store, settings.topic)
    window_start = hour - settings.lookback_hours * HOUR
    beyond = sorted(h for h in markers if h < window_start)
    if beyond:
        log.warning(
            "late data beyond the %d-h look-back: reloading %s",
            settings.lookback_hours,
            _hours_text(beyond),
        )
    files = read = added = late_read = 0
    changed: dict[datetime, frozenset[str] | None] = {}
    rebuilt = []
    # Every marked hour is loaded (so every marker read can be cleared); the ones the look-back
    # window would never have reached are the ones worth reporting.
    for h in sorted({hour, *late, *markers}):
        candidates = None if found is None else found.by_hour.get(h, [])
        done = load(wh, store, settings.topic, h, rebuild and h == hour, candidates)
        if done.rebuilt:
            rebuilt.append(h)
        if h == hour:
            whole = recompute or done.rebuilt or not _computed(wh, hour)
            changed[h] = None if whole else done.hosts
        elif done.hosts is None or done.hosts:
            changed[h] = done.hosts
        if h == hour:
            files, read, added = done.files, done.read, done.added
        else:
            late_read += done.read
        if h != hour and done.read:
            # A later hour's files are no late data: a history replayed into the lake, or
            # hours run out of order (a backfill's first run loads the hours after it).
            log.info(
                "%s: %s read %d new files, %d new rows",
                "late data" if h < hour else "a later hour already in the lake",
                f"{h:%Y-%m-%dT%H}Z",
                done.read,
                done.added,
            )
    # The hour after a changed hour has counter deltas and trends that depend on it: recompute
    # its same hosts too when it was computed before (late data, or hours run out of order).
    scopes = dict(changed)
    for h, hosts in changed.items():
        if hosts is not None and not hosts:
            continue
        if h + HOUR in changed:
            scopes[h + HOUR] = _widen(scopes[h + HOUR], hosts)
        elif _computed(wh, h + HOUR):
            scopes[h + HOUR] = hosts
    rows = int(wh.scalar(sql.HOUR_ROWS, start=hour))
    return Loaded(
        scopes=[HourScope(h, scopes[h], judge_all=h == hour) for h in sorted(scopes)],
        files=files,
        rows=rows,
        read=read,
        added=added,
        late_read=late_read,
        beyond_lookback=beyond,
        markers=[path for paths in markers.values() for path in paths],
        manifests=found,
        rebuilt=rebuilt,
    )


def _hours_text(hours: list[datetime]) -> str:
    return ",".join(f"{h:%Y-%m-%dT%H}" for h in hours)


def record_run(wh: Warehouse, result: HourResult, run_at: datetime) -> None:
    wh.execute(
        sql.RECORD_RUN,
        run_at=run_at,
        start=result.hour,
        complete=result.complete,
        files=result.files,
        rows=result.rows,
        recomputed=_hours_text(result.recomputed),
        beyond_lookback=_hours_text(result.beyond_lookback),
        read=result.read + result.late_read,
        added=result.added,
    )


def run_hour(
    settings: Settings,
    wh: Warehouse,
    store: LakeStore,
    hour: datetime,
    wait_timeout_s: float = 0.0,
    rebuild: bool = False,
    recompute: bool = False,
) -> HourResult:
    """The whole hourly job for [hour, hour+1h), plus late data of the look-back window.

    Loads are incremental (new lake files only) unless ``rebuild`` reloads the hour from
    scratch; either way the tables come out the same. Only hosts with new rows are
    aggregated again unless ``recompute`` asks for every host of ``hour``."""
    hour = hour_floor(hour)
    if wait_timeout_s > 0:
        complete = wait_for_watermark(
            store,
            settings.topic,
            hour + HOUR + timedelta(seconds=settings.watermark_grace_s),
            wait_timeout_s,
        )
    else:
        complete = bool(complete_hours(store, settings.topic, [hour]))
    loaded = load_with_late_data(settings, wh, store, hour, rebuild, recompute)
    result = loaded.result(hour, complete)
    check_raw(wh, loaded.scopes)
    aggregate(wh, loaded.scopes, settings.sample_interval_s)
    host_quality(wh, loaded.scopes, settings)
    trends(wh, loaded.scopes)
    alerts(wh, loaded.scopes, settings)
    finish(settings, wh, store, result, loaded)
    return result


def finish(
    settings: Settings, wh: Warehouse, store: LakeStore, result: HourResult, loaded: Loaded
) -> None:
    """The run's last step, once its hours are computed (``batch run`` and the DAG's last
    task): complete hours stored by host and time, the run recorded, raw rows past retention
    deleted, the late markers and manifests read marked done."""
    hour = result.hour
    first_complete = result.complete and not wh.scalar(sql.HOUR_WAS_COMPLETE, start=hour)
    to_order = {scope.hour for scope in loaded.scopes if scope.hour != hour or result.complete}
    if first_complete:
        to_order.add(hour)
    # An hour loaded from scratch is stored in order by its load: sorting it again was a
    # quarter of a 10,000-host rebuild.
    for changed in sorted(to_order - set(loaded.rebuilt)):
        wh.order_hour(changed)
    now = datetime.now(UTC)
    record_run(wh, result, now)
    prune_raw_rows(settings, wh, now)
    store.delete(loaded.markers)
    if loaded.manifests is not None:
        record_manifests(wh, store, settings.topic, loaded.manifests)


def prune_raw_rows(settings: Settings, wh: Warehouse, now: datetime) -> datetime | None:
    """Delete the raw rows past SYSMETRICS_WAREHOUSE_RAW_RETENTION_DAYS (never inside the
    look-back window, whose hours may still be recomputed from them); the last hour deleted."""
    last = last_prunable_hour(now, settings.warehouse_raw_retention_days, settings.lookback_hours)
    if last is not None:
        for statement in sql.PRUNE_RAW:
            wh.execute(statement, last=last)
    return last


@dataclass
class Curated:
    """What the curation step did: hours compacted, the hour pruned (or why not)."""

    compacted: list[Compacted] = field(default_factory=list)
    pruned: Verification | None = None
    """The hour past retention, when it had raw files: deleted when ``ok``, else kept."""
    quarantine_deleted: int = 0


def curate(
    settings: Settings,
    store: LakeStore,
    hours: list[datetime],
    now: datetime,
    prune: bool = True,
) -> Curated:
    """After the load: compact each of ``hours`` that the lake is complete for (a late file
    makes a new version of its hour), then, with ``prune``, delete the raw files of the hour
    that just passed SYSMETRICS_RAW_RETENTION_DAYS if its curated version verifies, and
    expired quarantine files. ``sysmetrics lake compact|prune`` catch up on any other hour."""
    done = Curated()
    for hour in complete_hours(store, settings.topic, hours):
        done.compacted.append(
            compact_hour(
                store,
                settings.topic,
                hour,
                settings.curated_row_group_rows,
                memory_limit=settings.duckdb_memory_limit,
            )
        )
    expired = last_prunable_hour(now, settings.raw_retention_days, settings.lookback_hours)
    if prune and expired is not None:
        check = prune_hour(
            store,
            settings.topic,
            expired,
            now,
            settings.raw_retention_days,
            lookback_hours=settings.lookback_hours,
            memory_limit=settings.duckdb_memory_limit,
        )
        # An hour without raw files had nothing to prune: no news (every `batch run` of a lake
        # younger than the retention said "not compacted" of an hour it never held).
        if check is not None and check.raw_files:
            done.pruned = check
            if not check.ok:
                log.warning(
                    "raw files of %s kept past retention: %s",
                    f"{expired:%Y-%m-%dT%H}Z",
                    check.detail,
                )
        done.quarantine_deleted = prune_quarantine(
            store, settings.topic, now, settings.quarantine_retention_days
        )
    return done


def hours_to_run(
    settings: Settings, wh: Warehouse, store: LakeStore, start: datetime, end: datetime
) -> list[datetime]:
    """The hours in [start, end) a run changes anything for, oldest first: those the lake has
    a folder of (raw or curated) or the warehouse holds rows of, and the
    ``sql.SILENT_HOST_HOURS`` after each such hour (a host heard then and not since is
    ``host_silent`` in them). A backfill ran every other hour for nothing (~80 ms each,
    87,600 of them for ten years)."""
    first, last = hour_floor(start), hour_floor(end - timedelta(microseconds=1))
    if last < first:
        return []
    wh.ensure_tables()
    since = first - sql.SILENT_HOST_HOURS * HOUR
    held = set(hours_between(store, settings.topic, ("raw", "curated"), since, last))
    for statement in (sql.READ_HOURS_HELD, sql.HOURS_AGGREGATED):
        held.update(
            hour_floor(row["hour"]) for row in wh.rows(statement, first_hour=since, last_hour=last)
        )
    return sorted(
        {
            hour
            for held_hour in held
            for n in range(sql.SILENT_HOST_HOURS + 1)
            if first <= (hour := held_hour + n * HOUR) <= last
        }
    )


def backfill(
    settings: Settings,
    wh: Warehouse,
    store: LakeStore,
    hours: list[datetime],
    progress: Callable[[HourResult], None] | None = None,
    rebuild: bool = False,
    recompute: bool = False,
) -> list[HourResult]:
    """Run each of ``hours`` (:func:`hours_to_run`) in order, late-data look-back included;
    ``rebuild`` reloads each from all its files (the full scan for files that came by other
    means)."""
    results = []
    for hour in sorted(hours):
        result = run_hour(settings, wh, store, hour, rebuild=rebuild, recompute=recompute)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
