"""The hourly job on small generated lakes, against a real DuckDB, with hand-computed values."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest
from starlette.testclient import TestClient

from sysmetrics import prompb
from sysmetrics.batch.hourly import (
    DataQualityError,
    HourScope,
    Loaded,
    NewFiles,
    aggregate,
    backfill,
    check_raw,
    hours_to_run,
    ledger,
    prune_raw_rows,
    record_retirements,
    run_hour,
)
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.lake import layout
from sysmetrics.lake.catalog import Watermark, publish_watermark
from sysmetrics.lake.compaction import LakeFileUnreadable, compact_hour, prune_hour, raw_files
from sysmetrics.lake.store import LakeStore
from sysmetrics.remote_read.http import limits_of
from sysmetrics.remote_read.query import read as read_history
from sysmetrics.schema import INT64_MAX, DiskUsage, MetricsEvent, decode, encode
from sysmetrics.stream.simulator import generate
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.lakes import HOUR14, LakeBuilder, event, steady_host

H = timedelta(hours=1)


@pytest.fixture
def lake(settings: Settings) -> LakeBuilder:
    return LakeBuilder(Path(settings.lake_url))


@pytest.fixture
def wh(settings: Settings):  # type: ignore[no-untyped-def]
    warehouse = DuckDBWarehouse(settings.warehouse_url)
    yield warehouse
    warehouse.close()


def run(settings: Settings, wh: DuckDBWarehouse, hour=HOUR14):  # type: ignore[no-untyped-def]
    return run_hour(settings, wh, LakeStore(settings.lake_url), hour)


def hourly(wh: DuckDBWarehouse, host: str, hour: datetime = HOUR14) -> dict[str, Any]:
    rows = wh.rows(
        "SELECT * FROM {hourly} WHERE host_id = @host AND hour = @start", host=host, start=hour
    )
    assert len(rows) == 1, rows
    return rows[0]


def detail_host() -> list:  # type: ignore[type-arg]
    """6 samples, 10 s apart; the host reboots before the 4th (its counters start again)."""
    cpu = [10, 20, 30, 40, 50, 60]
    sent = [1000, 2000, 3500, 500, 1500, 2500]
    return [
        event(
            "detail",
            HOUR14 + timedelta(seconds=10 * i),
            cpu[i],
            sent=sent[i],
            recv=0,
            seq=i,
            boot_time=HOUR14 - H if i < 3 else HOUR14 + timedelta(seconds=25),
        )
        for i in range(6)
    ]


def test_hourly_aggregates_match_hand_computed_values(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    lake.add_batch(detail_host())
    result = run(settings, wh)
    assert (result.files, result.rows) == (1, 6)
    row = hourly(wh, "detail")
    assert row["samples"] == 6
    assert row["completeness_pct"] == pytest.approx(100 * 6 / 360, abs=0.01)
    assert row["cpu_avg"] == pytest.approx(35.0)
    assert (row["cpu_min"], row["cpu_max"]) == (10.0, 60.0)
    assert row["cpu_p95"] == pytest.approx(57.5)  # exact: 50 + 0.75 * (60 - 50)
    # deltas 1000, 1500, reset -> +500, 1000, 1000
    assert row["net_sent_bytes"] == 5000
    assert row["counter_resets"] == 1
    assert row["net_sent_rate_peak"] == pytest.approx(150.0)
    assert row["net_sent_rate_avg"] == pytest.approx(100.0)
    assert row["temp_max"] == 50.0
    assert row["hostname"] == "detail.example"


def test_a_total_that_steps_down_without_a_reboot_adds_no_traffic(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """A host's totals step down when an interface or a disk goes away (a container's veth when
    it stops): that step is unknown, not a reset. Counted as one, it added the host's whole total
    since boot to one sample (here 10 GB in 10 s instead of 1 kB per 10 s); and an agent that
    sends no boot time (an OTLP sender other than the Collector's hostmetrics) is never taken
    for rebooted."""
    boot = HOUR14 - 100 * H
    steps = (10**10, 10**10 + 1000, 10**10 + 2000, 10**10 - 5000, 10**10 - 4000)
    for host_id, boot_time in (("veth-gone", boot), ("otel-no-boot", None)):
        lake.add_batch(
            [
                event(
                    host_id,
                    HOUR14 + timedelta(seconds=10 * i),
                    20.0,
                    sent=sent,
                    seq=i,
                    boot_time=boot_time,
                )
                for i, sent in enumerate(steps)
            ]
        )
    run(settings, wh)
    for host_id in ("veth-gone", "otel-no-boot"):
        row = hourly(wh, host_id)
        assert row["net_sent_bytes"] == 3000, host_id  # +1000, +1000, unknown, +1000
        assert row["disk_read_bytes"] == 6000, host_id
        assert row["net_sent_rate_peak"] == pytest.approx(100.0), host_id
        assert row["net_sent_rate_avg"] == pytest.approx(100.0), host_id
        assert row["counter_resets"] == 1, host_id


# 64 readings in tenths whose exact mean, 47.0484375, sits on a 6-decimal rounding boundary:
# added as floats, time order rounds it to 47.048437 and the reverse to 47.048438.
TIE_TENTHS = [
    585, 33, 439, 494, 591, 15, 211, 473, 832, 503, 843, 284, 669, 830, 164, 35,
    533, 501, 335, 77, 255, 975, 975, 763, 369, 45, 430, 880, 142, 617, 363, 390,
    431, 290, 846, 691, 268, 467, 178, 702, 310, 677, 371, 136, 467, 786, 880, 245,
    992, 450, 628, 384, 45, 596, 4, 241, 137, 199, 963, 931, 310, 549, 374, 912,
]  # fmt: skip


def disk_totals(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder, disks: list[DiskUsage]
) -> list[tuple[int, int]]:
    """A host's raw disk totals, (size, used) per distinct row, when every sample has ``disks``."""
    samples = steady_host("disks", HOUR14, 10.0, samples=3)
    lake.add_batch([msgspec.structs.replace(e, disks=disks) for e in samples])
    run(settings, wh)
    rows = wh.rows(
        "SELECT DISTINCT disk_total_bytes, disk_used_bytes FROM {raw} WHERE host_id = 'disks'"
    )
    return [(r["disk_total_bytes"], r["disk_used_bytes"]) for r in rows]


def test_a_filesystem_mounted_at_several_places_counts_once_in_the_disk_totals(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Bind mounts and btrfs subvolumes (Fedora's / and /home) report one filesystem's device
    and numbers at each mountpoint: summed once each, a host's disk was several times its size
    (this test machine's own collector listed / and /run/netns, both /dev/vda: 541 GB for 270).
    Another disk with the same numbers still counts, as does a mount with no device."""
    root = DiskUsage(mountpoint="/", device="/dev/vda", total_bytes=1000, used_bytes=400)
    disks = [
        root,
        msgspec.structs.replace(root, mountpoint="/home"),
        msgspec.structs.replace(root, mountpoint="/run/netns"),
        msgspec.structs.replace(root, mountpoint="/data", device="/dev/vdb"),
        DiskUsage(mountpoint="/mnt/a", total_bytes=10, used_bytes=1),
        DiskUsage(mountpoint="/mnt/b", total_bytes=10, used_bytes=1),
        msgspec.structs.replace(root, mountpoint="/snap", used_bytes=None),
    ]
    assert disk_totals(settings, wh, lake, disks) == [(2020, 802)]


def test_the_volumes_of_an_apfs_container_count_its_size_once(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Each APFS volume reports its container's size and its own used bytes (the recorded
    macOS node_exporter output: five volumes of /dev/disk1, each 499.96 GB): a Mac's disk was
    five to eight times its size. Another container (an external drive) counts."""

    def volume(mountpoint: str, device: str, size: int, used: int) -> DiskUsage:
        return DiskUsage(
            mountpoint=mountpoint, device=device, fstype="apfs", total_bytes=size, used_bytes=used
        )

    disks = [
        volume("/", "/dev/disk1s5s1", 500, 15),
        volume("/System/Volumes/Data", "/dev/disk1s1", 500, 56),
        volume("/System/Volumes/VM", "/dev/disk1s4", 500, 2),
        volume("/System/Volumes/Update", "/dev/disk1s6", 500, 2),
        volume("/Volumes/Backup", "/dev/disk4s1", 2000, 900),
    ]
    assert disk_totals(settings, wh, lake, disks) == [(2500, 15 + 56 + 2 + 2 + 900)]


def test_hourly_averages_do_not_depend_on_the_order_rows_are_stored_in(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """An incremental load appends rows where a from-scratch load sorts them: the aggregates
    must be the same to the last digit either way."""
    lake.add_batch(
        [
            event("tie", HOUR14 + timedelta(seconds=10 * i), tenths / 10, seq=i)
            for i, tenths in enumerate(TIE_TENTHS)
        ]
    )
    run(settings, wh)
    in_time_order = hourly(wh, "tie")
    assert in_time_order["cpu_avg"] == 47.048437  # the exact mean, rounded as a double
    wh.execute("CREATE TABLE reversed AS SELECT * FROM {raw} ORDER BY ts DESC")
    wh.execute("DELETE FROM {raw}")
    wh.execute("INSERT INTO {raw} SELECT * FROM reversed")
    aggregate(wh, [HourScope(HOUR14)], settings.sample_interval_s)
    assert hourly(wh, "tie") == in_time_order


def test_an_absurd_reading_is_left_out_of_its_average_and_the_hour_still_runs(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """The schema bounds percentages and temperatures but not load or watts: a reading of
    1e300 passes validation, and an average added as integers must not overflow on it."""
    samples = [event("absurd", HOUR14 + timedelta(seconds=10 * i), 20.0, seq=i) for i in range(3)]
    for sample, load in zip(samples, (2.0, 1e300, 4.0), strict=True):
        sample.cpu.load_1m = load
    lake.add_batch(samples)
    run(settings, wh)
    row = hourly(wh, "absurd")
    assert (row["samples"], row["load_avg"], row["cpu_avg"]) == (3, 3.0, 20.0)


def test_an_absurd_counter_step_is_left_out_and_the_hour_still_runs(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Counters are valid up to 2**63 - 1. A step no link can make in one sample (a driver's
    garbage) must not swell the host's traffic, and steps that add up past 64 bits must not
    stop the hour for every host (they did: 'value is out of range for ... INT64')."""

    def host(host_id: str, counters: tuple[int, ...]) -> None:
        lake.add_batch(
            [
                event(host_id, HOUR14 + timedelta(seconds=10 * i), 20.0, sent=sent, seq=i)
                for i, sent in enumerate(counters)
            ]
        )

    host("jump", (1000, 2000, 2**61, 3000, 4000))  # +1000, absurd, back (unknown), +1000
    host("bounce", (0, 2**62 - 1) * 3)  # their sum was 3 * (2**62 - 1): past 64 bits
    host("calm", (0, 1000, 2000))
    run(settings, wh)
    jump = hourly(wh, "jump")
    assert (jump["net_sent_bytes"], jump["disk_read_bytes"], jump["counter_resets"]) == (
        2000,
        4000,
        1,
    )
    # every step of "bounce" is absurd or back: its traffic is unknown, and the hour runs
    assert (hourly(wh, "bounce")["net_sent_bytes"], hourly(wh, "calm")["net_sent_bytes"]) == (
        None,
        2000,
    )


def test_a_counter_an_old_writer_let_into_the_lake_is_a_clear_error_naming_file_and_line(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Lake writers before the schema's INT64 bound wrote counters of 2**63 and more; such a
    line stops its hour's load for every host. The error says which file, which line, and
    what to do; done, the hour loads."""
    lake.add_batch(
        [event("calm", HOUR14 + timedelta(seconds=10 * i), 20.0, seq=i) for i in range(3)]
    )
    old_lines = [
        event("old", HOUR14 + timedelta(seconds=10 * i), 20.0, sent=s, seq=i)
        for i, s in enumerate((1000, 2**63 + 5, 3000))
    ]
    (bad,) = lake.add_batch(old_lines)
    with pytest.raises(LakeFileUnreadable) as caught:
        run(settings, wh)
    message = str(caught.value)
    assert f"lake file {bad}, line 2:" in message and "9223372036854775813" in message
    assert "quarantine/" in message and "--rebuild" in message
    lines = bad.read_bytes().splitlines(keepends=True)
    quarantined = Path(settings.lake_url) / "quarantine" / "machine_metrics" / "by-hand.jsonl"
    quarantined.parent.mkdir(parents=True)
    quarantined.write_bytes(lines[1])
    bad.write_bytes(lines[0] + lines[2])
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14, rebuild=True)
    assert wh.scalar("SELECT COUNT(*) FROM {raw} WHERE host_id = 'old'") == 2
    assert hourly(wh, "calm")["samples"] == 3


def test_a_declared_interval_under_a_millisecond_does_not_stop_the_hour(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """The schema admits any positive interval_s: 0.0001 s made the sample slot a division by
    zero, an error for the whole hour."""
    for host_id, interval_s in (("tiny", 0.0001), ("normal", None)):
        lake.add_batch(
            [
                event(
                    host_id, HOUR14 + timedelta(seconds=10 * i), 20.0, seq=i, interval_s=interval_s
                )
                for i in range(3)
            ]
        )
    run(settings, wh)
    assert hourly(wh, "tiny")["samples"] == 3
    assert hourly(wh, "normal")["completeness_pct"] == round(100 * 3 / 360, 2)


def test_counter_deltas_reach_back_into_the_previous_hour(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    before = event("h", HOUR14 - timedelta(seconds=10), 5, sent=10_000, seq=0)
    after = event("h", HOUR14, 5, sent=12_000, seq=1)
    lake.add_batch([before, after])
    run(settings, wh, HOUR14 - H)
    run(settings, wh)
    assert hourly(wh, "h")["net_sent_bytes"] == 2000


def test_a_hot_host_alerts_and_a_normal_host_raises_none(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    lake.add_batch(steady_host("normal", HOUR14, cpu=20.0, temp=55.0))
    lake.add_batch(steady_host("hot", HOUR14, cpu=97.0, temp=91.0))
    run(settings, wh)
    alerts = wh.native_query("SELECT host_id, rule, value FROM alerts ORDER BY host_id, rule")
    assert {(a["host_id"], a["rule"]) for a in alerts} == {
        ("hot", "cpu_p95_high"),
        ("hot", "temperature_high"),
    }
    assert hourly(wh, "normal")["completeness_pct"] == 100.0


def test_worn_battery_silent_host_and_low_completeness_alerts(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    lake.add_batch(steady_host("gone", HOUR14 - H, cpu=10.0))
    lake.add_batch(
        [
            event("laptop", HOUR14 + timedelta(seconds=10 * i), 10, battery_health=72.5, seq=i)
            for i in range(100)
        ]
    )
    run(settings, wh, HOUR14 - H)
    run(settings, wh)
    rules = {
        (a["host_id"], a["rule"]): a["value"]
        for a in wh.native_query(
            f"SELECT host_id, rule, value FROM alerts WHERE hour = '{HOUR14.isoformat()}'"
        )
    }
    assert rules[("laptop", "battery_worn")] == 72.5
    assert rules[("laptop", "low_completeness")] == pytest.approx(27.78, abs=0.01)
    assert ("gone", "host_silent") in rules


def test_a_host_retired_after_its_last_sample_is_not_silent_one_back_since_is(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Retirements from the lake writers' manifests (Prometheus dropped the target,
    ``alert --forget``): a host retired after its last sample raises no ``host_silent``; one
    retired, then back (samples after it), then gone, does; one retired a second before its
    last sample does; an unretired silent host does. A retirement read twice is kept once."""
    for host in ("gone", "retired", "early"):
        lake.add_batch(steady_host(host, HOUR14 - H, cpu=10.0))
    lake.add_batch(steady_host("back", HOUR14 - 2 * H, cpu=10.0))
    lake.add_batch(steady_host("back", HOUR14 - H, cpu=10.0))
    lake.add_batch(steady_host("busy", HOUR14, cpu=10.0))
    last_sample = HOUR14 - timedelta(seconds=10)
    retired = [
        ("retired", last_sample + timedelta(seconds=21)),
        ("early", last_sample - timedelta(seconds=1)),
        ("back", HOUR14 - H - timedelta(minutes=30)),
    ]
    run(settings, wh, HOUR14 - 2 * H)
    run(settings, wh, HOUR14 - H)
    for _ in range(2):
        record_retirements(wh, [(host, int(at.timestamp() * 1000)) for host, at in retired])
    assert wh.scalar("SELECT COUNT(*) FROM {retired}") == 3
    run(settings, wh)
    silent = {
        a["host_id"]
        for a in wh.rows(
            "SELECT host_id FROM {alerts} WHERE rule = 'host_silent' AND hour = @start",
            start=HOUR14,
        )
    }
    assert silent == {"gone", "back", "early"}


def test_cpu_anomaly_against_the_hosts_own_baseline(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    for back in range(30, 0, -1):
        hour = HOUR14 - back * H
        lake.add_batch(steady_host("db", hour, cpu=20.0 + (back % 3), samples=36, interval_s=100))
    lake.add_batch(steady_host("db", HOUR14, cpu=60.0, samples=36, interval_s=100))
    settings = settings.model_copy(update={"lookback_hours": 48, "alert_completeness_pct": 0.0})
    run(settings, wh)
    rules = [
        a["rule"]
        for a in wh.native_query(f"SELECT rule FROM alerts WHERE hour = '{HOUR14.isoformat()}'")
    ]
    assert rules == ["cpu_anomaly"]


def test_a_late_file_changes_an_already_aggregated_hour(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    lake.add_batch(detail_host())
    run(settings, wh)
    assert hourly(wh, "detail")["samples"] == 6
    late = [event("detail", HOUR14 + timedelta(minutes=30), 99, sent=9000, seq=50)]
    lake.add_batch(late)
    result = run(settings, wh, HOUR14 + H)  # the next hour's run finds the late file
    assert HOUR14 in result.recomputed
    row = hourly(wh, "detail")
    assert row["samples"] == 7
    assert row["cpu_max"] == 99.0


def test_duplicate_events_across_files_load_once(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    events = detail_host()
    lake.add_batch(events)
    lake.add_batch(events[2:])  # e.g. a producer retry that reached Kafka twice
    result = run(settings, wh)
    assert result.rows == 6
    assert hourly(wh, "detail")["samples"] == 6


def checksums(
    wh: DuckDBWarehouse,
    tables: Iterable[str] = (
        "raw_metrics",
        "loaded_files",
        "hourly_host_metrics",
        "hourly_host_trends",
        "alerts",
    ),
) -> dict[str, tuple[int, str]]:
    out = {}
    for table in tables:
        row = wh.native_query(
            f"SELECT COUNT(*) AS n, md5(COALESCE(string_agg(CAST(t AS VARCHAR), '|' "
            f"ORDER BY CAST(t AS VARCHAR)), '')) AS sum FROM {table} AS t"
        )[0]
        out[table] = (row["n"], row["sum"])
    return out


def test_running_an_hour_three_times_gives_identical_tables(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    lake.add_batch(steady_host("a", HOUR14 - H, cpu=30.0) + steady_host("a", HOUR14, cpu=35.0))
    lake.add_batch(steady_host("b", HOUR14, cpu=95.0, temp=90.0) + detail_host())
    run(settings, wh, HOUR14 - H)
    run(settings, wh)
    first = checksums(wh)
    assert first["raw_metrics"][0] == 360 * 3 + 6
    run(settings, wh)
    run(settings, wh)
    assert checksums(wh) == first


def test_out_of_order_runs_converge_to_the_in_order_tables(
    settings: Settings, tmp_path: Path, lake: LakeBuilder
) -> None:
    lake.add_batch(steady_host("a", HOUR14 - H, cpu=30.0) + steady_host("a", HOUR14, cpu=50.0))
    in_order = DuckDBWarehouse(str(tmp_path / "in_order.duckdb"))
    run(settings, in_order, HOUR14 - H)
    run(settings, in_order)
    backwards = DuckDBWarehouse(str(tmp_path / "backwards.duckdb"))
    run(settings.model_copy(update={"lookback_hours": 0}), backwards)
    run(settings, backwards, HOUR14 - H)
    assert checksums(backwards) == checksums(in_order)
    trend = backwards.native_query(
        "SELECT cpu_change_vs_prev_hour AS c FROM hourly_host_trends "
        f"WHERE hour = '{HOUR14.isoformat()}'"
    )
    assert trend[0]["c"] == pytest.approx(20.0)


def test_a_backfill_skips_only_hours_it_has_nothing_to_compute_for(
    settings: Settings, tmp_path: Path, lake: LakeBuilder
) -> None:
    """Four days with two hours of data: a backfill runs those hours and the day after them
    (both hosts are host_silent there) and skips the rest, and its tables are those of running
    every hour. An hour the warehouse alone holds (its lake files gone) is still run. Before,
    every hour ran, ~80 ms each for nothing: ~2 h for `--last 3650d`."""
    import shutil

    lake.add_batch(steady_host("a", HOUR14 - H, cpu=30.0) + steady_host("a", HOUR14, cpu=50.0))
    lake.add_batch(steady_host("b", HOUR14, cpu=95.0, temp=90.0))
    store = LakeStore(settings.lake_url)
    start, end = HOUR14 - 48 * H, HOUR14 + 48 * H
    skipping = DuckDBWarehouse(str(tmp_path / "skipping.duckdb"))
    hours = hours_to_run(settings, skipping, store, start, end)
    assert hours == [HOUR14 + n * H for n in range(-1, sql.SILENT_HOST_HOURS + 1)]
    backfill(settings, skipping, store, hours)
    every = DuckDBWarehouse(str(tmp_path / "every.duckdb"))
    backfill(settings, every, store, [start + n * H for n in range(96)])
    tables = [*checksums(skipping), "host_data_quality"]
    assert checksums(skipping, tables) == checksums(every, tables)
    silent = skipping.native_query("SELECT hour FROM alerts WHERE rule = 'host_silent'")
    assert sorted(r["hour"] for r in silent) == sorted(
        HOUR14 + n * H for n in range(1, sql.SILENT_HOST_HOURS + 1) for _ in "ab"
    )
    shutil.rmtree(Path(settings.lake_url) / layout.hour_dir(settings.topic, HOUR14 - H))
    assert hours_to_run(settings, skipping, store, start, end) == hours


def test_a_host_sampling_faster_is_aggregated_not_fatal(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """400 samples 9 s apart from a collector that does not declare its interval."""
    lake.add_batch(steady_host("fast", HOUR14, cpu=10.0, samples=400, interval_s=9))
    run(settings, wh)
    row = hourly(wh, "fast")
    assert row["samples"] == 400
    assert row["completeness_pct"] == 100.0  # every 10-s slot of the hour holds a sample
    flags = wh.rows("SELECT anomaly, value FROM {quality} WHERE host_id = 'fast'")
    assert flags == [{"anomaly": "sampling_interval", "value": 9.0}]


def test_rows_lost_between_raw_and_aggregates_fail_the_run_loudly(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Only a broken pipeline gets here: a raw row filed under an hour its ts is not in."""
    lake.add_batch(steady_host("h", HOUR14, cpu=10.0, samples=30))
    run(settings, wh)
    wh.execute(
        "UPDATE {raw} SET hour = @start WHERE ts = (SELECT MIN(ts) FROM {raw})", start=HOUR14 - H
    )
    with pytest.raises(DataQualityError, match="raw rows outside their hour"):
        check_raw(wh, [HourScope(HOUR14 - H)])
    with pytest.raises(DataQualityError, match="raw rows missing from the aggregates: 1 rows"):
        aggregate(wh, [HourScope(HOUR14 - H)], settings.sample_interval_s)


def test_late_data_beyond_the_lookback_is_loaded_and_reported(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """A laptop returns after a month: the lake writer marks the old hour; the next run loads
    it, reports it, and clears the marker only once the hour is computed."""
    old = HOUR14 - 30 * 24 * H
    (path,) = lake.add_batch(steady_host("laptop", old, cpu=30.0, samples=60))
    marker = Path(settings.lake_url) / layout.late_marker_path(settings.topic, old, path.name)
    marker.parent.mkdir(parents=True)
    marker.touch()
    recent = Path(settings.lake_url) / layout.late_marker_path(settings.topic, HOUR14 - H, "x")
    recent.touch()  # a marker inside the look-back window is loaded and cleared too
    result = run(settings, wh)
    assert result.beyond_lookback == [old]
    assert not recent.exists() and HOUR14 - H in result.recomputed
    assert old in result.recomputed
    assert hourly(wh, "laptop", old)["samples"] == 60
    assert not marker.exists()
    (recorded,) = wh.rows("SELECT late_hours_beyond_lookback AS h FROM {batch_runs}")
    assert recorded["h"] == f"{old:%Y-%m-%dT%H}"
    assert run(settings, wh).beyond_lookback == []  # nothing new: nothing reloaded


def test_a_warehouse_of_an_earlier_version_gets_the_new_columns(
    settings: Settings, lake: LakeBuilder
) -> None:
    path = settings.warehouse_url
    old = duckdb.connect(path)
    old.execute("CREATE TABLE raw_metrics (event_id VARCHAR, ts TIMESTAMPTZ)")
    old.execute("INSERT INTO raw_metrics VALUES ('x', '2026-01-01 00:00:00+00')")
    old.close()
    wh = DuckDBWarehouse(path)
    try:
        wh.ensure_tables()
        columns = [
            r["column_name"]
            for r in wh.native_query(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'raw_metrics' ORDER BY ordinal_position"
            )
        ]
        assert columns == [name for name, _ in sql.RAW_COLUMNS]  # added at the end, in order
        assert wh.native_query("SELECT event_id FROM raw_metrics") == [{"event_id": "x"}]
    finally:
        wh.close()


def test_events_of_a_newer_minor_version_load_with_every_known_column(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    (path,) = lake.add_batch(steady_host("newer", HOUR14, cpu=12.0, samples=5))
    lines = []
    for line in path.read_bytes().splitlines():
        doc = json.loads(line)
        doc["power"] = {"package_watts": 31.5}
        doc["cpu"]["steal_pct"] = 1.5
        doc["disks"][0]["smart_ok"] = True
        lines.append(json.dumps(doc))
    path.write_text("\n".join(lines) + "\n")
    assert run(settings, wh).rows == 5
    row = hourly(wh, "newer")
    assert (row["samples"], row["cpu_avg"], row["disk_used_max"]) == (5, 12.0, 40.0)


def test_a_running_hour_is_not_an_incident(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """The current hour, a few minutes in: few samples so far, and a host that has not reported
    yet, are judged once the hour is over, not while it runs."""
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    lake.add_batch(steady_host("quiet", now_hour - H, cpu=5.0))
    lake.add_batch(steady_host("busy", now_hour - H, cpu=5.0))
    lake.add_batch(steady_host("busy", now_hour, cpu=5.0, samples=3))
    run(settings, wh, now_hour - H)
    run(settings, wh, now_hour)
    rules = {
        r["rule"] for r in wh.rows("SELECT rule FROM {alerts} WHERE hour = @start", start=now_hour)
    }
    assert not rules & {"low_completeness", "host_silent"}
    assert hourly(wh, "busy", now_hour)["samples"] == 3


def _at_the_schemas_edge(doc: Any, top: bool) -> None:
    """Every reading of an event (as JSON) set to the largest (``top``) or smallest value the
    schema admits for it."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in list(items):
        name = str(key)
        if isinstance(value, dict | list):
            _at_the_schemas_edge(value, top)
        elif value is None or isinstance(value, bool) or name in _IDENTITY:
            continue
        elif name.endswith("_pct") or name == "percent":
            doc[key] = 100.0 if top else 0.0
        elif "celsius" in name:
            doc[key] = 1000.0 if top else -273.15
        elif name == "interval_s":
            doc[key] = 86400.0 if top else 5e-324
        elif name == "boot_time":
            doc[key] = "9999-12-31T23:59:59.999999Z" if top else "0001-01-01T00:00:00Z"
        elif isinstance(value, int):
            doc[key] = INT64_MAX if top else 0
        elif isinstance(value, float):
            doc[key] = 1.7e308 if top else 0.0
        elif isinstance(value, str):
            doc[key] = ('"\\\u2028ü' * 64)[:256] if top else "x"


_IDENTITY = {"schema_version", "event_id", "ts", "received_at", "host_id", "os", "arch", "source"}


def test_an_hour_at_the_edges_of_the_schema_loads_aggregates_compacts_and_renders(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Every value the schema admits must pass every stage (load, aggregation, compaction,
    rebuild, remote read, pages) without stopping the hour for the other hosts: a host
    alternating between each reading's largest and smallest valid value (8 GPUs, disks,
    interfaces, sensors; 2**63 - 1 counters, 1.7e308 loads and watts, a 5e-324 s interval,
    boot times in years 1 and 9999). Found: sums of valid byte fields over a sample's disks or
    GPUs passed 64 bits and stopped the load of the hour."""
    fullest = max((e for _, e in generate(40, HOUR14, 60)), key=lambda e: len(encode(e)))
    assert len(fullest.gpus) > 1 and fullest.disks and fullest.network
    edges: list[MetricsEvent] = []
    for i in range(8):
        doc = json.loads(encode(fullest))
        _at_the_schemas_edge(doc, top=i % 2 == 0)
        doc["ts"] = (HOUR14 + timedelta(seconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["host"]["host_id"] = "edge"
        doc["event_id"] = f"0192f0f0-0000-7000-8000-{i:012d}"
        edges.append(decode(json.dumps(doc).encode()))  # valid: the schema admits all of it
    lake.add_batch(edges)
    lake.add_batch(
        [
            event("calm", HOUR14 + timedelta(seconds=10 * i), 20.0, sent=1000 * i, seq=i)
            for i in range(3)
        ]
    )
    run(settings, wh)
    from_raw = hourly(wh, "edge")
    assert (from_raw["samples"], from_raw["cpu_max"], hourly(wh, "calm")["net_sent_bytes"]) == (
        8,
        100.0,
        2000,
    )
    store = LakeStore(settings.lake_url)
    compact_hour(store, settings.topic, HOUR14)
    run_hour(settings, wh, store, HOUR14, rebuild=True)
    assert hourly(wh, "edge") == from_raw
    request = prompb.ReadRequest()  # Prometheus / Grafana reading the hour back
    query = request.queries.add(
        start_timestamp_ms=int(HOUR14.timestamp() * 1000),
        end_timestamp_ms=int((HOUR14 + H).timestamp() * 1000),
    )
    query.matchers.add(type=prompb.MATCH_EQUAL, name="host_id", value="edge")
    query.matchers.add(type=prompb.MATCH_REGEX, name="__name__", value="sysmetrics_.*")
    answer = read_history(
        wh, store, settings.topic, request.SerializeToString(), limits_of(settings)
    )
    series = prompb.ReadResponse.FromString(answer).results[0].timeseries
    names = {label.value for ts in series for label in ts.labels if label.name == "__name__"}
    assert {"sysmetrics_load1", "sysmetrics_network_transmit_bytes_total"} <= names
    wh.close()  # the dashboard opens the warehouse read-only, per request
    now = HOUR14 + timedelta(minutes=30)
    client = TestClient(create_app(settings, now=lambda: now))
    page = client.get("/host", params={"id": "edge", "range": "1h"})
    assert page.status_code == 200 and "CPU %" in page.text
    assert "nan" not in page.text and "inf" not in page.text  # every chart coordinate a number
    fleet = client.get("/", params={"sort": "cpu", "dir": "desc"})
    assert fleet.status_code == 200 and "edge" in fleet.text and "calm" in fleet.text


def test_hostile_host_ids_reach_the_tables_verbatim(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    hostile = ["x'; DROP TABLE raw_metrics; --", '../../etc/"passwd"', "rack 4/ü"]
    for host_id in hostile:
        lake.add_batch(steady_host(host_id, HOUR14, cpu=10.0, samples=30))
    run(settings, wh)
    stored = {r["host_id"] for r in wh.native_query("SELECT host_id FROM hourly_host_metrics")}
    assert stored == set(hostile)
    assert wh.native_query("SELECT COUNT(*) AS n FROM raw_metrics")[0]["n"] == 90


def test_warehouse_retention_drops_old_raw_rows_and_a_late_file_reloads_the_whole_hour(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    old = HOUR14 - 10 * 24 * H
    lake.add_batch(steady_host("web", old, cpu=30.0, samples=60))
    lake.add_batch(steady_host("web", HOUR14, cpu=40.0, samples=60))
    run(settings, wh, old)
    run(settings, wh)
    kept = settings.model_copy(update={"warehouse_raw_retention_days": 7})
    last = prune_raw_rows(kept, wh, now=HOUR14 + H)
    assert last == HOUR14 - 7 * 24 * H  # ended 7 days before now

    def raw_rows(hour: datetime) -> int:
        return int(wh.scalar("SELECT COUNT(*) FROM {raw} WHERE hour = @start", start=hour))

    assert (raw_rows(old), raw_rows(HOUR14)) == (0, 60)
    assert ledger(wh, old) == set()
    assert hourly(wh, "web", old)["samples"] == 60  # the aggregates stay
    # A laptop back after days, with samples of the pruned hour: the hour is reloaded from
    # the lake whole (not 5 rows beside nothing), and every host of it recomputed.
    (path,) = lake.add_batch(steady_host("laptop", old + timedelta(minutes=30), 20.0, samples=5))
    marker = Path(settings.lake_url) / layout.late_marker_path(settings.topic, old, path.name)
    marker.parent.mkdir(parents=True)
    marker.touch()
    assert old in run(settings, wh).beyond_lookback
    assert raw_rows(old) == 65
    assert hourly(wh, "web", old)["samples"] == 60 and hourly(wh, "laptop", old)["samples"] == 5


def test_a_complete_hour_is_stored_by_host_and_time_with_the_same_rows(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Flushes interleave hosts; once the lake says the hour is complete, its rows are stored
    by host and time (so a one-host read skips the other hosts' row groups), unchanged."""

    def physical() -> list[tuple[str, datetime]]:
        return [
            (r["host_id"], r["ts"])
            for r in wh.rows(
                "SELECT host_id, ts FROM {raw} WHERE hour = @start ORDER BY rowid", start=HOUR14
            )
        ]

    hosts = [steady_host(f"h{n}", HOUR14, cpu=10.0 + n, samples=120) for n in range(4)]
    for i in range(0, 120, 30):  # four flushes, each with every host
        lake.add_batch([e for host in hosts for e in host[i : i + 30]])
        run(settings, wh)
    before = physical()
    assert before != sorted(before)  # appended as they came
    aggregates = wh.rows("SELECT * FROM {hourly} ORDER BY host_id")
    mark = Watermark(partition=0, committed_offset=10**6, complete_before=HOUR14 + H)
    publish_watermark(LakeStore(settings.lake_url), settings.topic, mark)
    assert run(settings, wh).complete
    assert physical() == sorted(before)
    assert wh.rows("SELECT * FROM {hourly} ORDER BY host_id") == aggregates


def test_a_rebuilt_hour_is_stored_by_host_and_time_from_raw_files_and_from_its_curated_file(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """A from-scratch load stores the hour in order itself (the run does not sort it again):
    raw files are sorted as they load, a curated file alone is already in order and holds
    each event once (loaded without the deduplication), with the same rows either way."""

    def physical() -> list[tuple[Any, ...]]:
        return [
            tuple(r.values())
            for r in wh.rows("SELECT * FROM {raw} WHERE hour = @start ORDER BY rowid", start=HOUR14)
        ]

    hosts = [steady_host(f"h{n}", HOUR14, cpu=10.0 + n, samples=120) for n in range(4)]
    for i in range(0, 120, 30):  # four flushes, each with every host
        lake.add_batch([e for host in hosts for e in host[i : i + 30]])
    lake.add_batch(hosts[2][40:50])  # a re-flushed batch: ten events in two files
    publish_watermark(
        LakeStore(settings.lake_url),
        settings.topic,
        Watermark(partition=0, committed_offset=10**6, complete_before=HOUR14 + H),
    )
    store = LakeStore(settings.lake_url)
    assert run_hour(settings, wh, store, HOUR14, rebuild=True).rows == 480
    from_raw = physical()
    key = [(r[3], r[1], r[0]) for r in from_raw]  # host_id, ts, event_id
    assert key == sorted(key) and len(set(key)) == 480
    aggregates = wh.rows("SELECT * FROM {hourly} ORDER BY host_id")

    assert compact_hour(store, settings.topic, HOUR14).rows == 480
    assert run_hour(settings, wh, store, HOUR14, rebuild=True).rows == 480
    assert run_hour(settings, wh, store, HOUR14, rebuild=True).read == 1  # the curated file
    assert physical() == from_raw
    assert wh.rows("SELECT * FROM {hourly} ORDER BY host_id") == aggregates


def test_what_the_load_task_passes_on_survives_json() -> None:
    """The DAG's load task hands the run's last task a Loaded through XCom (JSON)."""
    loaded = Loaded(
        scopes=[HourScope(HOUR14, frozenset({"a", "b"}), judge_all=True), HourScope(HOUR14 + H)],
        files=3,
        rows=30,
        read=2,
        added=20,
        late_read=1,
        beyond_lookback=[HOUR14 - 48 * H],
        markers=["_late/x"],
        manifests=NewFiles(
            manifests=[("2026112714", "p0000+10.json")], folders_done=[("2026112713", HOUR14 - H)]
        ),
        rebuilt=[HOUR14],
    )
    assert Loaded.from_json(json.loads(json.dumps(loaded.to_json()))) == loaded
    earlier = loaded.to_json()
    del earlier["rebuilt"]  # written by an earlier version's load task
    assert Loaded.from_json(earlier).rebuilt == []


def test_three_days_with_one_day_of_warehouse_retention_still_read_right(
    settings: Settings, wh: DuckDBWarehouse, lake: LakeBuilder
) -> None:
    """Raw rows past retention leave the warehouse; the hourly tables, the host page and a
    rebuild of an old hour (from its curated Parquet, its raw files pruned too) stay right."""
    days = [HOUR14 - 48 * H, HOUR14 - 24 * H, HOUR14]
    for n, hour in enumerate(days):
        lake.add_batch(steady_host("web", hour, cpu=20.0 + 10 * n, samples=60))
        run(settings, wh, hour)
    before = {hour: hourly(wh, "web", hour) for hour in days}
    now = HOUR14 + H
    retention = settings.model_copy(update={"warehouse_raw_retention_days": 1})
    assert prune_raw_rows(retention, wh, now) == HOUR14 - 24 * H
    counts = wh.rows("SELECT hour, COUNT(*) AS n FROM {raw} GROUP BY hour")
    assert {r["hour"]: r["n"] for r in counts} == {HOUR14: 60}
    assert {hour: hourly(wh, "web", hour) for hour in days} == before

    wh.close()  # the dashboard opens the warehouse read-only, per request
    client = TestClient(create_app(settings, now=lambda: now))
    page = client.get("/host", params={"id": "web", "range": "7d"})
    assert page.status_code == 200 and "CPU % · hourly" in page.text
    assert client.get("/host", params={"id": "web", "range": "24h"}).status_code == 200

    store = LakeStore(settings.lake_url)
    assert compact_hour(store, settings.topic, days[0]).version == 1
    pruned = prune_hour(store, settings.topic, days[0], now, retention_days=1, lookback_hours=0)
    assert pruned is not None and pruned.ok and raw_files(store, settings.topic, days[0]) == []
    rebuilt = DuckDBWarehouse(settings.warehouse_url)
    try:
        result = run_hour(settings, rebuilt, store, days[0], rebuild=True)
        assert result.rows == 60
        assert hourly(rebuilt, "web", days[0]) == before[days[0]]
    finally:
        rebuilt.close()
