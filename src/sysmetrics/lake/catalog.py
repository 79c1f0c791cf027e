"""The lake writer's bookkeeping files, typed: completeness watermarks, round manifests and
late-data markers. The writer writes them and the hourly job reads them through this module
only (no other room parses them); it needs neither the writer nor its Kafka client.

* a **watermark** per partition: the committed offset and the event time before which the lake
  holds everything of that partition (the hourly job waits on the minimum over partitions);
* a **round manifest** per flush round and partition, filed under the writer's clock's hour:
  the data files the round created (the hourly job reads these instead of listing the lake)
  and the host retirements it read (``schema.RETIRED_HEADER``: no event, no file);
* a **late marker** per file written into an hour beyond the hourly job's look-back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Watermark:
    partition: int
    committed_offset: int
    """The partition's next offset to read: everything before it is in durable files."""
    complete_before: datetime
    """Event time before which the lake holds every event of this partition."""
    max_event_ts: datetime | None = None
    updated_at: datetime | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "partition": self.partition,
                "committed_offset": self.committed_offset,
                "complete_before": self.complete_before.isoformat(),
                "max_event_ts": _text(self.max_event_ts),
                "updated_at": _text(self.updated_at),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Watermark:
        raw = json.loads(data)
        return cls(
            partition=int(raw["partition"]),
            committed_offset=int(raw["committed_offset"]),
            complete_before=datetime.fromisoformat(raw["complete_before"]),
            max_event_ts=_time(raw.get("max_event_ts")),
            updated_at=_time(raw.get("updated_at")),
        )


def publish_watermark(store: LakeStore, topic: str, mark: Watermark) -> None:
    """Overwrite the partition's watermark (not fsynced: a lost one is re-published with the
    next round, and an old one only makes the hourly job wait)."""
    store.put(layout.watermark_path(topic, mark.partition), mark.encode(), durable=False)


def read_watermarks(store: LakeStore, topic: str) -> list[Watermark]:
    """Every partition's published watermark."""
    folder = layout.watermark_dir(topic)
    marks = []
    for name in store.list_dir(folder):
        data = store.get(f"{folder}/{name}")
        if data:
            marks.append(Watermark.decode(data))
    return marks


def complete_before(store: LakeStore, topic: str) -> datetime | None:
    """The event time up to which every partition's writer says the lake is complete."""
    marks = read_watermarks(store, topic)
    return min((m.complete_before for m in marks), default=None)


def complete_hours(store: LakeStore, topic: str, hours: list[datetime]) -> list[datetime]:
    """Those of ``hours`` the lake holds completely (every partition's watermark passed the
    hour's end), in order."""
    complete = complete_before(store, topic)
    if complete is None:
        return []
    return sorted(h for h in hours if h + HOUR <= complete)


@dataclass(frozen=True)
class RoundManifest:
    partition: int
    start: int
    end: int
    files: list[str]
    """The round's data files, relative to the lake root."""
    retired: list[tuple[str, int]] = field(default_factory=list)
    """The hosts the round's retirements named, each with when it was retired (Unix ms)."""

    def encode(self) -> bytes:
        content: dict[str, object] = {
            "partition": self.partition,
            "start": self.start,
            "end": self.end,
            "files": self.files,
        }
        if self.retired:  # absent otherwise: what writers before retirements wrote
            content["retired"] = [[host, at_ms] for host, at_ms in self.retired]
        return json.dumps(content).encode()

    @classmethod
    def decode(cls, data: bytes) -> RoundManifest:
        raw = json.loads(data)
        return cls(
            int(raw["partition"]),
            int(raw["start"]),
            int(raw["end"]),
            list(raw["files"]),
            [(str(host), int(at_ms)) for host, at_ms in raw.get("retired", [])],
        )

    def files_by_hour(self) -> dict[datetime, list[str]]:
        out: dict[datetime, list[str]] = {}
        for rel in self.files:
            if (hour := layout.hour_of_path(rel)) is not None:
                out.setdefault(hour, []).append(rel)
        return out


def manifest_folders(store: LakeStore, topic: str) -> list[tuple[str, datetime]]:
    """The manifest folders, oldest first, with the write hour each stands for."""
    folders = []
    for name in sorted(store.list_dir(layout.manifest_dir(topic))):
        if (written := layout.parse_manifest_folder(name)) is not None:
            folders.append((name, written))
    return folders


def read_manifests(
    store: LakeStore, topic: str, folder: str, skip: set[str]
) -> Iterator[tuple[str, RoundManifest]]:
    """The manifests of ``folder`` not named in ``skip``, with their names."""
    path = f"{layout.manifest_dir(topic)}/{folder}"
    for name in store.list_dir(path):
        if name in skip or not name.endswith(".json"):
            continue
        data = store.get(f"{path}/{name}")
        if data is not None:
            yield name, RoundManifest.decode(data)


def delete_manifest_folder(store: LakeStore, topic: str, folder: str) -> None:
    path = f"{layout.manifest_dir(topic)}/{folder}"
    store.delete([f"{path}/{name}" for name in store.list_dir(path)])


def late_markers(store: LakeStore, topic: str) -> dict[datetime, list[str]]:
    """The paths of the markers of files written into hours beyond the look-back, by hour."""
    folder = layout.late_dir(topic)
    marked: dict[datetime, list[str]] = {}
    for name in store.list_dir(folder):
        if (hour := layout.parse_late_marker(name)) is not None:
            marked.setdefault(hour, []).append(f"{folder}/{name}")
    return marked


def _text(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
