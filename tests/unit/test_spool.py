from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sysmetrics.stream.spool import Spool


def test_unacked_records_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    records = [spool.append(b"k", f"v{i}".encode()) for i in range(10)]
    for record in records[:4]:
        spool.ack(record)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [r.value for r in reopened.unacked()] == [f"v{i}".encode() for i in range(4, 10)]
    assert reopened.append(b"k", b"next").seq == 10


def test_out_of_order_acks_only_advance_the_contiguous_prefix(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    a, b, c = (spool.append(b"k", v) for v in (b"a", b"b", b"c"))
    spool.ack(b)
    spool.close()
    assert [r.value for r in Spool(tmp_path, max_bytes=1 << 20).unacked()] == [b"a", b"b", b"c"]
    del a, c


def test_a_torn_record_from_a_crash_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"k", b"complete")
    spool.close()
    segment = next(tmp_path.glob("seg-*.log"))
    with segment.open("ab") as fh:
        fh.write(b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00")  # half a header
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [r.value for r in reopened.unacked()] == [b"complete"]
    reopened.append(b"k", b"after")
    reopened.close()
    assert [r.value for r in Spool(tmp_path, max_bytes=1 << 20).unacked()] == [
        b"complete",
        b"after",
    ]


def test_bound_drops_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=8192, segment_bytes=2048)
    for i in range(100):
        spool.append(b"k", f"{i:0100d}".encode())
    assert spool.dropped > 0
    assert spool.size_bytes <= 8192
    values = [int(r.value) for r in spool.unacked()]
    assert values == list(range(100 - len(values), 100))
    assert spool.dropped + len(values) == 100


def test_fully_acked_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    records = [spool.append(b"k", b"x" * 500) for _ in range(40)]
    for record in records:
        spool.ack(record)
    assert len(list(tmp_path.glob("seg-*.log"))) > 1  # progress is saved once per poll
    spool.save_acked()
    assert len(list(tmp_path.glob("seg-*.log"))) <= 1
    assert spool.pending == 0


_FULL_DISK = """
import resource, sys
from pathlib import Path
from sysmetrics.stream.spool import Spool

spool = Spool(Path(sys.argv[1]), max_bytes=1 << 20, segment_bytes=int(sys.argv[2]))
spool.extend([(b"k", b"a" * 100) for _ in range(3)])
# Files may not grow past 200 bytes in the segment the next records open, or past 400 in this
# one: the kernel writes part of the record that crosses the limit, then refuses (EFBIG).
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
try:
    spool.extend([(b"k", b"b" * 100) for _ in range(3)])
except OSError as exc:
    print("refused", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("pending", spool.pending)
spool.extend([(b"k", b"c" * 100)])
spool.close()
"""


@pytest.mark.parametrize(
    ("segment_bytes", "limit"), [(4096, 400), (300, 200)], ids=["same-segment", "new-segment"]
)
def test_a_full_disk_mid_append_leaves_whole_records_and_the_spool_goes_on(
    tmp_path: Path, segment_bytes: int, limit: int
) -> None:
    """A real file-size limit (RLIMIT_FSIZE, what a full disk does to a write): the failed
    append is undone whole, the spool stays readable, and the next append lands after it."""
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path), str(segment_bytes), str(limit)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "refused 27" in done.stdout  # EFBIG
    assert "pending 3" in done.stdout
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=segment_bytes)
    assert [(r.seq, r.value[:1]) for r in reopened.unacked()] == [
        (0, b"a"),
        (1, b"a"),
        (2, b"a"),
        (3, b"c"),
    ]
    assert all(len(r.value) == 100 for r in reopened.unacked())


_ACK_SAVE_REFUSED = """
import logging, resource, sys
from pathlib import Path
from sysmetrics.stream.spool import Spool

logging.basicConfig(level=logging.INFO)
spool = Spool(Path(sys.argv[1]), max_bytes=1 << 20)
for record in [spool.append(b"k", b"v") for _ in range(3)]:
    spool.ack(record)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
for _ in range(5):
    spool.save_acked()  # every poll retries: the full disk refuses each time
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
spool.save_acked()
spool.close()
"""


def test_a_full_disk_refusing_the_delivery_position_is_said_once_then_its_recovery(
    tmp_path: Path,
) -> None:
    """Saving how far delivery got fails on every poll while the disk is full: one error line
    (not one per poll), one line when it works again, and then nothing is pending."""
    done = subprocess.run(
        [sys.executable, "-c", _ACK_SAVE_REFUSED, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr.count("cannot save how far the spool's delivery got") == 1, done.stderr
    assert done.stderr.count("could save how far the spool's delivery got again") == 1
    assert Spool(tmp_path, max_bytes=1 << 20).pending == 0


def test_a_message_over_kafkas_size_limit_is_set_aside_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    """librdkafka refuses a message over its message.max.bytes when it is produced (before any
    broker is asked: none runs here). The spool sends in order, so that message stays first
    for good: it is moved to ``rejected/`` (durable, whole) and the messages after it are
    produced. A restart before the messages ahead of it are delivered finds it in the spool
    (the acknowledged prefix saved stops before it) and in ``rejected/``, and does not send it
    or set it aside again (it did until 2026-12-05: counted and logged twice). Before, the
    refusal was raised out of ``publish_many`` after the message was spooled, and on every
    later call."""
    from sysmetrics.config import Settings
    from sysmetrics.stream.producer import SpooledProducer

    settings = Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    producer = SpooledProducer(settings, tmp_path / "spool")
    large = b'{"disks": [' + b"0," * 600_000 + b"0]}"
    producer.publish_many([(b"web-1", b"first"), (b"big-1", large), (b"web-1", b"after")])
    assert producer.stats.set_aside == 1
    assert [r.value for r in producer.spool.unacked()] == [b"first", b"after"]
    [kept] = (tmp_path / "spool" / "rejected").iterdir()
    assert kept.read_bytes() == b"big-1\n" + large
    # Sent without the spool (a full disk refused it): lost, counted and said, not raised.
    producer.publish_unspooled(b"big-1", large)
    assert producer.stats.lost == 1 and "too large" in (producer.stats.last_error or "")
    kept_bytes = kept.read_bytes()
    restarted = SpooledProducer(settings, tmp_path / "spool")
    restarted.poll()
    assert restarted.stats.set_aside == 0
    assert [r.value for r in restarted.spool.unacked()] == [b"first", b"after"]
    assert [p.name for p in (tmp_path / "spool" / "rejected").iterdir()] == [kept.name]
    assert kept.read_bytes() == kept_bytes
    # A file that does not hold the record's bytes (torn, or of an earlier spool) is no proof.
    restarted.close(timeout_s=0)
    kept.write_bytes(b"big-1\n" + large[:1000])
    again = SpooledProducer(settings, tmp_path / "spool")
    again.poll()
    assert again.stats.set_aside == 1 and kept.read_bytes() == b"big-1\n" + large
