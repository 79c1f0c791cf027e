"""End to end with real processes: simulator → Kafka → lake writers → hourly job (CLI), while
things break. Each test checks that the warehouse holds exactly the produced event_ids and that
the hourly aggregates equal those computed independently from the produced events."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sysmetrics.config import Settings
from sysmetrics.schema import MetricsEvent, encode
from sysmetrics.stream.simulator import generate
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.conftest import settings_for
from tests.support.brokers import DurableTansuBroker, TestBroker
from tests.support.kafka_io import SYSMETRICS, produce, read_to_end
from tests.support.lake import event_id_counts
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

START = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
HOURS = 3
HOSTS = 40
SEED = 6  # includes a host offline 01:30-02:05 (late data) and two reboots


@dataclass
class Run:
    settings: Settings
    tmp: Path
    env: dict[str, str]
    writers: list[subprocess.Popen[bytes]]

    def spawn_writer(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / "writers.log").open("ab")
        process = subprocess.Popen([SYSMETRICS, "consume"], env=self.env, stdout=log, stderr=log)
        self.writers.append(process)
        return process

    def cli(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [SYSMETRICS, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def simulate(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                SYSMETRICS,
                "simulate",
                "--hosts",
                str(HOSTS),
                "--duration",
                f"{HOURS}h",
                "--start",
                START.isoformat(),
                "--seed",
                str(SEED),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def produced_events() -> list[MetricsEvent]:
    """The simulator is deterministic by seed: the same events, computed independently."""
    return [e for _, e in generate(HOSTS, START, HOURS * 3600, 10.0, SEED)]


def make_run(broker_settings: Settings, tmp_path: Path) -> Run:
    settings = broker_settings.model_copy(update={"flush_seconds": 2.0})
    env = {
        **os.environ,
        "SYSMETRICS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SYSMETRICS_TOPIC": settings.topic,
        "SYSMETRICS_CONSUMER_GROUP": settings.consumer_group,
        "SYSMETRICS_LAKE_URL": settings.lake_url,
        "SYSMETRICS_WAREHOUSE_URL": settings.warehouse_url,
        "SYSMETRICS_DATA_DIR": str(settings.data_dir),
        "SYSMETRICS_FLUSH_SECONDS": "2",
        "SYSMETRICS_WATERMARK_GRACE_S": "0",
    }
    return Run(settings, tmp_path, env, [])


@pytest.fixture
def run(tansu_settings: Settings, tmp_path: Path) -> Iterator[Run]:
    """The e2e faults run on Tansu (the broker-facing tiers run on both brokers); the broker
    restart runs on both brokers with durable storage."""
    current = make_run(tansu_settings, tmp_path)
    yield current
    for process in current.writers:
        if process.poll() is None:
            process.kill()
            process.wait()


def lake_lines(run: Run) -> int:
    lake = Path(run.settings.lake_url) / "raw"
    return sum(p.read_bytes().count(b"\n") for p in lake.rglob("*.jsonl"))


def lake_diagnosis(run: Run, expected: int) -> str:
    """What a lake that did not fill holds, and what the writers last said."""
    counts = event_id_counts(Path(run.settings.lake_url))
    missing = {e.event_id for e in produced_events()} - counts.keys()
    duplicated = sum(1 for n in counts.values() if n > 1)
    alive = [p.poll() is None for p in run.writers]
    log = run.tmp / "writers.log"
    tail = log.read_text(errors="replace")[-2500:] if log.exists() else ""
    return (
        f"{len(counts)} distinct of {expected}, {len(missing)} missing, {duplicated} duplicated, "
        f"writers alive {alive}; writers' log ends:\n{tail}"
    )


def finish(
    run: Run, expected: int, quarantined: int = 0, events: list[MetricsEvent] | None = None
) -> None:
    """Let the writers drain, stop them, run the hourly job for every hour, then check the
    warehouse against ``events`` (default: every produced event)."""
    try:
        wait_for(lambda: lake_lines(run) >= expected, 240, f"{expected} events in the lake")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {lake_diagnosis(run, expected)}") from None
    time.sleep(3)  # anything extra (a duplicate) would show up now
    for process in run.writers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    end = START + timedelta(hours=HOURS)
    run.cli("batch", "backfill", "--from", START.isoformat(), "--to", end.isoformat())
    check_warehouse(run, produced_events() if events is None else events)
    q = sum(
        p.read_bytes().count(b"\n")
        for p in (Path(run.settings.lake_url) / "quarantine").rglob("*.jsonl")
    )
    assert q == quarantined


def check_warehouse(run: Run, events: list[MetricsEvent]) -> None:
    wh = DuckDBWarehouse(run.settings.warehouse_url, read_only=True)
    try:
        ids = [r["event_id"] for r in wh.native_query("SELECT event_id FROM raw_metrics")]
        hourly = {
            (r["host_id"], r["hour"]): r
            for r in wh.native_query(
                "SELECT host_id, hour, samples, cpu_avg, net_sent_bytes, counter_resets "
                "FROM hourly_host_metrics"
            )
        }
    finally:
        wh.close()
    expected_ids = {e.event_id for e in events}
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated events"
    assert set(ids) == expected_ids, f"{len(expected_ids - set(ids))} lost events"
    for key, want in independent_aggregates(events).items():
        got = hourly[key]
        assert got["samples"] == want["samples"], key
        assert got["cpu_avg"] == pytest.approx(want["cpu_avg"], abs=1e-6), key
        assert got["net_sent_bytes"] == want["net_sent_bytes"], key
        assert got["counter_resets"] == want["resets"], key
    assert len(hourly) == len(independent_aggregates(events))


def independent_aggregates(events: list[MetricsEvent]) -> dict[tuple[str, datetime], dict]:  # type: ignore[type-arg]
    by_host: dict[str, list[MetricsEvent]] = defaultdict(list)
    for e in events:
        by_host[e.host.host_id].append(e)
    out: dict[tuple[str, datetime], dict] = {}  # type: ignore[type-arg]
    for host, samples in by_host.items():
        samples.sort(key=lambda e: e.ts)
        previous: MetricsEvent | None = None
        for e in samples:
            hour = e.ts.replace(minute=0, second=0, microsecond=0)
            agg = out.setdefault(
                (host, hour), {"samples": 0, "cpu": [], "net_sent_bytes": None, "resets": 0}
            )
            agg["samples"] += 1
            agg["cpu"].append(e.cpu.utilization_pct)  # type: ignore[union-attr]
            # The SQL looks back one hour for the predecessor of the hour's first sample.
            if previous is not None and e.ts - previous.ts <= timedelta(hours=1) + (e.ts - hour):
                sent, before = e.network.bytes_sent, previous.network.bytes_sent  # type: ignore[union-attr]
                boots = (previous.host.boot_time, e.host.boot_time)
                rebooted = None not in boots and boots[1] - boots[0] > timedelta(seconds=60)  # type: ignore[operator]
                if sent >= before or rebooted:  # type: ignore[operator]
                    delta = sent - before if sent >= before else sent  # type: ignore[operator]
                    agg["net_sent_bytes"] = (agg["net_sent_bytes"] or 0) + delta
                agg["resets"] += int(sent < before)  # type: ignore[operator]
            previous = e
    for agg in out.values():
        agg["cpu_avg"] = sum(agg["cpu"]) / len(agg["cpu"])
    return out


# --------------------------------------------------------------------------- the faults
def test_clean_run_is_exact(run: Run) -> None:
    events = produced_events()
    assert any(e.host.boot_time and e.host.boot_time >= START for e in events), "a counter reset"
    run.spawn_writer()
    sim = run.simulate()
    assert sim.wait(timeout=300) == 0
    finish(run, len(events))


def test_writer_kill_storm(run: Run) -> None:
    sim = run.simulate()
    rng = random.Random(5)
    for _ in range(8):
        writer = run.spawn_writer()
        time.sleep(rng.uniform(3.5, 6.0))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert sim.wait(timeout=300) == 0
    run.spawn_writer()
    finish(run, len(produced_events()))


def test_writer_added_and_removed(run: Run) -> None:
    first = run.spawn_writer()
    sim = run.simulate()
    time.sleep(4)
    second = run.spawn_writer()
    time.sleep(6)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert sim.wait(timeout=300) == 0
    time.sleep(2)
    second.send_signal(signal.SIGKILL)
    second.wait()
    run.spawn_writer()
    finish(run, len(produced_events()))


def test_storage_outage(run: Run) -> None:
    run.spawn_writer()
    lake = Path(run.settings.lake_url)
    sim = run.simulate()
    wait_for(lambda: any(lake.rglob("*.jsonl")), 60, "the first files")
    away = run.tmp / "lake-away"
    lake.rename(away)
    lake.write_text("storage down")
    time.sleep(20)
    lake.unlink()
    away.rename(lake)
    assert sim.wait(timeout=300) == 0
    finish(run, len(produced_events()))


def test_poison_messages_from_an_outside_client(run: Run) -> None:
    run.spawn_writer()
    sim = run.simulate()
    poison = [
        (b"evil", b"\x00\xff not json"),
        (b"evil", json.dumps({"schema_version": 1}).encode()),
        (None, b'{"host": {"host_id": "../../x"}}'),
        (b"evil", None),
    ]
    produce(run.settings, poison)
    assert sim.wait(timeout=300) == 0
    finish(run, len(produced_events()), quarantined=len(poison))


def test_hourly_job_twice_and_out_of_order(run: Run) -> None:
    run.spawn_writer()
    assert run.simulate().wait(timeout=300) == 0
    finish(run, len(produced_events()))
    before = snapshot(run)
    for hour in reversed(range(HOURS)):  # backfill after later hours, newest first
        run.cli("batch", "run", "--hour", (START + timedelta(hours=hour)).isoformat())
    run.cli("batch", "run", "--hour", START.isoformat())
    assert snapshot(run) == before
    check_warehouse(run, produced_events())


def snapshot(run: Run) -> dict[str, tuple[int, str]]:
    wh = DuckDBWarehouse(run.settings.warehouse_url, read_only=True)
    try:
        return {
            t: tuple(
                wh.native_query(
                    f"SELECT COUNT(*) AS n, md5(string_agg(CAST(x AS VARCHAR), '|' "
                    f"ORDER BY CAST(x AS VARCHAR))) AS s FROM {t} AS x"
                )[0].values()
            )  # type: ignore[misc]
            for t in ("raw_metrics", "hourly_host_metrics", "hourly_host_trends", "alerts")
        }
    finally:
        wh.close()


def test_broker_killed_and_restarted(restartable_broker: TestBroker, tmp_path: Path) -> None:
    """Kill -9 a broker with durable storage mid-stream and start it again."""
    run = make_run(settings_for(restartable_broker, tmp_path), tmp_path)
    try:
        run.spawn_writer()
        sim = run.simulate()
        time.sleep(3)
        restartable_broker.kill()
        time.sleep(5)
        restartable_broker.start()
        assert sim.wait(timeout=400) == 0
        produced = produced_events()
        if isinstance(restartable_broker, DurableTansuBroker):
            # Tansu on S3 acknowledges a produce before its object is written, so a kill -9
            # can lose records it acknowledged (README: Known limitations; it lost 343 of
            # 43,200 in one CI run). The pipeline must lose and duplicate nothing the broker
            # kept: the expectation is what a fresh consumer reads back after the restart.
            kept = {
                json.loads(m.value())["event_id"] for m in read_to_end(run.settings, timeout_s=90)
            }
            produced = [e for e in produced if e.event_id in kept]
            print(f"durable Tansu kept {len(produced)} of {len(produced_events())} events")
        finish(run, len(produced), events=produced)
    finally:
        for process in run.writers:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_host_returning_with_late_data_recomputes_old_hours(run: Run) -> None:
    """Deliver what arrived before hour 2, run hours 0-1, then deliver the rest (including
    hours-old samples of hosts that were offline): the next run must fix the old hours."""
    timeline = list(generate(HOSTS, START, HOURS * 3600, 10.0, SEED))
    cut = 2 * 3600
    early = [e for at, e in timeline if at < cut]
    late = [e for at, e in timeline if at >= cut]
    stale = [e for e in late if e.ts < START + timedelta(seconds=cut)]
    assert stale, "the seed must include a host that comes back with old samples"
    run.spawn_writer()
    produce(run.settings, [(e.host.host_id.encode(), encode(e)) for e in early])
    wait_for(lambda: lake_lines(run) >= len(early), 240, "the early events in the lake")
    run.cli(
        "batch",
        "backfill",
        "--from",
        START.isoformat(),
        "--to",
        (START + timedelta(hours=2)).isoformat(),
    )
    produce(run.settings, [(e.host.host_id.encode(), encode(e)) for e in late])
    wait_for(lambda: lake_lines(run) >= len(timeline), 240, "every event in the lake")
    out = run.cli("batch", "run", "--hour", (START + timedelta(hours=2)).isoformat())
    assert "late data recomputed 01h" in out
    check_warehouse(run, [e for _, e in timeline])
