"""The lake for years: each finished hour compacted into one Parquet file, verified, and only
then the raw JSON of old hours deleted.

Compaction (DuckDB, in memory) reads the hour's raw files (plus the current curated version
when late files arrive after it), keeps one copy per ``event_id`` (the one from the smallest
file name, as the warehouse load does), sorts by host and time, and writes the full schema-v1
event with nested columns, timestamps as timestamps, zstd, row groups of
``row_group_rows``, and the raw file each event came from (``source_file``). The file is
complete before it is visible (atomic create or rename), then a new manifest version names it
(create-if-absent): readers take the highest manifest, so a crash at any point leaves the
previous version in force and a re-run completes the hour. Older versions are removed after.

Retention deletes an hour's raw files only when the curated version holds exactly the same
event_id set (count and checksum) as those files; an hour that cannot be verified keeps its
raw files, and says why.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sysmetrics.event_types import duckdb_columns, field_paths
from sysmetrics.interrupts import track
from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore
from sysmetrics.limits import NO_ROOM
from sysmetrics.timeutil import hour_floor

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
EACH_EVENT_ONCE = "QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY source_file) = 1"
"""Each event once, in SQL over lake files with a ``source_file`` column: the copy from the file
with the smallest name (a resent or re-flushed event is in several files). Compaction and the
warehouse load both keep that copy, so a curated file holds the rows a load of its raw files
would."""
DEFAULT_ROW_GROUP_ROWS = 122_880
"""DuckDB's own row group size; BigQuery and DuckDB both read row groups of 100k+ rows best."""


def raw_files(store: LakeStore, topic: str, hour: datetime) -> list[str]:
    """Relative paths of every raw data file of ``hour``."""
    return [
        path
        for path in store.glob(layout.hour_glob(topic, hour))
        if layout.parse_batch_name(path.rsplit("/", 1)[-1])
    ]


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@dataclass
class CuratedManifest:
    version: int
    hour: str
    file: str
    rows: int
    checksum: str
    """bit_xor of md5_number(event_id) over the rows (order-free, stable across runs)."""
    sources: list[str]
    """Names of the raw files whose events the file holds."""
    created_at: str = ""
    schema_version: int = 1
    fields: list[str] = field(default_factory=list)
    """The event fields its columns hold (``field_paths`` of the version that wrote it)."""
    sha256: str = ""
    """The data file's SHA-256 (hex): a changed byte that still decodes, to other numbers,
    differs here. Empty in manifests written before 2026-12-05."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CuratedManifest:
        """A manifest's keys this version knows; one a later version adds is ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def current_manifest(store: LakeStore, topic: str, hour: datetime) -> CuratedManifest | None:
    """The hour's curated version in force (the highest manifest), or None."""
    folder = layout.curated_hour_dir(topic, hour)
    versions = [
        v
        for name in store.list_dir(folder)
        if name.startswith("_manifest") and (v := layout.parse_curated_version(name)) is not None
    ]
    if not versions:
        return None
    data = store.get(f"{folder}/{layout.curated_manifest_name(max(versions))}")
    return None if data is None else CuratedManifest.from_json(json.loads(data))


def newer_fields(store: LakeStore, topic: str, hour: datetime) -> dict[str, set[str]]:
    """Raw files of ``hour`` that hold fields their writer did not know: name -> field paths."""
    folder = layout.newer_fields_dir(topic)
    marked: dict[str, set[str]] = {}
    for name in store.list_dir(folder):
        parsed = layout.parse_marker(name)
        if parsed is not None and parsed[0] == hour and (data := store.get(f"{folder}/{name}")):
            marked[parsed[1]] = set(json.loads(data))
    return marked


def curated_uri(store: LakeStore, topic: str, manifest: CuratedManifest) -> str:
    return store.uri(f"{layout.curated_hour_dir(topic, _hour(manifest))}/{manifest.file}")


def changed_since_compacted(store: LakeStore, topic: str, manifest: CuratedManifest) -> str | None:
    """Why the hour's data file is not the one its compaction wrote (gone, or other bytes), or
    None. A manifest from before 2026-12-05 has no SHA-256 to compare: None."""
    if not manifest.sha256:
        return None
    found = store.sha256(f"{layout.curated_hour_dir(topic, _hour(manifest))}/{manifest.file}")
    if found is None:
        return "is missing"
    if found != manifest.sha256:
        return "has changed since it was compacted (its SHA-256 is not its manifest's)"
    return None


def ensure_unchanged(store: LakeStore, topic: str, manifest: CuratedManifest) -> None:
    """Raises :class:`LakeFileUnreadable` when ``changed_since_compacted`` says why: read, the
    file would give other numbers, or bake them into the next version."""
    why = changed_since_compacted(store, topic, manifest)
    if why is not None:
        raise LakeFileUnreadable(_rebuild_steps(curated_uri(store, topic, manifest), why))


def _rebuild_steps(file: str, why: str) -> str:
    return (
        f"curated file {file} {why}: 'sysmetrics lake verify' lists the hours whose file is "
        "damaged; 'lake compact --rebuild' writes each again from its raw files while they "
        "remain; then run the hour again with --rebuild"
    )


def _hour(manifest: CuratedManifest) -> datetime:
    return datetime.fromisoformat(manifest.hour)


# ---------------------------------------------------------------------------- engine
def _connect(
    store: LakeStore, memory_limit: str | None = None, spill_dir: str | None = None
) -> Any:
    """An in-memory DuckDB reading the lake; ``memory_limit`` (DuckDB's own default: 80 % of
    the machine) past which it spills to ``spill_dir``."""
    import duckdb

    con = track(duckdb.connect())
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    if memory_limit is not None:
        con.execute("SET memory_limit = $limit", {"limit": memory_limit})
    if spill_dir is not None:
        con.execute("SET temp_directory = $dir", {"dir": spill_dir})
    if not store.is_local:
        con.register_filesystem(store.fs)
    return con


@contextlib.contextmanager
def _lake_duckdb(store: LakeStore, memory_limit: str | None) -> Iterator[Any]:
    """:func:`_connect` within ``memory_limit``, spilling to a temporary folder of its own
    (DuckDB's default for an in-memory database is ``.tmp`` in the working directory)."""
    with tempfile.TemporaryDirectory(prefix="sysmetrics-duckdb-") as tmp:
        con = _connect(store, memory_limit, spill_dir=tmp)
        try:
            yield con
        finally:
            con.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def raw_source(uris: list[str], only: Mapping[str, frozenset[str]] | None = None) -> str:
    """DuckDB's typed read of these raw files, plus the file each row came from: every
    schema-v1 field, or just the struct fields named in ``only`` (see ``duckdb_columns``)."""
    fields = duckdb_columns(only).items()
    columns = "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in fields)
    return (
        "(SELECT * EXCLUDE (filename), parse_filename(filename) AS source_file FROM read_json(["
        + ", ".join(_quote(u) for u in uris)
        + f"], format = 'newline_delimited', columns = {columns}}}, filename = true, "
        "hive_partitioning = false))"
    )


SPLICED_CHUNK_BYTES = 64 * 1024 * 1024
"""Raw JSON read into one spliced file (see ``stage_raw_files``): bounds the temporary disk
and the memory a read of an hour of any fleet size takes."""
_FILES_AT_ONCE = 64
"""Raw files fetched at once: object storage answers each in tens of milliseconds."""


def stage_raw_files(
    con: Any,
    fs: Any,
    uris: list[str],
    table: str,
    only: Mapping[str, frozenset[str]] | None = None,
) -> str:
    """Fill a new temporary table ``table`` of ``con`` with the rows ``raw_source(uris,
    only)`` gives, reading the files through the fsspec filesystem ``fs``; return a relation
    over it.

    Why: DuckDB's typed JSON reader sets up the event's ~100 columns for every file it opens,
    ~1.7 ms a file (0.15 ms with two columns), so an hour in the writer's layout (7,299 files
    of 50 events for 1,000 hosts) took 13 s to read where one file of the same lines takes
    1.1 s. Here each file's lines are copied into a file of ~64 MB with the file's name spliced
    in as the first key of each line (a key no event can have: a fresh random name), which
    DuckDB reads with the same types, the same transform and so the same values.

    A file with a line that does not open an object at its first byte is read as
    ``raw_source`` reads it, as is every file of a chunk whose spliced read DuckDB refuses (an
    empty object spliced is not JSON), so an error names the lake file and line (``con`` must
    be in auto-commit: a failed statement there leaves the table as it was)."""
    key = f"sysmetrics_source_file_{uuid.uuid4().hex}"
    columns = duckdb_columns(only)
    typed = {**columns, key: "VARCHAR"}
    spec = "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in typed.items()) + "}"
    declared = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
    con.execute(f'CREATE OR REPLACE TEMP TABLE {table} ({declared}, "source_file" VARCHAR)')
    try:
        with (
            tempfile.TemporaryDirectory(prefix="sysmetrics-raw-") as tmp,
            (Path(tmp) / "chunk.jsonl").open("w+b") as out,
        ):
            chunk = _Chunk(con, table, spec, key, only, out)
            for uri, data in _raw_bytes(fs, uris):
                spliced = _spliced(data, key, _name(uri))
                if spliced is None:
                    chunk.read_as_files([uri])
                else:
                    chunk.add(uri, spliced)
            chunk.flush()
    except OSError as exc:
        if exc.errno not in NO_ROOM:  # a StoreError (the lake's) has no errno: raised as it is
            raise
        raise OSError(  # it named no file: say which folder to free, or to move away from
            exc.errno,
            f"{exc.strerror} in the temporary folder {tempfile.gettempdir()}, staging the hour's "
            "raw files (64 MB at a time): free space there, or set TMPDIR to a folder with room",
        ) from None
    return f"(SELECT * FROM {table})"


class _Chunk:
    """The spliced file being filled (``out``), and the reads of it into the table."""

    def __init__(
        self,
        con: Any,
        table: str,
        spec: str,
        key: str,
        only: Mapping[str, frozenset[str]] | None,
        out: IO[bytes],
    ) -> None:
        self.con, self.table, self.spec, self.key, self.only = con, table, spec, key, only
        self.out = out
        self.uris: list[str] = []

    def add(self, uri: str, spliced: bytes) -> None:
        self.out.write(spliced)
        self.uris.append(uri)
        if self.out.tell() >= SPLICED_CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        """Read what the file holds into the table, then empty it."""
        import duckdb

        if not self.uris:
            return
        self.out.flush()
        try:
            self.con.execute(
                f'INSERT INTO {self.table} SELECT * EXCLUDE ("{self.key}"), "{self.key}" '
                f"AS source_file FROM read_json({_quote(self.out.name)}, format = "
                f"'newline_delimited', columns = {self.spec}, hive_partitioning = false)"
            )
        except (duckdb.OutOfMemoryException, duckdb.InterruptException):
            raise  # no file's fault: reading them one by one would only fail slower
        except duckdb.Error:  # read again file by file: DuckDB's error names the lake file
            self.read_as_files(self.uris)
        self.out.seek(0)
        self.out.truncate()
        self.uris = []

    def read_as_files(self, uris: list[str]) -> None:
        for start in range(0, len(uris), _FILES_AT_ONCE):
            files = raw_source(uris[start : start + _FILES_AT_ONCE], self.only)
            self.con.execute(f"INSERT INTO {self.table} SELECT * FROM {files}")


def _raw_bytes(fs: Any, uris: list[str]) -> Iterator[tuple[str, bytes]]:
    """Each raw file's JSON lines, decompressed, in order; a few fetched at once."""

    def fetch(uri: str) -> bytes:
        try:
            return bytes(fs.cat_file(uri))
        except FileNotFoundError as exc:
            raise LakeFileUnreadable(f"lake file {uri} is gone (deleted while read?)") from exc

    with ThreadPoolExecutor(LOOKUPS_AT_ONCE) as pool:
        for start in range(0, len(uris), _FILES_AT_ONCE):
            group = uris[start : start + _FILES_AT_ONCE]
            for uri, data in zip(group, pool.map(fetch, group), strict=True):
                yield uri, _decompressed(uri, data)


def _decompressed(uri: str, data: bytes) -> bytes:
    if uri.endswith(".gz"):
        return gzip.decompress(data)
    if uri.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        return reader.read()
    return data


def _spliced(data: bytes, key: str, name: str) -> bytes | None:
    """``data``'s lines with ``"key": name`` as their first member; None unless every line
    opens an object at its first byte. A line that is then not JSON (an empty object) fails
    the read."""
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    if not all(line[:1] == b"{" for line in lines):
        return None
    head = b'{"' + key.encode() + b'":' + json.dumps(name).encode() + b","
    return b"".join([head + line[1:] + b"\n" for line in lines])


class LakeFileUnreadable(ValueError):
    """A raw lake file with a line the schema's types cannot hold, or a damaged curated file;
    the message names the file (and the line) and says what to do."""


class NotCompacted(ValueError):
    """An hour that cannot be compacted as asked; the message says why and what to do."""


_PARQUET_NAMED = re.compile(r"""["']([^"']+\.parquet)["']""")
"""The file DuckDB names in its error for a Parquet file it cannot read (a damaged page, a
footer without its magic bytes, a file too short)."""
_JSON_TRANSFORM_ERROR = re.compile(
    r'JSON transform error in file "([^"]+)", in line (\d+): ([^\n]+)'
)


@contextlib.contextmanager
def lake_files_explained() -> Iterator[None]:
    """DuckDB's error for a raw line its typed read cannot take, or for a curated file it
    cannot read, becomes :class:`LakeFileUnreadable`, which says which file and what to do."""
    try:
        yield
    except LakeFileUnreadable:
        raise
    except Exception as exc:
        match = _JSON_TRANSFORM_ERROR.search(str(exc))
        if match is not None:
            raise _unreadable(*match.groups()) from exc
        damaged = _PARQUET_NAMED.search(str(exc))
        if damaged is None:
            raise
        raise LakeFileUnreadable(
            _rebuild_steps(damaged[1], f"cannot be read ({str(exc).splitlines()[0]})")
        ) from exc


def _unreadable(path: str, line: str, reason: str) -> LakeFileUnreadable:
    return LakeFileUnreadable(
        f"lake file {path}, line {line}: {reason}. One value outside the schema's types stops "
        "its hour for every host (lake writers before 2026-12-02 accepted counters of 2**63 or "
        "more; today's writer quarantines such events): move that line into a file of its own "
        "under the lake's quarantine/ folder, then run the hour again with --rebuild"
    )


def lacking(manifest: CuratedManifest) -> frozenset[str]:
    """The schema's scalar fields a curated file has no column for: it was compacted before a
    minor version added them (v1.2's ``source``, v1.3's ``sender``). A manifest from before
    manifests listed their fields may lack any of them."""
    scalar = frozenset(duckdb_columns({}))
    return scalar - set(manifest.fields) if manifest.fields else scalar


def _with_null_columns(select: str, names: Collection[str]) -> str:
    """``select`` plus a null column for each of ``names`` it lacks, so a statement naming
    them binds; as is when none is lacking (the union costs a scan about twice as much)."""
    if not names:
        return f"({select})"
    types = duckdb_columns({})
    empty = ", ".join(f'CAST(NULL AS {types[n]}) AS "{n}"' for n in sorted(names))
    return f"({select} UNION ALL BY NAME SELECT {empty} WHERE false)"


def curated_source(
    uri: str, raw_uris: list[str], without: Iterable[str] = (), missing: Collection[str] = ()
) -> str:
    """A curated file (less the rows from raw files named in ``without``, read again; with a
    null column for each field ``missing``, see ``lacking``), plus raw files that arrived after
    it or are read again (same columns)."""
    skip = ", ".join(_quote(name) for name in sorted(without))
    where = f" WHERE source_file NOT IN ({skip})" if skip else ""
    parquet = _with_null_columns(
        f"SELECT * FROM read_parquet({_quote(uri)}, hive_partitioning = false){where}", missing
    )
    if not raw_uris:
        return parquet
    return f"({parquet} UNION ALL BY NAME {raw_source(raw_uris)})"


_STATS = "SELECT COUNT(*), COALESCE(CAST(BIT_XOR(md5_number(event_id)) AS VARCHAR), '0') FROM "
_STATS_READING_EVERY_VALUE = (
    "SELECT COUNT(*), COALESCE(CAST(BIT_XOR(md5_number(c.event_id)) AS VARCHAR), '0'), "
    "BIT_XOR(hash(c)) FROM "
)
"""_STATS of a file aliased ``c``, decoding every value of every row on the way (hashing each
row: 0.21 s for an hour of 1,000 hosts, against 0.05 s for the ids alone and 1.8 s for rows
cast to text): the event ids alone read whole from a file whose other columns are damaged."""


@dataclass
class Compacted:
    hour: datetime
    version: int | None = None
    rows: int = 0
    sources: int = 0
    skipped: str | None = None
    """Why nothing was written (no raw files, already up to date)."""


def compact_hour(
    store: LakeStore,
    topic: str,
    hour: datetime,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    rebuild: bool = False,
    memory_limit: str | None = None,
) -> Compacted:
    """Write ``hour`` as a new curated version if raw files exist that the current one lacks,
    or that hold fields the current one lacks and this version knows (after an upgrade).
    ``rebuild``: a new version from the raw files alone, the current one not read (damaged:
    see :func:`verify_hour`); NotCompacted when raw files it was made from are pruned.
    ``memory_limit``: DuckDB's, past which the hour spills to a temporary folder
    (SYSMETRICS_DUCKDB_MEMORY_LIMIT in the pipeline; None: DuckDB's default, 80 % of RAM)."""
    current = current_manifest(store, topic, hour)
    raw = raw_files(store, topic, hour)
    if rebuild and current is not None:
        pruned = set(current.sources) - {_name(f) for f in raw}
        if pruned:
            raise NotCompacted(
                f"not rebuilt: {len(pruned)} of the raw files version {current.version} was made "
                "from are pruned, and their events are only in it"
            )
    base = None if rebuild else current
    known = set(base.sources) if base else set()
    fields = field_paths()
    held = set(base.fields) if base else set()
    again = {
        name for name, paths in newer_fields(store, topic, hour).items() if (paths & fields) - held
    }
    new = [f for f in raw if _name(f) not in known or _name(f) in again]
    if not new:
        return Compacted(hour, skipped="up to date" if current else "no raw files")
    version = current.version + 1 if current else 1
    folder = layout.curated_hour_dir(topic, hour)
    if base:
        ensure_unchanged(store, topic, base)
    import duckdb

    with (
        lake_files_explained(),
        tempfile.TemporaryDirectory(prefix="sysmetrics-compact-") as tmp,
    ):
        # The hour is staged whole before its sort: unbounded, a 10,000-host hour held 6.5 GiB;
        # within the limit it spills to ``tmp`` (1.2 GiB at 1GB, in the same time).
        con = _connect(store, memory_limit, spill_dir=tmp)
        try:
            source = stage_raw_files(con, store.fs, [store.uri(f) for f in new], "raw_rows")
            if base:
                kept = curated_source(
                    curated_uri(store, topic, base), [], again & known, lacking(base)
                )
                source = f"({kept} UNION ALL BY NAME {source})"
            out = Path(tmp) / "part.parquet"
            con.execute(
                f"COPY (SELECT * FROM {source} {EACH_EVENT_ONCE} "
                f"ORDER BY host.host_id, ts, event_id) TO {_quote(str(out))} "
                f"(FORMAT PARQUET, COMPRESSION ZSTD, ROW_GROUP_SIZE {int(row_group_rows)})"
            )
            rows, checksum = con.execute(
                _STATS + f"read_parquet({_quote(str(out))}, hive_partitioning = false)"
            ).fetchone()
        except duckdb.OutOfMemoryException as exc:
            raise NotCompacted(
                f"DuckDB's memory limit ({memory_limit or 'its default'}) is too "
                "small even to spill this hour to disk; raise SYSMETRICS_DUCKDB_MEMORY_LIMIT "
                f"(DuckDB: {str(exc).splitlines()[0]})"
            ) from None
        finally:
            con.close()
        name = layout.curated_data_name(version)
        with out.open("rb") as written:
            sha256 = hashlib.file_digest(written, "sha256").hexdigest()
        # No manifest names this version yet: a file left by a crashed attempt is replaced.
        store.put_file(f"{folder}/{name}", out)
    manifest = CuratedManifest(
        version=version,
        hour=hour.astimezone(UTC).isoformat(),
        file=name,
        rows=int(rows),
        checksum=str(checksum),
        sources=sorted(known | {_name(f) for f in new}),
        created_at=datetime.now(UTC).isoformat(),
        fields=sorted(fields),
        sha256=sha256,
    )
    if not store.create(
        f"{folder}/{layout.curated_manifest_name(version)}",
        json.dumps(asdict(manifest), indent=1).encode(),
    ):
        raise RuntimeError(f"{folder}: version {version} was written by another compaction")
    _remove_older(store, folder, version)
    return Compacted(hour, version, int(rows), len(manifest.sources))


def _remove_older(store: LakeStore, folder: str, version: int) -> None:
    """Files of versions before ``version`` and orphans of crashed attempts: the data file
    first, so a manifest never names a missing file."""
    names = store.list_dir(folder)
    stale = [n for n in names if (v := layout.parse_curated_version(n)) is not None and v < version]
    stale += [n for n in names if n not in stale and layout.parse_curated_version(n) is None]
    store.delete([f"{folder}/{n}" for n in sorted(stale, key=lambda n: n.startswith("_"))])


# ---------------------------------------------------------------------------- verify
@dataclass
class Verification:
    hour: datetime
    ok: bool
    detail: str
    raw_files: list[str] = field(default_factory=list)
    """The hour's raw files now (what a prune deletes when ``ok``, less ``kept``)."""
    kept: list[str] = field(default_factory=list)
    """Raw files a prune keeps: they hold fields the curated version lacks."""
    compacted: bool = True
    """False: the hour has no curated version (yet) to check."""


_KEPT = (
    ": its raw files are kept; while they remain, 'sysmetrics lake compact --rebuild' for this "
    "hour writes it again from them"
)


def verify_hour(
    store: LakeStore, topic: str, hour: datetime, memory_limit: str | None = None
) -> Verification:
    """Does the curated version hold exactly the events of the hour's raw files, every value
    of it readable?

    Its file must match its manifest (its bytes' SHA-256, rows, checksum); every raw file must
    be among its sources (else it is stale: compact again); and with all sources present, the
    raw files' distinct event_ids must equal the curated ones. When a prune was interrupted (some
    sources gone), every event of the remaining raw files must be in the curated file.
    ``memory_limit``: DuckDB's (SYSMETRICS_DUCKDB_MEMORY_LIMIT), past which it spills (None:
    DuckDB's default, 80 % of RAM; 393 MiB peak for a 2,000-host hour unbounded)."""
    manifest = current_manifest(store, topic, hour)
    raw = raw_files(store, topic, hour)
    import duckdb

    if manifest is None:
        return Verification(hour, False, "not compacted", raw, compacted=False)
    extra = sorted(_name(f) for f in raw if _name(f) not in set(manifest.sources))
    if extra:
        return Verification(
            hour, False, f"stale: {len(extra)} raw files newer than version {manifest.version}", raw
        )
    if (why := changed_since_compacted(store, topic, manifest)) is not None:
        return Verification(hour, False, f"curated file {manifest.file} {why}{_KEPT}", raw)
    unsealed = "" if manifest.sha256 else " (compacted before 2026-12-05: no SHA-256 to check)"
    curated = (
        f"read_parquet({_quote(curated_uri(store, topic, manifest))}, hive_partitioning = false)"
    )
    with _lake_duckdb(store, memory_limit) as con:
        try:
            rows, checksum, _ = con.execute(
                _STATS_READING_EVERY_VALUE + curated + " AS c"
            ).fetchone()
        except (duckdb.OutOfMemoryException, duckdb.InterruptException):
            raise  # the reader's state, not the file's: a damaged file would be rewritten
        except duckdb.Error as exc:  # a damaged file: DuckDB's reader says where
            return Verification(
                hour,
                False,
                f"curated file {manifest.file} unreadable ({str(exc).splitlines()[0]}){_KEPT}",
                raw,
            )
        if (int(rows), str(checksum)) != (manifest.rows, manifest.checksum):
            return Verification(hour, False, "curated file does not match its manifest", raw)
        if not raw:
            return Verification(
                hour, True, f"version {manifest.version}, raw pruned{unsealed}", raw
            )
        # The scalar fields alone: DuckDB sets up every column it is given per file (see
        # stage_raw_files), 10.6 s for the whole event against 2.4 s for 7,299 files.
        ids = raw_source([store.uri(f) for f in raw], {})
        events = f"(SELECT DISTINCT event_id FROM {ids})"
        if len(raw) == len(manifest.sources):
            raw_rows, raw_checksum = con.execute(_STATS + events).fetchone()
            if (int(raw_rows), str(raw_checksum)) != (manifest.rows, manifest.checksum):
                return Verification(
                    hour, False, f"raw has {raw_rows} events, curated {manifest.rows}", raw
                )
        else:
            missing = con.execute(
                f"SELECT COUNT(*) FROM {events} AS r ANTI JOIN {curated} AS c USING (event_id)"
            ).fetchone()[0]
            if missing:
                return Verification(hour, False, f"{missing} raw events not in curated", raw)
    detail = f"version {manifest.version}, {manifest.rows} events{unsealed}"
    held = set(manifest.fields)
    lacking = {
        name: paths - held
        for name, paths in newer_fields(store, topic, hour).items()
        if paths - held
    }
    kept = [f for f in raw if _name(f) in lacking]
    if kept:
        missing = sorted(set().union(*lacking.values()))
        detail += (
            f"; {len(kept)} raw files kept: they hold fields this version does not know "
            f"({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}): upgrade "
            "sysmetrics, then 'sysmetrics lake compact' and 'lake prune' for this hour"
        )
    return Verification(hour, True, detail, raw, kept)


# ---------------------------------------------------------------------------- retention
def last_prunable_hour(now: datetime, retention_days: int, lookback_hours: int) -> datetime | None:
    """The latest hour whose raw files may go: it ended ``retention_days`` ago and lies outside
    the hourly job's look-back (the loader still compares those hours with the lake). None:
    retention 0 keeps raw files forever. `lake prune` and the hourly job both ask this."""
    if retention_days <= 0:
        return None
    return min(
        hour_floor(now - timedelta(days=retention_days) - HOUR),
        hour_floor(now) - (lookback_hours + 1) * HOUR,
    )


def prune_hour(
    store: LakeStore,
    topic: str,
    hour: datetime,
    now: datetime,
    retention_days: int,
    *,
    lookback_hours: int,
    memory_limit: str | None = None,
) -> Verification | None:
    """Delete the hour's raw files if it is past :func:`last_prunable_hour` and its curated
    version verifies; None when the hour must keep them."""
    last = last_prunable_hour(now, retention_days, lookback_hours)
    if last is None or hour > last:
        return None
    check = verify_hour(store, topic, hour, memory_limit)
    doomed = [f for f in check.raw_files if f not in set(check.kept)]
    if check.ok and doomed:
        store.delete(doomed)
        # Their newer-fields markers go with them (a curated version holds those fields).
        marked = newer_fields(store, topic, hour)
        store.delete(
            [
                layout.newer_fields_marker_path(topic, hour, _name(f))
                for f in doomed
                if _name(f) in marked
            ]
        )
        log.info("pruned %d raw files of %s (%s)", len(doomed), hour, check.detail)
    return check


def prune_quarantine(store: LakeStore, topic: str, now: datetime, retention_days: int) -> int:
    """Delete quarantined files older than ``retention_days`` (0: keep forever)."""
    if retention_days <= 0:
        return 0
    folder = f"quarantine/{topic}"
    expired = []
    for name in store.list_dir(folder):
        modified = store.fs.modified(store.full(f"{folder}/{name}"))
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        if modified < now - timedelta(days=retention_days):
            expired.append(f"{folder}/{name}")
    store.delete(expired)
    return len(expired)


@dataclass
class PruneSummary:
    hours_pruned: int = 0
    hours_kept: int = 0
    """Hours past retention whose curated version does not verify: their raw files stay."""
    quarantine_expired: int = 0


def prune_lake(
    store: LakeStore,
    topic: str,
    hours: list[datetime],
    now: datetime,
    retention_days: int,
    quarantine_retention_days: int,
    lookback_hours: int,
    dry_run: bool = False,
    report: Callable[[str], None] = log.info,
    advance: Callable[[], None] = lambda: None,
    memory_limit: str | None = None,
) -> PruneSummary:
    """`lake prune`: the raw files of each of ``hours`` past retention whose curated version
    verifies (with ``dry_run`` only what would go), then expired quarantine files. Each hour
    that loses files or keeps them is ``report``ed in a line; ``advance`` after every hour."""
    summary = PruneSummary()
    last = last_prunable_hour(now, retention_days, lookback_hours)
    for hour in hours:
        check: Verification | None = None
        if last is not None and hour <= last:
            check = (
                verify_hour(store, topic, hour, memory_limit)
                if dry_run
                else prune_hour(
                    store,
                    topic,
                    hour,
                    now,
                    retention_days,
                    lookback_hours=lookback_hours,
                    memory_limit=memory_limit,
                )
            )
        advance()
        if check is None:
            continue
        doomed = len(check.raw_files) - len(check.kept)
        if check.ok and check.raw_files:
            summary.hours_pruned += doomed > 0
            verb = "would delete" if dry_run else "deleted"
            line = f"  {hour:%Y-%m-%dT%H}Z {verb} {doomed} raw files"
            report(line + (f" ({check.detail})" if check.kept else ""))
        elif not check.ok:
            summary.hours_kept += 1
            report(f"  {hour:%Y-%m-%dT%H}Z kept: {check.detail}")
    if not dry_run:
        summary.quarantine_expired = prune_quarantine(store, topic, now, quarantine_retention_days)
    return summary


# ---------------------------------------------------------------------------- stats
@dataclass
class LayerStats:
    files: int = 0
    bytes: int = 0
    rows: int = 0


DAYS_LISTED_MAX = 7
MONTHS_LISTED_MAX = 12
"""Hours wanted on up to a week of days are found by listing those days' folders (one request
each on GCS), on up to a year of months by listing those months'; else the whole layer is
listed. A lake kept for years holds tens of thousands of hour folders: listing them all takes
seconds on GCS for a query that needs one hour."""


def hours_in_lake(
    store: LakeStore, topic: str, prefix: str = "raw", days: Collection[date] | None = None
) -> list[datetime]:
    """Every hour that has a folder under raw/ (or curated/), oldest first; with ``days``, at
    least those on these days, listing only their day or month folders."""
    months = {(day.year, day.month): day for day in days or ()}
    if days is not None and len(days) <= DAYS_LISTED_MAX:
        patterns = [f"{layout.day_dir(prefix, topic, day)}/hour=*" for day in sorted(days)]
    elif days is not None and len(months) <= MONTHS_LISTED_MAX:
        patterns = [
            f"{layout.month_dir(prefix, topic, day)}/day=*/hour=*"
            for _, day in sorted(months.items())
        ]
    else:
        patterns = [f"{prefix}/{topic}/year=*/month=*/day=*/hour=*"]
    hours = set()
    for pattern in patterns:
        for path in store.glob(pattern):
            if (hour := layout.hour_of_path(path + "/")) is not None:
                hours.add(hour)
    return sorted(hours)


def hours_between(
    store: LakeStore,
    topic: str,
    prefixes: Iterable[str],
    first: datetime | None,
    last: datetime | None,
    skip: Collection[datetime] = (),
) -> list[datetime]:
    """The hours from ``first`` to ``last`` (both included; None: open) that have a folder
    under any of ``prefixes``, except those in ``skip``, oldest first."""
    days = None
    listable = timedelta(days=31 * MONTHS_LISTED_MAX)  # longer: the whole layer anyway
    if first is not None and last is not None and last - first <= listable:
        base, hour_span = hour_floor(first), timedelta(hours=1)
        every = (base + n * hour_span for n in range((last - base) // hour_span + 1))
        days = {hour.date() for hour in every if hour not in skip}
        if not days:
            return []
    found = {hour for prefix in prefixes for hour in hours_in_lake(store, topic, prefix, days)}
    return sorted(
        hour
        for hour in found
        if (first is None or hour >= first) and (last is None or hour <= last) and hour not in skip
    )


def hour_stats(store: LakeStore, topic: str, hour: datetime) -> tuple[LayerStats, LayerStats]:
    """(raw, curated) files, bytes and rows of one hour."""
    raw, curated = LayerStats(), LayerStats()
    for path in raw_files(store, topic, hour):
        data = store.get(path) or b""
        raw.files += 1
        raw.bytes += len(data)
        raw.rows += _lines(path, data)
    manifest = current_manifest(store, topic, hour)
    if manifest is not None:
        rel = f"{layout.curated_hour_dir(topic, hour)}/{manifest.file}"
        curated.files, curated.rows = 1, manifest.rows
        curated.bytes = int(store.fs.size(store.full(rel)))
    return raw, curated


def each_event_once(curated: bool, raw_files: Sized) -> bool:
    """Whether a read of an hour holds each event once: a curated file alone does (compaction
    deduplicated it); raw files, alone or beside one, may hold an event more than once."""
    return curated and not raw_files


@dataclass(frozen=True)
class HourSource:
    """DuckDB's read of every event the lake holds for an hour."""

    sql: str
    curated_alone: str | None = None
    """The curated file's URI when it is all the hour holds: compaction deduplicated it, so it
    holds each event once, and several such hours can be read in one ``curated_files_source``."""
    missing: frozenset[str] = frozenset()
    """The scalar fields the curated file has no column for (``lacking``)."""

    @property
    def each_event_once(self) -> bool:
        """Else an event may be read more than once and readers deduplicate by event_id
        (``hour_source`` sets ``curated_alone`` by the module's ``each_event_once``)."""
        return self.curated_alone is not None


def hour_source(store: LakeStore, topic: str, hour: datetime) -> HourSource | None:
    """The hour's curated file plus the raw files that came after it, else its raw files;
    None when the lake has nothing of the hour."""
    manifest = current_manifest(store, topic, hour)
    raw = raw_files(store, topic, hour)
    if manifest is not None:
        compacted = set(manifest.sources)
        newer = [store.uri(f) for f in raw if _name(f) not in compacted]
        uri = curated_uri(store, topic, manifest)
        missing = lacking(manifest)
        return HourSource(
            curated_source(uri, newer, missing=missing),
            uri if each_event_once(True, newer) else None,
            missing,
        )
    return HourSource(raw_source([store.uri(f) for f in raw])) if raw else None


def curated_files_source(
    files: Sequence[tuple[datetime, str]], missing: Collection[str] = ()
) -> str:
    """Curated files of several hours (hour, URI) in one read, each row with its file's hour as
    ``lake_hour``: one scan of many files, where a read per file pays DuckDB's per-statement
    and per-file set-up each time (~5 ms an hour here, more on object storage). ``missing``:
    the fields any of them lacks (``lacking``)."""
    uris = ", ".join(_quote(uri) for _, uri in files)
    hours = ", ".join(f"TIMESTAMPTZ {_quote(hour.isoformat())}" for hour, _ in files)
    # A file that lacks a column (``missing``) is read by name; else as the first file is.
    by_name = ", union_by_name = true" if missing else ""
    events = _with_null_columns(
        f"SELECT * FROM read_parquet([{uris}], hive_partitioning = false, filename = true"
        f"{by_name})",
        missing,
    )
    return (
        f"(SELECT e.*, h.lake_hour FROM {events} AS e JOIN (SELECT UNNEST([{uris}]) AS filename, "
        f"UNNEST([{hours}]) AS lake_hour) AS h USING (filename))"
    )


LOOKUPS_AT_ONCE = 16
"""Hours whose files are looked up at once: on object storage each lookup is 2-3 requests of
tens of milliseconds, so a month of hours one after another would take a minute."""


def hour_sources(
    store: LakeStore, topic: str, hours: Sequence[datetime]
) -> list[tuple[datetime, HourSource]]:
    """``hour_source`` of each of ``hours`` that the lake has, in their order."""
    with ThreadPoolExecutor(LOOKUPS_AT_ONCE) as pool:
        found = pool.map(lambda hour: hour_source(store, topic, hour), hours)
        return [(hour, s) for hour, s in zip(hours, found, strict=True) if s is not None]


def hour_hosts(
    store: LakeStore, topic: str, hour: datetime, memory_limit: str | None = None
) -> int:
    """Distinct hosts of the hour: from its curated file, else its raw files; DuckDB within
    ``memory_limit`` (as in :func:`verify_hour`)."""
    source = hour_source(store, topic, hour)
    if source is None:
        return 0
    with _lake_duckdb(store, memory_limit) as con:
        statement = f"SELECT COUNT(DISTINCT host.host_id) FROM {source.sql}"
        return int(con.execute(statement).fetchone()[0])


def layer_stats(
    store: LakeStore,
    topic: str,
    hours: list[datetime],
    advance: Callable[[], None] = lambda: None,
    memory_limit: str | None = None,
) -> tuple[LayerStats, LayerStats, float]:
    """`lake stats`: (raw, curated) files, bytes and rows over ``hours``, and the host-days
    they hold."""
    raw, curated = LayerStats(), LayerStats()
    host_hours = 0
    for hour in hours:
        for total, part in zip((raw, curated), hour_stats(store, topic, hour), strict=True):
            total.files += part.files
            total.bytes += part.bytes
            total.rows += part.rows
        host_hours += hour_hosts(store, topic, hour, memory_limit)
        advance()
    return raw, curated, host_hours / 24


def _lines(path: str, data: bytes) -> int:
    if path.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif path.endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    return data.count(b"\n")
