"""librdkafka settings, in one place, that are correct on both Tansu and Apache Kafka."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException

if TYPE_CHECKING:
    from sysmetrics.config import Settings


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class KafkaClientSettings(Protocol):
    """The settings our Kafka clients read. ``Settings`` has them, and so does the collector's
    plain copy (``CollectorSettings``): its process never imports the settings library."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def security_protocol(self) -> str: ...
    @property
    def sasl_mechanism(self) -> str | None: ...
    @property
    def sasl_username(self) -> str | None: ...
    @property
    def sasl_password(self) -> Secret | None: ...
    @property
    def ssl_ca_location(self) -> str | None: ...
    @property
    def topic(self) -> str: ...


SESSION_TIMEOUT_MS = 6000
"""Tansu makes a joining member wait half the session timeout; 6 s (Kafka's minimum) keeps
group joins at ~3 s on Tansu and is a sane failure-detection time on Apache Kafka too."""


CLIENT_LOGGER = logging.getLogger("sysmetrics.kafka.client")
"""librdkafka's own log lines (e.g. every refused connection while the broker is down); the
CLI shows them only with --log-level debug, our code logs what they mean for the data."""


log = logging.getLogger(__name__)

AUTHENTICATION_ERRORS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)
AUTHORIZATION_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
_failures: dict[str, KafkaError] = {}
"""The last credentials / TLS / ACL refusal per (bootstrap servers, user) in this process:
librdkafka reports those through the error callback and keeps reconnecting, so the code that
waits on Kafka asks here why it got nothing."""


def _identity(settings: KafkaClientSettings) -> str:
    return f"{settings.bootstrap_servers}|{settings.sasl_username}"


def is_refusal(error: KafkaError) -> bool:
    """Credentials, an untrusted certificate or an ACL: retrying will not help until someone
    changes a setting. (A handshake cut short, e.g. by a broker restarting, is not one.)"""
    return (
        error.code() in AUTHENTICATION_ERRORS | AUTHORIZATION_ERRORS
        or "certificate verify failed" in error.str()
    )


def explain(settings: KafkaClientSettings, error: KafkaError) -> str:
    """One line: what Kafka refused and which setting to check."""
    text = error.str()
    user = settings.sasl_username or "(anonymous)"
    if "certificate" in text:
        reason = "certificate verify failed" if "verify failed" in text else text.split(": ")[-1]
        return (
            f"TLS with Kafka at {settings.bootstrap_servers} failed ({reason}): check that "
            f"SYSMETRICS_SSL_CA_LOCATION ({settings.ssl_ca_location or 'system default'}) is "
            "the CA that signed the brokers' certificates and that they name the host you "
            "connect to"
        )
    if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return (
            f"Kafka refused the credentials of user {user} ({settings.sasl_mechanism}): check "
            "SYSMETRICS_SASL_USERNAME and SYSMETRICS_SASL_PASSWORD (or _FILE)"
        )
    what = {
        KafkaError.TOPIC_AUTHORIZATION_FAILED: f"use topic {settings.topic}",
        KafkaError.GROUP_AUTHORIZATION_FAILED: "use its consumer group",
        KafkaError.CLUSTER_AUTHORIZATION_FAILED: "do this on the cluster",
    }.get(error.code(), "do this")
    return f"Kafka user {user} is not allowed to {what}: ask for an ACL ({text})"


def explain_failure(settings: KafkaClientSettings, probe_tls: bool = True) -> str | None:
    """Why Kafka refused these settings' client in this process, if it did: a refusal the
    client reported, else, on a TLS listener, what a TLS handshake of our own finds (librdkafka
    reports a certificate it does not trust only as a transport failure)."""
    error = _failures.get(_identity(settings))
    if error is not None:
        return explain(settings, error)
    if probe_tls and settings.security_protocol in ("SSL", "SASL_SSL"):
        return _tls_problem(settings)
    return None


def _tls_problem(settings: KafkaClientSettings, timeout_s: float = 5.0) -> str | None:
    import socket
    import ssl

    context = ssl.create_default_context(cafile=settings.ssl_ca_location)
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return None  # this broker's certificate is trusted
        except ssl.SSLCertVerificationError as exc:
            return (
                f"TLS with Kafka at {server} failed ({exc.verify_message}): check that "
                f"SYSMETRICS_SSL_CA_LOCATION ({settings.ssl_ca_location or 'system default'}) "
                "is the CA that signed the brokers' certificates and that they name the host "
                "you connect to"
            )
        except (OSError, ValueError):
            continue
    return None


def _error_callback(settings: KafkaClientSettings) -> Callable[[KafkaError], None]:
    def on_error(error: KafkaError) -> None:
        if not is_refusal(error):
            CLIENT_LOGGER.debug("%s", error)
            return
        # Said once, not on every reconnect attempt.
        known = _identity(settings) in _failures
        _failures[_identity(settings)] = error
        (log.debug if known else log.error)("%s", explain(settings, error))

    return on_error


def common_config(settings: KafkaClientSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "logger": CLIENT_LOGGER,
        "error_cb": _error_callback(settings),
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


def producer_config(settings: KafkaClientSettings) -> dict[str, Any]:
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


def admin_config(settings: KafkaClientSettings) -> dict[str, Any]:
    return common_config(settings)


def settings_refused(exc: BaseException) -> str | None:
    """What librdkafka said when it refused to create a client from the settings (a CA file it
    cannot read, an unknown SASL mechanism, SASL credentials missing), and where they are set;
    None for any other error. Each command that talks to Kafka ended in its traceback."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(error, KafkaError) or error.code() != KafkaError._INVALID_ARG:
        return None
    return (
        f"the Kafka client cannot be created from these settings: {error.str()}: check "
        "SYSMETRICS_SECURITY_PROTOCOL, SYSMETRICS_SASL_* and SYSMETRICS_SSL_CA_LOCATION "
        "(`sysmetrics config show`)"
    )
