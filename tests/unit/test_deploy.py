"""The compose file cannot run here (no Docker engine): check what it declares."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support.kafka_cluster import CLUSTER_PROPERTIES

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


def test_exposed_ingest_needs_a_token_and_keeps_its_journal() -> None:
    spec = compose()
    ingest = spec["services"]["ingest"]
    assert ingest["command"] == ["sysmetrics", "ingest", "--host", "0.0.0.0", "--grpc-port", "4317"]
    assert {"4318:4318", "4317:4317"} <= set(ingest["ports"])  # HTTP, and OTLP over gRPC
    assert ingest["environment"]["SYSMETRICS_INGEST_TOKEN_FILE"] == "/run/secrets/ingest_token"
    assert spec["secrets"]["ingest_token"]["file"] == "./ingest_token"
    state = ingest["environment"]["SYSMETRICS_DATA_DIR"]
    assert any(v.split(":")[1] == state for v in ingest["volumes"])  # survives a restart
    assert "--extra ingest" in (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_installs_from_the_lock_file() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --locked" in text
    assert "COPY pyproject.toml uv.lock" in text


def test_the_image_carries_the_compiled_codecs_and_no_local_state() -> None:
    """native/ is built to a wheel in a stage of its own and installed into the image's
    environment; the build context leaves out what is local (environments, data, secrets)."""
    text = (DEPLOY / "Dockerfile").read_text()
    stages = text.split("\nFROM ")[1:]
    assert len(stages) == 2 and " AS native" in stages[0]
    assert "pip wheel" in stages[0] and "/native" in stages[0]
    assert "COPY --from=native /wheels" in stages[1]
    assert "--python /opt/venv/bin/python" in stages[1]
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {".venv", "data", "native/target", "deploy/secrets"} <= set(ignored)


def cluster_compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())


def kafka_property(env_name: str) -> str:
    """The server property an apache/kafka image variable sets (KAFKA_ prefix; '_' is '.',
    '__' is '-', '___' is '_')."""
    name = env_name.removeprefix("KAFKA_").lower()
    return name.replace("___", "\0").replace("__", "-").replace("_", ".").replace("\0", "_")


def test_cluster_variant_runs_what_the_cluster_tests_prove() -> None:
    """Three KRaft nodes with the secured, replicated settings of the tests' cluster
    (tests/support/kafka_cluster.py), each node its own id and volume, one quorum."""
    services = cluster_compose()["services"]
    nodes = {name: services[name] for name in ("kafka-1", "kafka-2", "kafka-3")}
    ids, voters, cluster_ids, volumes = set(), set(), set(), set()
    for name, node in nodes.items():
        env = node["environment"]
        properties = {kafka_property(k): str(v) for k, v in env.items() if k.startswith("KAFKA_")}
        assert {k: properties.get(k) for k in CLUSTER_PROPERTIES} == CLUSTER_PROPERTIES, name
        ids.add(properties["node.id"])
        voters.add(properties["controller.quorum.voters"])
        cluster_ids.add(env["CLUSTER_ID"])
        volumes.update(node["volumes"])
        listeners = dict(item.split("://") for item in properties["listeners"].split(","))
        published = {port.split(":")[0] for port in node["ports"]}
        # Only the SASL_SSL listener is reachable from outside; INTERNAL trusts everyone.
        assert published == {listeners["CLIENT"].lstrip(":")}, name
        assert properties["ssl.keystore.location"] == "/run/secrets/kafka_server_pem"
    assert ids == {"1", "2", "3"} and len(cluster_ids) == 1 and len(volumes) == 3
    (quorum,) = voters
    assert quorum == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"


def test_cluster_variant_clients_use_sasl_ssl_with_their_own_user() -> None:
    spec = cluster_compose()
    services = spec["services"]
    advertised = {
        services[n]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")[0].split("://")[1]
        for n in ("kafka-1", "kafka-2", "kafka-3")
    }
    users = {"lake-writer": "lake-writer", "collector": "collector", "alerts": "alerts"}
    for service, user in users.items():
        env = services[service]["environment"]
        assert set(env["SYSMETRICS_BOOTSTRAP_SERVERS"].split(",")) == advertised
        assert env["SYSMETRICS_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["SYSMETRICS_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["SYSMETRICS_SASL_USERNAME"] == user
        assert "SYSMETRICS_SASL_PASSWORD" not in env  # only from a file
        secret = f"kafka_{user.replace('-', '_')}_password"
        assert env["SYSMETRICS_SASL_PASSWORD_FILE"] == f"/run/secrets/{secret}"
        assert env["SYSMETRICS_SSL_CA_LOCATION"] == "/run/secrets/kafka_ca"
        assert set(services[service]["secrets"]) == {"kafka_ca", secret}
        assert secret in services["kafka-setup"]["secrets"]
        after = services[service]["depends_on"]["kafka-setup"]["condition"]
        assert after == "service_completed_successfully"
    assert services["lake-writer"]["deploy"]["replicas"] >= 2
    setup = services["kafka-setup"]
    assert setup["volumes"] == ["./kafka-setup.sh:/opt/sysmetrics/kafka-setup.sh:ro"]
    assert all(dep["condition"] == "service_healthy" for dep in setup["depends_on"].values())
    for name, secret in spec["secrets"].items():
        assert (DEPLOY / secret["file"]).parent.name in {"secrets", "deploy"}, name


def test_grafana_charts_through_a_prometheus_that_reads_the_dashboard() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounted = dict(m.split(":", 1) for m in prometheus["volumes"])
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert mounted["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml:ro"
    [source] = config["remote_read"]
    port = services["dashboard"]["ports"][0].split(":")[1]
    assert source["url"] == f"http://dashboard:{port}/api/v1/read"
    assert source["read_recent"] is True  # it holds nothing of its own
    assert source["authorization"]["credentials_file"] == "/run/secrets/dashboard_token"
    assert prometheus["secrets"] == ["dashboard_token"]

    grafana = services["grafana"]
    for volume in grafana["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).is_dir(), volume
    [datasource] = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/sysmetrics.yaml").read_text()
    )["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in prometheus["ports"]
    dashboards = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/sysmetrics.yaml").read_text()
    )["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{dashboards}:ro") for v in grafana["volumes"])
    board = json.loads((DEPLOY / "grafana/dashboards/sysmetrics-fleet.json").read_text())
    uids = {
        target["datasource"]["uid"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}
