"""The hourly job without Airflow: the same library functions on a simple clock.

Runs each finished hour once its watermark has passed (or the grace ran out), and, for a
live view, re-runs the current hour every ``refresh_s`` (idempotent, flagged partial). With
``history_hours`` it first runs that many past hours, each as soon as the lake is complete up to
its end (a simulated fleet's past arrives within a minute, so a demo has charts at once).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sysmetrics.batch.hourly import DataQualityError, curate, run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.catalog import complete_hours
from sysmetrics.lake.compaction import LakeFileUnreadable
from sysmetrics.lake.store import LakeStore
from sysmetrics.limits import out_of_memory, what_is_full
from sysmetrics.observability import Reading
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse import open_warehouse

log = logging.getLogger(__name__)


class HourlyScheduler:
    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        refresh_s: float = 60.0,
        finished_hours: bool = True,
        history_hours: int = 0,
    ):
        self.settings = settings
        self.finished_hours = finished_hours
        self.history_hours = history_hours
        self.history_pending: list[datetime] | None = None
        self.store = LakeStore.from_settings(settings)
        self.stop = stop
        self.refresh_s = refresh_s
        self.last_hour_done: datetime | None = None
        self.last_error: str | None = None
        self.runs = 0
        self.failures = 0
        self.last_run_s: float | None = None

    def history_due(self, current: datetime) -> list[datetime]:
        """The past hours still to run whose end the lake is complete up to, oldest first."""
        if self.history_pending is None:
            self.history_pending = [
                current - timedelta(hours=n) for n in range(self.history_hours, 0, -1)
            ]
        if not self.history_pending:
            return []
        return complete_hours(self.store, self.settings.topic, self.history_pending)

    @property
    def history_progress(self) -> str | None:
        if not self.history_hours or self.history_pending is None:
            return None
        return f"history {self.history_hours - len(self.history_pending)}/{self.history_hours} h"

    def readings(self) -> list[Reading]:
        """The scheduler's numbers for /metrics."""
        out = [
            Reading("sysmetrics_hourly_runs_total", "counter", "hourly runs done", self.runs),
            Reading(
                "sysmetrics_hourly_failures_total",
                "counter",
                "scheduler ticks that failed (see status)",
                self.failures,
            ),
        ]
        if self.last_run_s is not None:
            out.append(
                Reading(
                    "sysmetrics_hourly_last_run_seconds",
                    "gauge",
                    "duration of the last hourly run (load + aggregate)",
                    self.last_run_s,
                )
            )
        return out

    def tick(self, now: datetime) -> None:
        current = hour_floor(now)
        previous = current - timedelta(hours=1)
        due = now >= current + timedelta(seconds=self.settings.watermark_grace_s)
        history = self.history_due(current)
        hours = {*history, current}
        if self.finished_hours and due and self.last_hour_done != previous:
            hours.add(previous)
        wh = open_warehouse(self.settings)
        try:
            for hour in sorted(hours):  # oldest first: trends compare with the hour before
                began = time.monotonic()
                result = run_hour(self.settings, wh, self.store, hour)
                self.runs += 1
                self.last_run_s = time.monotonic() - began
                # Complete hours go to curated Parquet; retention once per finished hour.
                curate(self.settings, self.store, result.recomputed, now, prune=hour == previous)
                if hour in history and self.history_pending is not None:
                    self.history_pending.remove(hour)
                if hour == previous:
                    self.last_hour_done = previous
                log.info(
                    "hour %s: %d rows (%s)",
                    f"{hour:%Y-%m-%dT%H}Z",
                    result.rows,
                    "complete" if result.complete else "partial",
                )
            self.last_error = None
        except (DataQualityError, LakeFileUnreadable) as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("%s", exc)
        finally:
            wh.close()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.tick(datetime.now(UTC))
            except Exception as exc:  # keep the scheduler alive; the error is shown in status
                self.failures += 1
                limit = what_is_full(exc) or out_of_memory(exc)
                if limit is None:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("hourly run failed")
                else:  # the user's to change: one line a run, not a traceback a minute
                    self.last_error = limit
                    log.error("hourly run failed: %s; it tries again each minute", limit)
            catching_up = bool(self.history_pending)
            self.stop.wait(min(self.refresh_s, 5.0) if catching_up else self.refresh_s)
