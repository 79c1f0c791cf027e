from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysmetrics.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: a SYSMETRICS_* variable of the shell running the tests would
    change the settings, and the warnings the tests read."""
    for name in list(os.environ):
        if name.upper().startswith("SYSMETRICS_"):
            monkeypatch.delenv(name)


def test_defaults_run_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic == "machine_metrics"
    assert settings.lake_url == "./data/lake"
    assert settings.warehouse_url == "./data/warehouse.duckdb"
    assert (settings.flush_records, settings.flush_seconds) == (50, 60.0)


def test_the_default_bootstrap_servers_follow_a_moved_embedded_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before 2026-12-06 SYSMETRICS_BROKER_PORT moved the embedded broker but not the clients:
    `up` took 127.0.0.1:9092 for an external broker, started none, and its lake writer and
    evaluator restarted for ever ("cannot reach Kafka at 127.0.0.1:9092"). Servers set
    explicitly, in the environment or the file, still win."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYSMETRICS_BROKER_PORT", "19092")
    assert load_settings().bootstrap_servers == "127.0.0.1:19092"
    (tmp_path / "sysmetrics.toml").write_text('bootstrap_servers = "kafka-1:9093"\n')
    assert load_settings().bootstrap_servers == "kafka-1:9093"
    monkeypatch.setenv("SYSMETRICS_BOOTSTRAP_SERVERS", "kafka-2:9093")
    assert load_settings().bootstrap_servers == "kafka-2:9093"
    (tmp_path / "sysmetrics.toml").write_text("broker_port = 19093\n")
    monkeypatch.delenv("SYSMETRICS_BROKER_PORT")
    monkeypatch.delenv("SYSMETRICS_BOOTSTRAP_SERVERS")
    settings = load_settings()
    assert (settings.broker_port, settings.bootstrap_servers) == (19093, "127.0.0.1:19093")


def test_the_lake_and_warehouse_default_to_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before 2026-12-06 they stayed at ./data whatever SYSMETRICS_DATA_DIR said: a lake writer
    run as a service (working directory /) wrote /data/lake. An old lake left at ./data is
    named once, with the setting that keeps it."""
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    monkeypatch.setenv("SYSMETRICS_DATA_DIR", str(state))
    settings = load_settings()
    assert settings.lake_url == f"{state.as_posix()}/lake"
    assert settings.warehouse_url == f"{state.as_posix()}/warehouse.duckdb"
    assert not caplog.records  # nothing at ./data: nothing left behind
    monkeypatch.setenv("SYSMETRICS_DATA_DIR", "var/sysmetrics")
    assert load_settings().lake_url == "./var/sysmetrics/lake"
    (tmp_path / "data" / "lake").mkdir(parents=True)
    monkeypatch.setenv("SYSMETRICS_DATA_DIR", str(tmp_path / "elsewhere"))
    with caplog.at_level(logging.WARNING, logger="sysmetrics.config"):
        load_settings()
        load_settings()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"SYSMETRICS_LAKE_URL is {(tmp_path / 'elsewhere').as_posix()}/lake (the default follows "
        "SYSMETRICS_DATA_DIR since 2026-12-06); the one at ./data/lake is not read: set "
        "SYSMETRICS_LAKE_URL=./data/lake to keep using it"
    ]
    caplog.clear()
    monkeypatch.setenv("SYSMETRICS_LAKE_URL", "./data/lake")
    with caplog.at_level(logging.WARNING, logger="sysmetrics.config"):
        assert load_settings().lake_url == "./data/lake"
    assert not caplog.records


def test_env_overrides_file_which_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('topic = "from_file"\nflush_records = 7\n')
    monkeypatch.setenv("SYSMETRICS_CONFIG", str(config))
    monkeypatch.setenv("SYSMETRICS_FLUSH_RECORDS", "9")
    settings = load_settings()
    assert settings.topic == "from_file"
    assert settings.flush_records == 9


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSMETRICS_FLUSH_SECONDS", "soon")
    with pytest.raises(ConfigError, match=r"^SYSMETRICS_FLUSH_SECONDS: .*'soon'"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYSMETRICS_SAMPLE_INTERVAL_S", "inf"),  # a collector that never samples
        ("SYSMETRICS_FLUSH_SECONDS", "inf"),  # a lake writer whose timer never flushes
        ("SYSMETRICS_ALERT_CPU_P95_PCT", "nan"),  # an hourly alert that never fires
    ],
)
def test_no_setting_is_infinite_or_nan(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=rf"^{name}: Input should be a finite number"):
        load_settings()


def test_illegal_topic_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSMETRICS_TOPIC", "../etc")
    with pytest.raises(ConfigError, match="SYSMETRICS_TOPIC"):
        load_settings()


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSMETRICS_CONFIG", "/nonexistent/sysmetrics.toml")
    with pytest.raises(ConfigError, match="SYSMETRICS_CONFIG=/nonexistent"):
        load_settings()


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSMETRICS_SASL_PASSWORD", "hunter2")
    shown = load_settings().masked()
    assert shown["sasl_password"] == "***"
    assert "hunter2" not in repr(shown)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # A misspelt key left the default in force without a word.
        (
            "flush_record = 5\n",
            "'flush_record' is not a setting, ignored (did you mean flush_records?)",
        ),
        # The variable's name, as `config show` prints it, is not the file's key.
        (
            'SYSMETRICS_TOPIC = "t"\n',
            "'SYSMETRICS_TOPIC' is not a setting, ignored (write it as topic)",
        ),
        ("[kafka]\nbootstrap_servers = 'k:9092'\n", "'kafka' is not a setting, ignored;"),
    ],
)
def test_a_config_file_key_that_is_no_setting_is_a_warning_naming_the_nearest(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    text: str,
    said: str,
) -> None:
    """A warning, not an error: a collector service whose file holds a key a later version no
    longer knows goes on sampling after the upgrade."""
    (tmp_path / "sysmetrics.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="sysmetrics.config"):
        settings = load_settings()
    assert settings.flush_records == 50 and settings.topic == "machine_metrics"
    [warned] = [record.getMessage() for record in caplog.records]
    assert warned.startswith(f"sysmetrics.toml: {said}"), warned


def test_a_config_file_that_is_not_toml_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "sysmetrics.toml").write_text("flush_records = \n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^sysmetrics.toml: not valid TOML: Invalid value \("):
        load_settings()


def test_a_bad_value_from_the_config_file_names_its_key_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('flush_seconds = "soon"\n')
    monkeypatch.setenv("SYSMETRICS_CONFIG", str(config))
    with pytest.raises(ConfigError, match=rf"^flush_seconds in {config}: .*'soon'"):
        load_settings()
    monkeypatch.setenv("SYSMETRICS_FLUSH_SECONDS", "later")  # the variable wins, and is named
    with pytest.raises(ConfigError, match=r"^SYSMETRICS_FLUSH_SECONDS: .*'later'"):
        load_settings()


def test_a_variable_that_is_no_setting_is_a_warning_with_the_nearest_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYSMETRICS_BOOTSTRAP_SERVER", "kafka:9092")
    monkeypatch.setenv("SYSMETRICS_SASL_PASSWORD_FILE", str(tmp_path / "secret"))
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("SYSMETRICS_CONFIG", str(tmp_path / "empty.toml"))
    with caplog.at_level("WARNING", logger="sysmetrics.config"):
        settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.sasl_password is not None  # its _FILE and SYSMETRICS_CONFIG: not warned
    warned = [record.getMessage() for record in caplog.records]
    assert warned == [
        "SYSMETRICS_BOOTSTRAP_SERVER is not a setting, ignored (did you mean "
        "SYSMETRICS_BOOTSTRAP_SERVERS?); `sysmetrics config show` lists them"
    ]


def test_config_show_says_a_broken_config_file_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    (tmp_path / "sysmetrics.toml").write_text("garbage [[[\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: sysmetrics.toml: not valid TOML: Expected '=' after a key in a key/value pair "
        "(at line 1, column 9)\n"
    )


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        # Each was a traceback from fsspec when the lake was first opened.
        ("SYSMETRICS_LAKE_URL", "ftp://host/lake", ""),
        ("SYSMETRICS_LAKE_URL", "az://container/lake", ""),
        ("SYSMETRICS_LAKE_URL", "S3://bucket/lake", " (write s3://)"),
        ("SYSMETRICS_LAKE_URL", "GS://bucket/lake", " (write gs://)"),
        ("SYSMETRICS_LAKE_URL", "gs://", ""),
    ],
)
def test_a_lake_url_that_is_no_path_gs_or_s3_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == (
        f"{name}: a local path, gs://BUCKET/PREFIX or s3://BUCKET/PREFIX{said} (got {value!r})"
    )


@pytest.mark.parametrize(
    "value",
    # A misspelt scheme made a DuckDB file in a folder named after it, and the tables went
    # there instead of to BigQuery; one without a dataset was a traceback.
    [
        "bigqery://project/dataset",
        "s3://bucket/warehouse.duckdb",
        "bigquery://project",
        "bigquery://p/",
    ],
)
def test_a_warehouse_url_that_is_no_file_or_bigquery_dataset_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SYSMETRICS_WAREHOUSE_URL", value)
    with pytest.raises(ConfigError, match=r"^SYSMETRICS_WAREHOUSE_URL: a DuckDB file's path, or "):
        load_settings()


def test_a_gcs_lake_url_is_read_as_gs(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsspec's other name for gs://: it worked, but skipped the GCS endpoint and project."""
    monkeypatch.setenv("SYSMETRICS_LAKE_URL", "gcs://bucket/lake")
    assert load_settings().lake_url == "gs://bucket/lake"


def test_paths_and_the_stores_urls_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    lakes = ("./data/lake", "gcs", "/srv/lake", "gs://bucket/lake", "s3://bucket", "file:///l")
    for lake in lakes:
        for warehouse in ("w.duckdb", "/srv/w.duckdb", "bigquery://project/dataset"):
            monkeypatch.setenv("SYSMETRICS_LAKE_URL", lake)
            monkeypatch.setenv("SYSMETRICS_WAREHOUSE_URL", warehouse)
            settings = load_settings()
            assert (settings.lake_url, settings.warehouse_url) == (lake, warehouse)


@pytest.mark.parametrize(
    "name",
    [
        "SYSMETRICS_ALERTMANAGER_URL",
        "SYSMETRICS_ALERT_WEBHOOK_URL",
        "SYSMETRICS_GCS_ENDPOINT",
        "SYSMETRICS_S3_ENDPOINT",
        "SYSMETRICS_BIGQUERY_ENDPOINT",
    ],
)
def test_a_service_url_without_http_is_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`localhost:9093` as the Alertmanager: each notification was retried for ever, "unknown
    url type" in the log, and no alert reached it."""
    monkeypatch.setenv(name, "localhost:9093")
    with pytest.raises(ConfigError, match=rf"^{name}: an http:// or https:// URL \(got 'localh"):
        load_settings()
    monkeypatch.setenv(name, "HTTPS://alerts.example:9093")
    assert load_settings() is not None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["status"], "Failed to create admin client: sasl.username and sasl.password must be set"),
        # the collector process it becomes (python -m sysmetrics.collect.agent) says the same
        (["collect", "--count", "1", "--metrics-port", "0"], "sasl.username and sasl.password"),
        (["alert", "--metrics-port", "0"], "Failed to create consumer: sasl.username and"),
    ],
)
def test_kafka_settings_librdkafka_refuses_are_one_line_not_a_traceback(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """SASL without credentials (as a CA file it cannot read, which needs no broker either):
    librdkafka refuses to create the client, and every command ended in its traceback."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYSMETRICS_")},
        "SYSMETRICS_DATA_DIR": str(tmp_path),
        "SYSMETRICS_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SYSMETRICS_SASL_MECHANISM": "PLAIN",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sysmetrics", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the Kafka client cannot be created from these settings: ")
    assert said in last and "Traceback" not in done.stderr
