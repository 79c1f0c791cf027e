"""The compose file cannot run here (no Docker engine): check what it declares."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_declares_kafka_kraft_and_every_stage() -> None:
    services = compose()["services"]
    expected = {"kafka", "fake-gcs", "lake-writer", "collector", "airflow", "dashboard"}
    assert expected <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "9092:9092" in kafka["ports"]
    assert services["lake-writer"]["deploy"]["replicas"] >= 2
    assert services["lake-writer"]["command"] == ["sysmetrics", "consume"]
    assert "8050:8050" in services["dashboard"]["ports"]
    assert "8080:8080" in services["airflow"]["ports"]


def test_services_point_at_kafka_and_the_gcs_lake() -> None:
    services = compose()["services"]
    env = services["lake-writer"]["environment"]
    assert env["SYSMETRICS_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SYSMETRICS_LAKE_URL"].startswith("gs://")
    mounts = services["airflow"]["volumes"]
    assert any(m.startswith("../src/sysmetrics/orchestration/dags:") for m in mounts)
    assert (DEPLOY / "../src/sysmetrics/orchestration/dags/machine_metrics_hourly.py").exists()


def test_exposed_dashboard_gets_its_token_from_a_secret() -> None:
    spec = compose()
    dashboard = spec["services"]["dashboard"]
    assert "0.0.0.0" in dashboard["command"]
    token_file = dashboard["environment"]["SYSMETRICS_DASHBOARD_TOKEN_FILE"]
    assert token_file == "/run/secrets/dashboard_token"
    assert dashboard["secrets"] == ["dashboard_token"]
    assert spec["secrets"]["dashboard_token"]["file"] == "./dashboard_token"
    assert dashboard["environment"]["SYSMETRICS_WAREHOUSE_URL"]  # the shared env still merged


def test_dockerfile_installs_from_the_lock_file() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --locked" in text
    assert "COPY pyproject.toml uv.lock" in text
