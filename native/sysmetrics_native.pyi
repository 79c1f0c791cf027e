"""Compiled codecs for sysmetrics' hot loops; each has a pure-Python twin in sysmetrics."""

from collections.abc import Mapping, Sequence

class RemoteWriteDecoder:
    def __init__(self, mapping: Mapping[str, tuple[str, tuple[str, ...]]]) -> None: ...
    def decode(
        self, data: bytes, host_label: str, max_series: int, version: int
    ) -> tuple[
        dict[tuple[str, int, str], dict[tuple[str, tuple[str, ...]], float]],
        int,
        int,
        list[tuple[str, str]],
        tuple[int, int, int],
    ]: ...

class EventValidator:
    def __init__(self, schema: str, time_field: str) -> None: ...
    def check(self, data: bytes) -> int | None: ...

class OtlpDecoder:
    def __init__(
        self,
        metrics: Mapping[str, tuple[str, ...]],
        resource_fact: str,
        resource_keep: Sequence[str],
        started_metric: str,
        started_fact: str,
        scraped: Mapping[str, tuple[str, str, tuple[str, ...], bool]],
        resource_labels: Mapping[str, str],
        stale: float,
    ) -> None: ...
    def decode(
        self, data: bytes, host_attributes: list[str], host_label: str
    ) -> (
        tuple[
            dict[tuple[str, int, str], dict[tuple[str, tuple[str, ...]], float]],
            int,
            int,
            list[tuple[str | None, list[str], int, bool]],
            list[tuple[str, str]],
        ]
        | None
    ): ...
