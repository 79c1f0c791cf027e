"""Every warehouse statement, written once in BigQuery Standard SQL.

The DuckDB backend runs the same statements transpiled by sqlglot (``render``); table names are
written as ``{raw}``, ``{hourly}``… and filled per backend. Parameters are ``@name``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from typing import Final

import sqlglot
from sqlglot import exp

from sysmetrics.lake.compaction import EACH_EVENT_ONCE

# (column, BigQuery type): the raw table, one row per event, flattened from schema v1.
RAW_COLUMNS: Final = (
    ("event_id", "STRING"),
    ("ts", "TIMESTAMP"),
    ("hour", "TIMESTAMP"),
    ("host_id", "STRING"),
    ("hostname", "STRING"),
    ("os", "STRING"),
    ("arch", "STRING"),
    ("boot_time", "TIMESTAMP"),
    ("cpu_pct", "FLOAT64"),
    ("load_1m", "FLOAT64"),
    ("logical_cores", "INT64"),
    ("mem_used_pct", "FLOAT64"),
    ("mem_used_bytes", "INT64"),
    ("mem_total_bytes", "INT64"),
    ("swap_used_pct", "FLOAT64"),
    ("disk_used_pct", "FLOAT64"),
    ("disk_used_bytes", "INT64"),
    ("disk_total_bytes", "INT64"),
    ("disk_read_bytes", "INT64"),
    ("disk_write_bytes", "INT64"),
    ("net_bytes_sent", "INT64"),
    ("net_bytes_recv", "INT64"),
    ("temp_max_celsius", "FLOAT64"),
    ("gpu_count", "INT64"),
    ("gpu_util_pct", "FLOAT64"),
    ("gpu_mem_used_bytes", "INT64"),
    ("gpu_temp_max_celsius", "FLOAT64"),
    ("gpu_power_watts", "FLOAT64"),
    ("battery_pct", "FLOAT64"),
    ("battery_health_pct", "FLOAT64"),
    ("battery_plugged", "BOOL"),
    ("source_file", "STRING"),
    ("interval_s", "FLOAT64"),
    ("received_at", "TIMESTAMP"),
    ("disks_json", "STRING"),
    ("gpus_json", "STRING"),
    ("source", "STRING"),
    ("sender", "STRING"),
)
"""``disks_json`` / ``gpus_json``: each mount's use and each GPU's readings as a JSON array, so
the host page can draw them one by one; the scalar columns are their fleet-wide summaries.
``source``: what made the event ('sysmetrics' for our collector, else the agent `sysmetrics
ingest` received it from); ``sender``: the Prometheus or Collector that sent it, if named."""

_F, _I, _S, _T = "FLOAT64", "INT64", "STRING", "TIMESTAMP"

HOURLY_COLUMNS: Final = (
    ("host_id", _S),
    ("hour", _T),
    ("hostname", _S),
    ("samples", _I),
    ("completeness_pct", _F),
    ("first_ts", _T),
    ("last_ts", _T),
    ("cpu_avg", _F),
    ("cpu_min", _F),
    ("cpu_max", _F),
    ("cpu_p95", _F),
    ("mem_avg", _F),
    ("mem_max", _F),
    ("mem_p95", _F),
    ("swap_avg", _F),
    ("swap_max", _F),
    ("disk_used_avg", _F),
    ("disk_used_max", _F),
    ("temp_avg", _F),
    ("temp_max", _F),
    ("temp_p95", _F),
    ("gpu_util_avg", _F),
    ("gpu_util_max", _F),
    ("gpu_util_p95", _F),
    ("gpu_mem_used_max", _I),
    ("gpu_temp_max", _F),
    ("gpu_power_avg", _F),
    ("gpu_power_max", _F),
    ("net_sent_bytes", _I),
    ("net_recv_bytes", _I),
    ("net_sent_rate_avg", _F),
    ("net_recv_rate_avg", _F),
    ("net_sent_rate_peak", _F),
    ("net_recv_rate_peak", _F),
    ("disk_read_bytes", _I),
    ("disk_write_bytes", _I),
    ("disk_read_rate_peak", _F),
    ("disk_write_rate_peak", _F),
    ("counter_resets", _I),
    ("battery_health_pct", _F),
    ("battery_min_pct", _F),
    ("interval_s", _F),
    ("load_avg", _F),
    ("os", _S),
    ("source", _S),
    ("sender", _S),
)
"""Hourly per-host aggregates; rates are bytes per second, percentages 0-100. Completeness is
the share of the host's own sample slots (its declared interval) that hold a sample."""

TRENDS_COLUMNS: Final = (
    ("host_id", _S),
    ("hour", _T),
    ("cpu_avg", _F),
    ("cpu_avg_prev_hour", _F),
    ("cpu_change_vs_prev_hour", _F),
    ("cpu_avg_same_hour_7d", _F),
    ("mem_avg", _F),
    ("mem_avg_prev_hour", _F),
    ("mem_change_vs_prev_hour", _F),
    ("mem_avg_same_hour_7d", _F),
)

ALERTS_COLUMNS: Final = (
    ("hour", _T),
    ("host_id", _S),
    ("hostname", _S),
    ("rule", _S),
    ("severity", _S),
    ("value", _F),
    ("threshold", _F),
)

HOST_QUALITY_COLUMNS: Final = (
    ("hour", _T),
    ("host_id", _S),
    ("hostname", _S),
    ("anomaly", _S),
    ("severity", _S),
    ("value", _F),
    ("detail", _S),
)
"""Per host and hour, what is odd about the host's data (flagged, never fatal): anomaly is
duplicate_host_id, clock_skew, counter_backwards or sampling_interval."""

LOADED_FILES_COLUMNS: Final = (("hour", _T), ("file", _S))
"""The ledger: which lake files each hour's raw rows came from (late files are new names)."""

LOADED_MANIFESTS_COLUMNS: Final = (("folder", _S), ("manifest", _S))
"""The lake writers' round manifests already loaded, by write-hour folder; an empty manifest
name marks a whole folder done (no writer writes into it any more)."""

RETIRED_HOSTS_COLUMNS: Final = (("host_id", _S), ("retired_at", _T))
"""Hosts retired on purpose (a target Prometheus stopped scraping, ``alert --forget``), from
the lake writers' round manifests: a host retired after its last sample is gone, not silent."""

BATCH_RUNS_COLUMNS: Final = (
    ("run_at", _T),
    ("hour", _T),
    ("complete", "BOOL"),
    ("files", _I),
    ("rows_loaded", _I),
    ("hours_recomputed", _S),
    ("late_hours_beyond_lookback", _S),
    ("files_read", _I),
    ("rows_added", _I),
)
"""One row per hourly run: a run that timed out waiting for the watermark is complete=false.
``files``/``rows_loaded``: the hour's lake files and raw rows after the run; ``files_read``/
``rows_added``: the files this run read (its hour's and late hours') and the rows it added to
its hour (an incremental run reads only new files)."""

TABLE_COLUMNS: Final = {
    "raw": RAW_COLUMNS,
    "loaded_files": LOADED_FILES_COLUMNS,
    "loaded_manifests": LOADED_MANIFESTS_COLUMNS,
    "retired": RETIRED_HOSTS_COLUMNS,
    "hourly": HOURLY_COLUMNS,
    "trends": TRENDS_COLUMNS,
    "alerts": ALERTS_COLUMNS,
    "quality": HOST_QUALITY_COLUMNS,
    "batch_runs": BATCH_RUNS_COLUMNS,
}
TABLE_NAMES: Final = {
    "raw": "raw_metrics",
    "loaded_files": "loaded_files",
    "loaded_manifests": "loaded_manifests",
    "retired": "retired_hosts",
    "hourly": "hourly_host_metrics",
    "trends": "hourly_host_trends",
    "alerts": "alerts",
    "quality": "host_data_quality",
    "batch_runs": "batch_runs",
}


def empty_table(kind: str) -> str:
    """A relation with ``kind``'s columns and no rows: what a reader sees of a table a newer
    hourly job adds, until that job has run (a dashboard upgraded first)."""
    columns = ", ".join(f"CAST(NULL AS {type_}) AS {name}" for name, type_ in TABLE_COLUMNS[kind])
    return f"(SELECT {columns} LIMIT 0)"


def padded_table(kind: str, table: str, held: set[str]) -> str:
    """``table`` with a null column for each column of ``kind`` it lacks (``held``: those it
    has): what a reader sees of columns a newer hourly job adds at the end, until it has run."""
    nulls = "".join(
        f", CAST(NULL AS {type_}) AS {name}"
        for name, type_ in TABLE_COLUMNS[kind]
        if name not in held
    )
    return f"(SELECT *{nulls} FROM {table})" if nulls else table


# Flatten schema-v1 events (a table or external source ``{events}``) into RAW_COLUMNS.
FLATTEN_ROWS = """
SELECT
  CAST(event_id AS STRING) AS event_id,
  ts,
  TIMESTAMP_TRUNC(ts, HOUR) AS hour,
  host.host_id AS host_id,
  host.hostname AS hostname,
  host.os AS os,
  host.arch AS arch,
  host.boot_time AS boot_time,
  cpu.utilization_pct AS cpu_pct,
  cpu.load_1m AS load_1m,
  cpu.logical_cores AS logical_cores,
  memory.used_pct AS mem_used_pct,
  memory.used_bytes AS mem_used_bytes,
  memory.total_bytes AS mem_total_bytes,
  swap.used_pct AS swap_used_pct,
  ARRAY_REDUCE('max', disks, 'used_pct') AS disk_used_pct,
  ARRAY_REDUCE('fs_total', disks, 'used_bytes') AS disk_used_bytes,
  ARRAY_REDUCE('fs_total', disks, 'total_bytes') AS disk_total_bytes,
  disk_io.read_bytes AS disk_read_bytes,
  disk_io.write_bytes AS disk_write_bytes,
  network.bytes_sent AS net_bytes_sent,
  network.bytes_recv AS net_bytes_recv,
  ARRAY_REDUCE('max', temperatures, 'celsius') AS temp_max_celsius,
  ARRAY_LENGTH(gpus) AS gpu_count,
  ARRAY_REDUCE('avg', gpus, 'utilization_pct') AS gpu_util_pct,
  ARRAY_REDUCE('total', gpus, 'memory_used_bytes') AS gpu_mem_used_bytes,
  ARRAY_REDUCE('max', gpus, 'temperature_celsius') AS gpu_temp_max_celsius,
  ARRAY_REDUCE('sum', gpus, 'power_watts') AS gpu_power_watts,
  battery.percent AS battery_pct,
  battery.health_pct AS battery_health_pct,
  battery.plugged_in AS battery_plugged,
  source_file,
  interval_s,
  received_at,
  ARRAY_JSON(disks, 'mountpoint', 'used_pct') AS disks_json,
  ARRAY_JSON(
    gpus, 'index', 'utilization_pct', 'memory_used_bytes', 'temperature_celsius', 'power_watts'
  ) AS gpus_json,
  COALESCE(source, 'sysmetrics') AS source,
  sender
FROM {events}
WHERE ts >= @start AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR)
"""
"""Every event of the source as it comes: for a source that holds each event once (a curated
Parquet file alone, which compaction deduplicated as FLATTEN does). The window FLATTEN adds was
~40 % of the load of a 10,000-host hour from that file."""
FLATTEN = f"{FLATTEN_ROWS}{EACH_EVENT_ONCE}\n"
"""Each event once, the copy compaction keeps (the one from the lake file with the smallest
name)."""


def flatten(each_event_once: bool, hour: str = "@start") -> str:
    """FLATTEN, less its deduplication where the source already holds each event once; the
    hour's window on ``hour``: a parameter, or a column of a source of several hours."""
    return (FLATTEN_ROWS if each_event_once else FLATTEN).replace("@start", hour)


@cache
def flatten_fields() -> dict[str, frozenset[str]]:
    """The struct fields FLATTEN reads, per event column (``{"host": {"host_id", ...}}``), so
    a reader can parse just those: DuckDB's JSON reader loads an hour ~15 % faster on the
    pruned types. A field FLATTEN uses that this misses is a bind error, never a silent gap."""
    used: dict[str, set[str]] = defaultdict(set)
    for column, name in re.findall(r"\b([a-z_]+)\.([a-z_0-9]+)\b", FLATTEN):
        used[column].add(name)
    for column, names in _ARRAY_JSON.findall(" ".join(FLATTEN.split())):
        used[column].update(re.findall(r"'(\w+)'", names))
    for reduce in _ARRAY_REDUCE.finditer(FLATTEN):  # what its expansion reads of each element
        expanded = _expand_array_reduce(reduce[0], "duckdb")
        used[reduce[2]].update(re.findall(r"\b[xy]\.(\w+)", expanded))
    return {column: frozenset(names) for column, names in used.items()}


# Incremental load: new lake files of an hour already loaded, flattened into ``{staged}``
# (deduplicated among themselves by FLATTEN). An event already in the table stays; a copy
# from a file with a smaller name replaces it, as a from-scratch load would have kept that
# copy: incremental and from-scratch loads give the same raw rows.
DROP_LATER_COPIES = """
DELETE FROM {raw} AS t WHERE t.hour = @start AND EXISTS (
  SELECT 1 FROM {staged} AS s WHERE s.event_id = t.event_id AND s.source_file < t.source_file
)
"""
APPEND_NEW_EVENTS = """
INSERT INTO {raw}
SELECT * FROM {staged} AS s WHERE NOT EXISTS (
  SELECT 1 FROM {raw} AS t WHERE t.hour = @start AND t.event_id = s.event_id
)
"""


# The ledger entries of lake files loaded into hour @start (@files: their names), in one
# statement: an hour of 10,000 hosts has ~72,000 files, and a statement each took ~20 s.
RECORD_LOADED_FILES = """
INSERT INTO {loaded_files} (hour, file) SELECT @start, f FROM UNNEST(@files) AS f
"""


def delete_hour(kind: str) -> str:
    """The statement that empties hour @start of a logical table (``raw``, ``loaded_files``)."""
    return f"DELETE FROM {{{kind}}} WHERE hour = @start"


SILENT_HOST_HOURS: Final = 24
"""A host heard in the hours before an hour, this many back, and not in it is ``host_silent``
in that hour (ALERTS)."""
_SILENT_REACH = f"INTERVAL {SILENT_HOST_HOURS} HOUR"

# Warehouse retention: the raw rows of every hour up to @last, and their ledger entries, so a
# late file for such an hour reloads it from the lake from scratch (never an hour of a few rows).
# Retirements go as far later as the silent-host rule of an hour looks back.
PRUNE_RAW = (
    "DELETE FROM {raw} WHERE hour <= @last",
    "DELETE FROM {loaded_files} WHERE hour <= @last",
    "DELETE FROM {retired} WHERE retired_at <= TIMESTAMP_SUB(@last, " + _SILENT_REACH + ")",
)


# The hourly job's bookkeeping: the ledger of an hour's loaded files, the manifests read, the
# record of each run.
LEDGER = "SELECT file FROM {loaded_files} WHERE hour = @start"
LOADED_MANIFESTS = "SELECT folder, manifest FROM {loaded_manifests} WHERE folder >= @oldest"
RECORD_MANIFEST = "INSERT INTO {loaded_manifests} (folder, manifest) VALUES (@folder, @name)"
"""A manifest read (``@name``), or ``''``: every manifest of the folder is read."""
RECORD_RETIREMENTS = """
INSERT INTO {retired} (host_id, retired_at)
SELECT DISTINCT h, TIMESTAMP_MILLIS(at) FROM UNNEST(@hosts) AS h WITH OFFSET i
JOIN UNNEST(@retired_ms) AS at WITH OFFSET j ON i = j
WHERE NOT EXISTS (
  SELECT 1 FROM {retired} AS r WHERE r.host_id = h AND r.retired_at = TIMESTAMP_MILLIS(at)
)
"""
"""Retirements read from round manifests (@hosts, each one's @retired_ms in Unix ms), each
once: a run that crashed before recording its manifests reads them again."""
HOUR_ROWS = "SELECT COUNT(*) FROM {raw} WHERE hour = @start"
HOUR_AGGREGATED = "SELECT COUNT(*) FROM {hourly} WHERE hour = @start"
RECORD_RUN = """
INSERT INTO {batch_runs} VALUES
(@run_at, @start, @complete, @files, @rows, @recomputed, @beyond_lookback, @read, @added)
"""
LAST_COMPLETE_HOUR = "SELECT MAX(hour) AS hour FROM {batch_runs} WHERE complete"
LATEST_SAMPLE = "SELECT MAX(ts) AS ts FROM {raw}"

# Whether an earlier run already found hour @start complete (it was then stored in order).
HOUR_WAS_COMPLETE = "SELECT COUNT(*) AS runs FROM {batch_runs} WHERE hour = @start AND complete"


def delete_hosts(kind: str) -> str:
    """The statement that empties the hosts in scope (``IN_SCOPE``) of hour @start of a
    per-host table (``hourly``, ``quality``…)."""
    return f"DELETE FROM {{{kind}}} WHERE hour = @start AND IN_SCOPE(host_id)"


_IN_SCOPE = re.compile(r"IN_SCOPE\(([\w.]+)\)")


def scoped(statement: str, every_host: bool) -> str:
    """``IN_SCOPE(host_id)`` in a per-host statement: every host of the hour, or only those
    in the array parameter @hosts (an hour recomputed for the hosts whose rows changed). A
    subquery, not ``IN UNNEST``: DuckDB runs it as a hash semi-join (0.06 s for 3.6 M rows and
    10,000 hosts), where the list lookup it transpiles ``IN UNNEST`` to took 15 s."""
    return _IN_SCOPE.sub(
        "TRUE" if every_host else r"\1 IN (SELECT h FROM UNNEST(@hosts) AS h)", statement
    )


def _call_arguments(text: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level, comma-separated arguments of the call whose ``(`` is at ``open_paren``,
    and the index just past its ``)``."""
    arguments, depth, start = [], 0, open_paren + 1
    for i in range(open_paren, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                arguments.append(text[start:i].strip())
                return arguments, i + 1
        elif text[i] == "," and depth == 1:
            arguments.append(text[start:i].strip())
            start = i + 1
    raise ValueError(f"unbalanced parentheses after {text[open_paren - 10 : open_paren]!r}")


def _expand(statement: str, name: str, body: Callable[..., str]) -> str:
    """Every ``name(a, b, ...)`` in ``statement`` as ``body(a, b, ...)``."""
    out, at = [], 0
    for match in re.finditer(rf"\b{name}\(", statement):
        if match.start() < at:
            continue
        arguments, end = _call_arguments(statement, match.end() - 1)
        out += [statement[at : match.start()], body(*arguments)]
        at = end
    return "".join(out) + statement[at:]


_MAX_COUNTER_STEP: Final = 2**44
REBOOT_BOOT_STEP_S: Final = 60
"""A host's boot time that moves more than this many seconds between two samples is another boot
(later: a reboot; earlier: another machine behind the id); one read as the clock less the uptime
moves by a second or so between samples."""


def _increment(counter: str, delta: str, rebooted: str) -> str:
    step = f"IF({delta} < 0, IF({rebooted}, {counter}, NULL), {delta})"
    return f"IF({step} < {_MAX_COUNTER_STEP}, {step}, NULL)"


def _macros(statement: str) -> str:
    """The hourly statements' shared definitions, written once:

    ``EXACT_AVG(x)``: the average of x's values rounded to 6 decimals, added as integers, so it
    is the same in any order of rows and on either engine. A reading of a million or more is
    left out: no averaged field is that large for a real machine (the schema bounds percentages
    and temperatures, not load or watts), and as an integer it could overflow the sum (an error
    that would stop the hour for every host).

    ``INCREMENT(counter, delta, rebooted)``: what a cumulative counter added since the host's
    previous sample: ``delta``; after a reboot (a negative delta and a boot time more than a
    minute later) the counter's new value; a negative delta without one is unknown (null). A
    total steps down when an interface or a disk goes away (a container's veth when it stops, a
    USB drive): counted as a reset, it added the host's whole total since boot to one sample
    (terabytes in ten seconds on a busy Kubernetes node at every pod deletion), as it did before
    2026-12-06. A host without a boot time (an OTLP sender other than the Collector's
    ``hostmetrics``, or an ingested sample of 2026-12-06 or before) never counts as rebooted: its
    first step after a reboot is unknown too, the smaller loss.
    A step of 2**44 (17.6 TB in one sample; a 400 Gb/s link moves 0.5 TB in 10 s) or more is no
    real traffic (a driver's garbage, a counter that jumped) and is left out: the hour's sum of
    such steps could overflow 64 bits, an error that would stop the hour for every host.

    ``REBOOT_BOOT_STEP_S``: :data:`REBOOT_BOOT_STEP_S`, the boot-time step that is another boot.

    ``SLOT(ts, seconds)``: the sample slot ``ts`` falls in, for a host sampling every
    ``seconds``: whole multiples of the interval since the epoch, in milliseconds. An interval
    under half a millisecond (the schema admits any positive one) counts as one: a division by
    zero would stop the hour for every host. DIV's first argument is in its own parentheses:
    sqlglot's DuckDB ``//`` would drop them."""
    statement = _expand(
        statement,
        "EXACT_AVG",
        lambda x: (
            f"SAFE_DIVIDE(SUM(IF(ABS({x}) < 1000000, CAST(ROUND({x} * 1000000) AS INT64),"
            f" NULL)), 1000000 * COUNT(IF(ABS({x}) < 1000000, {x}, NULL)))"
        ),
    )
    statement = _expand(statement, "INCREMENT", _increment)
    statement = statement.replace("REBOOT_BOOT_STEP_S", str(REBOOT_BOOT_STEP_S))
    return _expand(
        statement,
        "SLOT",
        lambda ts, seconds: (
            f"DIV((UNIX_MILLIS({ts})), GREATEST(CAST(ROUND(1000 * ({seconds})) AS INT64), 1))"
        ),
    )


# Hourly per-host aggregates for [@start, @start + 1h). A re-run, an incremental load and a
# from-scratch load must give identical tables, whatever order the engine adds rows in, so
# sums never add floats: averages are EXACT_AVG (each reading rounded to 6 decimals, summed as
# integers) and average rates sum integer bytes over integer milliseconds. Counter deltas look
# back one hour so the first sample of the hour has a predecessor; each step is an INCREMENT
# (a reboot counts from zero, a step down without one and an absurd step are left out).
# Completeness counts the host's sample slots (multiples of its declared interval, else
# @default_interval_s) that hold a sample, so a host that samples faster, or two machines behind
# one id, never exceed 100 %. Each window carries only the columns it needs (windows over every
# column were ~70 % of the statement's CPU on a 10,000-host hour); the readings are a plain
# GROUP BY.
AGGREGATE = _macros("""
INSERT INTO {hourly}
WITH counters AS (
  SELECT
    host_id,
    ts,
    net_bytes_sent,
    net_bytes_recv,
    disk_read_bytes,
    disk_write_bytes,
    TIMESTAMP_DIFF(ts, LAG(ts) OVER w, MILLISECOND) AS dt_ms,
    COALESCE(TIMESTAMP_DIFF(boot_time, LAG(boot_time) OVER w, SECOND) > REBOOT_BOOT_STEP_S, FALSE)
      AS rebooted,
    net_bytes_sent - LAG(net_bytes_sent) OVER w AS d_sent,
    net_bytes_recv - LAG(net_bytes_recv) OVER w AS d_recv,
    disk_read_bytes - LAG(disk_read_bytes) OVER w AS d_read,
    disk_write_bytes - LAG(disk_write_bytes) OVER w AS d_write
  FROM {raw}
  WHERE ts >= TIMESTAMP_SUB(@start, INTERVAL 1 HOUR)
    AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR)
    AND IN_SCOPE(host_id)
  WINDOW w AS (PARTITION BY host_id ORDER BY ts, event_id)
),
increments AS (
  SELECT
    host_id,
    dt_ms,
    dt_ms / 1000.0 AS dt_s,
    INCREMENT(net_bytes_sent, d_sent, rebooted) AS inc_sent,
    INCREMENT(net_bytes_recv, d_recv, rebooted) AS inc_recv,
    INCREMENT(disk_read_bytes, d_read, rebooted) AS inc_read,
    INCREMENT(disk_write_bytes, d_write, rebooted) AS inc_write,
    IF(d_sent < 0 OR d_recv < 0 OR d_read < 0 OR d_write < 0, 1, 0) AS is_reset
  FROM counters
  WHERE ts >= @start
),
traffic AS (
  SELECT
    host_id,
    SUM(inc_sent) AS net_sent_bytes,
    SUM(inc_recv) AS net_recv_bytes,
    ROUND(SAFE_DIVIDE(SUM(inc_sent), SUM(IF(inc_sent IS NULL, NULL, dt_ms)) / 1000.0), 6)
      AS net_sent_rate_avg,
    ROUND(SAFE_DIVIDE(SUM(inc_recv), SUM(IF(inc_recv IS NULL, NULL, dt_ms)) / 1000.0), 6)
      AS net_recv_rate_avg,
    MAX(SAFE_DIVIDE(inc_sent, dt_s)) AS net_sent_rate_peak,
    MAX(SAFE_DIVIDE(inc_recv, dt_s)) AS net_recv_rate_peak,
    SUM(inc_read) AS disk_read_bytes,
    SUM(inc_write) AS disk_write_bytes,
    MAX(SAFE_DIVIDE(inc_read, dt_s)) AS disk_read_rate_peak,
    MAX(SAFE_DIVIDE(inc_write, dt_s)) AS disk_write_rate_peak,
    SUM(is_reset) AS counter_resets
  FROM increments
  GROUP BY host_id
),
ranked AS (
  SELECT
    host_id,
    ts,
    PERCENTILE_CONT(cpu_pct, 0.95) OVER h AS cpu_p95,
    PERCENTILE_CONT(mem_used_pct, 0.95) OVER h AS mem_p95,
    PERCENTILE_CONT(temp_max_celsius, 0.95) OVER h AS temp_p95,
    PERCENTILE_CONT(gpu_util_pct, 0.95) OVER h AS gpu_util_p95,
    MIN(COALESCE(interval_s, @default_interval_s)) OVER h AS host_interval_s
  FROM {raw}
  WHERE ts >= @start AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR) AND IN_SCOPE(host_id)
  WINDOW h AS (PARTITION BY host_id)
),
spread AS (
  SELECT
    host_id,
    ANY_VALUE(cpu_p95) AS cpu_p95,
    ANY_VALUE(mem_p95) AS mem_p95,
    ANY_VALUE(temp_p95) AS temp_p95,
    ANY_VALUE(gpu_util_p95) AS gpu_util_p95,
    ANY_VALUE(host_interval_s) AS interval_s,
    COUNT(DISTINCT SLOT(ts, host_interval_s)) AS slots
  FROM ranked
  GROUP BY host_id
),
readings AS (
  SELECT
    host_id,
    MAX_BY(hostname, ts) AS hostname,
    COUNT(*) AS samples,
    MIN(ts) AS first_ts,
    MAX(ts) AS last_ts,
    ROUND(EXACT_AVG(cpu_pct), 6) AS cpu_avg, MIN(cpu_pct) AS cpu_min, MAX(cpu_pct) AS cpu_max,
    ROUND(EXACT_AVG(mem_used_pct), 6) AS mem_avg, MAX(mem_used_pct) AS mem_max,
    ROUND(EXACT_AVG(swap_used_pct), 6) AS swap_avg, MAX(swap_used_pct) AS swap_max,
    ROUND(EXACT_AVG(disk_used_pct), 6) AS disk_used_avg, MAX(disk_used_pct) AS disk_used_max,
    ROUND(EXACT_AVG(temp_max_celsius), 6) AS temp_avg, MAX(temp_max_celsius) AS temp_max,
    ROUND(EXACT_AVG(gpu_util_pct), 6) AS gpu_util_avg, MAX(gpu_util_pct) AS gpu_util_max,
    MAX(gpu_mem_used_bytes) AS gpu_mem_used_max, MAX(gpu_temp_max_celsius) AS gpu_temp_max,
    ROUND(EXACT_AVG(gpu_power_watts), 6) AS gpu_power_avg,
    MAX(gpu_power_watts) AS gpu_power_max,
    MAX_BY(battery_health_pct, IF(battery_health_pct IS NULL, NULL, ts)) AS battery_health_pct,
    MIN(battery_pct) AS battery_min_pct,
    ROUND(EXACT_AVG(load_1m), 6) AS load_avg,
    MAX_BY(os, ts) AS os,
    MAX_BY(source, ts) AS source,
    MAX_BY(sender, ts) AS sender
  FROM {raw}
  WHERE ts >= @start AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR) AND IN_SCOPE(host_id)
  GROUP BY host_id
)
SELECT
  host_id,
  @start AS hour,
  hostname,
  samples,
  ROUND(
    100.0 * slots / (
      SLOT(TIMESTAMP_ADD(@start, INTERVAL 3599999 MILLISECOND), interval_s)
      - SLOT(@start, interval_s) + 1
    ),
    2
  ) AS completeness_pct,
  first_ts, last_ts,
  cpu_avg, cpu_min, cpu_max, cpu_p95,
  mem_avg, mem_max, mem_p95,
  swap_avg, swap_max,
  disk_used_avg, disk_used_max,
  temp_avg, temp_max, temp_p95,
  gpu_util_avg, gpu_util_max, gpu_util_p95,
  gpu_mem_used_max, gpu_temp_max,
  gpu_power_avg, gpu_power_max,
  net_sent_bytes, net_recv_bytes,
  net_sent_rate_avg, net_recv_rate_avg,
  net_sent_rate_peak, net_recv_rate_peak,
  disk_read_bytes, disk_write_bytes,
  disk_read_rate_peak, disk_write_rate_peak,
  counter_resets,
  battery_health_pct, battery_min_pct,
  interval_s,
  load_avg,
  os,
  source,
  sender
FROM readings JOIN spread USING (host_id) JOIN traffic USING (host_id)
""")

# Prometheus remote read (sysmetrics.remote_read): the series of the hosts that @m0, @m1…
# select (``host_filter``), in [@start, @end] (raw) or for the hours ending in it (hourly).
# Column lists come from the series catalog, never from a request.
_READ_RAW = """
SELECT host_id, hostname, os, UNIX_MILLIS(ts) AS t, {columns}
FROM {{raw}} WHERE ts >= @start AND ts <= @end AND {hosts}
ORDER BY host_id, hostname, os, t
"""
_READ_HOURLY = """
SELECT host_id, hostname, os, UNIX_MILLIS(hour) + 3600000 AS t, {columns}
FROM {{hourly}} WHERE hour >= @first_hour AND hour <= @last_hour AND {hosts}
ORDER BY host_id, hostname, os, t
"""
# Which series there are, for Prometheus' series and label-values APIs (the hint ``func:
# series``): per host (and device), how many values each column holds in the range. Nothing
# but these counts is read out, so a month of a fleet's series costs one aggregate, not its
# samples.
_SERIES_RAW = """
SELECT host_id, hostname, os, {counts}
FROM {{raw}} WHERE ts >= @start AND ts <= @end AND {hosts}
GROUP BY host_id, hostname, os
"""
_SERIES_DEVICES = """
SELECT host_id, hostname, os, JSON_VALUE(d, '$.{key}') AS device, {counts}
FROM {{raw}}, UNNEST(JSON_QUERY_ARRAY({column})) AS d
WHERE ts >= @start AND ts <= @end AND {hosts}
GROUP BY host_id, hostname, os, device
"""
_SERIES_HOURLY = """
SELECT host_id, hostname, os, {counts}
FROM {{hourly}} WHERE hour >= @first_hour AND hour <= @last_hour AND {hosts}
GROUP BY host_id, hostname, os
"""
# How many hosts a query selects (from the hourly table: 360x smaller than raw), to refuse
# one that would read too much before reading it.
_READ_HOSTS = """
SELECT COUNT(DISTINCT host_id) AS hosts
FROM {{hourly}} WHERE hour >= @first_hour AND hour <= @last_hour AND {hosts}
"""
# The hours whose raw rows the warehouse holds: those in the ledger (retention deletes both),
# read from the ledger because it is ~50x smaller than the raw table.
READ_HOURS_HELD = """
SELECT DISTINCT hour FROM {loaded_files} WHERE hour >= @first_hour AND hour <= @last_hour
"""
HOURS_AGGREGATED = """
SELECT DISTINCT hour FROM {hourly} WHERE hour >= @first_hour AND hour <= @last_hour
"""
_MATCH = {
    "=": "{label} = @{param}",
    "!=": "{label} != @{param}",
    "=~": "REGEXP_CONTAINS({label}, @{param})",
    "!~": "NOT REGEXP_CONTAINS({label}, @{param})",
}


def host_filter(matchers: list[tuple[str, str, str]]) -> str:
    """``(label, op, param)`` matchers on host columns as one condition (TRUE for none); a
    regex parameter must hold the anchored pattern. Labels come from the series catalog."""
    return (
        " AND ".join(_MATCH[op].format(label=label, param=param) for label, op, param in matchers)
        or "TRUE"
    )


def read_raw(columns: list[str], hosts: str) -> str:
    return _READ_RAW.format(columns=", ".join(columns), hosts=hosts)


def read_hourly(columns: list[str], hosts: str) -> str:
    return _READ_HOURLY.format(columns=", ".join(columns), hosts=hosts)


def read_hosts(hosts: str) -> str:
    return _READ_HOSTS.format(hosts=hosts)


def _counts(values: dict[str, str]) -> str:
    return ", ".join(f"COUNT({value}) AS {name}" for name, value in values.items())


def series_raw(columns: list[str], hosts: str) -> str:
    return _SERIES_RAW.format(counts=_counts({c: c for c in columns}), hosts=hosts)


def series_devices(column: str, key: str, fields: list[str], hosts: str) -> str:
    counts = _counts({f: f"JSON_VALUE(d, '$.{f}')" for f in fields})
    return _SERIES_DEVICES.format(column=column, key=key, counts=counts, hosts=hosts)


def series_hourly(columns: list[str], hosts: str) -> str:
    return _SERIES_HOURLY.format(counts=_counts({c: c for c in columns}), hosts=hosts)


# Change vs the previous hour and vs the same hour of day over the host's last 7 days.
TRENDS = _macros("""
INSERT INTO {trends}
SELECT
  cur.host_id,
  cur.hour,
  cur.cpu_avg,
  prev.cpu_avg AS cpu_avg_prev_hour,
  cur.cpu_avg - prev.cpu_avg AS cpu_change_vs_prev_hour,
  (SELECT ROUND(EXACT_AVG(d.cpu_avg), 6) FROM {hourly} AS d
   WHERE d.host_id = cur.host_id AND d.hour < cur.hour
     AND d.hour >= TIMESTAMP_SUB(cur.hour, INTERVAL 7 DAY)
     AND EXTRACT(HOUR FROM d.hour) = EXTRACT(HOUR FROM cur.hour)) AS cpu_avg_same_hour_7d,
  cur.mem_avg,
  prev.mem_avg AS mem_avg_prev_hour,
  cur.mem_avg - prev.mem_avg AS mem_change_vs_prev_hour,
  (SELECT ROUND(EXACT_AVG(d.mem_avg), 6) FROM {hourly} AS d
   WHERE d.host_id = cur.host_id AND d.hour < cur.hour
     AND d.hour >= TIMESTAMP_SUB(cur.hour, INTERVAL 7 DAY)
     AND EXTRACT(HOUR FROM d.hour) = EXTRACT(HOUR FROM cur.hour)) AS mem_avg_same_hour_7d
FROM {hourly} AS cur
LEFT JOIN {hourly} AS prev
  ON prev.host_id = cur.host_id AND prev.hour = TIMESTAMP_SUB(cur.hour, INTERVAL 1 HOUR)
WHERE cur.hour = @start AND IN_SCOPE(cur.host_id)
""")

# What is odd about each host's data in hour @start: flagged per host, never failing the run.
# - duplicate_host_id: several machines publish under one id (cloned VMs, containers from one
#   image): several hostnames, a boot time that goes back (two machines interleaved), or more
#   samples than slots with counters that go back and forth. value: distinct hostnames or boot
#   times seen, at least 2 (about the number of machines; a reboot adds a boot time).
# - counter_backwards: a cumulative counter decreased while the boot time stayed the same.
# - clock_skew: the median of ts - received_at is beyond @skew_tolerance_s: ahead (no delivery
#   delay explains that), or behind by a steady amount (a spool replay is not steady). value: s.
# - sampling_interval: the host samples at another interval than @default_interval_s
#   (declared, or, for collectors that do not declare it, more samples than slots).
HOST_QUALITY = _macros("""
INSERT INTO {quality}
WITH s AS (
  SELECT
    host_id, hostname, ts, boot_time, interval_s,
    SLOT(ts, COALESCE(interval_s, @default_interval_s)) AS slot,
    TIMESTAMP_DIFF(ts, received_at, MILLISECOND) / 1000.0 AS skew_s,
    TIMESTAMP_DIFF(boot_time, LAG(boot_time) OVER w, SECOND) AS boot_step_s,
    IF(net_bytes_sent < LAG(net_bytes_sent) OVER w OR net_bytes_recv < LAG(net_bytes_recv) OVER w
       OR disk_read_bytes < LAG(disk_read_bytes) OVER w
       OR disk_write_bytes < LAG(disk_write_bytes) OVER w, 1, 0) AS went_back,
    PERCENTILE_CONT(TIMESTAMP_DIFF(ts, received_at, MILLISECOND) / 1000.0, 0.5)
      OVER (PARTITION BY host_id) AS skew_median_s
  FROM {raw}
  WHERE hour = @start AND IN_SCOPE(host_id)
  WINDOW w AS (PARTITION BY host_id ORDER BY ts, event_id)
),
per_host AS (
  SELECT
    host_id,
    MAX_BY(hostname, ts) AS hostname,
    COUNT(*) AS samples,
    COUNT(DISTINCT slot) AS slots,
    COUNT(DISTINCT hostname) AS hostnames,
    COUNT(DISTINCT DIV(UNIX_SECONDS(boot_time), 60)) AS boots,
    SUM(IF(boot_step_s < -REBOOT_BOOT_STEP_S, 1, 0)) AS boot_back,
    SUM(IF(went_back = 1 AND ABS(boot_step_s) <= REBOOT_BOOT_STEP_S, 1, 0)) AS backwards,
    MIN(COALESCE(interval_s, @default_interval_s)) AS interval_s,
    COUNT(interval_s) AS declared,
    ROUND(ANY_VALUE(skew_median_s), 3) AS median_skew_s,
    MAX(skew_s) - MIN(skew_s) AS skew_spread_s
  FROM s
  GROUP BY host_id
),
flagged AS (
  SELECT *,
    hostnames > 1 OR boot_back > 0 OR (samples > slots AND backwards > 0) AS duplicate
  FROM per_host
)
SELECT @start AS hour, host_id, hostname, 'duplicate_host_id' AS anomaly,
       'warning' AS severity, CAST(GREATEST(hostnames, boots, 2) AS FLOAT64) AS value,
       CONCAT(CAST(hostnames AS STRING), ' hostnames, ', CAST(samples AS STRING),
              ' samples in ', CAST(slots AS STRING), ' slots; give each machine its own id')
         AS detail
FROM flagged WHERE duplicate
UNION ALL
SELECT @start, host_id, hostname, 'counter_backwards', 'info', CAST(backwards AS FLOAT64),
       'I/O counters decreased without a reboot'
FROM flagged WHERE NOT duplicate AND backwards > 0
UNION ALL
SELECT @start, host_id, hostname, 'clock_skew', 'warning', median_skew_s,
       'median seconds between the event ts and its arrival at Kafka'
FROM flagged
WHERE median_skew_s > @skew_tolerance_s
   OR (median_skew_s < -@skew_tolerance_s AND skew_spread_s < @skew_tolerance_s)
UNION ALL
SELECT @start, host_id, hostname, 'sampling_interval', 'info',
       IF(declared > 0, interval_s, ROUND(3600.0 / samples, 3)),
       IF(declared > 0, 'declared sample interval, seconds',
          'observed seconds per sample (collector does not declare its interval)')
FROM flagged
WHERE NOT duplicate AND ((declared > 0 AND interval_s != @default_interval_s)
                         OR (declared = 0 AND samples > slots))
""")

# Hosts HOST_QUALITY flagged since @since (one row per host and anomaly, latest values first):
# what `sysmetrics status` and the dashboard list. @anomaly / @host = '' means any.
FLAGGED_HOSTS = """
SELECT host_id, anomaly, MAX_BY(hostname, hour) AS hostname, MAX_BY(severity, hour) AS severity,
       COUNT(*) AS hours, MAX(hour) AS last_hour, MAX_BY(value, hour) AS value,
       MAX_BY(detail, hour) AS detail
FROM {quality}
WHERE hour >= @since AND (@anomaly = '' OR anomaly = @anomaly) AND (@host = '' OR host_id = @host)
GROUP BY host_id, anomaly
ORDER BY anomaly, host_id
"""

# Threshold rules, a silent-host rule (a host retired after its last sample is gone, not
# silent; one with samples after its retirement is silent again when it stops) and a z-score
# anomaly flag against the host's own baseline (the previous 168 hours, at least 24 of them).
# Rules that count samples judge finished hours only (@hour_finished): a running hour is not an
# incident.
# disk_full and temperature_high are the stream's DiskFull and HighTemperature, with the same
# answer: they hold for a host in an hour when one of its samples in the hour is in a run of
# samples above the threshold that began at least the rule's `for` earlier (@disk_for_ms,
# @temperature_for_ms; a run may begin in the hour before), as the evaluator fires. Only hosts
# with a sample above either threshold in the hour can hold one, so only theirs are windowed
# (the window over every host was 0.9 of the statement's 1.8 s on a 10,000-host hour).
# Two data-quality flags are alerts too: duplicate_host_id and clock_skew. counter_backwards
# was one until 2026-12-06: a total steps down whenever an interface goes away (a container's
# veth at every stop), which AGGREGATE takes as an unknown step, so on a container fleet it
# raised an alert for nearly every host every hour; it stays in host_data_quality.
ALERTS = _macros(
    """
INSERT INTO {alerts}
WITH cur AS (SELECT * FROM {hourly} WHERE hour = @start AND IN_SCOPE(host_id)),
around AS (
  SELECT host_id, ts, hostname, disk_used_pct, temp_max_celsius,
    SUM(IF(disk_used_pct > @disk_pct, 0, 1)) OVER w AS disk_run,
    SUM(IF(temp_max_celsius > @temperature, 0, 1)) OVER w AS temp_run
  FROM {raw}
  WHERE ts >= TIMESTAMP_SUB(@start, INTERVAL 1 HOUR)
    AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR)
    AND IN_SCOPE(host_id)
    AND host_id IN (
      SELECT host_id FROM {raw}
      WHERE ts >= @start AND ts < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR) AND IN_SCOPE(host_id)
        AND (disk_used_pct > @disk_pct OR temp_max_celsius > @temperature))
  WINDOW w AS (PARTITION BY host_id ORDER BY ts, event_id)
),
disk_runs AS (
  SELECT host_id, ts, hostname, disk_used_pct AS value,
    MIN(ts) OVER (PARTITION BY host_id, disk_run) AS since
  FROM around WHERE disk_used_pct > @disk_pct
),
temp_runs AS (
  SELECT host_id, ts, hostname, temp_max_celsius AS value,
    MIN(ts) OVER (PARTITION BY host_id, temp_run) AS since
  FROM around WHERE temp_max_celsius > @temperature
),
disk_held AS (
  SELECT host_id, MAX_BY(hostname, ts) AS hostname, MAX(value) AS value FROM disk_runs
  WHERE ts >= @start AND TIMESTAMP_DIFF(ts, since, MILLISECOND) >= @disk_for_ms
  GROUP BY host_id
),
temp_held AS (
  SELECT host_id, MAX_BY(hostname, ts) AS hostname, MAX(value) AS value FROM temp_runs
  WHERE ts >= @start AND TIMESTAMP_DIFF(ts, since, MILLISECOND) >= @temperature_for_ms
  GROUP BY host_id
),
baseline AS (
  SELECT host_id, ROUND(EXACT_AVG(cpu_avg), 6) AS mean_cpu,
         ROUND(STDDEV_SAMP(cpu_avg), 6) AS sd_cpu, COUNT(*) AS n
  FROM {hourly}
  WHERE hour < @start AND hour >= TIMESTAMP_SUB(@start, INTERVAL 168 HOUR)
    AND IN_SCOPE(host_id)
  GROUP BY host_id
),
recent_hosts AS (
  SELECT host_id, MAX_BY(hostname, hour) AS hostname, MAX(last_ts) AS last_ts FROM {hourly}
  WHERE hour < @start AND hour >= TIMESTAMP_SUB(@start, """
    + _SILENT_REACH
    + """)
    AND IN_SCOPE(host_id)
  GROUP BY host_id
),
retired AS (
  SELECT host_id, MAX(retired_at) AS retired_at FROM {retired}
  WHERE retired_at < TIMESTAMP_ADD(@start, INTERVAL 1 HOUR)
    AND retired_at >= TIMESTAMP_SUB(@start, """
    + f"INTERVAL {SILENT_HOST_HOURS + 1} HOUR"
    + """)
  GROUP BY host_id
),
rules AS (
  SELECT host_id, hostname, 'cpu_p95_high' AS rule, 'warning' AS severity,
         cpu_p95 AS value, @cpu_p95 AS threshold FROM cur WHERE cpu_p95 > @cpu_p95
  UNION ALL
  SELECT host_id, hostname, 'disk_full', 'critical', value, @disk_pct FROM disk_held
  UNION ALL
  SELECT host_id, hostname, 'temperature_high', 'critical', value, @temperature FROM temp_held
  UNION ALL
  SELECT host_id, hostname, 'battery_worn', 'info', battery_health_pct, @battery_health
  FROM cur WHERE battery_health_pct < @battery_health
  UNION ALL
  SELECT host_id, hostname, 'low_completeness', 'warning', completeness_pct, @completeness
  FROM cur WHERE completeness_pct < @completeness AND @hour_finished
  UNION ALL
  SELECT r.host_id, r.hostname, 'host_silent', 'critical', 0.0, 0.0
  FROM recent_hosts AS r LEFT JOIN cur ON cur.host_id = r.host_id
  LEFT JOIN retired AS gone ON gone.host_id = r.host_id AND gone.retired_at >= r.last_ts
  WHERE cur.host_id IS NULL AND gone.host_id IS NULL AND @hour_finished
  UNION ALL
  SELECT cur.host_id, cur.hostname, 'cpu_anomaly', 'warning',
         ROUND((cur.cpu_avg - b.mean_cpu) / b.sd_cpu, 2), @zscore
  FROM cur JOIN baseline AS b ON b.host_id = cur.host_id
  WHERE b.n >= 24 AND b.sd_cpu > 0 AND ABS(cur.cpu_avg - b.mean_cpu) / b.sd_cpu > @zscore
  UNION ALL
  SELECT host_id, hostname, anomaly, severity, value,
         IF(anomaly = 'clock_skew', @skew_tolerance_s, 0.0)
  FROM {quality}
  WHERE hour = @start AND IN_SCOPE(host_id)
    AND anomaly IN ('duplicate_host_id', 'clock_skew')
)
SELECT @start AS hour, host_id, hostname, rule, severity, value, threshold FROM rules
"""
)

# Data-quality checks: each returns the number of offending rows for hour @start (its hosts in
# scope).
RAW_CHECKS = {
    "duplicate event_id in the raw table": """
        SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM {raw}
        WHERE hour = @start AND IN_SCOPE(host_id)""",
    "raw rows outside their hour": """
        SELECT COUNT(*) FROM {raw} WHERE hour = @start AND IN_SCOPE(host_id)
          AND (ts < @start OR ts >= TIMESTAMP_ADD(@start, INTERVAL 1 HOUR))""",
    "raw rows without host_id or ts": """
        SELECT COUNT(*) FROM {raw}
        WHERE hour = @start AND IN_SCOPE(host_id) AND (host_id IS NULL OR ts IS NULL)""",
}
AGGREGATE_CHECKS = {
    "negative byte totals or rates": """
        SELECT COUNT(*) FROM {hourly} WHERE hour = @start AND IN_SCOPE(host_id) AND (
          net_sent_bytes < 0 OR net_recv_bytes < 0 OR disk_read_bytes < 0
          OR disk_write_bytes < 0 OR net_sent_rate_peak < 0 OR net_recv_rate_peak < 0)""",
    "completeness above 100 %": """
        SELECT COUNT(*) FROM {hourly}
        WHERE hour = @start AND IN_SCOPE(host_id) AND completeness_pct > 100""",
    "raw rows missing from the aggregates": """
        SELECT (SELECT COUNT(*) FROM {raw} WHERE hour = @start AND IN_SCOPE(host_id))
             - COALESCE((SELECT SUM(samples) FROM {hourly}
                         WHERE hour = @start AND IN_SCOPE(host_id)), 0)""",
    "percent values outside 0-100": """
        SELECT COUNT(*) FROM {hourly} WHERE hour = @start AND IN_SCOPE(host_id) AND (
          cpu_max > 100 OR cpu_min < 0 OR mem_max > 100 OR disk_used_max > 100)""",
}


# ---------------------------------------------------------------------------- dashboard
# The dashboard's reads. ``{latest}``, ``{order}`` and ``{column}`` are filled by the page from
# these templates and fixed column names (never a user's text) before rendering.
DASHBOARD_LATEST = """
-- Each host's newest state of the last 24 h (the fleet page's rows, a CTE of its queries):
-- its latest raw sample when it reported within @recent, else its last hourly aggregate. The
-- raw scan covers only the recent window, so the page costs the same on the 24th hour of data
-- as on the first.
SELECT * FROM (
  SELECT host_id, MAX_BY(hostname, ts) AS hostname, MAX(ts) AS last_seen,
         MAX_BY(cpu_pct, ts) AS cpu, MAX_BY(mem_used_pct, ts) AS mem,
         MAX_BY(disk_used_pct, ts) AS disk, MAX_BY(temp_max_celsius, ts) AS temp,
         MAX_BY(os, ts) AS os, MAX_BY(source, ts) AS source
  FROM {raw} WHERE ts >= @recent GROUP BY host_id
  UNION ALL
  SELECT host_id, MAX_BY(hostname, hour), MAX(last_ts), MAX_BY(cpu_avg, hour),
         MAX_BY(mem_avg, hour), MAX_BY(disk_used_max, hour), MAX_BY(temp_max, hour),
         MAX_BY(os, hour), MAX_BY(source, hour)
  FROM {hourly} WHERE hour >= @since AND hour < @recent GROUP BY host_id
)
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY host_id ORDER BY last_seen DESC) = 1
"""
_GONE = """
gone AS (
  SELECT host_id, MAX(retired_at) AS retired_at FROM {retired} WHERE retired_at >= @since
  GROUP BY host_id
)"""
"""The hosts retired on purpose in the last 24 h (a target Prometheus dropped, ``alert
--forget``), a CTE of the fleet page's queries: one retired after its last sample is gone, not
silent."""
FLEET_PAGE = (
    """
WITH latest AS ({latest}),"""
    + _GONE
    + """,
counts AS (SELECT host_id, COUNT(*) AS n FROM {alerts} WHERE hour >= @since GROUP BY host_id),
hosts AS (
  SELECT l.*, COALESCE(c.n, 0) AS alerts, g.host_id IS NOT NULL AS retired,
         l.last_seen < @stale AND g.host_id IS NULL AS silent
  FROM latest AS l LEFT JOIN counts AS c ON c.host_id = l.host_id
  LEFT JOIN gone AS g ON g.host_id = l.host_id AND g.retired_at >= l.last_seen
)
SELECT *, COUNT(*) OVER () AS matching FROM hosts
WHERE (@q = '' OR STRPOS(LOWER(hostname), LOWER(@q)) > 0 OR STRPOS(LOWER(host_id), LOWER(@q)) > 0)
  AND (@os = '' OR os = @os)
  AND (@source = '' OR source = @source)
  AND (NOT @with_alerts OR alerts > 0)
  AND (NOT @only_silent OR silent)
ORDER BY {order}, host_id
LIMIT @limit OFFSET @offset
"""
)
FLEET_SUMMARY = (
    """
WITH latest AS ({latest}),"""
    + _GONE
    + """
SELECT COUNT(*) AS hosts, COUNTIF(l.last_seen < @stale AND g.host_id IS NULL) AS silent,
       COUNTIF(g.host_id IS NOT NULL) AS retired,
       ARRAY_AGG(DISTINCT l.os IGNORE NULLS) AS systems,
       ARRAY_AGG(DISTINCT l.source IGNORE NULLS) AS sources
FROM latest AS l
LEFT JOIN gone AS g ON g.host_id = l.host_id AND g.retired_at >= l.last_seen
"""
)
SEVERITY_COUNTS = """
SELECT severity, COUNT(*) AS n FROM {alerts} WHERE hour >= @since GROUP BY severity
"""
WORST = """
WITH latest AS ({latest})
SELECT host_id, hostname, {column} AS value FROM latest WHERE {column} IS NOT NULL
ORDER BY {column} DESC, host_id LIMIT 3
"""
HOST_HOURLY = """
SELECT * FROM {hourly} WHERE host_id = @host AND hour >= @since ORDER BY hour
"""
HOST_SAMPLES = """
-- A host's raw samples in @bucket_s buckets: a short range stays a few hundred points per chart.
SELECT TIMESTAMP_SECONDS(DIV(UNIX_SECONDS(ts), @bucket_s) * @bucket_s) AS ts,
  AVG(cpu_pct) AS cpu_avg, MAX(cpu_pct) AS cpu_max, AVG(load_1m) AS load_avg,
  AVG(mem_used_pct) AS mem_avg, MAX(mem_used_pct) AS mem_max,
  AVG(swap_used_pct) AS swap_avg, MAX(swap_used_pct) AS swap_max,
  AVG(disk_used_pct) AS disk_used_avg, MAX(disk_used_pct) AS disk_used_max,
  MAX(disk_read_bytes) AS disk_read_counter, MAX(disk_write_bytes) AS disk_write_counter,
  MAX(net_bytes_recv) AS net_recv_counter, MAX(net_bytes_sent) AS net_sent_counter,
  AVG(temp_max_celsius) AS temp_avg, MAX(temp_max_celsius) AS temp_max,
  AVG(gpu_util_pct) AS gpu_util_avg, MAX(gpu_util_pct) AS gpu_util_max,
  MAX(gpu_mem_used_bytes) AS gpu_mem_used_max, MAX(gpu_temp_max_celsius) AS gpu_temp_max,
  AVG(gpu_power_watts) AS gpu_power_avg, MAX(gpu_power_watts) AS gpu_power_max,
  MIN(battery_pct) AS battery_min_pct, MAX(battery_health_pct) AS battery_health_pct
FROM {raw} WHERE host_id = @host AND ts >= @since
GROUP BY 1 ORDER BY 1
"""
HOST_DEVICES = """
SELECT ts, disks_json, gpus_json FROM {raw} WHERE host_id = @host AND ts >= @since ORDER BY ts
"""
DASHBOARD_ALERTS = """
SELECT *, COUNT(*) OVER () AS matching FROM {alerts}
WHERE hour >= @since AND (@severity = '' OR severity = @severity)
  AND (@rule = '' OR rule = @rule) AND (@host = '' OR host_id = @host)
ORDER BY hour DESC, severity, host_id, rule LIMIT @limit OFFSET @offset
"""

_PAST_INT64: Final = "9223372036854775808.0"
"""2**63: the first double a signed 64-bit integer cannot hold."""

_ARRAY_REDUCE = re.compile(r"ARRAY_REDUCE\('(max|min|sum|avg|total|fs_total)', (\w+), '(\w+)'\)")


def _filesystem_of(disk: str, field: str) -> str:
    """Which filesystem's space a disk element's ``field`` is: its device (else mountpoint); for
    its size on APFS, the container (``/dev/disk3`` of ``/dev/disk3s1s1``), whose size each of
    its volumes reports (their used bytes are their own). Same text on both engines."""
    device = f"COALESCE({disk}.device, {disk}.mountpoint)"
    if field != "total_bytes":
        return device
    container = f"NULLIF(REGEXP_EXTRACT({disk}.device, '^/dev/disk[0-9]+'), '')"
    return (
        f"CASE WHEN {disk}.fstype = 'apfs' THEN COALESCE({container}, {device}) ELSE {device} END"
    )


def _int64_or_null(total: str, dialect: str) -> str:
    """A double sum as a 64-bit integer, null where it does not fit."""
    if dialect == "bigquery":
        return f"IF({total} < {_PAST_INT64}, CAST({total} AS INT64), NULL)"
    return f"CASE WHEN {total} < {_PAST_INT64} THEN CAST({total} AS BIGINT) END"


def _expand_array_reduce(statement: str, dialect: str) -> str:
    """``ARRAY_REDUCE('max', disks, 'used_pct')``: an aggregate over one field of an array of
    structs. BigQuery gets a subquery over UNNEST; DuckDB its list functions, which are several
    times faster there than the correlated subquery sqlglot would produce.

    ``'total'`` sums an integer field (bytes) as a double, exact below 2**53, and is null past
    64 bits: each element may be up to 2**63 - 1 (a network mount reporting 8 EiB), and an
    integer sum past that is an error that would stop the load of the hour for every host.

    ``'fs_total'`` is ``'total'`` over a disks array's distinct filesystems: mounts with the same
    device (else mountpoint), size and value are one filesystem mounted at several places (a
    bind mount, btrfs subvolumes: / and /home on Fedora's default install, ~10 on openSUSE's,
    a Kubernetes node's subPath volumes), which summed once each made a host's disk several
    times its size (before 2026-12-06); the size of APFS volumes is their container's
    (:func:`_filesystem_of`): a Mac's disk was 5-8 times its size."""

    def reduce(m: re.Match[str]) -> str:
        op, array, field = m[1], m[2], m[3]
        if op == "fs_total":
            if dialect == "bigquery":
                return (
                    f"(SELECT {_int64_or_null('SUM(v)', dialect)} FROM "
                    f"(SELECT DISTINCT {_filesystem_of('x', field)} AS d, x.total_bytes AS s,"
                    f" CAST(x.{field} AS FLOAT64) AS v FROM UNNEST({array}) AS x))"
                )
            # Each element unless an earlier one is the same filesystem: ~3x faster here than
            # list_distinct over structs, which added ~1 s per million rows to a load.
            same = (
                f"{_filesystem_of('y', field)} = {_filesystem_of('x', field)} "
                f"AND y.total_bytes IS NOT DISTINCT FROM x.total_bytes "
                f"AND y.{field} IS NOT DISTINCT FROM x.{field}"
            )
            seen = f"list_bool_or(list_transform(list_slice({array}, 1, i - 1), lambda y: {same}))"
            each = f"CASE WHEN {seen} IS NOT TRUE THEN CAST(x.{field} AS DOUBLE) END"
            total = (
                f"CASE WHEN len({array}) = 1 THEN CAST({array}[1].{field} AS DOUBLE) "
                f"ELSE list_aggregate(list_transform({array}, lambda x, i: {each}), 'sum') END"
            )
            return _int64_or_null(total, dialect)
        if dialect == "bigquery":
            if op == "total":
                total = f"SUM(CAST(x.{field} AS FLOAT64))"
                return f"(SELECT {_int64_or_null(total, dialect)} FROM UNNEST({array}) AS x)"
            return f"(SELECT {op.upper()}(x.{field}) FROM UNNEST({array}) AS x)"
        if op == "total":
            doubles = f"list_transform({array}, lambda x: CAST(x.{field} AS DOUBLE))"
            return _int64_or_null(f"list_aggregate({doubles}, 'sum')", dialect)
        return f"list_aggregate(list_transform({array}, lambda x: x.{field}), '{op}')"

    return _ARRAY_REDUCE.sub(reduce, statement)


_ARRAY_JSON = re.compile(r"ARRAY_JSON\(\s*(\w+)((?:,\s*'\w+')+)\s*\)")


def _expand_array_json(statement: str, dialect: str) -> str:
    """``ARRAY_JSON(disks, 'mountpoint', 'used_pct')``: those fields of each element of an
    array of structs, as a JSON array string (DuckDB: list functions, not a subquery per row,
    which costs ~4 s per million rows there)."""

    def expand(m: re.Match[str]) -> str:
        fields = re.findall(r"'(\w+)'", m[2])
        if dialect == "bigquery":
            picked = ", ".join(f"x.{f}" for f in fields)
            return f"TO_JSON_STRING(ARRAY(SELECT AS STRUCT {picked} FROM UNNEST({m[1]}) AS x))"
        picked = ", ".join(f"'{f}': x.{f}" for f in fields)
        return f"CAST(TO_JSON(list_transform({m[1]}, lambda x: {{{picked}}})) AS VARCHAR)"

    return _ARRAY_JSON.sub(expand, statement)


def _count_if_of_nothing_is_zero(node: exp.Expression) -> exp.Expression:
    """``COUNTIF`` over no rows is 0 in BigQuery and NULL in DuckDB (the fleet page of a
    fleet silent for a day was a 500): as BigQuery's, everywhere."""
    if isinstance(node, exp.CountIf):
        return exp.Coalesce(this=node, expressions=[exp.Literal.number(0)])
    return node


_MICROSECONDS_IN: Final = {
    "MICROSECOND": 1,
    "MILLISECOND": 1_000,
    "SECOND": 1_000_000,
    "MINUTE": 60_000_000,
    "HOUR": 3_600_000_000,
    "DAY": 86_400_000_000,
}


def _timestamp_diff_in_microseconds(node: exp.Expression) -> exp.Expression:
    """``TIMESTAMP_DIFF`` in a unit of fixed length: BigQuery's whole units between the two
    times (the difference truncated toward zero), from their epoch microseconds. DuckDB's own
    ``DATE_DIFF`` on TIMESTAMPTZ goes through its ICU calendar, ~8x the CPU (0.55 against
    0.07 s for 3.6 M rows: a fifth of the hourly statements' time on a 10,000-host hour), and
    counts unit boundaries crossed (0.9999 s to 1.0001 s is 1 ms there, 0 in BigQuery)."""
    if not isinstance(node, exp.TimestampDiff):
        return node
    unit = node.text("unit").upper()
    if unit not in _MICROSECONDS_IN:
        return node
    difference = exp.Sub(
        this=exp.func("EPOCH_US", node.this), expression=exp.func("EPOCH_US", node.expression)
    )
    # DuckDB's ``//`` on integers truncates toward zero, as BigQuery counts whole units.
    return exp.Paren(
        this=exp.IntDiv(
            this=exp.Paren(this=difference),
            expression=exp.Literal.number(_MICROSECONDS_IN[unit]),
        )
    )


@cache
def render(sql: str, dialect: str) -> str:
    """The statement in the backend's dialect."""
    if dialect != "bigquery":
        parsed = sqlglot.parse_one(sql, read="bigquery")
        sql = (
            parsed.transform(_count_if_of_nothing_is_zero)
            .transform(_timestamp_diff_in_microseconds)
            .sql(dialect=dialect)
        )
    return _expand_array_json(_expand_array_reduce(sql, dialect), dialect)
