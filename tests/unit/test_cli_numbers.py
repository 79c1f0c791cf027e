"""Numbers on the command line: those no setting validates are refused before anything
starts, with the range in the message (``simulate --hosts -1`` was a traceback, ``--hosts 0``
wrote nothing and exited 0); ``query`` prints a bounded number of rows, each value as it is;
``simulate --output`` names a file it cannot write; a server's port that is taken is one line."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sysmetrics.cli import QUERY_ROWS_SHOWN, cli
from sysmetrics.warehouse.duckdb import DuckDBWarehouse


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["simulate", "--hosts", "-1"], "'--hosts': -1 is not in the range x>=1"),
        (["simulate", "--hosts", "0", "--output", "-"], "'--hosts': 0 is not in the range x>=1"),
        (["simulate", "--speedup", "-1"], "'--speedup': -1.0 is not in the range x>=0"),
        (["consume", "--idle-exit", "0"], "'--idle-exit': 0.0 is not in the range x>0"),
        (["collect", "--count", "0"], "'--count': 0 is not in the range x>=1"),
        (["up", "--for", "-1"], "'--for': -1.0 is not in the range x>0"),
        (["up", "--simulate", "-2"], "'--simulate': -2 is not in the range x>=0"),
        (["up", "--history", "-1"], "'--history': -1 is not in the range x>=0"),
        (["batch", "run", "--hour", "2026-11-27T14", "--wait", "-3"], "'--wait': -3.0 is not"),
        (["broker", "start", "--timeout", "-1"], "'--timeout': -1.0 is not in the range x>=0"),
    ],
)
def test_a_number_out_of_its_range_is_refused_with_the_range(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and shown in result.output, result.output


def test_query_prints_a_bounded_number_of_rows_and_says_when_there_were_more(
    tmp_path: Path,
) -> None:
    """`SELECT *` of a large table printed nothing until every row was in memory (100 million
    rows of `range` ran past a minute): now 1,000 rows by default, the rest not fetched, and
    stderr says so; `--limit 0 --json` streams all of them."""
    warehouse = tmp_path / "warehouse.duckdb"
    DuckDBWarehouse(str(warehouse)).close()
    env = {"SYSMETRICS_WAREHOUSE_URL": str(warehouse)}
    runner = CliRunner()

    def query(*args: str) -> tuple[list[str], str]:
        result = runner.invoke(cli, ["query", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines(), result.stderr

    table, said = query("SELECT * FROM range(100000000)")
    assert len([line for line in table if line.startswith("│")]) == QUERY_ROWS_SHOWN
    assert "more rows than the 1,000 printed, not fetched" in said
    lines, said = query("--json", "--limit", "10", "SELECT * FROM range(100000000)")
    assert [json.loads(line)["range"] for line in lines] == list(range(10)) and "more rows" in said
    lines, said = query("--json", "--limit", "0", "SELECT * FROM range(2500)")
    assert len(lines) == 2500 and said == ""
    lines, said = query("--json", "--limit", "3", "SELECT * FROM range(3)")
    assert len(lines) == 3 and said == "", "exactly the limit: nothing more to say"


def test_query_prints_values_as_they_are_markup_unread_and_control_characters_written_out(
    tmp_path: Path,
) -> None:
    """Values come from any sender: a hostname with an escape sequence in it (here one that
    sets the terminal's title) is printed written out, not sent to the terminal, and brackets
    are text, not markup (``[/x]`` was a traceback, ``[red]`` coloured the rest)."""
    warehouse = tmp_path / "warehouse.duckdb"
    DuckDBWarehouse(str(warehouse)).close()
    result = CliRunner().invoke(
        cli,
        [
            "query",
            "SELECT '[/x] [red]r[/red]' AS \"[/h]\", "
            "chr(27) || ']0;owned' || chr(7) || chr(155) || 'A' AS hostname",
        ],
        env={"SYSMETRICS_WAREHOUSE_URL": str(warehouse), "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "[/h]" in result.stdout and "[/x] [red]r[/red]" in result.stdout
    assert "\\x1b]0;owned\\x07\\x9bA" in result.stdout
    assert not {"\x1b", "\x07", "\x9b"} & set(result.stdout)


def test_query_prints_rows_too_wide_for_the_terminal_one_block_each_with_every_name_and_value(
    tmp_path: Path,
) -> None:
    """`SELECT *` of the hourly table (40 columns) in an 80-column terminal came out as a grid
    of empty columns, no name or value left; a table that fits stays a table."""
    warehouse = tmp_path / "warehouse.duckdb"
    DuckDBWarehouse(str(warehouse)).close()
    env = {"SYSMETRICS_WAREHOUSE_URL": str(warehouse), "COLUMNS": "80"}

    def select(row: int) -> str:
        return "SELECT " + ", ".join(f"{n * 1000 + row} AS column_number_{n}" for n in range(40))

    both = f"{select(1)} UNION ALL {select(0)} ORDER BY 1 DESC"
    wide = CliRunner().invoke(cli, ["query", both], env=env)
    assert wide.exit_code == 0, wide.output
    blocks = wide.stdout.split("row 2")
    assert len(blocks) == 2 and blocks[0].startswith("row 1")
    for n in range(40):
        assert re.search(rf"^column_number_{n} +{n * 1000 + 1}\b", blocks[0], re.M), n
        assert re.search(rf"^column_number_{n} +{n * 1000}\b", blocks[1], re.M), n
    narrow = CliRunner().invoke(cli, ["query", "SELECT 7 AS seven, 0 AS row"], env=env)
    assert narrow.exit_code == 0, narrow.output
    assert re.search(r"^│ 7 +│ 0 +│$", narrow.stdout, re.M), narrow.stdout


def test_query_of_nothing_to_run_is_a_usage_error_or_no_rows_not_a_traceback_text(
    tmp_path: Path,
) -> None:
    """DuckDB answers a statement with nothing to run with no cursor: `query ""` said "query
    failed: 'NoneType' object has no attribute 'description'", so did one of comments only."""
    warehouse = tmp_path / "warehouse.duckdb"
    DuckDBWarehouse(str(warehouse)).close()
    env = {"SYSMETRICS_WAREHOUSE_URL": str(warehouse), "COLUMNS": "80"}
    empty = CliRunner().invoke(cli, ["query", "  "], env=env)
    assert empty.exit_code == 2 and "STATEMENT is empty" in empty.output, empty.output
    comments = CliRunner().invoke(cli, ["query", "/* to do */"], env=env)
    assert comments.exit_code == 0, comments.output
    assert "(no rows)" in comments.stdout
    as_json = CliRunner().invoke(cli, ["query", "--json", "/* to do */"], env=env)
    assert as_json.exit_code == 0 and as_json.stdout == "", as_json.output


@pytest.mark.parametrize(
    ("output", "reason"),
    [("missing/past.jsonl", "No such file or directory"), ("/dev/full", "No space left on device")],
)
def test_simulate_into_a_file_it_cannot_write_is_one_clear_error(
    tmp_path: Path, output: str, reason: str
) -> None:
    """A folder that does not exist, a full disk (Linux's /dev/full refuses every write): the
    command says which file and why, exit 1; it was a traceback."""
    target = output if output.startswith("/") else str(tmp_path / output)
    result = CliRunner().invoke(
        cli, ["simulate", "--hosts", "2", "--duration", "1m", "--output", target]
    )
    assert result.exit_code == 1, result.output
    assert f"cannot write {target}: {reason}" in result.output


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["dashboard", "--port", "{port}"], "--port or SYSMETRICS_DASHBOARD_PORT"),
        (["ingest", "--port", "{port}"], "--port or SYSMETRICS_INGEST_PORT"),
    ],
)
def test_a_server_port_another_process_holds_is_one_line_naming_the_setting(
    tmp_path: Path, args: list[str], names: str
) -> None:
    """The dashboard's and the receiver's HTTP ports (an OTel Collector on the same machine
    holds 4318): said before anything starts, with the option and the setting to change. It
    was uvicorn's bind error, after the receiver's Kafka check (seconds with Kafka down). The
    gRPC port had its own refusal already (test_ingest_grpc.py)."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            [arg.format(port=port) for arg in args],
            env={
                "SYSMETRICS_DATA_DIR": str(tmp_path),
                "SYSMETRICS_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            },
        )
    assert result.exit_code == 1, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.output and names in result.output


def test_a_lake_on_a_full_disk_is_not_called_unreachable() -> None:
    """A local lake whose disk is full said "cannot be reached: check the network and the
    credentials"; it says to make room. A store that does not answer still gets that advice."""
    from sysmetrics.cli import _explained
    from sysmetrics.lake.store import StoreError

    def store_error(cause: OSError) -> StoreError:
        try:
            raise StoreError(f"cannot write /lake/x.parquet: OSError: {cause}") from cause
        except StoreError as exc:
            return exc

    full = _explained(store_error(OSError(errno.ENOSPC, "No space left on device")))
    assert full is not None and "run the command again once there is room" in full
    assert "cannot be reached" not in full
    down = _explained(store_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")))
    assert down is not None and "cannot be reached" in down


def test_status_in_a_folder_without_the_pipeline_says_where_it_looked(tmp_path: Path) -> None:
    """Run outside the folder `up` was started in (the data dir ./data is relative), every line
    said "not running"; the first now says which data dir does not exist and what to do."""
    missing = tmp_path / "elsewhere" / "data"
    env = {"SYSMETRICS_DATA_DIR": str(missing), "SYSMETRICS_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = CliRunner().invoke(cli, ["status"], env=env)
    first = result.output.splitlines()[0]
    assert first.startswith(f"data dir     {missing} does not exist"), result.output
    assert "SYSMETRICS_DATA_DIR" in first
    assert not missing.exists()  # status creates nothing
    missing.mkdir(parents=True)
    again = CliRunner().invoke(cli, ["status"], env=env)
    assert "data dir" not in again.output
