"""Reading a lake back (a local folder, or any store), to check exactly-once contents."""

from __future__ import annotations

import gzip
import json
from collections import Counter
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
