"""The local lake store: create-if-absent files, state written with them, no temp files left."""

from __future__ import annotations

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
