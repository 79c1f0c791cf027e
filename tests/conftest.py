"""Shared fixtures: real broker processes (Tansu and Apache Kafka), settings, topics."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from sysmetrics.config import Settings, load_settings
from sysmetrics.stream.admin import ensure_topic
from tests.support.apache_kafka import ApacheKafkaBroker, missing_tools
from tests.support.brokers import DurableTansuBroker, TansuBroker, TestBroker

BROKER_KINDS = ["tansu", "apache-kafka"]

# `make test` (CI) replays the same generated cases on every run, so a red run means a change
# broke something, not that a fresh random draw found an old corner (one did: a rounding tie
# in a test's own oracle). `make explore` draws new cases to hunt for such corners.
hypothesis_settings.register_profile("replay", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "replay"))


def pytest_configure(config: pytest.Config) -> None:
    """Each test process gets its own Airflow home. Airflow fixes its home and metadata
    database when first imported, and test modules import it at collection (importorskip), so
    without this every run on the machine, both xdist workers included, shared
    ~/airflow/airflow.db, where one run's resetdb broke another's DAG runs."""
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sysmetrics-airflow-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["AIRFLOW_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    broker = TansuBroker(tmp_path_factory.mktemp("tansu"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def apache_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    why_not = missing_tools()
    if why_not:
        pytest.skip(f"Apache Kafka tier skipped: {why_not}")
    broker = ApacheKafkaBroker(tmp_path_factory.mktemp("apache-kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(params=["durable-tansu", "apache-kafka"])
def restartable_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestBroker]:
    """A broker whose log survives a restart: Tansu on S3 (moto), or Apache Kafka."""
    if request.param == "apache-kafka":
        yield request.getfixturevalue("apache_kafka_broker")
        return
    broker = DurableTansuBroker(tmp_path_factory.mktemp("durable-tansu"))
    broker.start()
    yield broker
    broker.close()


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest) -> TestBroker:
    """Each broker-facing test runs once on Tansu and once on a real Apache Kafka."""
    name = "tansu_broker" if request.param == "tansu" else "apache_kafka_broker"
    broker: TestBroker = request.getfixturevalue(name)
    return broker


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Local settings in a temp dir, no broker."""
    return load_settings(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        warehouse_url=str(tmp_path / "warehouse.duckdb"),
    )


def settings_for(broker: TestBroker, tmp_path: Path) -> Settings:
    """Settings pointing at ``broker``, with a fresh topic and group, the topic created."""
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        topic=f"machine_metrics_{suffix}",
        consumer_group=f"lake-writer-{suffix}",
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        warehouse_url=str(tmp_path / "warehouse.duckdb"),
    )
    ensure_topic(settings)
    return settings


@pytest.fixture
def broker_settings(broker: TestBroker, tmp_path: Path) -> Settings:
    """Settings on the parametrized broker (each test runs on Tansu and on Apache Kafka)."""
    return settings_for(broker, tmp_path)


@pytest.fixture
def tansu_settings(tansu_broker: TansuBroker, tmp_path: Path) -> Settings:
    """Settings on Tansu only, for behaviour that does not depend on the broker."""
    return settings_for(tansu_broker, tmp_path)


@pytest.fixture(autouse=True)
def _quiet_kafka_client_logs() -> None:
    """librdkafka logs every refused connection; tests that inject outages would drown in it."""
    import logging

    logging.getLogger("sysmetrics.kafka.client").setLevel(logging.CRITICAL)
