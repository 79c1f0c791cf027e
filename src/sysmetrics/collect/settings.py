"""The settings a collector process reads, as plain values.

``Settings`` (pydantic) stays the one definition: the CLI reads and validates it, then hands
these values to the process that samples for months, which imports neither pydantic nor click
(see ``collect.agent``). They were 15 MB of the collector's resident memory (53 -> 38 MB,
`benchmarks/collector.py`), on every machine of a fleet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysmetrics.config import Settings


@dataclass(frozen=True)
class PlainSecret:
    """A secret handed on without pydantic: kept out of reprs and logs."""

    value: str

    def get_secret_value(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "PlainSecret('**********')"


@dataclass(frozen=True)
class CollectorSettings:
    sample_interval_s: float
    sysfs_root: Path
    host_id: str | None
    data_dir: Path
    spool_max_bytes: int
    metrics_addr: str
    metrics_port: int | None
    topic: str
    topic_partitions: int
    replication_factor: int | None
    min_insync_replicas: int | None
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: PlainSecret | None
    ssl_ca_location: str | None

    @classmethod
    def of(cls, settings: Settings) -> CollectorSettings:
        values: dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(cls)}
        password = settings.sasl_password
        values["sasl_password"] = (
            None if password is None else PlainSecret(password.get_secret_value())
        )
        return cls(**values)

    def to_plain(self) -> dict[str, Any]:
        """JSON-ready values, the secret's in clear: for the pipe to the collector process."""
        values = asdict(self)
        values["sysfs_root"], values["data_dir"] = str(self.sysfs_root), str(self.data_dir)
        password = self.sasl_password
        values["sasl_password"] = None if password is None else password.value
        return values

    @classmethod
    def from_plain(cls, values: dict[str, Any]) -> CollectorSettings:
        password = values["sasl_password"]
        return cls(
            **{
                **values,
                "sysfs_root": Path(values["sysfs_root"]),
                "data_dir": Path(values["data_dir"]),
                "sasl_password": None if password is None else PlainSecret(password),
            }
        )
