"""The cloud warehouse: BigQuery, with tables partitioned by hour and clustered by host.

The raw load is a BigQuery load job from the lake's gs:// NDJSON files into a staging table,
then the same FLATTEN statement as DuckDB; every query is parameterized.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from datetime import datetime
from typing import Any

from sysmetrics.event_types import bigquery_schema
from sysmetrics.lake.compaction import each_event_once
from sysmetrics.warehouse import sql
from sysmetrics.warehouse.base import Appended, Warehouse

_PARTITIONED = {"raw", "hourly", "trends", "alerts"}


def _parameter(name: str, value: Any) -> Any:
    from google.cloud import bigquery

    if isinstance(value, list):
        numbers = value and all(isinstance(item, int) for item in value)
        return bigquery.ArrayQueryParameter(name, "INT64" if numbers else "STRING", value)
    kinds = (
        (bool, "BOOL"),
        (int, "INT64"),
        (float, "FLOAT64"),
        (datetime, "TIMESTAMP"),
        (str, "STRING"),
    )
    for kind, bq_type in kinds:
        if isinstance(value, kind):
            return bigquery.ScalarQueryParameter(name, bq_type, value)
    raise TypeError(f"no BigQuery parameter type for {name}={value!r}")


_COLUMNS_SEEN: dict[tuple[str, str], dict[str, set[str]]] = {}
"""The tables, with their columns, seen in each dataset (project, dataset) by this process."""


class BigQueryWarehouse(Warehouse):
    dialect = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        endpoint: str | None = None,
        timeout_s: float = 120.0,
        read_only: bool = False,
    ) -> None:
        from google.cloud import bigquery
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        options: dict[str, Any] = {}
        if endpoint:  # an emulator: anonymous, plain HTTP
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            options = {
                "credentials": AnonymousCredentials(),
                "client_options": ClientOptions(api_endpoint=endpoint),
            }
        self.project, self.dataset = project, dataset
        self.read_only = read_only
        self.client = bigquery.Client(project=project, **options)
        self._filesystem: Any = None
        # Every call gets this: the client's defaults retry a service that does not answer
        # for 10 minutes (a query's insert 10 more and its job up to 40, whatever ``retry``
        # says, unless ``job_retry`` is None), and a command would hang that long, silently.
        # A query job that fails fails its command; the hourly job's own retries run it again.
        self._retry = DEFAULT_RETRY.with_timeout(timeout_s)
        self._timeout_s = timeout_s

    def table(self, kind: str) -> str:
        return f"`{self.project}.{self.dataset}.{sql.TABLE_NAMES[kind]}`"

    def _job_config(self, params: dict[str, Any]) -> Any:
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            query_parameters=[_parameter(k, v) for k, v in params.items()]
        )

    def _execute(self, statement: str, params: dict[str, Any]) -> None:
        self._result(statement, params)

    def _rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(row.items()) for row in self._result(statement, params)]

    def native_rows(self, statement: str) -> Generator[dict[str, Any], None, None]:
        for row in self._result(statement, {}):  # the result's pages are fetched as read
            yield dict(row.items())

    def _result(self, statement: str, params: dict[str, Any]) -> Any:
        self._running = self.client.query(
            statement,
            job_config=self._job_config(params),
            retry=self._retry,
            job_retry=None,
        )
        return self._running.result(retry=self._retry, job_retry=None)

    def order_hour(self, hour: datetime) -> None:
        """Nothing to do: BigQuery prunes by the table's clustering, not by insertion order."""

    def interrupt(self) -> None:
        job = getattr(self, "_running", None)
        if job is not None:
            job.cancel()

    def _columns(self) -> dict[str, set[str]]:
        # A dashboard opens the warehouse per request: a table or column once seen is never
        # dropped, so the dataset is asked again only while one this version reads is absent.
        key = (self.project, self.dataset)
        seen = _COLUMNS_SEEN.setdefault(key, {})
        wanted = {
            sql.TABLE_NAMES[kind]: {name for name, _ in columns}
            for kind, columns in sql.TABLE_COLUMNS.items()
        }
        if any(not columns <= seen.get(name, set()) for name, columns in wanted.items()):
            listed = self.client.list_tables(f"{self.project}.{self.dataset}", retry=self._retry)
            for table in listed:
                name = table.table_id
                if name in wanted and not wanted[name] <= seen.get(name, set()):
                    full = self.client.get_table(table.reference, retry=self._retry)
                    seen[name] = {field.name for field in full.schema}
        return seen

    def ensure_tables(self) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        self.client.create_dataset(
            f"{self.project}.{self.dataset}", exists_ok=True, retry=self._retry
        )
        for kind, columns in sql.TABLE_COLUMNS.items():
            table_id = f"{self.project}.{self.dataset}.{sql.TABLE_NAMES[kind]}"
            try:
                table = self.client.get_table(table_id, retry=self._retry)
            except NotFound:
                body = ", ".join(f"{name} {kind_}" for name, kind_ in columns)
                extra = (
                    " PARTITION BY TIMESTAMP_TRUNC(hour, HOUR) CLUSTER BY host_id"
                    if (kind in _PARTITIONED)
                    else ""
                )
                self._execute(f"CREATE TABLE IF NOT EXISTS {self.table(kind)} ({body}){extra}", {})
                continue
            # A dataset made by an earlier version: columns are only ever added, at the end.
            known = {field.name for field in table.schema}
            missing = [
                bigquery.SchemaField(name, kind_) for name, kind_ in columns if name not in known
            ]
            if missing:
                table.schema = [*table.schema, *missing]
                self.client.update_table(table, ["schema"], retry=self._retry)

    def _stage(
        self,
        hour: datetime,
        file_uris: list[str],
        name: str,
        curated: str | None = None,
        missing: Collection[str] = (),
    ) -> str:
        """Load jobs of lake files (a curated Parquet file first, if given, that has no column
        for the fields ``missing``) into a staging table of raw events; its full name."""
        from google.cloud import bigquery

        staging = f"{self.project}.{self.dataset}.{name}_{hour:%Y%m%d%H}"
        schema = [bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema()]
        schema.append(bigquery.SchemaField("source_file", "STRING"))
        disposition = bigquery.WriteDisposition.WRITE_TRUNCATE
        if curated is not None:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                schema=[f for f in schema if f.name not in missing],
                write_disposition=disposition,
            )
            parquet = bigquery.ParquetOptions()
            # Parquet LISTs (disks, GPUs, temperatures) as REPEATED fields, not list.element.
            parquet.enable_list_inference = True
            config.parquet_options = parquet
            # Uploaded through the lake's filesystem rather than loaded from its gs:// URI: the
            # emulator the tests run reads key=value folders as extra hive columns, so a URI
            # load could not be checked here. One file of an hour: ~16x smaller than its JSON.
            loaded = f"{staging}_parquet" if missing else staging
            with self._open(curated) as data:
                # An upload takes no ``retry``: its own two retries get a third of the bound
                # each, so it gives up after about as long as any other call.
                job = self.client.load_table_from_file(
                    data,
                    loaded,
                    job_config=config,
                    num_retries=2,
                    timeout=self._timeout_s / 3,
                )
                job.result(retry=self._retry)
            if missing:
                # Compacted before a minor version added them: empty columns, so the raw
                # files' load and FLATTEN find every field.
                nulls = ", ".join(
                    f"CAST(NULL AS {f.field_type}) AS {f.name}" for f in schema if f.name in missing
                )
                try:
                    self._execute(
                        f"CREATE OR REPLACE TABLE `{staging}` AS SELECT *, {nulls} FROM `{loaded}`",
                        {},
                    )
                finally:
                    self._drop(loaded)
            disposition = bigquery.WriteDisposition.WRITE_APPEND
        if file_uris:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                schema=schema,
                # Fields of a newer minor schema version stay in the lake, not here.
                ignore_unknown_values=True,
                write_disposition=disposition,
            )
            self.client.load_table_from_uri(
                file_uris, staging, job_config=config, retry=self._retry
            ).result(retry=self._retry)
        return staging

    def append_files(self, hour: datetime, file_uris: list[str], names: list[str]) -> Appended:
        # No multi-statement transaction here: a crash between the statements is repaired by
        # the next run (the ledger lacks the files, the event ids stop any double).
        staging = self._stage(hour, file_uris, "_staging_new")
        staged = f"{self.project}.{self.dataset}._staged_new_{hour:%Y%m%d%H}"
        try:
            flatten = self.render(sql.FLATTEN.replace("{events}", f"`{staging}`"))
            self._execute(f"CREATE OR REPLACE TABLE `{staged}` AS {flatten}", {"start": hour})
            before = int(self.scalar("SELECT COUNT(*) FROM {raw} WHERE hour = @start", start=hour))
            for statement in (sql.DROP_LATER_COPIES, sql.APPEND_NEW_EVENTS):
                self.execute(statement.replace("{staged}", f"`{staged}`"), start=hour)
            after = int(self.scalar("SELECT COUNT(*) FROM {raw} WHERE hour = @start", start=hour))
            hosts = self._rows(f"SELECT DISTINCT host_id FROM `{staged}`", {})
            self.execute(sql.RECORD_LOADED_FILES, start=hour, files=names)
        finally:
            self._drop(staging)
            self._drop(staged)
        return Appended(after - before, frozenset(row["host_id"] for row in hosts))

    def load_hour(
        self,
        hour: datetime,
        file_uris: list[str],
        curated: str | None = None,
        missing: Collection[str] = (),
    ) -> int:
        self.execute(sql.delete_hour("raw"), start=hour)
        if file_uris or curated:
            staging = self._stage(hour, file_uris, "_staging", curated, missing)
            template = sql.flatten(each_event_once(curated is not None, file_uris))
            try:
                flatten = self.render(template.replace("{events}", f"`{staging}`"))
                self._execute(
                    f"INSERT INTO {self.table('raw')} " + flatten,
                    {"start": hour},
                )
            finally:
                self._drop(staging)
        return int(self.scalar("SELECT COUNT(*) FROM {raw} WHERE hour = @start", start=hour))

    def _drop(self, table: str) -> None:
        self.client.delete_table(table, not_found_ok=True, retry=self._retry)

    def use_filesystem(self, filesystem: Any) -> None:
        """BigQuery reads raw gs:// files itself; curated files are uploaded through this."""
        self._filesystem = filesystem

    def _open(self, uri: str) -> Any:
        if self._filesystem is not None:
            return self._filesystem.open(uri, "rb")
        import fsspec

        return fsspec.open(uri, "rb").open()

    def close(self) -> None:
        self.client.close()
