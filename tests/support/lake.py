"""Reading a lake back (a local folder, or any store), to check exactly-once contents."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import zstandard

from sysmetrics.lake import layout
from sysmetrics.lake.catalog import manifest_folders, read_manifests
from sysmetrics.lake.store import LakeStore


def data_files(lake: Path) -> list[Path]:
    return sorted(p for p in (lake / "raw").rglob("*.jsonl*") if not p.name.startswith("."))


def read_lines(path: Path) -> list[bytes]:
    return lines_of(path.name, path.read_bytes())


def lines_of(name: str, data: bytes) -> list[bytes]:
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [line for line in data.split(b"\n") if line]


def listed_retirements(lake: Path, topic: str) -> list[str]:
    """The hosts whose retirements the lake writers' round manifests list, in order."""
    store = LakeStore(str(lake))
    return [
        host
        for folder, _ in manifest_folders(store, topic)
        for _, manifest in read_manifests(store, topic, folder, skip=set())
        for host, _ in manifest.retired
    ]


def event_id_counts(lake: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in data_files(lake):
        for line in read_lines(path):
            counts[json.loads(line)["event_id"]] += 1
    return counts


def store_event_id_counts(store: LakeStore, topic: str) -> Counter[str]:
    """The same over a lake store's raw files (gs://, s3://)."""
    counts: Counter[str] = Counter()
    for rel in store.glob(f"{layout.raw_root(topic)}/*/*/*/*/*.jsonl*"):
        for line in lines_of(rel, store.get(rel) or b""):
            counts[json.loads(line)["event_id"]] += 1
    return counts


def assert_each_sample_once(
    events: list[dict], expected_ms: list[int], resent: int, within_ms: int = 0
) -> None:
    """Each expected sample time (Unix ms) is one event, and no event has another time (matched
    within ``within_ms``: an OTLP collection's time is its earliest point's, its scrapers stamp
    them milliseconds apart); at most ``resent`` events twice, as the same event (same
    event_id: the warehouse and the curated lake keep one): what a killed receiver's spool
    resent, Kafka having taken it before the acknowledgement was read."""
    ids: dict[int, set[str]] = {}
    for event in events:
        at = round(datetime.fromisoformat(event["ts"]).timestamp() * 1000)
        ids.setdefault(at, set()).add(event["event_id"])
    assert all(len(same) == 1 for same in ids.values()), "one event_id per sample time"
    duplicated = len(events) - len(ids)
    assert duplicated <= resent, f"{duplicated} duplicated, {resent} resent"
    expected = set(expected_ms)

    def matched(at: int, times: set[int] | dict[int, set[str]]) -> bool:
        return any(abs(at - other) <= within_ms for other in times)

    assert not (lost := sorted(t for t in expected if not matched(t, ids))), f"lost: {lost}"
    assert not (extra := sorted(t for t in ids if not matched(t, expected))), f"no such: {extra}"
    assert len(ids) == len(expected), (sorted(ids), sorted(expected))
