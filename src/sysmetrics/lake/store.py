"""The lake's storage through one interface (fsspec): local folder, gs:// (gcsfs), s3://.

Data files are created with *create-if-absent* semantics (local: write a temporary file,
fsync, then ``link`` it to the final name, which fails if the name exists; GCS:
``ifGenerationMatch=0``), so a replayed batch can never overwrite or duplicate a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec

from sysmetrics.config import Settings

log = logging.getLogger(__name__)


class StoreError(OSError):
    """The lake could not be read or written; the message names the path."""


class LakeStore:
    def __init__(self, url: str, gcs_endpoint: str | None = None, project: str | None = None):
        self.url = url.rstrip("/")
        options: dict[str, Any] = {}
        if url.startswith("gs://"):
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            if gcs_endpoint:
                options.update(endpoint_url=gcs_endpoint, token="anon")
            if project:
                options["project"] = project
        self.fs, root = fsspec.core.url_to_fs(self.url, **options)
        self.root = root.rstrip("/")
        self.is_local = (
            self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeStore:
        """The lake the settings name (SYSMETRICS_LAKE_URL, GCS endpoint and project)."""
        return cls(settings.lake_url, settings.gcs_endpoint, settings.gcp_project)

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
        path = self.full(rel)
        try:
            if self.is_local:
                return _local_create(Path(path), data)
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri(rel)}: {exc}") from exc
        except Exception as exc:  # gcsfs / aiohttp errors when the service is down
            raise StoreError(f"cannot write {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

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

    # ------------------------------------------------------------------ reads
    def get(self, rel: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self.full(rel)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc

    def list_dir(self, rel_dir: str) -> list[str]:
        """Names (not paths) of the files directly in ``rel_dir``; [] if it does not exist."""
        try:
            entries = self.fs.ls(self.full(rel_dir), detail=False)
        except FileNotFoundError:
            return []
        self.fs.invalidate_cache()
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to the lake root of files matching ``pattern``."""
        self.fs.invalidate_cache()
        prefix = len(self.root) + 1
        return sorted(p[prefix:] for p in self.fs.glob(self.full(pattern)))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(final: Path, data: bytes, durable: bool = True) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}"  # never matches a data glob
    with tmp.open("wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    return tmp


def _local_create(final: Path, data: bytes) -> bool:
    if final.exists():
        return False
    tmp = _write_tmp(final, data)
    try:
        os.link(tmp, final)  # atomic, and fails if the name exists: rename-if-absent
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(final.parent)
    return True


def _local_replace(final: Path, data: bytes, durable: bool) -> None:
    tmp = _write_tmp(final, data, durable)
    os.replace(tmp, final)
    if durable:
        _fsync_dir(final.parent)
