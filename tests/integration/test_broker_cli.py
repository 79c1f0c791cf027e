"""`sysmetrics broker start|status|stop` runs a real Tansu process and cleans up after itself."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka.admin import AdminClient

from sysmetrics.stream.broker import pid_alive
from tests.support.kafka_io import SYSMETRICS
from tests.support.ports import free_port


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSMETRICS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_broker_start_status_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SYSMETRICS_BROKER_PORT": str(port), "SYSMETRICS_DATA_DIR": str(tmp_path)}
    started = run(["broker", "start"], env, tmp_path)
    assert started.returncode == 0, started.stderr
    assert f"127.0.0.1:{port}" in started.stdout
    pid = int((tmp_path / "broker.pid").read_text().split()[0])
    try:
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert [b.port for b in metadata.brokers.values()] == [port]

        twice = run(["broker", "start"], env, tmp_path)
        assert twice.returncode != 0
        assert "already running" in twice.stderr

        status = run(["broker", "status"], env, tmp_path)
        assert status.returncode == 0 and f"pid {pid}" in status.stdout
    finally:
        stopped = run(["broker", "stop"], env, tmp_path)
    assert stopped.returncode == 0
    assert not pid_alive(pid)
    assert not (tmp_path / "broker.pid").exists()
    assert run(["broker", "status"], env, tmp_path).returncode == 1


def test_broker_start_on_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "SYSMETRICS_BROKER_PORT": str(port),
            "SYSMETRICS_DATA_DIR": str(tmp_path),
        }
        result = run(["broker", "start"], env, tmp_path)
    assert result.returncode != 0
    assert "SYSMETRICS_BROKER_PORT" in result.stderr
    assert f"port {port} on 127.0.0.1 is in use by pid {os.getpid()} (" in result.stderr
    assert not (tmp_path / "broker.pid").exists()


def test_every_command_has_help(tmp_path: Path) -> None:
    commands = [
        [],
        ["broker"],
        ["broker", "start"],
        ["broker", "stop"],
        ["broker", "status"],
        ["config", "show"],
        ["collect"],
        ["simulate"],
        ["consume"],
        ["ingest"],
        ["alert"],
        ["service"],
        ["lake"],
        ["lake", "compact"],
        ["lake", "verify"],
        ["lake", "prune"],
        ["lake", "stats"],
        ["batch", "run"],
        ["batch", "backfill"],
        ["query"],
        ["dashboard"],
        ["up"],
        ["status"],
    ]
    for command in commands:
        result = run([*command, "--help"], dict(os.environ), tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage: sysmetrics" in result.stdout


def test_a_data_directory_that_cannot_be_written_stops_each_service_with_one_clear_line(
    tmp_path: Path,
) -> None:
    """Each long-running command stops at once, naming the directory and the setting, with no
    traceback (before 2026-12-03 `collect` and `ingest` ended in one, `collect` only after its
    Kafka check)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory inside a file: refused to root too
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(blocker / "data"),
        "SYSMETRICS_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    for command in (["collect"], ["ingest"], ["consume"], ["alert"], ["up", "--for", "1"]):
        result = run(command, env, tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        assert f"Error: cannot write the data directory {blocker / 'data'}" in result.stderr
        assert "SYSMETRICS_DATA_DIR" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_option_value_is_refused_as_the_same_environment_value_would_be(
    tmp_path: Path,
) -> None:
    """Options override settings through the same checks (before 2026-12-03 they skipped
    them: `collect --interval 0` divided by zero, `dashboard --port 99999` said it served and
    served nothing), and the refusal names what the user typed: the option, as click names an
    option of the wrong type (before 2026-12-06 it named the environment variable the user had
    not set); the same value from the environment names the variable. `query` before any
    hourly run says how to make the warehouse."""
    env = {**os.environ, "SYSMETRICS_DATA_DIR": str(tmp_path / "data")}
    refused = {
        ("collect", "--print", "--interval", "0"): "--interval",
        ("consume", "--flush-records", "0"): "--flush-records",
        ("dashboard", "--port", "99999"): "--port",
        ("ingest", "--port", "0"): "--port",
        ("alert", "--webhook", "localhost:9000"): "--webhook",
    }
    for command, option in refused.items():
        result = run(list(command), env, tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"Error: Invalid value for '{option}': "), result.stderr
        assert "(got " in error, error  # the value as the option's type read it
    from_env = run(["dashboard"], {**env, "SYSMETRICS_DASHBOARD_PORT": "99999"}, tmp_path)
    assert from_env.returncode == 1, from_env.stderr
    assert from_env.stderr.startswith("Error: SYSMETRICS_DASHBOARD_PORT: Input should be"), from_env
    query = run(["query", "SELECT 1"], env, tmp_path)
    assert query.returncode == 1
    warehouse = tmp_path / "data" / "warehouse.duckdb"  # in the data dir, as the lake
    assert f"no warehouse yet at {warehouse}" in query.stderr, query.stderr
    assert "Traceback" not in query.stderr
    # status says the same (before 2026-12-05: DuckDB's "IOException: IO Error: Cannot open
    # database ... in read-only mode: database does not exist").
    status = run(["status"], env, tmp_path)
    assert f"warehouse    no warehouse yet at {warehouse}" in status.stdout, status


def test_an_hour_that_has_not_begun_is_refused_and_the_one_in_progress_runs(
    tmp_path: Path,
) -> None:
    """Before 2026-12-03 `batch run` of a future hour loaded nothing and said only PARTIAL
    (a typo in the day or a local time taken for UTC looked like an empty hour)."""
    env = {**os.environ, "SYSMETRICS_DATA_DIR": str(tmp_path / "data")}
    now = datetime.now(UTC)
    later, after_it = (f"{now + timedelta(hours=h):%Y-%m-%dT%H}" for h in (2, 3))
    for command in (  # --to is exclusive: its last hour is `later`
        ["batch", "run", "--hour", later],
        ["batch", "backfill", "--last", "3h", "--to", after_it],
    ):
        result = run(command, env, tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{later}Z has not begun (it is now {now:%Y-%m-%dT%H}:" in result.stderr
        assert "Traceback" not in result.stderr
    no_lake = run(["batch", "run", "--hour", f"{now:%Y-%m-%dT%H}"], env, tmp_path)
    assert no_lake.returncode == 1, no_lake.stderr
    lake = tmp_path / "data" / "lake"
    assert no_lake.stderr.startswith(f"Error: no lake at {lake}: the lake writer creates it")
    assert not (tmp_path / "data" / "warehouse.duckdb").exists(), "no stray warehouse made"
    (tmp_path / "data" / "lake").mkdir(parents=True)
    current = run(["batch", "run", "--hour", f"{now:%Y-%m-%dT%H}"], env, tmp_path)
    assert current.returncode == 0, current.stderr
    assert "(PARTIAL: lake watermark not past the hour)" in current.stdout


def test_an_object_store_lake_that_cannot_be_reached_is_one_clear_error(tmp_path: Path) -> None:
    """A gs:// lake whose service does not answer (gcsfs retries ~30 s): the lake commands
    end with what failed and what to check, not an aiohttp traceback (before 2026-12-03)."""
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_LAKE_URL": "gs://fleet-lake/raw",
        "SYSMETRICS_GCS_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }
    result = run(["lake", "stats"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot list gs://fleet-lake/raw/"), result.stderr
    assert "The lake (SYSMETRICS_LAKE_URL) cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bigquery_warehouse_that_does_not_answer_fails_the_command_after_its_timeout(
    tmp_path: Path,
) -> None:
    """Before 2026-12-03 `query` and `status` hung without a word for the client library's
    10 to 40 minutes of retries; now `query` fails and `status` says why after
    SYSMETRICS_BIGQUERY_TIMEOUT_S (the subprocess limit of 60 s is the hang check)."""
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_WAREHOUSE_URL": "bigquery://fleet/metrics",
        "SYSMETRICS_BIGQUERY_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "SYSMETRICS_BIGQUERY_TIMEOUT_S": "3",
        "SYSMETRICS_BROKER_PORT": "1",
    }
    query = run(["query", "SELECT 1"], env, tmp_path)
    assert query.returncode == 1
    assert query.stderr.startswith("Error: query failed: Timeout of 3.0s exceeded"), query.stderr
    status = run(["status"], env, tmp_path)
    assert "warehouse    unavailable (RetryError: Timeout of 3.0s exceeded" in status.stdout


def test_sample_data_with_a_past_without_up(tmp_path: Path) -> None:
    """`simulate --history` gives the same simulated past that `up` writes, for any pipeline."""
    from datetime import UTC, datetime, timedelta

    from sysmetrics.schema import decode

    env = {**os.environ, "SYSMETRICS_DATA_DIR": str(tmp_path)}
    out = run(
        ["simulate", "--hosts", "2", "--history", "3h", "--output", str(tmp_path / "past.jsonl")],
        env,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    events = [decode(line) for line in (tmp_path / "past.jsonl").read_bytes().splitlines()]
    now = datetime.now(UTC)
    assert len(events) == 2 * 3 * 360  # two hosts, 3 h of 10-s samples
    assert now - timedelta(hours=3, seconds=60) <= min(e.ts for e in events)
    assert max(e.ts for e in events) <= now
    needs_one = run(["batch", "backfill"], env, tmp_path)
    assert needs_one.returncode == 2 and "--from or --last" in needs_one.stderr
