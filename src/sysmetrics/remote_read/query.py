"""Prometheus remote read over the warehouse and the lake: a ``ReadRequest`` in, a sampled
``ReadResponse`` out.

Per query: the ``__name__`` matchers pick series of the catalog (``series.py``); matchers on
``host_id``, ``hostname`` and ``os`` become the SQL's WHERE (a query for one host reads that
host); every matcher is then applied to each series' labels as Prometheus would (a label a
series lacks is ""). Raw series come from the raw table, and from the lake (curated Parquet
plus later raw files) for the hours of the range the table does not hold (its retention, or
history never loaded); ``…_1h`` series from the hourly table.

Before reading, a query is sized from its range, not from what is stored, so the same query
is allowed or refused whatever the warehouse holds: hosts selected x samples per host (range /
sample interval) x series families. Over ``max_samples`` it is refused with what to do
instead; a statement past ``timeout_s`` is interrupted.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

import msgspec
import re2

from sysmetrics import prompb
from sysmetrics.lake.compaction import HourSource, hour_sources, hours_between
from sysmetrics.lake.store import LakeStore
from sysmetrics.remote_read import series as catalog
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.base import Warehouse

_OPS = {
    prompb.MATCH_EQUAL: "=",
    prompb.MATCH_NOT_EQUAL: "!=",
    prompb.MATCH_REGEX: "=~",
    prompb.MATCH_NOT_REGEX: "!~",
}


BOOT_S = "boot_s"
"""The boot time (Unix s) read with counter families (:func:`carried_over`)."""
LATEST_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the latest instant Python's datetime and both warehouses hold. A
query's range is cut to [the Unix epoch, this]: Prometheus asks from about the year -292
million to +292 million when its API is called without a range (``/api/v1/series``), which
was a 500 (no date that far) and is now sized like any other range."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad regex is the request's 400, not a line on stderr


class RemoteReadError(ValueError):
    """A request that cannot be answered as asked: ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_samples: int = 20_000_000
    max_series: int = 200_000
    timeout_s: float = 60.0
    sample_interval_s: float = 10.0
    """The fleet's sample interval: how many raw samples per host a range may hold."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: Any = None
    """An RE2 regex, as Prometheus compiles a matcher's (and as the warehouses run the host
    labels' pushed down): its syntax, and time linear in the label's length (Python's ``re``
    took seconds per name on ``(.*)+_total``, and a request cannot interrupt it)."""

    @classmethod
    def of(cls, message: Any) -> Matcher:
        op = _OPS.get(message.type)
        if op is None:
            raise RemoteReadError(f"unknown matcher type {message.type} on {message.name!r}")
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re2.compile(message.value, _RE2_OPTIONS)
            except re2.error as exc:
                reason = exc.args[0].decode(errors="replace") if exc.args else exc
                raise RemoteReadError(f"bad regex {message.value!r}: {reason}") from exc
        return cls(message.name, op, message.value, pattern)

    def matches(self, value: str) -> bool:
        if self.pattern is not None:
            return (self.pattern.fullmatch(value) is not None) == (self.op == "=~")
        return (value == self.value) == (self.op == "=")


@dataclass
class Selection:
    raw: list[catalog.RawSeries]
    devices: list[catalog.DeviceSeries]
    hourly: list[catalog.HourlySeries]

    @property
    def raw_families(self) -> int:
        return len(self.raw) + len(self.devices)

    @property
    def counters(self) -> bool:
        return any(s.name in catalog.COUNTERS for s in self.raw)


def select(matchers: list[Matcher]) -> Selection:
    """The catalog's series whose names pass every ``__name__`` matcher."""
    names = [m for m in matchers if m.label == "__name__"]

    def wanted(name: str) -> bool:
        return all(m.matches(name) for m in names)

    return Selection(
        [s for s in catalog.RAW if wanted(s.name)],
        [s for s in catalog.DEVICES if wanted(s.name)],
        [s for s in catalog.HOURLY if wanted(s.name)],
    )


def pushdown(matchers: list[Matcher]) -> tuple[str, dict[str, str]]:
    """The host-label matchers as a SQL condition and its parameters."""
    conditions, params = [], {}
    for i, m in enumerate(m for m in matchers if m.label in catalog.HOST_LABELS):
        param = f"m{i}"
        conditions.append((m.label, m.op, param))
        params[param] = f"^(?:{m.value})$" if m.pattern is not None else m.value
    return sql.host_filter(conditions), params


@dataclass
class _Series:
    labels: dict[str, str]
    samples: list[tuple[int, float]]


def _host(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["host_id"], row["hostname"] or "", row["os"] or ""


class _Collector:
    """Rows (sorted by host) in, series out: one series per (host labels, name, device)."""

    def __init__(self, matchers: list[Matcher], limits: Limits) -> None:
        self.matchers = matchers
        self.limits = limits
        self.series: dict[tuple[str, ...], _Series | None] = {}
        """None: a series the matchers exclude, remembered so they run once per series."""
        self.samples = 0
        self.boots: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
        """Each host's boot time (Unix s) by sample time, read with its counters."""

    def _add(
        self,
        host: tuple[str, str, str],
        name: str,
        device: tuple[str, str] | None,
        samples: list[tuple[int, float]],
    ) -> None:
        if not samples:
            return
        found = self.present(host, name, device)
        if found is not None:
            found.samples += samples
            self.samples += len(samples)

    def present(
        self, host: tuple[str, str, str], name: str, device: tuple[str, str] | None = None
    ) -> _Series | None:
        """The series (None: one the matchers exclude), made on first sight."""
        key = (*host, name, *(device or ()))
        if key not in self.series:
            labels = {"__name__": name, "host_id": host[0], "hostname": host[1], "os": host[2]}
            if device is not None:
                labels[device[0]] = device[1]
            wanted = all(m.matches(labels.get(m.label, "")) for m in self.matchers)
            if wanted and len(self.series) >= self.limits.max_series:
                raise RemoteReadError(
                    f"the query selects more than {self.limits.max_series} series "
                    "(SYSMETRICS_REMOTE_READ_MAX_SERIES): select fewer hosts or families",
                    422,
                )
            self.series[key] = _Series(labels, []) if wanted else None
        return self.series[key]

    def _columns(
        self,
        host: tuple[str, str, str],
        group: list[dict[str, Any]],
        families: list[catalog.RawSeries] | list[catalog.HourlySeries],
    ) -> None:
        """One series per family: its column's non-null values over the host's rows."""
        for s in families:
            column = s.column
            samples = [(r["t"], float(v)) for r in group if (v := r[column]) is not None]
            self._add(host, s.name, None, samples)

    def raw_rows(self, rows: list[dict[str, Any]], selection: Selection) -> None:
        for host, grouped in groupby(rows, key=_host):
            group = list(grouped)
            self._columns(host, group, selection.raw)
            if selection.counters:
                boots = self.boots[host]
                boots.update((r["t"], r[BOOT_S]) for r in group if r[BOOT_S] is not None)
            parsed = {
                column: [(r["t"], msgspec.json.decode(r[column] or "[]")) for r in group]
                for column in {d.column for d in selection.devices}
            }
            for d in selection.devices:
                by_device: dict[str, list[tuple[int, float]]] = defaultdict(list)
                for t, devices in parsed[d.column]:
                    for device in devices:
                        if (v := device.get(d.field)) is not None:
                            by_device[str(device[d.key])].append((t, float(v)))
                for name, samples in by_device.items():
                    self._add(host, d.name, (d.label, name), samples)
        self._check_samples()

    def hourly_rows(self, rows: list[dict[str, Any]], selection: Selection) -> None:
        for host, grouped in groupby(rows, key=_host):
            self._columns(host, list(grouped), selection.hourly)
        self._check_samples()

    def _check_samples(self) -> None:
        if self.samples > self.limits.max_samples:
            raise RemoteReadError(
                f"the query returns more than {self.limits.max_samples} samples "
                "(SYSMETRICS_REMOTE_READ_MAX_SAMPLES): narrow the range or the hosts",
                422,
            )

    def result(self) -> Iterator[_Series]:
        found = [s for s in self.series.values() if s is not None]
        found.sort(key=lambda s: sorted(s.labels.items()))
        for s in found:
            s.samples.sort()
            if s.labels["__name__"] in catalog.COUNTERS:
                host = (s.labels["host_id"], s.labels["hostname"], s.labels["os"])
                s.samples = carried_over(s.samples, self.boots.get(host, {}))
            yield s


def carried_over(
    samples: list[tuple[int, float]], boots: dict[int, int]
) -> list[tuple[int, float]]:
    """A host's counter total, in time order, as Prometheus must read it. Prometheus takes every
    decrease for a reset and counts the new value as the increase (in ``rate()``,
    ``increase()``), but a total also steps down without a reboot, when an interface or a disk
    goes away (a container's veth at every stop): the samples after such a step are served
    raised by what went away, so it is no reset there, as the hourly job counts it (before
    2026-12-06 a Grafana panel of ``rate()`` drew the host's whole total since boot in that
    step). After a reboot (``boots``: the boot time by sample time, :data:`sql.REBOOT_BOOT_STEP_S`
    later) the total is served as it is: a reset, counted from zero."""
    served: list[tuple[int, float]] = []
    carried, previous, last_boot = 0.0, None, None
    for t, value in samples:
        boot = boots.get(t)
        if previous is not None and value < previous:
            rebooted = (
                boot is not None
                and last_boot is not None
                and boot - last_boot > sql.REBOOT_BOOT_STEP_S
            )
            carried = 0.0 if rebooted else carried + previous - value
        served.append((t, value + carried))
        previous = value
        if boot is not None:
            last_boot = boot
    return served


class Deadline:
    """Interrupts the warehouse's running statement once ``timeout_s`` has passed."""

    def __init__(self, engines: list[Warehouse], timeout_s: float) -> None:
        self.expired = False
        self._engines = engines
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired = True
        for engine in self._engines:
            engine.interrupt()

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()


def size_up(
    wh: Warehouse,
    span: tuple[datetime, datetime],
    selection: Selection,
    where: str,
    params: dict[str, str],
    limits: Limits,
) -> int:
    """An upper bound of the samples a query of ``span`` may return (see the module)."""
    start, end = span
    hosts = wh.scalar(
        sql.read_hosts(where), first_hour=hour_floor(start), last_hour=hour_floor(end), **params
    )
    hosts = max(int(hosts or 0), 1)
    seconds = (end - start).total_seconds()
    per_host_raw = seconds / limits.sample_interval_s + 1
    per_host_hourly = seconds / 3600 + 1
    estimate = hosts * (
        selection.raw_families * per_host_raw + len(selection.hourly) * per_host_hourly
    )
    if estimate > limits.max_samples:
        raise RemoteReadError(
            f"the query could read ~{estimate:,.0f} samples ({hosts} hosts x "
            f"{seconds / 86400:,.1f} days x {selection.raw_families} raw + "
            f"{len(selection.hourly)} hourly families), over the limit of "
            f"{limits.max_samples:,} (SYSMETRICS_REMOTE_READ_MAX_SAMPLES): narrow the range or "
            "the hosts, or read the …_1h series (hourly aggregates) for long ranges",
            422,
        )
    return int(estimate)


def run_query(
    wh: Warehouse, store: LakeStore | None, topic: str, query: Any, limits: Limits
) -> list[_Series]:
    """One query of a ReadRequest: its series, each with its samples in time order."""
    if query.end_timestamp_ms < query.start_timestamp_ms:
        raise RemoteReadError("end_timestamp_ms is before start_timestamp_ms")
    matchers = [Matcher.of(m) for m in query.matchers]
    selection = select(matchers)
    if not selection.raw_families and not selection.hourly:
        return []
    where, params = pushdown(matchers)
    start_ms, end_ms = (
        min(max(t, 0), LATEST_MS) for t in (query.start_timestamp_ms, query.end_timestamp_ms)
    )
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    collector = _Collector(matchers, limits)
    # The sample of hour h is stamped h + 1h: the hours whose end lies in [start, end].
    hours = {
        "first_hour": hour_floor(start - timedelta(milliseconds=1)),
        "last_hour": hour_floor(end) - timedelta(hours=1),
    }
    series_only = query.hints.func == "series"
    if not series_only:
        size_up(wh, (start, end), selection, where, params, limits)
    raw = _RawReader(wh, store, topic, (start, end), params) if selection.raw_families else None
    if series_only:
        _series_only(wh, raw, collector, selection, where, {**params, **hours})
        return list(collector.result())
    if raw is not None:
        columns = sorted({s.column for s in selection.raw} | {d.column for d in selection.devices})
        if selection.counters:
            columns.append(f"UNIX_SECONDS(boot_time) AS {BOOT_S}")
        for rows in raw.rows(sql.read_raw(columns, where)):
            collector.raw_rows(rows, selection)
    if selection.hourly:
        statement = sql.read_hourly([s.column for s in selection.hourly], where)
        rows = wh.rows(statement, **hours, **params)
        collector.hourly_rows([r for r in rows if start_ms <= r["t"] <= end_ms], selection)
    return list(collector.result())


class _RawReader:
    """A statement over ``{raw}`` run on the warehouse's raw table, then on the lake for the
    hours of the range the table does not hold."""

    def __init__(
        self,
        wh: Warehouse,
        store: LakeStore | None,
        topic: str,
        span: tuple[datetime, datetime],
        params: dict[str, str],
    ) -> None:
        self.wh = wh
        self.store = store
        self.params = {"start": span[0], "end": span[1], **params}
        self.sources: list[tuple[datetime, HourSource]] = []
        if store is not None:
            first_hour, last_hour = hour_floor(span[0]), hour_floor(span[1])
            held = {
                hour_floor(r["hour"])
                for r in wh.rows(sql.READ_HOURS_HELD, first_hour=first_hour, last_hour=last_hour)
            }
            hours = lake_hours(store, topic, first_hour, last_hour, held)
            self.sources = hour_sources(store, topic, hours)

    def rows(self, statement: str) -> Iterator[list[dict[str, Any]]]:
        yield self.wh.rows(statement, **self.params)
        if self.store is not None and self.sources:
            yield _lake_engine(self.store).lake_rows(statement, self.sources, **self.params)


def _series_only(
    wh: Warehouse,
    raw: _RawReader | None,
    collector: _Collector,
    selection: Selection,
    where: str,
    params: dict[str, Any],
) -> None:
    """The series of the range with no sample (Prometheus' series API asks with the hint
    ``func: series`` and reads only labels): from counts of the values each column holds, so
    neither the samples' limit nor their cost applies."""
    if raw is not None and selection.raw:
        columns = sorted({s.column for s in selection.raw})
        for rows in raw.rows(sql.series_raw(columns, where)):
            for row in rows:
                for s in selection.raw:
                    if row[s.column]:
                        collector.present(_host(row), s.name)
    for column in sorted({d.column for d in selection.devices}):
        devices = [d for d in selection.devices if d.column == column]
        fields = sorted({d.field for d in devices})
        assert raw is not None and len({d.key for d in devices}) == 1
        for rows in raw.rows(sql.series_devices(column, devices[0].key, fields, where)):
            for row in rows:
                for d in devices:
                    if row[d.field] and row["device"] is not None:
                        collector.present(_host(row), d.name, (d.label, row["device"]))
    if selection.hourly:
        columns = [s.column for s in selection.hourly]
        for row in wh.rows(sql.series_hourly(columns, where), **params):
            for h in selection.hourly:
                if row[h.column]:
                    collector.present(_host(row), h.name)


def lake_hours(
    store: LakeStore, topic: str, first: datetime, last: datetime, held: set[datetime]
) -> list[datetime]:
    """Hours of [first, last] that the lake has and the warehouse's raw table does not."""
    return hours_between(store, topic, ("curated", "raw"), first, last, skip=held)


_local = threading.local()


def _lake_engine(store: LakeStore) -> Any:
    """An in-memory DuckDB that reads the lake's files (whatever the warehouse is)."""
    from sysmetrics.warehouse.duckdb import DuckDBWarehouse

    engine = getattr(_local, "engine", None)
    if engine is None:
        engine = _local.engine = DuckDBWarehouse(":memory:")
    if not store.is_local:
        engine.use_filesystem(store.fs)
    return engine


def read(wh: Warehouse, store: LakeStore | None, topic: str, body: bytes, limits: Limits) -> bytes:
    """A ReadRequest's protobuf bytes in, the ReadResponse's protobuf bytes out."""
    from google.protobuf.message import DecodeError

    try:
        request = prompb.ReadRequest.FromString(body)
    except DecodeError as exc:
        raise RemoteReadError(f"not a protobuf ReadRequest: {exc}") from exc
    accepted = list(request.accepted_response_types)
    if accepted and prompb.RESPONSE_SAMPLES not in accepted:
        raise RemoteReadError(
            "only the sampled response type is served; accept SAMPLES (Prometheus does)"
        )
    response = prompb.ReadResponse()
    engines = [wh] + ([_lake_engine(store)] if store is not None else [])
    with Deadline(engines, limits.timeout_s) as deadline:
        try:
            for query in request.queries:
                result = response.results.add()
                for found in run_query(wh, store, topic, query, limits):
                    ts = result.timeseries.add()
                    for name, value in sorted(found.labels.items()):
                        ts.labels.add(name=name, value=value)
                    for t, v in found.samples:
                        ts.samples.add(timestamp=t, value=v)
        except RemoteReadError:
            raise
        except Exception as exc:
            if deadline.expired:
                raise RemoteReadError(
                    f"the query took longer than {limits.timeout_s:g} s "
                    "(SYSMETRICS_REMOTE_READ_TIMEOUT_S): narrow the range or the hosts",
                    503,
                ) from exc
            raise
    return bytes(response.SerializeToString())
