"""The lake's storage through one interface (fsspec): local folder, gs:// (gcsfs), s3://.

Data files are created with *create-if-absent* semantics (local: write a temporary file,
fsync, then ``link`` it to the final name, which fails if the name exists; GCS:
``ifGenerationMatch=0``), so a replayed batch can never overwrite or duplicate a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem, sync

from sysmetrics.config import Settings
from sysmetrics.stream.spool import write_all

log = logging.getLogger(__name__)


def _find_syncfs() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is not None:
        syncfs.argtypes = [ctypes.c_int]
    return syncfs


_SYNCFS = _find_syncfs()


UPLOAD_CONCURRENCY = 16
"""Creates in flight at once on an object store (gs://, s3://)."""


class StoreError(OSError):
    """The lake could not be read or written; the message names the path."""


class LakeStore:
    def __init__(
        self,
        url: str,
        gcs_endpoint: str | None = None,
        project: str | None = None,
        s3_endpoint: str | None = None,
    ):
        self.url = url.rstrip("/")
        options: dict[str, Any] = {}
        if url.startswith("gs://"):
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            if gcs_endpoint:
                options.update(endpoint_url=gcs_endpoint, token="anon")
            if project:
                options["project"] = project
        elif url.startswith("s3://") and s3_endpoint:  # MinIO, Ceph, a local emulator
            # Credentials and region stay the AWS way (environment, ~/.aws, instance role).
            options["endpoint_url"] = s3_endpoint
        for prefix, module in (("gs://", "gcsfs"), ("s3://", "s3fs")):
            if url.startswith(prefix) and importlib.util.find_spec(module) is None:
                # main() names the extra that installs it.
                raise ModuleNotFoundError(f"{module} is needed for {prefix} lakes", name=module)
        self.fs, root = fsspec.core.url_to_fs(self.url, **options)
        self.root = root.rstrip("/")
        self.is_local = (
            self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol
        )
        self.calls: Counter[str] = Counter()
        """Object-store operations so far ("list", "read"): what a refresh costs on GCS."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeStore:
        """The lake the settings name (SYSMETRICS_LAKE_URL, GCS endpoint and project)."""
        return cls(
            settings.lake_url, settings.gcs_endpoint, settings.gcp_project, settings.s3_endpoint
        )

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def uri(self, rel: str) -> str:
        """What a query engine opens: a local path or a gs:// / s3:// URL."""
        if self.is_local:
            return self.full(rel)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return f"{protocol}://{self.full(rel)}"

    # ------------------------------------------------------------------ writes
    def create(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` unless it exists; True if this call created it."""
        return self.create_files([(rel, data)])[0]

    def create_files(
        self, files: list[tuple[str, bytes]], state: dict[str, bytes] | None = None
    ) -> list[bool]:
        """Make ``state`` (small files, replaced) durable, then create each of ``files`` unless
        it exists; True where this call created it. Everything is durable on return, and a crash
        never leaves a data file whose state file is not also there.

        Locally all of it costs three filesystem syncs, not one fsync per file: a lake writer
        catching up writes hundreds of small files per round."""
        state = state or {}
        try:
            if self.is_local:
                return _local_create_files(Path(self.root), files, state)
            for rel, data in state.items():
                self.fs.pipe_file(self.full(rel), data)
            if isinstance(self.fs, AsyncFileSystem):
                return list(sync(self.fs.loop, self._create_concurrently, files))
            return [self._remote_create(rel, data) for rel, data in files]
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot write to {self.uri('')}: {exc}") from exc
        except Exception as exc:  # gcsfs / aiohttp errors when the service is down
            raise StoreError(
                f"cannot write to {self.uri('')}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _create_concurrently(self, files: list[tuple[str, bytes]]) -> list[bool]:
        """Object stores answer each create in tens of ms: a round's files go up together."""
        limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def create(rel: str, data: bytes) -> bool:
            async with limit:
                try:
                    await self.fs._pipe_file(self.full(rel), data, mode="create")
                except FileExistsError:
                    return False
                return True

        results = await asyncio.gather(
            *(create(rel, data) for rel, data in files), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # after every upload has finished: a retry starts from a calm state
        return [bool(r) for r in results]

    def _remote_create(self, rel: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self.full(rel), data, mode="create")
        except FileExistsError:
            return False
        return True

    def put(self, rel: str, data: bytes, durable: bool = True) -> None:
        """Write or replace ``rel`` atomically (small state files: intents, watermarks).

        ``durable=False`` skips the fsyncs, for state that is rewritten often and whose loss
        in a crash only delays readers (watermarks)."""
        path = self.full(rel)
        try:
            if self.is_local:
                _local_replace(Path(path), data, durable)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:
            raise StoreError(f"cannot write {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def put_file(self, rel: str, local: Path) -> None:
        """Write or replace ``rel`` atomically with the file ``local``, durably, read in pieces
        (a curated hour of a large fleet is hundreds of MB: held whole, it was that much more
        memory for a compaction)."""
        path = self.full(rel)
        try:
            if self.is_local:
                _local_replace(Path(path), local, durable=True)
            else:
                self.fs.put_file(str(local), path)
        except Exception as exc:
            raise StoreError(f"cannot write {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def delete(self, rels: list[str]) -> None:
        """Remove ``rels`` (small state files); one already gone is fine."""
        for rel in rels:
            try:
                self.fs.rm_file(self.full(rel))
            except FileNotFoundError:
                continue
            except Exception as exc:
                raise StoreError(
                    f"cannot delete {self.uri(rel)}: {type(exc).__name__}: {exc}"
                ) from exc

    # ------------------------------------------------------------------ reads
    def get(self, rel: str) -> bytes | None:
        self.calls["read"] += 1
        try:
            return bytes(self.fs.cat_file(self.full(rel)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def sha256(self, rel: str) -> str | None:
        """The SHA-256 (hex) of ``rel``'s bytes, read in pieces (a curated hour of a large fleet
        is hundreds of MB); None when it does not exist."""
        self.calls["read"] += 1
        try:
            with self.fs.open(self.full(rel), "rb") as file:
                return hashlib.file_digest(file, "sha256").hexdigest()
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def list_dir(self, rel_dir: str) -> list[str]:
        """Names (not paths) of the files directly in ``rel_dir``; [] if it does not exist."""
        self.calls["list"] += 1
        try:
            entries = self.fs.ls(self.full(rel_dir), detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise StoreError(
                f"cannot list {self.uri(rel_dir)}: {type(exc).__name__}: {exc}"
            ) from exc
        self.fs.invalidate_cache()
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to the lake root of files matching ``pattern``."""
        self.calls["list"] += 1
        self.fs.invalidate_cache()
        prefix = len(self.root) + 1
        try:
            found = self.fs.glob(self.full(pattern))
        except Exception as exc:
            raise StoreError(
                f"cannot list {self.uri(pattern)}: {type(exc).__name__}: {exc}"
            ) from exc
        return sorted(p[prefix:] for p in found)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(final: str, data: bytes | Path, durable: bool, folders: set[str]) -> str:
    """``data`` (or a file's content, copied 1 MiB at a time) under a temporary name beside
    ``final``; ``folders``: those known to exist. Plain ``os`` calls on strings: a writer
    catching up stages hundreds of files a round."""
    folder = os.path.dirname(final)
    if folder not in folders:
        os.makedirs(folder, exist_ok=True)
        folders.add(folder)
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex}"  # never matches a data glob
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if isinstance(data, Path):
            with data.open("rb") as source:
                while piece := source.read(1 << 20):
                    write_all(fd, piece)
        else:
            write_all(fd, data)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.unlink(tmp)  # a full disk, an interrupted copy: not left behind to fill it further
        raise
    finally:
        os.close(fd)
    return tmp


def _sync(root: Path, paths: list[str]) -> None:
    """Make writes under ``root`` durable: syncfs(2) on Linux (one journal commit for all
    files), elsewhere an fsync of each path and of each folder holding one."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs: {os.strerror(error)}", str(root))
        finally:
            os.close(fd)
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in {os.path.dirname(p) for p in paths}:
        _fsync_dir(Path(directory))


def _local_create_files(
    root: Path, files: list[tuple[str, bytes]], state: dict[str, bytes]
) -> list[bool]:
    created = [False] * len(files)
    staged_state: list[tuple[str, str]] = []  # (temporary, final)
    staged: list[tuple[int, str, str]] = []  # (index in files, temporary, final)
    folders: set[str] = set()
    base = str(root)
    try:
        for rel, data in state.items():
            final = f"{base}/{rel}"
            staged_state.append((_write_tmp(final, data, False, folders), final))
        for index, (rel, data) in enumerate(files):
            final = f"{base}/{rel}"
            if not os.path.exists(final):
                staged.append((index, _write_tmp(final, data, False, folders), final))
        if not staged_state and not staged:
            return created
        # Contents first, then the state names, then the data names: a data file is never
        # durable without the state that lets a replay cut the same batch.
        _sync(root, [tmp for tmp, _ in staged_state] + [tmp for _, tmp, _ in staged])
        if staged_state:
            for tmp, final in staged_state:
                os.replace(tmp, final)
            _sync(root, [final for _, final in staged_state])
        for index, tmp, final in staged:
            try:
                os.link(tmp, final)  # atomic, and fails if the name exists: create-if-absent
                created[index] = True
            except FileExistsError:
                continue
        _sync(root, [final for _, _, final in staged])
    finally:
        for tmp in [tmp for tmp, _ in staged_state] + [tmp for _, tmp, _ in staged]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return created


def _local_replace(final: Path, data: bytes | Path, durable: bool) -> None:
    tmp = _write_tmp(str(final), data, durable, set())
    try:
        os.replace(tmp, final)
    except OSError:
        os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(final.parent)
