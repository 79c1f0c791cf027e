"""The hourly job's steps as plain functions of ISO hour strings (what Airflow passes in XCom).

Each opens the configured warehouse and lake itself, so a step can run in any worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sysmetrics.batch import hourly
from sysmetrics.config import Settings, load_settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse import open_warehouse
from sysmetrics.warehouse.base import Warehouse


@contextmanager
def _warehouse(settings: Settings) -> Iterator[Warehouse]:
    wh = open_warehouse(settings)
    try:
        wh.ensure_tables()
        yield wh
    finally:
        wh.close()


def _store(settings: Settings) -> LakeStore:
    return LakeStore.from_settings(settings)


def _scopes(scopes: list[dict[str, Any]]) -> list[hourly.HourScope]:
    return [hourly.HourScope.from_json(scope) for scope in scopes]


def wait_for_lake(hour: str, timeout_s: float) -> bool:
    """True when the lake watermark passed hour + 1 h + grace; False after ``timeout_s``."""
    settings = load_settings()
    until = datetime.fromisoformat(hour) + timedelta(hours=1, seconds=settings.watermark_grace_s)
    return hourly.wait_for_watermark(_store(settings), settings.topic, until, timeout_s)


def load(hour: str) -> dict[str, Any]:
    """The hour's run recomputes every host of the hour (as ``batch run`` does)."""
    settings = load_settings()
    with _warehouse(settings) as wh:
        loaded = hourly.load_with_late_data(
            settings, wh, _store(settings), datetime.fromisoformat(hour), recompute=True
        )
    return loaded.to_json()


def check_raw(scopes: list[dict[str, Any]]) -> None:
    with _warehouse(load_settings()) as wh:
        hourly.check_raw(wh, _scopes(scopes))


def aggregate(scopes: list[dict[str, Any]]) -> None:
    settings = load_settings()
    with _warehouse(settings) as wh:
        hourly.aggregate(wh, _scopes(scopes), settings.sample_interval_s)


def host_quality(scopes: list[dict[str, Any]]) -> None:
    settings = load_settings()
    with _warehouse(settings) as wh:
        hourly.host_quality(wh, _scopes(scopes), settings)


def trends(scopes: list[dict[str, Any]]) -> None:
    with _warehouse(load_settings()) as wh:
        hourly.trends(wh, _scopes(scopes))


def alerts(scopes: list[dict[str, Any]]) -> None:
    settings = load_settings()
    with _warehouse(settings) as wh:
        hourly.alerts(wh, _scopes(scopes), settings)


def curate(scopes: list[dict[str, Any]]) -> dict[str, object]:
    """Compact the complete hours the run computed; prune the hour past retention."""
    settings = load_settings()
    done = hourly.curate(
        settings, _store(settings), [s.hour for s in _scopes(scopes)], datetime.now(UTC)
    )
    return {
        "compacted": {
            f"{c.hour:%Y-%m-%dT%H}": c.skipped or f"version {c.version}, {c.rows} rows"
            for c in done.compacted
        },
        "pruned": None if done.pruned is None else done.pruned.detail,
        "quarantine_deleted": done.quarantine_deleted,
    }


def finish(hour: str, complete: bool, loaded: dict[str, Any]) -> None:
    """The run's last step, as ``batch run`` ends: ``hourly.finish``."""
    done = hourly.Loaded.from_json(loaded)
    result = done.result(datetime.fromisoformat(hour), complete)
    settings = load_settings()
    with _warehouse(settings) as wh:
        hourly.finish(settings, wh, _store(settings), result, done)
