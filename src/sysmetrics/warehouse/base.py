"""What every warehouse backend provides; the batch library only talks to this."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Generator
from datetime import datetime
from typing import Any, NamedTuple

from sysmetrics.warehouse import sql

_PARAM = re.compile(r"@(\w+)")


class Appended(NamedTuple):
    """What new lake files added to an hour: rows, and the hosts they belong to."""

    rows: int
    hosts: frozenset[str]


class Warehouse(ABC):
    dialect: str
    read_only: bool = False
    _stand_ins: dict[str, str] | None = None

    def table(self, kind: str) -> str:
        """The engine's name of a logical table (``raw``, ``hourly``…)."""
        return sql.TABLE_NAMES[kind]

    def render(self, template: str) -> str:
        if self.read_only and self._stand_ins is None:
            held = self._columns()
            self._stand_ins = {
                kind: sql.padded_table(kind, self.table(kind), held[name])
                if name in held
                else sql.empty_table(kind)
                for kind, name in sql.TABLE_NAMES.items()
            }
        names = self._stand_ins or {kind: self.table(kind) for kind in sql.TABLE_NAMES}
        return sql.render(template.format(**names), self.dialect)

    @abstractmethod
    def _columns(self) -> dict[str, set[str]]:
        """The tables the warehouse holds now, each with its columns. A reader
        (``read_only``) reads a table this version knows and the warehouse lacks as empty, and
        a column it lacks as null: what a newer hourly job creates, before its first run."""

    @staticmethod
    def used_params(template: str, params: dict[str, Any]) -> dict[str, Any]:
        wanted = set(_PARAM.findall(template))
        missing = wanted - params.keys()
        if missing:
            raise KeyError(f"query parameters missing: {sorted(missing)}")
        return {k: v for k, v in params.items() if k in wanted}

    def execute(self, template: str, **params: Any) -> None:
        """Run a statement written in BigQuery SQL with ``{table}`` names and ``@params``."""
        self._execute(self.render(template), self.used_params(template, params))

    def rows(self, template: str, **params: Any) -> list[dict[str, Any]]:
        return self._rows(self.render(template), self.used_params(template, params))

    def scalar(self, template: str, **params: Any) -> Any:
        result = self.rows(template, **params)
        return next(iter(result[0].values())) if result else None

    @abstractmethod
    def _execute(self, statement: str, params: dict[str, Any]) -> None: ...

    @abstractmethod
    def _rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]: ...

    @abstractmethod
    def ensure_tables(self) -> None: ...

    @abstractmethod
    def load_hour(
        self,
        hour: datetime,
        file_uris: list[str],
        curated: str | None = None,
        missing: Collection[str] = (),
    ) -> int:
        """Replace the raw rows of ``hour`` with the events of ``file_uris`` and of the
        ``curated`` Parquet file if given (dedup by event_id; ``missing``: the fields that file
        has no column for, see ``compaction.lacking``); return the rows now in it."""

    @abstractmethod
    def append_files(self, hour: datetime, file_uris: list[str], names: list[str]) -> Appended:
        """Add the events of new lake files to ``hour`` (an event already there is not
        doubled; see ``sql.APPEND_NEW_EVENTS``) and record ``names`` in the ledger; return the
        rows added and the hosts of the files' events. Safe to repeat after a crash: the
        ledger and the event ids make a second run of the same files add nothing."""

    def native_query(self, statement: str) -> list[dict[str, Any]]:
        """A user's own query, in the engine's dialect, all its rows."""
        return self._rows(statement, {})

    @abstractmethod
    def native_rows(self, statement: str) -> Generator[dict[str, Any], None, None]:
        """A user's own query's rows, fetched as they are read (``sysmetrics query``); close
        it when stopping early (DuckDB's connection is held until then)."""

    @abstractmethod
    def order_hour(self, hour: datetime) -> None:
        """Store ``hour``'s raw rows by host and time, once the hour is complete: a query for
        one host then reads a few row groups of the hour instead of all of them."""

    @abstractmethod
    def interrupt(self) -> None:
        """Stop the statement running now, from another thread (a request past its timeout)."""

    @abstractmethod
    def use_filesystem(self, filesystem: Any) -> None:
        """Let the engine read lake URIs of this fsspec filesystem (e.g. gcsfs for gs://)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
