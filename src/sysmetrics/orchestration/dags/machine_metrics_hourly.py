"""Airflow DAG ``machine_metrics_hourly``: a thin wrapper over ``sysmetrics.orchestration.tasks``.

Data interval [H, H+1) in UTC; catch-up and ``airflow backfill`` replay any hour, and every
step is idempotent for its hour. Configure it through the same SYSMETRICS_* variables.
"""

from __future__ import annotations

from datetime import timedelta

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
    def check_raw(loaded: dict[str, object]) -> list[str]:
        hours: list[str] = loaded["hours"]  # type: ignore[assignment]
        tasks.check_raw(hours)
        return hours

    @task
    def aggregate(hours: list[str]) -> list[str]:
        tasks.aggregate(hours)
        return hours

    @task
    def host_quality(hours: list[str]) -> list[str]:
        tasks.host_quality(hours)
        return hours

    @task
    def trends(hours: list[str]) -> list[str]:
        tasks.trends(hours)
        return hours

    @task
    def alerts(hours: list[str]) -> list[str]:
        tasks.alerts(hours)
        return hours

    @task
    def record_run(
        complete: bool,
        loaded: dict[str, object],
        _done: list[str],
        data_interval_start: pendulum.DateTime | None = None,
    ) -> None:
        assert data_interval_start is not None
        tasks.record_run(data_interval_start.isoformat(), complete, loaded)

    # TaskFlow passes XComArgs where the functions declare their runtime types.
    complete = wait_for_lake()
    loaded = load()
    complete >> loaded
    done = alerts(trends(host_quality(aggregate(check_raw(loaded)))))  # type: ignore[arg-type]
    record_run(complete, loaded, done)  # type: ignore[arg-type]


machine_metrics_hourly()
