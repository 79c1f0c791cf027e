"""One settings object for every stage.

Read, highest priority first, from: keyword arguments, ``SYSMETRICS_*`` environment
variables, the TOML file named by ``SYSMETRICS_CONFIG`` (default ``./sysmetrics.toml`` when it
exists), then the defaults below, which run everything locally on the embedded broker.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "SYSMETRICS_"
CONFIG_FILE_ENV = "SYSMETRICS_CONFIG"
DEFAULT_CONFIG_FILE = "sysmetrics.toml"


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable and says what is expected."""

    def __init__(self, message: str, field: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        """The setting refused (None: not one setting, e.g. the config file)."""
        self.reason = reason
        """What is wrong with its value, without the variable's name."""


def _in_data_dir(data_dir: Path, name: str) -> str:
    """The default place of the lake or the warehouse: beside the pipeline's other files (a
    service's data dir is absolute; its working directory may be /). A relative one is written
    ./-relative, as a path the user can type (./data/lake by default)."""
    folder = data_dir.as_posix()
    if not data_dir.is_absolute() and not folder.startswith("."):
        folder = f"./{folder}"
    return f"{folder}/{name}"


class Settings(BaseSettings):
    # No setting is infinite or NaN: an infinite interval never samples, a NaN threshold never
    # fires, both silently.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, allow_inf_nan=False
    )

    # Kafka
    broker_port: int = Field(9092, ge=1, le=65535, description="embedded broker port")
    bootstrap_servers: str = Field(
        # Follows a moved embedded broker: `up` starts the broker the settings point at.
        default_factory=lambda fields: f"127.0.0.1:{fields['broker_port']}",
        description="Kafka bootstrap servers (default: the embedded broker, "
        "127.0.0.1:<broker_port>)",
    )
    topic: str = Field("machine_metrics", description="topic the collector publishes to")
    topic_partitions: int = Field(3, ge=1, description="partitions when the topic is created")
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="replicas of the topics created (default: 3 on a cluster of 3+ "
        "brokers, else 1)",
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of the topics created (default: 2 when "
        "replicated 3 times)",
    )
    consumer_group: str = Field("sysmetrics-lake-writer", description="lake writer group id")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None
    ) = Field(None, description="librdkafka's: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None

    # Embedded broker
    data_dir: Path = Field(Path("./data"), description="PID files, spool and local state")

    # Collector
    sample_interval_s: float = Field(10.0, gt=0, description="seconds between samples")
    host_id: str | None = Field(None, description="override the machine's own host id")
    sysfs_root: Path = Field(Path("/"), description="root for /sys and /proc readers")
    spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="bound of the collector's on-disk spool"
    )

    # Lake writer
    lake_url: str = Field(
        default_factory=lambda fields: _in_data_dir(fields["data_dir"], "lake"),
        description="local path, gs://bucket/prefix or s3:// (default: lake in the data dir)",
    )
    flush_records: int = Field(50, ge=1, description="flush a partition at this many records")
    flush_seconds: float = Field(60.0, gt=0, description="flush at least this often (timer)")
    lake_compression: Literal["none", "gzip", "zstd"] = "none"
    raw_retention_days: int = Field(
        7,
        ge=0,
        description="raw JSON of an hour is deleted this long after it, once its curated "
        "Parquet is verified (0: keep forever)",
    )
    warehouse_raw_retention_days: int = Field(
        0,
        ge=0,
        description="the warehouse's raw rows of an hour are deleted this long after it (outside "
        "the look-back window); the hourly aggregates stay, and remote read answers those hours "
        "from the lake (0: keep forever)",
    )
    quarantine_retention_days: int = Field(
        30, ge=0, description="quarantined messages are deleted after this (0: keep forever)"
    )
    curated_row_group_rows: int = Field(
        122_880, ge=1_000, description="rows per Parquet row group in curated/"
    )
    dead_letter_topic: str | None = Field(
        None, description="also send quarantined messages here (raw bytes + reason headers)"
    )
    clock_skew_tolerance_s: float = Field(
        60.0,
        gt=0,
        description="an event whose ts is further than this from when it reached Kafka is "
        "counted by the writer and its host flagged clock_skew by the hourly job",
    )
    gcs_endpoint: str | None = Field(None, description="GCS API endpoint (emulator)")
    s3_endpoint: str | None = Field(
        None, description="S3 API endpoint of an s3:// lake that is not AWS (MinIO, Ceph…)"
    )
    gcp_project: str | None = None

    # Warehouse and hourly batch
    warehouse_url: str = Field(
        default_factory=lambda fields: _in_data_dir(fields["data_dir"], "warehouse.duckdb"),
        description="DuckDB file or bigquery://project/dataset (default: warehouse.duckdb in "
        "the data dir)",
    )
    warehouse_busy_wait_s: float = Field(
        30.0,
        ge=0,
        description="how long a DuckDB reader (dashboard, query) waits out the hourly job's "
        "write, and the hourly job a reader, before 'warehouse busy'",
    )
    duckdb_memory_limit: str = Field(
        "1GB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB's memory limit in the warehouse and in compaction (past it an "
        "hour spills to disk: beside the warehouse file, or in the system's temporary folder)",
    )
    bigquery_endpoint: str | None = Field(None, description="BigQuery API endpoint (emulator)")
    bigquery_timeout_s: float = Field(
        120.0,
        gt=0,
        description="how long a BigQuery call retries a service that does not answer before "
        "the command fails (the client's own defaults: 10 minutes, 40 for a query, silently)",
    )
    lookback_hours: int = Field(24, ge=0, description="late-data look-back of the hourly run")
    watermark_grace_s: float = Field(120.0, ge=0, description="wait after hour end")
    dag_retries: int = Field(3, ge=0, description="Airflow task retries (exponential backoff)")
    watermark_wait_s: float = Field(
        900.0, ge=0, description="how long the DAG waits for the watermark before a partial run"
    )
    airflow_port: int = Field(8080, ge=1, le=65535, description="Airflow UI/API port under up")
    up_log_max_mb: float = Field(
        10.0,
        ge=0,
        description="under up: a component's log past this many MiB is copied to <name>.log.1 "
        "(older copies to .2 and .3, the oldest dropped) and emptied; 0 never rotates",
    )
    up_airflow_log_days: float = Field(
        14.0,
        ge=0,
        description="under up: Airflow's own log files (a folder per task run) older than "
        "this many days are deleted; 0 keeps them",
    )
    alert_cpu_p95_pct: float = 90.0
    alert_disk_used_pct: float = 90.0
    alert_temperature_celsius: float = 85.0
    alert_battery_health_pct: float = 80.0
    alert_completeness_pct: float = 50.0
    alert_zscore: float = 3.0

    # Alerts in seconds (`sysmetrics alert`)
    alert_rules: Path | None = Field(
        None, description="TOML rules file; default: the shipped pack (sysmetrics/alerts)"
    )
    alertmanager_url: str | None = Field(
        None, description="Alertmanager base URL, e.g. http://127.0.0.1:9093"
    )
    alert_webhook_url: str | None = Field(
        None, description="without Alertmanager: POST Alertmanager's webhook payload here"
    )
    alert_consumer_group: str = Field("sysmetrics-alerts", description="evaluator group id")
    alert_state_topic: str = Field(
        "sysmetrics-alert-state",
        description="compacted topic holding pending/firing alerts across restarts",
    )
    alert_resend_s: float = Field(
        60.0, gt=0, description="firing alerts are re-sent this often (as Prometheus does)"
    )
    alert_forget_host_days: float = Field(
        7.0,
        gt=0,
        description="a host down this long is forgotten: its HostDown resolves (taken out of "
        "service), it is paged again only after it reports",
    )

    # Prometheus /metrics of the long-running commands
    metrics_addr: str = Field("127.0.0.1", description="address /metrics binds to")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of /metrics (0: off; unset: up 9850, collect 9851, consume 9852, "
        "alert 9853)",
    )

    # Ingest (`sysmetrics ingest`: Prometheus remote-write and OTLP in)
    ingest_host: str = Field("127.0.0.1", description="address the ingest receiver binds to")
    ingest_port: int = Field(4318, ge=1, le=65535, description="ingest receiver port (OTLP's)")
    ingest_grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="also take OTLP over gRPC on this port (the OTel Collector's `otlp` "
        "exporter; 4317 by convention); unset: off",
    )
    ingest_token: SecretStr | None = Field(
        None,
        description="bearer token (or HTTP Basic password, any user) senders must present; "
        "required to listen on a non-loopback address",
    )
    ingest_tls_cert: Path | None = Field(None, description="serve HTTPS with this certificate")
    ingest_tls_key: Path | None = Field(None, description="private key of ingest_tls_cert")
    ingest_host_label: str = Field(
        "instance", description="remote-write label whose value is the host_id"
    )
    ingest_otel_host_attributes: str = Field(
        "host.id,host.name",
        description="OTLP resource attributes tried in order for the host_id",
    )
    ingest_assembly_wait_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="how long the series of one host's sample may trickle in (Prometheus "
        "sends them over parallel shards) before the event is emitted as it is",
    )
    ingest_max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest request body accepted (decompressed)"
    )
    ingest_max_series: int = Field(
        100_000, ge=1, description="most series (OTLP: data points) one request may carry"
    )

    # Dashboard
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(8050, ge=1, le=65535)
    dashboard_token: SecretStr | None = Field(
        None,
        description="password / bearer token the dashboard requires (any user name with HTTP "
        "Basic); required to serve on a non-loopback address",
    )
    dashboard_trusted_user_header: str | None = Field(
        None,
        description="behind a reverse proxy that authenticates: the header it sets with the "
        "user (e.g. X-Forwarded-User); requests without it are refused",
    )

    # Prometheus remote read (served by the dashboard at /api/v1/read)
    remote_read_max_samples: int = Field(
        20_000_000,
        ge=1,
        description="refuse a remote-read query that could read more samples than this "
        "(sized from its range and hosts before reading)",
    )
    remote_read_max_series: int = Field(
        200_000, ge=1, description="refuse a remote-read query that returns more series"
    )
    remote_read_timeout_s: float = Field(
        60.0, gt=0, description="interrupt a remote-read query's warehouse statement after this"
    )

    @field_validator("topic", "dead_letter_topic", "alert_state_topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("a Kafka topic name: 1-249 of letters, digits, '.', '_', '-'")
        return value

    @field_validator(
        "alertmanager_url", "alert_webhook_url", "gcs_endpoint", "s3_endpoint", "bigquery_endpoint"
    )
    @classmethod
    def _is_an_http_url(cls, value: str | None) -> str | None:
        # Without its scheme (localhost:9093) an alert receiver was retried for ever, each
        # time "unknown url type" in the log, and no alert was delivered.
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value

    @field_validator("lake_url")
    @classmethod
    def _lake_url_is_a_path_or_a_store(cls, value: str) -> str:
        # Another scheme ended in a traceback (ftp://, az://, S3://). gcs://, fsspec's other
        # name for gs://, is read as gs:// (it skipped the GCS endpoint and project settings).
        scheme, found, rest = value.partition("://")
        if found and scheme == "gcs":
            scheme, value = "gs", f"gs://{rest}"
        if found and (scheme not in ("gs", "s3", "file") or not rest.strip("/")):
            lower = scheme.lower()
            hint = f" (write {lower}://)" if lower != scheme and lower in ("gs", "s3") else ""
            raise ValueError(f"a local path, gs://BUCKET/PREFIX or s3://BUCKET/PREFIX{hint}")
        return value

    @field_validator("warehouse_url")
    @classmethod
    def _warehouse_url_is_a_file_or_bigquery(cls, value: str) -> str:
        # A misspelt bigquery:// was a DuckDB file in a folder named after the scheme: the
        # tables went there, silently, instead of to BigQuery.
        scheme, found, rest = value.partition("://")
        project, _, dataset = rest.partition("/")
        if found and (scheme != "bigquery" or not project or not dataset.strip("/")):
            raise ValueError("a DuckDB file's path, or bigquery://PROJECT/DATASET")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_file_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective settings with secrets replaced by ``***``."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***"
            elif isinstance(value, Path):
                value = str(value)
            shown[name] = value
        return shown


def config_file_path() -> Path | None:
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV}={named}: no such file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


SECRET_FIELDS = ("sasl_password", "dashboard_token", "ingest_token")
"""Secrets may also come from a file named by ``SYSMETRICS_<NAME>_FILE`` (the container
convention for mounted secrets); the variable itself wins when both are set."""


def _secrets_from_files() -> dict[str, str]:
    found = {}
    for name in SECRET_FIELDS:
        variable = f"{ENV_PREFIX}{name.upper()}"
        path = os.environ.get(f"{variable}_FILE")
        if path and variable not in os.environ:
            try:
                found[name] = Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{variable}_FILE={path}: cannot read it ({exc.strerror})"
                ) from None
    return found


def _suggestion(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_config_file(path: Path) -> dict[str, Any]:
    """The config file's settings; a file that is not TOML is a ConfigError (it was tomllib's
    traceback)."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _warn_unknown_keys(str(path), frozenset(table))
    return table


@functools.cache
def _warn_unknown_keys(path: str, keys: frozenset[str]) -> None:
    """Say once per process which keys of the config file are no setting: a misspelt one left
    the default in force without a word. A warning, not an error: a collector service whose
    file holds a key a later version no longer knows must go on sampling after the upgrade."""
    fields = list(Settings.model_fields)
    for key in sorted(keys - set(fields)):
        bare = key.lower().removeprefix(ENV_PREFIX.lower())
        hint = f" (write it as {bare})" if bare in fields else _suggestion(key, fields)
        log.warning(
            "%s: %r is not a setting, ignored%s; the file's keys are the names of `sysmetrics "
            "config show` in lower case, without SYSMETRICS_",
            path,
            key,
            hint,
        )


@functools.cache
def _warn_unknown_variables(names: frozenset[str]) -> None:
    """Say once per process which SYSMETRICS_* variables are no setting: a misspelt one would
    otherwise leave the default in force silently. A warning, not an error: an environment may
    carry variables of the same prefix meant for something else."""
    known = [ENV_PREFIX + field.upper() for field in Settings.model_fields]
    taken = {
        *known,
        CONFIG_FILE_ENV,
        *(f"{ENV_PREFIX}{name.upper()}_FILE" for name in SECRET_FIELDS),
    }
    for name in sorted(names):
        if name.upper() not in taken:
            log.warning(
                "%s is not a setting, ignored%s; `sysmetrics config show` lists them",
                name,
                _suggestion(name.upper(), known),
            )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; a bad value raises :class:`ConfigError` naming the variable (or the
    config file's key it came from)."""
    path = config_file_path()
    from_file = _read_config_file(path) if path is not None else {}
    _warn_unknown_variables(
        frozenset(name for name in os.environ if name.upper().startswith(ENV_PREFIX))
    )
    try:
        settings = Settings(**{**_secrets_from_files(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        given_in_file = field in from_file and field not in overrides
        if given_in_file and not any(name.upper() == variable for name in os.environ):
            variable = f"{field} in {path}"
        said = first["msg"].removeprefix("Value error, ")  # pydantic's prefix to our own words
        reason = f"{said} (got {first.get('input')!r})"
        raise ConfigError(f"{variable}: {reason}", field, reason) from None
    for field, before in _DEFAULTS_BEFORE_2026_12_06.items():
        if field not in settings.model_fields_set:
            _warn_left_behind(field, before, getattr(settings, field))
    return settings


_DEFAULTS_BEFORE_2026_12_06: Final = {
    "lake_url": "./data/lake",
    "warehouse_url": "./data/warehouse.duckdb",
}
"""Where the lake and the warehouse were by default, whatever the data dir, until they
followed it."""


@functools.cache
def _warn_left_behind(field: str, before: str, now: str) -> None:
    """Say once per process where a lake or warehouse of the old default place is left behind:
    with a data dir set, the new default is elsewhere, and an empty dashboard would not say why."""
    if now != before and Path(before).exists() and not Path(now).exists():
        log.warning(
            "%s is %s (the default follows SYSMETRICS_DATA_DIR since 2026-12-06); the one at %s "
            "is not read: set %s=%s to keep using it",
            f"{ENV_PREFIX}{field.upper()}",
            now,
            before,
            f"{ENV_PREFIX}{field.upper()}",
            before,
        )
