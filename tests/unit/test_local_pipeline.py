"""`sysmetrics up`'s pipeline object: it keeps what it writes on its own bounded (a component's
log past the limit is copied aside and emptied while the component goes on writing to it;
Airflow's old log files, a folder per task run that Airflow never deletes, go after the days
set), it stops cleanly after a start that failed, and it takes no other process for one of
its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sysmetrics.config import Settings
from sysmetrics.orchestration.local import Component, LocalPipeline
from sysmetrics.stream.broker import EmbeddedBroker
from tests.support.waiting import wait_for

# Writes a batch of 100 numbered lines at start and at each SIGUSR1, then waits.
BATCH_WRITER = """
import signal, sys, time
batches = 0
def write_batch(*_):
    global batches
    for i in range(100):
        sys.stdout.write(f"batch {batches} line {i:03d} " + "x" * 40 + "\\n")
    sys.stdout.flush()
    batches += 1
signal.signal(signal.SIGUSR1, write_batch)
write_batch()
while True:
    time.sleep(1)
"""


def _batch(number: int) -> str:
    return "".join(f"batch {number} line {i:03d} " + "x" * 40 + "\n" for i in range(100))


def test_a_component_log_past_the_limit_is_rotated_while_the_component_writes_on(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", up_log_max_mb=0.001)  # 1,048 bytes
    pipeline = LocalPipeline(settings, collect=False, dashboard=False)
    writer = Component("writer", [], command=[sys.executable, "-c", BATCH_WRITER])
    pipeline.components = [writer]
    pipeline.log_dir.mkdir(parents=True)
    pipeline._spawn(writer)
    log_file = pipeline.log_dir / "writer.log"
    try:
        for batch in range(5):
            if batch:
                assert writer.process is not None
                os.kill(writer.process.pid, signal.SIGUSR1)
            expected = _batch(batch)
            wait_for(lambda e=expected: log_file.read_text() == e, 30, f"batch {batch}")
            pipeline.supervise()
            # Emptied, and the component's next line starts it: no hole of zero bytes before it.
            assert log_file.stat().st_size == 0
            assert (pipeline.log_dir / "writer.log.1").read_text() == _batch(batch)
        assert writer.running, "the component was not disturbed"
        kept = sorted(p.name for p in pipeline.log_dir.iterdir())
        assert kept == ["writer.log", "writer.log.1", "writer.log.2", "writer.log.3"]
        for n, batch in ((2, 3), (3, 2)):
            assert (pipeline.log_dir / f"writer.log.{n}").read_text() == _batch(batch)
        # Under the limit nothing moves.
        (pipeline.log_dir / "writer.log.1").unlink()
        log_file.write_text("short\n")
        pipeline.supervise()
        assert log_file.read_text() == "short\n"
        assert not (pipeline.log_dir / "writer.log.1").exists()
    finally:
        assert writer.process is not None
        writer.process.kill()
        writer.process.wait()


def test_airflows_old_log_files_are_deleted_and_young_ones_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", up_airflow_log_days=14)
    pipeline = LocalPipeline(settings, collect=False, dashboard=False, airflow=True)
    logs = settings.data_dir / "airflow" / "logs"
    old_run = logs / "dag_id=machine_metrics_hourly" / "run_id=scheduled__2026-11-01T00:00:00"
    new_run = logs / "dag_id=machine_metrics_hourly" / "run_id=scheduled__2026-12-06T00:00:00"
    fifteen_days_ago = time.time() - 15 * 86400
    for run, stamp in ((old_run, fifteen_days_ago), (new_run, None)):
        (run / "task_id=load").mkdir(parents=True)
        (run / "task_id=load" / "attempt=1.log").write_text("loaded\n")
        if stamp is not None:
            os.utime(run / "task_id=load" / "attempt=1.log", (stamp, stamp))
    old_empty, new_empty = logs / "dag_processor" / "2026-11-01", logs / "dag_processor" / "today"
    for folder in (old_empty, new_empty):
        folder.mkdir(parents=True)
    os.utime(old_empty, (fifteen_days_ago, fifteen_days_ago))

    pipeline.supervise()

    assert not (old_run / "task_id=load" / "attempt=1.log").exists()
    assert (new_run / "task_id=load" / "attempt=1.log").read_text() == "loaded\n"
    assert not old_empty.exists(), "an empty folder older than an hour goes"
    assert new_empty.is_dir(), "a young empty folder may be a task run's, about to be written"

    # Once an hour: a file that ages meanwhile waits for the next sweep.
    (new_run / "task_id=load" / "attempt=2.log").write_text("retried\n")
    os.utime(new_run / "task_id=load" / "attempt=2.log", (fifteen_days_ago, fifteen_days_ago))
    pipeline.supervise()
    assert (new_run / "task_id=load" / "attempt=2.log").exists()


def test_a_pipeline_whose_start_failed_stops_without_an_error(tmp_path: Path) -> None:
    """`up` stops what it started when its start fails (the broker's, say); nothing of the
    pipeline began, its scheduler thread included (joining it raised RuntimeError, a traceback
    in place of the start's own error)."""
    settings = Settings(data_dir=tmp_path / "data")
    pipeline = LocalPipeline(settings, collect=False, dashboard=False)
    pipeline.shutdown()
    assert pipeline.stop.is_set()


def test_a_pid_another_process_has_taken_since_is_not_taken_for_ours(tmp_path: Path) -> None:
    """After a reboot the broker's PID file and a killed `up`'s state name pids that other
    processes may hold: those are neither the broker (`up` started none, `broker stop`
    signalled that process) nor leftovers to stop."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        (data_dir / "broker.pid").write_text(f"{stranger.pid} 9092\n")
        broker = EmbeddedBroker(data_dir, 9092)
        assert broker.running() is None
        broker.stop()
        state = {
            "pid": stranger.pid,
            "broker_pid": stranger.pid,
            "own_broker": True,
            "components": {"lake writer": stranger.pid, "airflow": stranger.pid},
        }
        (data_dir / "up.json").write_text(json.dumps(state))
        pipeline = LocalPipeline(Settings(data_dir=data_dir), collect=False, dashboard=False)
        assert pipeline.take_over_leftovers() == []  # nor "`up` already runs"
        assert not pipeline.own_broker
        assert stranger.poll() is None, "the stranger was signalled"
    finally:
        stranger.kill()
        stranger.wait()
    # A container restarted on its volume: the last `up` had the pid of the `up` now starting
    # (whose command line holds "sysmetrics up"), a component the same.
    starting_up = subprocess.run(
        [sys.executable, "-c", TAKE_OVER_OWN_PID, str(data_dir), "sysmetrics", "up"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert starting_up.returncode == 0, starting_up.stderr[-2000:]
    assert starting_up.stdout.strip() == "[]"


TAKE_OVER_OWN_PID = """
import json, os, sys
from pathlib import Path
from sysmetrics.config import Settings
from sysmetrics.orchestration.local import LocalPipeline
data_dir = Path(sys.argv[1])
state = {"pid": os.getpid(), "components": {"lake writer": os.getpid()}}
(data_dir / "up.json").write_text(json.dumps(state))
pipeline = LocalPipeline(Settings(data_dir=data_dir), collect=False, dashboard=False)
print(pipeline.take_over_leftovers())
"""
