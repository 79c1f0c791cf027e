"""Reading a local lake back, to check exactly-once contents."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import zstandard


def data_files(lake: Path) -> list[Path]:
    return sorted(p for p in (lake / "raw").rglob("*.jsonl*") if not p.name.startswith("."))


def read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [line for line in data.split(b"\n") if line]


def event_id_counts(lake: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in data_files(lake):
        for line in read_lines(path):
            counts[json.loads(line)["event_id"]] += 1
    return counts
