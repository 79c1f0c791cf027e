from __future__ import annotations

from pathlib import Path

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
