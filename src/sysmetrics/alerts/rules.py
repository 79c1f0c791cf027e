"""Alert rules, defined once in TOML: the shipped default pack, or SYSMETRICS_ALERT_RULES."""

from __future__ import annotations

import operator
import tomllib
from collections.abc import Callable
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sysmetrics.schema import MetricsEvent
from sysmetrics.timeutil import parse_duration


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _available_pct(e: MetricsEvent) -> float | None:
    m = e.memory
    if m is None or m.available_bytes is None or not m.total_bytes:
        return None
    return 100.0 * m.available_bytes / m.total_bytes


def _load_per_core(e: MetricsEvent) -> float | None:
    c = e.cpu
    if c is None or c.load_1m is None or not c.logical_cores:
        return None
    return c.load_1m / c.logical_cores


METRICS: dict[str, Callable[[MetricsEvent], float | None]] = {
    "cpu_pct": lambda e: e.cpu.utilization_pct if e.cpu else None,
    "load_per_core": _load_per_core,
    "memory_used_pct": lambda e: e.memory.used_pct if e.memory else None,
    "memory_available_pct": _available_pct,
    "swap_used_pct": lambda e: e.swap.used_pct if e.swap else None,
    "disk_used_pct": lambda e: _max([d.used_pct for d in e.disks]),
    "temperature_max_celsius": lambda e: _max([t.celsius for t in e.temperatures]),
    "gpu_temperature_max_celsius": lambda e: _max([g.temperature_celsius for g in e.gpus]),
    "gpu_utilization_max_pct": lambda e: _max([g.utilization_pct for g in e.gpus]),
    "battery_discharging_pct": lambda e: (
        e.battery.percent if e.battery and e.battery.plugged_in is False else None
    ),
    "battery_health_pct": lambda e: e.battery.health_pct if e.battery else None,
}
"""What a rule can watch: each a value of one sample (None when the host lacks it: no alert)."""

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class RulesError(ValueError):
    """The rules file cannot be used; the message names the file and the rule."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    kind: Literal["threshold", "absent"] = "threshold"
    metric: str | None = None
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None  # nan: never fires
    for_: timedelta = Field(timedelta(0), alias="for")
    keep_firing_for: timedelta = timedelta(0)
    intervals: Annotated[int, Field(ge=1)] = 3
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = "{alertname} on {hostname}"

    @field_validator("for_", "keep_firing_for", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return timedelta(seconds=parse_duration(value)) if isinstance(value, str) else value

    def model_post_init(self, _context: object) -> None:
        if self.kind == "threshold":
            if self.metric not in METRICS:
                raise ValueError(f"metric {self.metric!r} is not one of {sorted(METRICS)}")
            if self.threshold is None:
                raise ValueError("a threshold rule needs a threshold")


def default_rules_path() -> Path:
    return Path(str(files("sysmetrics.alerts") / "default_rules.toml"))


def load_rules(path: Path | None = None) -> list[Rule]:
    """The rules of ``path`` (default: the shipped pack); a bad file is one clear error."""
    path = path or default_rules_path()
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: {exc}") from None
    rules = []
    for index, raw in enumerate(document.get("rule", [])):
        try:
            rules.append(Rule.model_validate(raw))
        except ValidationError as exc:
            name = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors()
            )
            raise RulesError(f"{path}: rule {name}: {problems}") from None
    names = [r.name for r in rules]
    if duplicated := sorted({n for n in names if names.count(n) > 1}):
        raise RulesError(f"{path}: rule names used twice: {', '.join(duplicated)}")
    if not rules:
        raise RulesError(f"{path}: no [[rule]] tables")
    return rules
