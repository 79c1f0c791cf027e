"""The evaluators' firing-alerts file beside them, written by several at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from sysmetrics.alerts.live import read_firing, write_firing
from sysmetrics.config import load_settings


def test_evaluators_sharing_a_data_dir_write_the_live_file_without_failing(
    tmp_path: Path,
) -> None:
    """Two evaluators of one group on one machine write the same file; each write is whole
    and neither crashes on the other's temporary file (it did: FileNotFoundError, found in CI)."""
    settings = load_settings(data_dir=tmp_path)
    failures: list[BaseException] = []

    def evaluator(name: str) -> None:
        try:
            for n in range(400):
                write_firing(settings, datetime.now(UTC), [{"host_id": name, "n": n}])
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=evaluator, args=(f"e{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    found = read_firing(settings)
    assert found is not None and found[1][0]["n"] == 399
    assert sorted(p.name for p in (tmp_path / "status").iterdir()) == ["alerts-firing.json"]
