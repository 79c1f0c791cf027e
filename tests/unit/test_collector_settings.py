"""The settings `sysmetrics collect` hands to the collector process it becomes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sysmetrics.collect.settings import CollectorSettings
from sysmetrics.config import load_settings
from sysmetrics.stream.kafka_config import producer_config


def test_the_collector_process_gets_what_the_cli_validated_and_the_secret_stays_hidden(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        bootstrap_servers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="collector",
        sasl_password="s3cret-pw",
        ssl_ca_location=str(tmp_path / "ca.pem"),
        host_id="rack-7-host",
        sample_interval_s=2.5,
        data_dir=tmp_path / "data",
        topic_partitions=6,
        metrics_port=0,
    )
    collector = CollectorSettings.of(settings)
    handed = CollectorSettings.from_plain(json.loads(json.dumps(collector.to_plain())))
    assert handed == collector
    assert (handed.host_id, handed.sample_interval_s, handed.data_dir) == (
        "rack-7-host",
        2.5,
        tmp_path / "data",
    )
    assert handed.sasl_password is not None
    assert handed.sasl_password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(handed)
    # The Kafka client of the collector process is configured as the CLI's would be.
    ours, theirs = producer_config(handed), producer_config(settings)
    assert ours.pop("error_cb") is not None and theirs.pop("error_cb") is not None
    assert ours == theirs and ours["sasl.password"] == "s3cret-pw"


def test_the_collector_process_imports_neither_the_cli_nor_the_settings_library() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sysmetrics.collect.agent; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'confluent_kafka'" in loaded and "'psutil'" in loaded
    for heavy in ("pydantic", "pydantic_settings", "click", "rich", "prometheus_client", "http"):
        assert f"'{heavy}'" not in loaded, heavy


def test_the_collector_process_loads_confluent_kafka_without_its_serde_clients() -> None:
    """Their asyncio and ssl were 6 MB of the collector's memory; a placeholder says so if
    anything in that process asks for one, and the clients the collector uses are the real ones."""
    probe = (
        "import sys, sysmetrics.collect.agent, confluent_kafka\n"
        "print(sorted(m for m in ('asyncio', 'ssl', 'concurrent.futures') if m in sys.modules))\n"
        "print(confluent_kafka.Producer.__module__, confluent_kafka.admin.AdminClient.__name__)\n"
        "try:\n"
        "    confluent_kafka.SerializingProducer({'bootstrap.servers': 'localhost:9092'})\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "['concurrent.futures']", out  # the AdminClient's futures: no asyncio, ssl
    assert out[1] == "cimpl AdminClient", out
    assert "SerializingProducer is not loaded in the sysmetrics collector process" in out[2], out
    # Anywhere confluent_kafka was imported first (the CLI's other commands, tests) it is whole.
    whole = subprocess.run(
        [
            sys.executable,
            "-c",
            "import confluent_kafka, sysmetrics.collect.agent; "
            "print(confluent_kafka.SerializingProducer.__module__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert whole.strip() == "confluent_kafka.serializing_producer"
