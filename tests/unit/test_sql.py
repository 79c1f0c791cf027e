"""The warehouse SQL is written once (BigQuery) and must parse there and transpile to DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest
import sqlglot

from sysmetrics.event_types import bigquery_schema, duckdb_columns
from sysmetrics.warehouse import sql

STATEMENTS = {
    "flatten": sql.FLATTEN.replace("{events}", "events"),
    "aggregate": sql.AGGREGATE,
    "trends": sql.TRENDS,
    "alerts": sql.ALERTS,
    "host_quality": sql.HOST_QUALITY,
    **sql.RAW_CHECKS,
    **sql.AGGREGATE_CHECKS,
}
NAMES = {kind: f"`proj.ds.{name}`" for kind, name in sql.TABLE_NAMES.items()}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_parses_as_bigquery_and_transpiles_to_duckdb(name: str) -> None:
    statement = STATEMENTS[name].format(**NAMES)
    sqlglot.parse_one(statement, read="bigquery")
    duck = sql.render(statement, "duckdb")
    assert "@" not in duck  # parameters became $name
    sqlglot.parse_one(duck, read="duckdb")


def test_no_approximate_percentiles() -> None:
    for statement in STATEMENTS.values():
        assert "APPROX" not in statement.upper()


def test_both_engines_see_the_same_event_fields() -> None:
    bq = {f["name"] for f in bigquery_schema()}
    assert bq == set(duckdb_columns())
    gpus = next(f for f in bigquery_schema() if f["name"] == "gpus")
    assert gpus["mode"] == "REPEATED" and gpus["type"] == "RECORD"
    assert "STRUCT(" in duckdb_columns()["host"]


def test_every_aggregate_column_is_declared() -> None:
    declared = [name for name, _ in sql.HOURLY_COLUMNS]
    selected = [
        e.alias_or_name
        for e in sqlglot.parse_one(
            sql.AGGREGATE.format(**NAMES), read="bigquery"
        ).expression.expressions
    ]
    assert selected == declared


def test_the_shared_definitions_are_expanded_in_every_statement() -> None:
    for statement in STATEMENTS.values():
        assert not any(f"{m}(" in statement for m in ("EXACT_AVG", "SLOT", "INCREMENT"))


def test_a_slot_counts_whole_intervals_since_the_epoch_on_the_engine() -> None:
    at = datetime(2026, 12, 1, 10, 0, 25, tzinfo=UTC)
    statement = sql.render(
        sql._macros(
            "SELECT SLOT(@at, COALESCE(NULL, 10.0)), SLOT(@at, 2.5), "
            "EXACT_AVG(x) FROM UNNEST([0.1, 0.2, 1e300]) AS x"
        ),
        "duckdb",
    )
    row = duckdb.connect().execute(statement, {"at": at}).fetchone()
    millis = int(at.timestamp() * 1000)
    assert row == (millis // 10_000, millis // 2_500, pytest.approx(0.15))


@pytest.mark.parametrize(
    ("later", "earlier", "unit", "expected"),
    [
        ("00:00:00.9999", "00:00:00.0001", "MILLISECOND", 999),
        ("00:00:00.0001", "00:00:00.9999", "MILLISECOND", -999),
        # Across a unit boundary but less than a whole unit apart: none (DuckDB's DATE_DIFF
        # on TIMESTAMPTZ counts the boundary: 1).
        ("00:00:01.0001", "00:00:00.9999", "MILLISECOND", 0),
        ("00:00:01.2", "00:00:00.9", "SECOND", 0),
        ("00:01:00.5", "00:00:00", "SECOND", 60),
        ("00:00:00", "00:00:59.9", "SECOND", -59),
        ("02:59:59", "01:00:00", "HOUR", 1),
    ],
)
def test_a_timestamp_difference_counts_whole_units_as_bigquery_does(
    later: str, earlier: str, unit: str, expected: int
) -> None:
    statement = sql.render(f"SELECT TIMESTAMP_DIFF(@later, @earlier, {unit})", "duckdb")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    day = "2026-12-05T"
    at = {
        "later": datetime.fromisoformat(day + later + "+00:00"),
        "earlier": datetime.fromisoformat(day + earlier + "+00:00"),
    }
    assert con.execute(statement, at).fetchone() == (expected,)
    assert "DATE_DIFF" not in statement


def test_an_unbalanced_macro_call_is_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        sql._macros("SELECT SLOT(ts, COALESCE(a, 1)")


def test_query_help_names_every_warehouse_table() -> None:
    from click.testing import CliRunner

    from sysmetrics.cli import cli

    shown = CliRunner().invoke(cli, ["query", "--help"])
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    assert [name for name in sql.TABLE_NAMES.values() if name not in text] == []
