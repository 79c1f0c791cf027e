"""The local lake store: create-if-absent files, state written with them, no temp files left;
an object-store lake without its extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysmetrics.lake.store import LakeStore, StoreError


def test_create_files_never_overwrites_and_reports_what_it_created(tmp_path: Path) -> None:
    store = LakeStore(str(tmp_path))
    first = store.create_files(
        [("raw/h=1/a.jsonl", b"a\n"), ("raw/h=2/b.jsonl", b"b\n")], {"_intents/p0.json": b"1"}
    )
    assert first == [True, True]
    again = store.create_files(
        [("raw/h=1/a.jsonl", b"replayed\n"), ("raw/h=2/c.jsonl", b"c\n")],
        {"_intents/p0.json": b"2"},
    )
    assert again == [False, True]
    assert (tmp_path / "raw/h=1/a.jsonl").read_bytes() == b"a\n"  # the first write is kept
    assert (tmp_path / "raw/h=2/c.jsonl").read_bytes() == b"c\n"
    assert (tmp_path / "_intents/p0.json").read_bytes() == b"2"  # state is replaced
    assert not list(tmp_path.rglob(".tmp-*"))


def test_an_unwritable_lake_raises_store_error_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "raw").write_bytes(b"a file where a folder must go")
    store = LakeStore(str(tmp_path))
    with pytest.raises(StoreError, match="cannot write"):
        store.create_files([("raw/h=1/a.jsonl", b"a\n")], {"_intents/p0.json": b"1"})
    assert not (tmp_path / "_intents/p0.json").exists()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_an_object_store_lake_without_its_extra_names_the_extra() -> None:
    """`SYSMETRICS_LAKE_URL=s3://…` without s3fs installed: one line naming the extra, no
    traceback (the command line as a user runs it, with s3fs made unimportable)."""
    hide_s3fs = (
        "import sys; sys.modules['s3fs'] = None; "
        "from sysmetrics.cli import main; sys.argv = ['sysmetrics', 'lake', 'stats']; main()"
    )
    env = {**os.environ, "SYSMETRICS_LAKE_URL": "s3://bucket/lake"}
    done = subprocess.run(
        [sys.executable, "-c", hide_s3fs], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: this command needs the 's3' extra (s3fs is not installed): "
        "pip install 'sysmetrics[s3]'"
    ]
