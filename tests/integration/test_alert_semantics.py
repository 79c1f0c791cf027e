"""The evaluator's alert states are Prometheus' alert states.

The same series go through our evaluator and, as the equivalent Prometheus rules, through
`promtool test rules` (Debian's `prometheus` package): at every sample time, each rule's state
(inactive, pending, firing) must be the one Prometheus' `ALERTS` series has then. Three rules,
one with `keep_firing_for`, over 40 minutes of values that cross their thresholds in spikes
shorter and longer than `for`.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import yaml

from sysmetrics.alerts.evaluator import Evaluator
from sysmetrics.alerts.rules import Rule, load_rules
from sysmetrics.schema import Memory, MetricsEvent
from tests.support.lakes import HOUR14, event

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: run scripts/install-system-deps.sh (Debian)"
)
S = timedelta(seconds=10)
SAMPLES = 240
RULES = """
[[rule]]
name = "HighCpu"
metric = "cpu_pct"
op = ">"
threshold = 90
for = "5m"

[[rule]]
name = "LowMemory"
metric = "memory_available_pct"
op = "<"
threshold = 10
for = "2m"

[[rule]]
name = "HotCpu"
metric = "temperature_max_celsius"
op = ">"
threshold = 85
for = "1m"
keep_firing_for = "2m"
"""


def crossing(rng: random.Random, low: float, high: float) -> list[float]:
    """SAMPLES values alternating below/above a threshold in runs of 1 to 45 samples."""
    values: list[float] = []
    above = False
    while len(values) < SAMPLES:
        values += [rng.uniform(*((high, high + 8) if above else (low - 30, low)))] * rng.randint(
            1, 45
        )
        above = not above
    return [round(v, 2) for v in values[:SAMPLES]]


def sample(i: int, cpu: float, available: float, temp: float) -> MetricsEvent:
    base = event("h", HOUR14 + i * S, cpu, temp=temp, seq=i)
    memory = Memory(
        total_bytes=10_000,
        available_bytes=int(available * 100),
        used_bytes=10_000 - int(available * 100),
        used_pct=100.0 - available,
    )
    return msgspec.structs.replace(base, memory=memory)


def prometheus_rule(rule: Rule) -> dict[str, object]:
    """The equivalent Prometheus alerting rule over a gauge named after the metric."""
    out: dict[str, object] = {
        "alert": rule.name,
        "expr": f"sysmetrics_{rule.metric} {rule.op} {rule.threshold:g}",
        "for": f"{int(rule.for_.total_seconds())}s",
    }
    if rule.keep_firing_for:
        out["keep_firing_for"] = f"{int(rule.keep_firing_for.total_seconds())}s"
    return out


def test_pending_firing_and_resolved_times_equal_prometheus(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(RULES)
    rules = load_rules(tmp_path / "rules.toml")
    rng = random.Random(1)
    series = {
        "cpu_pct": crossing(rng, 90, 90),
        "memory_available_pct": [round(100 - v, 2) for v in crossing(rng, 90, 90)],
        "temperature_max_celsius": crossing(rng, 85, 85),
    }
    evaluator = Evaluator(rules)
    ours: dict[str, list[str]] = {rule.name: [] for rule in rules}
    transitions: dict[str, list[tuple[int, str]]] = {rule.name: [] for rule in rules}
    for i in range(SAMPLES):
        evaluator.observe(
            sample(
                i,
                series["cpu_pct"][i],
                series["memory_available_pct"][i],
                series["temperature_max_celsius"][i],
            ),
            arrived=0.0,
        )
        for rule in rules:
            alert = evaluator.alerts.get(f"{rule.name}|h")
            state = alert.state if alert else "inactive"
            if not ours[rule.name] or ours[rule.name][-1] != state:
                transitions[rule.name].append((i, state))
            ours[rule.name].append(state)
    # The series exercise every transition of every rule: pending that never fires, firing,
    # resolved; and the keep_firing_for rule rides out at least one dip.
    for name, states in ours.items():
        changes = [s for _, s in transitions[name]]
        assert changes.count("firing") >= 2 and "pending" in changes, (name, transitions[name])
        assert any(a == "pending" and b == "inactive" for a, b in itertools.pairwise(states)), name
    temps = series["temperature_max_celsius"]
    assert any(ours["HotCpu"][i] == "firing" and temps[i] <= 85 for i in range(SAMPLES)), (
        "no dip ridden out"
    )

    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "sysmetrics",
                        "interval": "10s",
                        "rules": [prometheus_rule(r) for r in rules],
                    }
                ]
            }
        )
    )
    checks = []
    for rule in rules:
        for i, state in enumerate(ours[rule.name]):
            checks.append(
                {
                    "expr": f'count by (alertstate) (ALERTS{{alertname="{rule.name}"}})',
                    "eval_time": f"{10 * i}s",
                    "exp_samples": []
                    if state == "inactive"
                    else [{"labels": f'{{alertstate="{state}"}}', "value": 1}],
                }
            )
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "10s",
                "tests": [
                    {
                        "interval": "10s",
                        "input_series": [
                            {
                                "series": f'sysmetrics_{metric}{{host_id="h"}}',
                                "values": " ".join(f"{v:g}" for v in values),
                            }
                            for metric, values in series.items()
                        ],
                        "promql_expr_test": checks,
                    }
                ],
            }
        )
    )
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(checks) == 3 * SAMPLES and "SUCCESS" in result.stdout
