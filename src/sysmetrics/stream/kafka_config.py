"""librdkafka settings, in one place, that are correct on both Tansu and Apache Kafka."""

from __future__ import annotations

import logging
from typing import Any

from sysmetrics.config import Settings

SESSION_TIMEOUT_MS = 6000
"""Tansu makes a joining member wait half the session timeout; 6 s (Kafka's minimum) keeps
group joins at ~3 s on Tansu and is a sane failure-detection time on Apache Kafka too."""


CLIENT_LOGGER = logging.getLogger("sysmetrics.kafka.client")
"""librdkafka's own log lines (e.g. every refused connection while the broker is down); the
CLI shows them only with --log-level debug, our code logs what they mean for the data."""


def common_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "logger": CLIENT_LOGGER,
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        config["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_location:
        config["ssl.ca.location"] = settings.ssl_ca_location
    return config


def producer_config(settings: Settings) -> dict[str, Any]:
    """No-loss producer: idempotent, acks=all, retries until delivered or the spool takes over."""
    return {
        **common_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": 50,
        "message.timeout.ms": 300_000,
        "queue.buffering.max.messages": 100_000,
    }


def consumer_config(settings: Settings, group_id: str | None = None) -> dict[str, Any]:
    """Manual commits only: offsets are committed after the lake files are durable."""
    return {
        **common_config(settings),
        "group.id": group_id or settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 300_000,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return common_config(settings)
