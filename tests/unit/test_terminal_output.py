"""What the processes write for a person to read carries no control characters from senders:
a hostname or a label is any string of up to 256 characters, escape sequences included."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from sysmetrics.alerts.live import write_firing
from sysmetrics.cli import cli
from sysmetrics.config import Settings
from sysmetrics.logs import FORMAT, WrittenOutFormatter

HOSTILE = "web\x1b]0;owned\x07\x9b31m"
"""Sets the terminal's title (OSC ... BEL), then its colour (CSI as the one C1 byte)."""
WRITTEN_OUT = "web\\x1b]0;owned\\x07\\x9b31m"


def test_log_lines_write_out_control_characters_and_keep_their_own_lines() -> None:
    """The evaluator logs `firing HighCpu on <hostname>`: the escape sequence reached the
    terminal or the `tail -f` of whoever read the log."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(WrittenOutFormatter(FORMAT))
    log = logging.getLogger("sysmetrics.test_terminal_output")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("firing %s on %s\nsecond\tline", "HighCpu", HOSTILE)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert f"firing HighCpu on {WRITTEN_OUT}\nsecond\tline\n" in text
    assert not {"\x1b", "\x07", "\x9b"} & set(text)
    assert "Traceback (most recent call last):\n" in text and "ValueError: boom" in text


def test_status_writes_out_control_characters_of_a_hostname(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_servers="127.0.0.1:1")
    firing = {"rule": "HighCpu", "host_id": "h1", "hostname": HOSTILE, "fired_at": "2026-12-05"}
    write_firing(settings, datetime.now(UTC), [firing])
    env = {
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "SYSMETRICS_WAREHOUSE_URL": str(tmp_path / "w.duckdb"),
    }
    shown = CliRunner().invoke(cli, ["status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"alert        1 firing: HighCpu on {WRITTEN_OUT}" in shown.output
    assert not {"\x1b", "\x07", "\x9b"} & set(shown.output)
