"""Airflow DAG ``machine_metrics_hourly``: a thin wrapper over ``sysmetrics.orchestration.tasks``.

Data interval [H, H+1) in UTC; catch-up and ``airflow backfill`` replay any hour, and every
step is idempotent for its hour. Configure it through the same SYSMETRICS_* variables.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from sysmetrics.config import load_settings
from sysmetrics.orchestration import tasks


@dag(
    dag_id="machine_metrics_hourly",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC", interval=timedelta(hours=1)),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": load_settings().dag_retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
    },
    tags=["sysmetrics"],
    doc_md=__doc__,
)
def machine_metrics_hourly() -> None:
    @task
    def wait_for_lake(data_interval_start: pendulum.DateTime | None = None) -> bool:
        assert data_interval_start is not None
        return tasks.wait_for_lake(
            data_interval_start.isoformat(), load_settings().watermark_wait_s
        )

    @task
    def load(data_interval_start: pendulum.DateTime | None = None) -> dict[str, object]:
        assert data_interval_start is not None
        return tasks.load(data_interval_start.isoformat())

    @task
    def check_raw(loaded: dict[str, object]) -> list[dict[str, Any]]:
        scopes: list[dict[str, Any]] = loaded["scopes"]  # type: ignore[assignment]
        tasks.check_raw(scopes)
        return scopes

    @task
    def aggregate(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tasks.aggregate(scopes)
        return scopes

    @task
    def host_quality(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tasks.host_quality(scopes)
        return scopes

    @task
    def trends(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tasks.trends(scopes)
        return scopes

    @task
    def alerts(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tasks.alerts(scopes)
        return scopes

    @task
    def curate(scopes: list[dict[str, Any]]) -> dict[str, object]:
        return tasks.curate(scopes)

    @task
    def finish(
        complete: bool,
        loaded: dict[str, object],
        _done: list[dict[str, Any]],
        data_interval_start: pendulum.DateTime | None = None,
    ) -> None:
        assert data_interval_start is not None
        tasks.finish(data_interval_start.isoformat(), complete, loaded)

    # TaskFlow passes XComArgs where the functions declare their runtime types.
    complete = wait_for_lake()
    loaded = load()
    complete >> loaded
    done = alerts(trends(host_quality(aggregate(check_raw(loaded)))))  # type: ignore[arg-type]
    finish(complete, loaded, done) >> curate(done)  # type: ignore[arg-type]


machine_metrics_hourly()
