"""What the processes write for a person to read carries no control characters from senders:
a hostname or a label is any string of up to 256 characters, escape sequences included."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from sysmetrics.alerts.live import write_firing
from sysmetrics.cli import cli
from sysmetrics.config import Settings
from sysmetrics.logs import FORMAT, LOG_COPIES_KEPT, LOG_FILE_MAX_BYTES, WrittenOutFormatter

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


def test_a_log_file_of_its_own_is_rotated_written_out_and_spared_librdkafkas_lines(
    tmp_path: Path,
) -> None:
    """The Windows service logs to a file (no supervisor keeps its stderr). Before 2026-12-06
    it was `logging.basicConfig(filename=…)`: never rotated, hostnames' control characters
    written as they are, and librdkafka's own lines (a "Connection refused" per reconnect while
    Kafka is down) kept. It now goes through the same configure_logging as every process."""
    log_file = tmp_path / "logs" / "collector.log"
    line = "x" * 1000
    lines = (LOG_COPIES_KEPT + 2) * LOG_FILE_MAX_BYTES // len(line)
    script = f"""
import logging, pathlib
from sysmetrics.logs import configure_logging
configure_logging(logging.INFO, pathlib.Path({str(log_file)!r}))
for n in range({lines}):
    logging.getLogger("sysmetrics.collect").info("%d %s", n, {line!r})
logging.getLogger("sysmetrics.collect").debug("not at info")
logging.getLogger("sysmetrics.kafka.client").error("FAIL|rdkafka#producer-1| refused")
logging.getLogger("sysmetrics.alerts").warning("firing HighCpu on %s", {HOSTILE!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == [
        "collector.log",
        *(f"collector.log.{n}" for n in range(1, LOG_COPIES_KEPT + 1)),
    ]
    sizes = [p.stat().st_size for p in log_file.parent.iterdir()]
    assert max(sizes) <= LOG_FILE_MAX_BYTES
    newest = log_file.read_text().splitlines()
    # Logged between these two and not written: a debug line and one of librdkafka's.
    assert newest[-2].endswith(f"INFO sysmetrics.collect: {lines - 1} {line}")
    assert newest[-1].endswith(f"WARNING sysmetrics.alerts: firing HighCpu on {WRITTEN_OUT}")
    oldest = (log_file.parent / f"collector.log.{LOG_COPIES_KEPT}").read_text()
    first_kept = int(oldest.splitlines()[0].split(": ", 1)[1].split()[0])
    assert first_kept > 0  # the first lines went with the copy dropped
    everything = "".join(p.read_text() for p in log_file.parent.iterdir())
    assert not {"\x1b", "\x07", "\x9b"} & set(everything)


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
