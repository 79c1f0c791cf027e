"""Incremental loads give the same tables as from-scratch loads, every column of every table.

A simulated fleet's files arrive round by round, the way the lake writer writes them (a
file per partition and event hour each minute, hosts coming back late with hours of spooled
samples, reboots), some batches written twice under another name (a replay after a crash
between the file and the commit), the current hour refreshed every 20 minutes as `up` does,
finished hours run after their grace, and hours re-run out of order. The same lake loaded
from scratch, hour by hour, must give identical tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.lake.store import LakeStore
from sysmetrics.schema import MetricsEvent
from sysmetrics.stream.simulator import generate
from sysmetrics.timeutil import hour_floor
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.kafka_io import SYSMETRICS
from tests.support.lakes import HOUR14, LakeBuilder

H = timedelta(hours=1)
START = HOUR14 - 5 * H
HOURS = 6
COMPARED = {
    "raw": "event_id",
    "hourly": "host_id, hour",
    "trends": "host_id, hour",
    "alerts": "hour, host_id, rule",
    "quality": "hour, host_id, anomaly",
}


def tables(wh: DuckDBWarehouse) -> dict[str, list[tuple[Any, ...]]]:
    return {
        kind: [tuple(r.values()) for r in wh.rows(f"SELECT * FROM {{{kind}}} ORDER BY {order}")]
        for kind, order in COMPARED.items()
    }


def fleet_rounds(hosts: int = 16) -> list[tuple[float, list[MetricsEvent]]]:
    """(emit time, events) per minute of emit time, as one lake writer round."""
    rounds: dict[int, list[MetricsEvent]] = defaultdict(list)
    for emit_at, event in generate(hosts, START, HOURS * 3600.0, seed=7):
        rounds[int(emit_at // 60)].append(event)
    return [(minute * 60.0, events) for minute, events in sorted(rounds.items())]


def write_round(lake: LakeBuilder, events: list[MetricsEvent], moved: bool = False) -> list[Path]:
    """One file per partition and event hour; ``moved``: the events land in the other
    partition (a spool replayed after the topic gained partitions), so a copy with a smaller
    file name than the original can arrive after it."""
    by_partition: dict[int, list[MetricsEvent]] = defaultdict(list)
    for e in events:
        by_partition[(int(e.host.host_id.rsplit("-", 1)[1]) + moved) % 2].append(e)
    return [p for part, batch in by_partition.items() for p in lake.add_batch(batch, part)]


def test_incremental_and_from_scratch_give_identical_tables(tmp_path: Path) -> None:
    live = Settings(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        warehouse_url=str(tmp_path / "live.duckdb"),
    )
    store = LakeStore(live.lake_url)
    lake = LakeBuilder(Path(live.lake_url))
    wh = DuckDBWarehouse(live.warehouse_url)
    reads = []
    partial: list[int] = []  # hours recomputed for some of their hosts only
    try:
        done_hours: set[datetime] = set()
        rounds = fleet_rounds()
        # A laptop asleep through hour START+1h: its spool lands 2.5 h later, once the hours
        # around it are computed.
        asleep = (rounds[0][1][3].host.host_id, START + H)
        spooled: list[MetricsEvent] = []
        for index, (emit_at, events) in enumerate(rounds):
            spooled += [e for e in events if (e.host.host_id, hour_floor(e.ts)) == asleep]
            write_round(lake, [e for e in events if (e.host.host_id, hour_floor(e.ts)) != asleep])
            if spooled and START + timedelta(seconds=emit_at) >= asleep[1] + 2.5 * H:
                write_round(lake, spooled)
                spooled = []
            if index % 7 == 3 and index > 25:  # a replay of events loaded earlier, elsewhere
                replayed = rounds[index - 25][1]
                write_round(lake, replayed[: len(replayed) // 2], moved=True)
            now = START + timedelta(seconds=emit_at)
            current = hour_floor(now)
            finished = current - H
            if (
                finished >= START
                and finished not in done_hours
                and now >= current + timedelta(minutes=2)
            ):
                result = run_hour(live, wh, store, finished)
                reads.append((finished, result.files, result.read))
                partial += [n for n in result.hosts_recomputed.values() if n is not None]
                done_hours.add(finished)
            if index % 20 == 0:
                result = run_hour(live, wh, store, current)  # the live view's refresh
                reads.append((current, result.files, result.read))
                partial += [n for n in result.hosts_recomputed.values() if n is not None]
        last = run_hour(live, wh, store, START + 5 * H)  # the last hour, once finished
        reads.append((last.hour, last.files, last.read))
        for hour in (START + 2 * H, START + H, START + 5 * H):  # out of order, after it all
            assert run_hour(live, wh, store, hour).read == 0  # nothing new: nothing read
        incremental = tables(wh)
    finally:
        wh.close()
    # Late files and refreshes recomputed only the hosts that received rows, and (below) the
    # tables are still the same as a from-scratch load's.
    assert 1 in partial, partial
    # Each file was read once: an hour's runs together read no more files than the hour has.
    for hour in {h for h, _, _ in reads}:
        runs = [(files, read) for h, files, read in reads if h == hour]
        assert len(runs) >= 3 and 0 < sum(read for _, read in runs) <= runs[-1][0], runs

    scratch = live.model_copy(update={"warehouse_url": str(tmp_path / "scratch.duckdb")})
    wh = DuckDBWarehouse(scratch.warehouse_url)
    try:
        for n in range(HOURS):
            run_hour(scratch, wh, store, START + n * H, rebuild=True)
        from_scratch = tables(wh)
    finally:
        wh.close()
    assert len(from_scratch["raw"]) > 30_000 and len(from_scratch["hourly"]) == 16 * HOURS
    for kind in COMPARED:
        assert incremental[kind] == from_scratch[kind], kind


def kill_while_reading_lake_files(process: subprocess.Popen[bytes], lake: Path) -> bool:
    """SIGKILL ``process`` the moment it has a lake data file open (DuckDB is inside the
    load's transaction then); False if it finished first."""
    fds = Path(f"/proc/{process.pid}/fd")
    while process.poll() is None:
        try:
            targets = [os.readlink(fd) for fd in fds.iterdir()]
        except OSError:
            continue
        if any(t.startswith(str(lake)) and t.endswith(".jsonl") for t in targets):
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            return True
    return False


def test_kill_9_in_the_middle_of_an_incremental_load(tmp_path: Path) -> None:
    """`batch run` is killed while it reads new files, three times; the next run completes
    the load: nothing lost, nothing doubled, tables equal to a from-scratch load."""
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(tmp_path / "data"),
        "SYSMETRICS_LAKE_URL": str(tmp_path / "lake"),
        "SYSMETRICS_WAREHOUSE_URL": str(tmp_path / "live.duckdb"),
    }
    lake = LakeBuilder(tmp_path / "lake")
    rounds = [events for _, events in fleet_rounds(hosts=200) if events[0].ts >= START + 5 * H]
    hour = f"{START + 5 * H:%Y-%m-%dT%H}"
    command = [SYSMETRICS, "batch", "run", "--hour", hour]
    for batch in rounds[:10]:
        write_round(lake, batch)
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 0
    killed = 0
    for step in range(3):
        for batch in rounds[10 + 10 * step : 20 + 10 * step]:
            write_round(lake, batch)
        process = subprocess.Popen(command, env=env)
        killed += kill_while_reading_lake_files(process, tmp_path / "lake")
    assert killed >= 2, "the loads finished before they could be killed"
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    # A killed load left nothing behind: the next run read exactly the killed loads' files.
    assert f"({20 * killed} files read" in final.stdout, final.stdout

    scratch = Settings(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        warehouse_url=str(tmp_path / "scratch.duckdb"),
    )
    wh = DuckDBWarehouse(scratch.warehouse_url)
    try:
        run_hour(scratch, wh, LakeStore(scratch.lake_url), START + 5 * H, rebuild=True)
        expected = tables(wh)
    finally:
        wh.close()
    wh = DuckDBWarehouse(env["SYSMETRICS_WAREHOUSE_URL"])
    try:
        got = tables(wh)
        ledger = wh.scalar("SELECT COUNT(*) - COUNT(DISTINCT file) FROM {loaded_files}")
    finally:
        wh.close()
    assert ledger == 0  # no file recorded twice
    assert len(got["raw"]) == len({row[0] for row in got["raw"]}) > 20_000
    assert got["raw"] == expected["raw"] and got["hourly"] == expected["hourly"]
