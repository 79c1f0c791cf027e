"""The schema-v1 event as engine column types, derived from the one typed model."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import msgspec.inspect as mi

from sysmetrics.schema import MetricsEvent, bare_type


def _duckdb(t: mi.Type, only: frozenset[str] | None = None) -> str:
    t = bare_type(t)
    if isinstance(t, mi.StructType):
        fields = ", ".join(
            f'"{f.encode_name}" {_duckdb(f.type)}'
            for f in t.fields
            if only is None or f.encode_name in only
        )
        return f"STRUCT({fields})"
    if isinstance(t, mi.ListType):
        return f"{_duckdb(t.item_type, only)}[]"
    if isinstance(t, mi.IntType | mi.LiteralType):
        return "BIGINT"
    if isinstance(t, mi.FloatType):
        return "DOUBLE"
    if isinstance(t, mi.BoolType):
        return "BOOLEAN"
    if isinstance(t, mi.DateTimeType):
        return "TIMESTAMPTZ"
    if isinstance(t, mi.StrType):
        return "VARCHAR"
    raise TypeError(f"no DuckDB type for {t!r}")


def duckdb_columns(only: Mapping[str, frozenset[str]] | None = None) -> dict[str, str]:
    """``read_json(columns=...)`` for schema-v1 files: explicit, so no field is dropped or
    mistyped by sampling (e.g. a ``gpus`` list that is empty in every sampled row).

    ``only`` keeps just these fields of the struct columns (and no other struct column);
    scalar columns are always kept."""
    # Walking the model takes ~2 ms, and readers ask once per lake hour they read.
    key = None if only is None else tuple(sorted(only.items()))
    return dict(_duckdb_columns(key))


@cache
def _duckdb_columns(
    only: tuple[tuple[str, frozenset[str]], ...] | None,
) -> tuple[tuple[str, str], ...]:
    kept = None if only is None else dict(only)
    info = mi.type_info(MetricsEvent)
    assert isinstance(info, mi.StructType)
    columns = {}
    for f in info.fields:
        inner = bare_type(f.type)
        nested = isinstance(inner, mi.StructType | mi.ListType)
        if kept is None or not nested:
            columns[f.encode_name] = _duckdb(f.type)
        elif f.encode_name in kept:
            columns[f.encode_name] = _duckdb(f.type, kept[f.encode_name])
    return tuple(columns.items())


def _bigquery_field(name: str, t: mi.Type, mode: str = "NULLABLE") -> dict[str, Any]:
    t = bare_type(t)
    if isinstance(t, mi.ListType):
        return _bigquery_field(name, t.item_type, "REPEATED")
    if isinstance(t, mi.StructType):
        return {
            "name": name,
            "type": "RECORD",
            "mode": mode,
            "fields": [_bigquery_field(f.encode_name, f.type) for f in t.fields],
        }
    kinds = {
        mi.IntType: "INT64",
        mi.LiteralType: "INT64",
        mi.FloatType: "FLOAT64",
        mi.BoolType: "BOOL",
        mi.DateTimeType: "TIMESTAMP",
        mi.StrType: "STRING",
    }
    for kind, bq in kinds.items():
        if isinstance(t, kind):
            return {"name": name, "type": bq, "mode": mode}
    raise TypeError(f"no BigQuery type for {t!r}")


def bigquery_schema() -> list[dict[str, Any]]:
    """The load-job schema (API representation) for schema-v1 NDJSON files."""
    info = mi.type_info(MetricsEvent)
    assert isinstance(info, mi.StructType)
    return [_bigquery_field(f.encode_name, f.type) for f in info.fields]


def _walk_fields(t: mi.Type, prefix: str, found: set[str]) -> None:
    t = bare_type(t)
    if isinstance(t, mi.ListType):
        _walk_fields(t.item_type, f"{prefix}[]", found)
    elif isinstance(t, mi.StructType):
        for f in t.fields:
            path = f"{prefix}.{f.encode_name}" if prefix else f.encode_name
            found.add(path)
            _walk_fields(f.type, path, found)


def field_paths() -> frozenset[str]:
    """Every field of schema v1 as this version knows it, as a dotted path (a list's items
    as ``name[]``, e.g. ``disks[].mount``)."""
    found: set[str] = set()
    _walk_fields(mi.type_info(MetricsEvent), "", found)
    return frozenset(found)


def unknown_fields(document: Mapping[str, Any]) -> list[str]:
    """The paths (as :func:`field_paths` writes them) of the fields in ``document`` that this
    version does not know: what a collector of a newer minor version added."""
    known = field_paths()
    found: set[str] = set()

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                if path not in known:
                    found.add(path)
                else:
                    walk(item, path)
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{prefix}[]")

    walk(document, "")
    return sorted(found)
