"""The default warehouse: one DuckDB file."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Generator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import fsspec

from sysmetrics.interrupts import track
from sysmetrics.lake.compaction import (
    HourSource,
    curated_files_source,
    curated_source,
    each_event_once,
    stage_raw_files,
)
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.base import Appended, Warehouse

_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "TIMESTAMP": "TIMESTAMPTZ",
    "BOOL": "BOOLEAN",
}
_FETCHED_AT_ONCE = 10_000
"""Rows of a user's query fetched from DuckDB at a time (``native_rows``)."""
_EVENTS_PLACEHOLDER = "__events__"
_ALONE = sql.flatten(True, "lake_hour")
_DEDUPLICATED = sql.flatten(False, "lake_hour")
"""FLATTEN over a source of several lake hours, each row in the window of its file's hour."""
_RAW_PLACEHOLDER = "__lake_hours__"


class WarehouseBusyError(RuntimeError):
    """Another process holds the DuckDB file's write lock (the hourly job, usually)."""


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: str, read_only: bool = False, memory_limit: str = "1GB") -> None:
        self.path = path
        self.read_only = read_only
        if path != ":memory:" and not read_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = track(duckdb.connect(path, read_only=read_only))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            raise WarehouseBusyError(
                f"warehouse busy: another process is writing {path} (the hourly job?); "
                "retry in a moment, or raise SYSMETRICS_WAREHOUSE_BUSY_WAIT_S"
            ) from exc
        self._con.execute("SET TimeZone = 'UTC'")
        # A bounded footprint beside the collector and dashboard: past the limit DuckDB spills
        # to <file>.tmp. Insertion order is never relied on (every query sorts or groups).
        self._con.execute("SET memory_limit = $limit", {"limit": memory_limit})
        self._con.execute("SET preserve_insertion_order = false")
        self._lock = threading.Lock()
        self._filesystems: dict[str, Any] = {}

    def _execute(self, statement: str, params: dict[str, Any]) -> None:
        with self._lock:
            self._con.execute(statement, params or None).fetchall()

    def _rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._con.execute(statement, params or None)
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def native_rows(self, statement: str) -> Generator[dict[str, Any], None, None]:
        with self._lock:
            cursor = self._con.execute(statement)
            if cursor is None:  # nothing to run (only comments): DuckDB returns no cursor
                return
            names = [d[0] for d in cursor.description or []]
            while batch := cursor.fetchmany(_FETCHED_AT_ONCE):
                for row in batch:
                    yield dict(zip(names, row, strict=True))

    def _columns(self) -> dict[str, set[str]]:
        held: dict[str, set[str]] = {}
        for row in self._rows("SELECT table_name, column_name FROM information_schema.columns", {}):
            held.setdefault(row["table_name"], set()).add(row["column_name"])
        return held

    def ensure_tables(self) -> None:
        existing = self._columns()
        for kind, columns in sql.TABLE_COLUMNS.items():
            table = self.table(kind)
            if table not in existing:
                body = ", ".join(f"{name} {_TYPES[kind_]}" for name, kind_ in columns)
                self._execute(f"CREATE TABLE {table} ({body})", {})
                continue
            # A warehouse made by an earlier version: columns are only ever added, at the end.
            for name, kind_ in columns:
                if name not in existing[table]:
                    self._execute(f"ALTER TABLE {table} ADD COLUMN {name} {_TYPES[kind_]}", {})

    def _flatten(self, curated: str, file_uris: list[str], missing: Collection[str]) -> str:
        """FLATTEN over a curated Parquet file and the raw files after it, in DuckDB's
        dialect."""
        template = sql.flatten(each_event_once(True, file_uris))
        return self._flattened(curated_source(curated, file_uris, missing=missing), template)

    @contextlib.contextmanager
    def _staged(self, file_uris: list[str]) -> Iterator[str]:
        """FLATTEN over these raw files, read first into a temporary table
        (``stage_raw_files``: a few reads of spliced files instead of one per file) outside
        any transaction; the table is dropped after. Call with the lock held."""
        first = file_uris[0] if file_uris else ""
        protocol = first.split("://")[0] if "://" in first else "file"
        fs = fsspec.filesystem("file") if protocol == "file" else self._filesystems[protocol]
        try:
            staged = stage_raw_files(self._con, fs, file_uris, "staged_raw", sql.flatten_fields())
            yield self._flattened(staged)
        finally:
            self._con.execute("DROP TABLE IF EXISTS staged_raw")

    def _flattened(self, source: str, template: str = sql.FLATTEN) -> str:
        flatten = self.render(template.replace("{events}", _EVENTS_PLACEHOLDER))
        return flatten.replace(_EVENTS_PLACEHOLDER, source)

    def lake_rows(
        self, template: str, sources: Sequence[tuple[datetime, HourSource]], **params: Any
    ) -> list[dict[str, Any]]:
        """A statement over ``{raw}`` run on lake hours instead of the table, in one statement:
        each hour's events flattened as the load would, in that hour's window. Hours held by a
        curated file alone are one scan, without the deduplication (so a host filter reaches
        the files' row groups); any other hour is read and deduplicated on its own."""
        alone = [(hour, s.curated_alone) for hour, s in sources if s.curated_alone]
        missing = frozenset().union(*(s.missing for _, s in sources if s.curated_alone))
        branches = [self._flattened(curated_files_source(alone, missing), _ALONE)] if alone else []
        hours = {}
        for n, (hour, source) in enumerate((h, s) for h, s in sources if not s.curated_alone):
            hours[f"lake_hour_{n}"] = hour
            events = f"(SELECT *, $lake_hour_{n} AS lake_hour FROM {source.sql})"
            branches.append(self._flattened(events, _DEDUPLICATED))
        if not branches:
            return []
        statement = self.render(template.replace("{raw}", _RAW_PLACEHOLDER))
        union = " UNION ALL ".join(f"({b})" for b in branches)
        return self._rows(
            statement.replace(_RAW_PLACEHOLDER, f"({union})"),
            {**self.used_params(template, params), **hours},
        )

    def order_hour(self, hour: datetime) -> None:
        # Rows arrive interleaved (every host of each flush together); sorted, each row group
        # covers a few hosts and its min/max lets a one-host query skip the others.
        raw = self.table("raw")
        with self._lock, self._transaction():
            self._con.execute(
                f"CREATE OR REPLACE TEMP TABLE hour_rows AS "
                f"SELECT * FROM {raw} WHERE hour = $start",
                {"start": hour},
            )
            self._con.execute(f"DELETE FROM {raw} WHERE hour = $start", {"start": hour})
            self._con.execute(
                f"INSERT INTO {raw} SELECT * FROM hour_rows ORDER BY host_id, ts, event_id"
            )
            self._con.execute("DROP TABLE hour_rows")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction around the block: committed at its end, rolled back on an error,
        which is raised. A COMMIT that fails (a full disk) has ended the transaction already:
        the ROLLBACK's "no transaction is active" hid why."""
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
            self._con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.TransactionException):
                self._con.execute("ROLLBACK")
            raise

    def interrupt(self) -> None:
        self._con.interrupt()

    def append_files(self, hour: datetime, file_uris: list[str], names: list[str]) -> Appended:
        # One transaction: rows and ledger entries land together or not at all.
        with self._lock, self._staged(file_uris) as events, self._transaction():
            self._con.execute(
                f"CREATE OR REPLACE TEMP TABLE staged_events AS {events}", {"start": hour}
            )
            staged = sql.DROP_LATER_COPIES.replace("{staged}", "staged_events")
            self._con.execute(self.render(staged), {"start": hour})
            append = sql.APPEND_NEW_EVENTS.replace("{staged}", "staged_events")
            added = self._con.execute(self.render(append), {"start": hour}).fetchall()[0][0]
            hosts = self._con.execute("SELECT DISTINCT host_id FROM staged_events").fetchall()
            self._con.execute(self.render(sql.RECORD_LOADED_FILES), {"start": hour, "files": names})
            self._con.execute("DROP TABLE staged_events")
        return Appended(int(added), frozenset(row[0] for row in hosts))

    def load_hour(
        self,
        hour: datetime,
        file_uris: list[str],
        curated: str | None = None,
        missing: Collection[str] = (),
    ) -> int:
        raw = self.table("raw")
        with self._lock, contextlib.ExitStack() as stack:
            events = ""
            if curated is not None:
                events = self._flatten(curated, file_uris, missing)
            elif file_uris:
                events = stack.enter_context(self._staged(file_uris))
            with self._transaction():
                self._con.execute(f"DELETE FROM {raw} WHERE hour = $start", {"start": hour})
                if file_uris or curated:
                    # Stored by host and time (see order_hour). A curated file alone already is
                    # (compaction sorted it): read in parallel, each row group of the table
                    # still holds one stretch of its hosts, which is all a query gains.
                    once = each_event_once(curated is not None, file_uris)
                    order = "" if once else "ORDER BY host_id, ts, event_id"
                    statement = f"INSERT INTO {raw} SELECT * FROM ({events}) " + order
                    self._con.execute(statement, {"start": hour})
                count = self._con.execute(
                    f"SELECT COUNT(*) FROM {raw} WHERE hour = $start", {"start": hour}
                ).fetchall()[0][0]
        return int(count)

    def use_filesystem(self, filesystem: Any) -> None:
        protocols = filesystem.protocol
        names = protocols if isinstance(protocols, tuple) else (protocols,)
        if names[0] not in self._filesystems:
            with self._lock:
                self._con.register_filesystem(filesystem)
            self._filesystems.update(dict.fromkeys(names, filesystem))

    def close(self) -> None:
        with self._lock:
            self._con.close()
