from __future__ import annotations

from pathlib import Path

import pytest

from sysmetrics.config import ConfigError, load_settings


def test_defaults_run_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic == "machine_metrics"
    assert settings.lake_url == "./data/lake"
    assert settings.warehouse_url == "./data/warehouse.duckdb"
    assert (settings.flush_records, settings.flush_seconds) == (50, 60.0)


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
