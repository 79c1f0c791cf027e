"""The lake's layout, defined once; the writer and the batch side both import it.

    raw/<topic>/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition>+<start>-<end>.jsonl[.gz|.zst]
    quarantine/<topic>/<topic>+<partition>+<start>-<end>.jsonl
    _intents/<topic>/p<partition>.json       the batches of the last flush round (crash recovery)
    _watermarks/<topic>/p<partition>.json    event time up to which a partition is complete
    _late/<topic>/<YYYY-MM-DDTHH>+<data file name>   a file written into an hour older than the
                                             hourly job's look-back window (it loads and clears)
    _manifests/<topic>/<YYYY-MM-DDTHH>/p<partition>+<start>.json   the data files of one flush
                                             round of one partition, filed by the hour it was
                                             written: the hourly job finds new files by reading
                                             these instead of listing every hour of the lake
    curated/<topic>/year=YYYY/month=MM/day=DD/hour=HH/part-v<version>.parquet   the hour
                                             compacted: deduplicated, typed, sorted by host, ts
    curated/<topic>/…/hour=HH/_manifest-v<version>.json   its source files, rows, event_id
                                             checksum, the file's SHA-256; the highest version
                                             is the hour's

Partitions are by the event's own UTC timestamp (Hive style, so DuckDB and BigQuery prune by
path). Names come only from the topic (validated), partition numbers, offsets and times: nothing
a message carries can choose a path.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

from sysmetrics.timeutil import EPOCH, hour_floor

EXTENSIONS: Final = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
DATA_GLOBS: Final = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst")
_FILE_RE = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<start>\d+)-(?P<end>\d+)\.jsonl"
)


def raw_root(topic: str) -> str:
    return f"raw/{topic}"


def month_dir(layer: str, topic: str, day: date) -> str:
    """The folder of the ``raw`` or ``curated`` layer holding the UTC month of ``day``."""
    return f"{layer}/{topic}/year={day:%Y}/month={day:%m}"


def day_dir(layer: str, topic: str, day: date) -> str:
    """One UTC day's folder of the ``raw`` or ``curated`` layer; its hours are folders in it."""
    return f"{month_dir(layer, topic, day)}/day={day:%d}"


def hour_dir(topic: str, hour: datetime) -> str:
    h = hour.astimezone(UTC)
    return f"{day_dir('raw', topic, h)}/hour={h:%H}"


def curated_hour_dir(topic: str, hour: datetime) -> str:
    h = hour.astimezone(UTC)
    return f"{day_dir('curated', topic, h)}/hour={h:%H}"


def curated_data_name(version: int) -> str:
    return f"part-v{version:06d}.parquet"


def curated_manifest_name(version: int) -> str:
    return f"_manifest-v{version:06d}.json"


_CURATED_RE = re.compile(r"^(?:part|_manifest)-v(\d{6})\.(?:parquet|json)$")


def parse_curated_version(name: str) -> int | None:
    """The version of a curated data file or manifest name, else None."""
    match = _CURATED_RE.match(name)
    return int(match[1]) if match else None


def hour_glob(topic: str, hour: datetime) -> str:
    """Every data file of one hour, whatever its compression."""
    return f"{hour_dir(topic, hour)}/*.jsonl*"


def batch_name(topic: str, partition: int, start: int, end: int, compression: str = "none") -> str:
    return f"{topic}+{partition:04d}+{start:020d}-{end:020d}{EXTENSIONS[compression]}"


def parse_batch_name(name: str) -> tuple[int, int, int] | None:
    """(partition, start offset, end offset) of a data file name, else None."""
    match = _FILE_RE.match(name)
    if match is None:
        return None
    return int(match["partition"]), int(match["start"]), int(match["end"])


def quarantine_path(topic: str, partition: int, start: int, end: int) -> str:
    return f"quarantine/{topic}/{batch_name(topic, partition, start, end)}"


def intent_path(topic: str, partition: int) -> str:
    return f"_intents/{topic}/p{partition:04d}.json"


def watermark_dir(topic: str) -> str:
    return f"_watermarks/{topic}"


def watermark_path(topic: str, partition: int) -> str:
    return f"{watermark_dir(topic)}/p{partition:04d}.json"


def late_dir(topic: str) -> str:
    return f"_late/{topic}"


def late_marker_path(topic: str, hour: datetime, file_name: str) -> str:
    return f"{late_dir(topic)}/{hour.astimezone(UTC):%Y-%m-%dT%H}+{file_name}"


def newer_fields_dir(topic: str) -> str:
    return f"_newer/{topic}"


def newer_fields_marker_path(topic: str, hour: datetime, file_name: str) -> str:
    """Marks a raw file holding fields the writer did not know (a newer minor schema); the
    marker's content is their paths, as JSON."""
    return f"{newer_fields_dir(topic)}/{hour.astimezone(UTC):%Y-%m-%dT%H}+{file_name}"


def parse_marker(name: str) -> tuple[datetime, str] | None:
    """(hour, raw file name) a late-data or newer-fields marker names, else None."""
    hour = parse_late_marker(name)
    return None if hour is None else (hour, name.split("+", 1)[1])


def parse_late_marker(name: str) -> datetime | None:
    """The hour a late-data (or newer-fields) marker names, else None."""
    try:
        return datetime.strptime(name.split("+", 1)[0], "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None


def hour_of(ts: datetime) -> datetime:
    """The partition hour of an event time: its UTC hour."""
    return hour_floor(ts)


MICROS_PER_HOUR: Final = 3_600_000_000
"""An event's partition hour as a number: its ts in microseconds since the epoch // this (the
writer's hot path; :func:`hour_start` turns the number back into ``hour_of``'s hour)."""


def hour_start(hour_number: int) -> datetime:
    return EPOCH + timedelta(hours=hour_number)


def manifest_dir(topic: str) -> str:
    return f"_manifests/{topic}"


def manifest_folder(written: datetime) -> str:
    return f"{written.astimezone(UTC):%Y-%m-%dT%H}"


def manifest_path(topic: str, written: datetime, partition: int, start: int) -> str:
    return f"{manifest_dir(topic)}/{manifest_folder(written)}/p{partition:04d}+{start:020d}.json"


def parse_manifest_folder(name: str) -> datetime | None:
    """The write hour a manifest folder stands for, else None."""
    try:
        return datetime.strptime(name, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None


def hour_of_path(rel: str) -> datetime | None:
    """The event hour of a data file from its partition folders, else None."""
    match = _HOUR_DIR_RE.search(rel)
    if match is None:
        return None
    year, month, day, hour = (int(g) for g in match.groups())
    return datetime(year, month, day, hour, tzinfo=UTC)


_HOUR_DIR_RE = re.compile(r"/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/")
