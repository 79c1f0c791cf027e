"""The lake writer's bookkeeping files, read back typed: what the writer writes is what the
hourly job reads, and the hours the lake holds completely are decided in one place."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from sysmetrics.lake import layout
from sysmetrics.lake.catalog import (
    RoundManifest,
    Watermark,
    complete_hours,
    late_markers,
    manifest_folders,
    publish_watermark,
    read_manifests,
    read_watermarks,
)
from sysmetrics.lake.status import (
    WriterStatus,
    read_writer_status,
    remove_dead_writers,
    status_path,
)
from sysmetrics.lake.store import LakeStore
from sysmetrics.status_files import process_start, this_process_start, write_status

TOPIC = "machine_metrics"
HOUR = datetime(2026, 11, 30, 10, tzinfo=UTC)


def test_watermarks_round_trip_and_decide_which_hours_are_complete(tmp_path: Path) -> None:
    store = LakeStore(str(tmp_path))
    hours = [HOUR + timedelta(hours=n) for n in range(4)]
    assert complete_hours(store, TOPIC, hours) == []  # no writer has said anything yet
    marks = [
        Watermark(0, 120, HOUR + timedelta(hours=2, minutes=5), HOUR + timedelta(hours=2)),
        Watermark(1, 80, HOUR + timedelta(hours=1, minutes=59)),  # the slowest partition
    ]
    for mark in marks:
        publish_watermark(store, TOPIC, mark)
    assert sorted(read_watermarks(store, TOPIC), key=lambda m: m.partition) == marks
    assert complete_hours(store, TOPIC, hours[::-1]) == [HOUR]


def test_manifests_are_read_by_folder_and_skip_what_is_loaded(tmp_path: Path) -> None:
    store = LakeStore(str(tmp_path))
    first = RoundManifest(
        3,
        100,
        149,
        [
            f"{layout.hour_dir(TOPIC, HOUR)}/a.jsonl",
            f"{layout.hour_dir(TOPIC, HOUR + timedelta(hours=1))}/a.jsonl",
        ],
    )
    second = RoundManifest(3, 150, 199, [f"{layout.hour_dir(TOPIC, HOUR)}/b.jsonl"])
    written = HOUR + timedelta(hours=1, minutes=2)
    for manifest in (first, second):
        path = layout.manifest_path(TOPIC, written, manifest.partition, manifest.start)
        store.put(path, manifest.encode())
    store.put(f"{layout.manifest_dir(TOPIC)}/not-a-folder/x.json", b"{}")
    [(folder, hour)] = manifest_folders(store, TOPIC)
    assert hour == HOUR + timedelta(hours=1)
    read = dict(read_manifests(store, TOPIC, folder, skip=set()))
    assert sorted(read.values(), key=lambda m: m.start) == [first, second]
    first_name = next(name for name, m in read.items() if m == first)
    assert dict(read_manifests(store, TOPIC, folder, skip={first_name})) == {
        name: m for name, m in read.items() if name != first_name
    }
    assert first.files_by_hour() == {
        HOUR: [first.files[0]],
        HOUR + timedelta(hours=1): [first.files[1]],
    }


def test_late_markers_are_grouped_by_the_hour_they_name(tmp_path: Path) -> None:
    store = LakeStore(str(tmp_path))
    old = HOUR - timedelta(days=3)
    paths = [layout.late_marker_path(TOPIC, old, f"f{n}.jsonl") for n in range(2)]
    for path in paths:
        store.put(path, b"")
    store.put(f"{layout.late_dir(TOPIC)}/junk", b"")
    assert {h: sorted(p) for h, p in late_markers(store, TOPIC).items()} == {old: sorted(paths)}


def test_writer_status_is_read_back_typed_and_a_dead_writers_file_skipped(tmp_path: Path) -> None:
    alive = WriterStatus(pid=os.getpid(), topic=TOPIC, assigned=[0, 2], records=50, lag={"0": 3})
    write_status(status_path(tmp_path, alive.pid), alive)
    gone = WriterStatus(
        pid=2**22 + 7, topic=TOPIC, assigned=[1]
    )  # above any pid Linux can give (2**22)
    write_status(status_path(tmp_path, gone.pid), gone)
    [status] = read_writer_status(tmp_path)
    assert status == alive and status.total_lag == 3
    # A starting writer removes the dead one's file (it stayed for ever), not a live one's.
    remove_dead_writers(tmp_path)
    assert not status_path(tmp_path, gone.pid).exists()
    assert status_path(tmp_path, alive.pid).exists()


def test_a_status_file_whose_pid_another_process_took_is_skipped(tmp_path: Path) -> None:
    """After a reboot a writer's file names a pid that some other process has now: it showed
    that dead writer as running. The file's process start (pid 1's: a real process, started before
    this one) tells them apart; a file from before the field trusts the pid, as it did."""
    path = status_path(tmp_path, os.getpid())
    stranger = WriterStatus(
        pid=os.getpid(), process_start=process_start(1), topic=TOPIC, assigned=[0]
    )
    assert stranger.process_start is not None and stranger.process_start != process_start(
        os.getpid()
    )
    write_status(path, stranger)
    assert read_writer_status(tmp_path) == []
    ours = WriterStatus(
        pid=os.getpid(), process_start=this_process_start(), topic=TOPIC, assigned=[0]
    )
    write_status(path, ours)
    assert read_writer_status(tmp_path) == [ours]
    old = msgspec.json.encode(ours).replace(b'"process_start":', b'"x":')
    path.write_bytes(old)
    assert [s.pid for s in read_writer_status(tmp_path)] == [os.getpid()]
