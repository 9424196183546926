"""Delta Lake access: table URIs, whole-table writes, partition replacement, chunked appends,
insert-if-absent merges, scans.

A pure module (polars + deltalake, no Dagster) so that workers can write to the lake directly.
Every table lives at `<root>/<asset key path>`; the root is a local folder or an object-store URI
(s3://, gs://, az://, abfss://) reached with `storage_options`.

Every commit retries when a concurrent writer wins the same table version; each retry is logged
on the `quantbias_assets.lake` logger (`commit_retries_logged_to` forwards it, e.g. to Dagster).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TypeVar

import polars as pl
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

PARTITION_COLUMNS = ("model", "method")
COMMIT_ATTEMPTS = 12

T = TypeVar("T")

log = logging.getLogger(__name__)


class LakeTableNotFoundError(FileNotFoundError):
    """Raised when a table is read before anything was written to it."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"no Delta table at {uri} (nothing has been written there yet)")
        self.uri = uri


def table_uri(root: str, *key: str) -> str:
    """`<root>/<k1>/<k2>`: the same join for local paths and object-store URIs."""
    if not key:
        raise ValueError("a table needs at least one key part")
    parts = [root.rstrip("/")] + [part.strip("/") for part in key]
    return "/".join(parts)


def table_exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    return DeltaTable.is_deltatable(uri, storage_options=_options(storage_options))


def sql_literal(value: object) -> str:
    """A value as a Delta predicate literal; strings are quoted with `'` doubled."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot write {type(value).__name__} as a predicate literal")


def equality_predicate(filters: Mapping[str, object]) -> str:
    """`col1 = 'a' AND col2 = 'b'` (IS NULL for None)."""
    if not filters:
        raise ValueError("an equality predicate needs at least one column")
    terms = [
        f"{column} IS NULL" if value is None else f"{column} = {sql_literal(value)}"
        for column, value in filters.items()
    ]
    return " AND ".join(terms)


def write_table(
    df: pl.DataFrame,
    uri: str,
    *,
    partition_by: Sequence[str] = (),
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Overwrite the whole table in one commit; a changed schema replaces the old one."""
    options: dict[str, object] = {"schema_mode": "overwrite"}
    if partition_by:
        options["partition_by"] = list(partition_by)
    _with_commit_retries(
        lambda: df.write_delta(
            uri,
            mode="overwrite",
            storage_options=_options(storage_options),
            delta_write_options=options,
        ),
        uri,
        storage_options,
    )


def replace_partition(
    df: pl.DataFrame,
    uri: str,
    *,
    model: str,
    method: str,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Replace exactly the (model, method) partition with `df`; other partitions are untouched."""
    replace_rows(df, uri, {"model": model, "method": method}, partition_by=PARTITION_COLUMNS,
                 storage_options=storage_options)  # fmt: skip


def replace_rows(
    df: pl.DataFrame,
    uri: str,
    where: Mapping[str, str],
    *,
    partition_by: Sequence[str] = (),
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Replace the rows matching `where` (column = value) with `df` in one commit; other rows are
    untouched. Every row of `df` must match `where`; an empty `df` deletes the matching rows; new
    columns are added to the table."""
    _require_partition(df, where)
    if not table_exists(uri, storage_options):
        if partition_by:
            append_chunk(df, uri, partition_by=partition_by, storage_options=storage_options)
        else:
            write_table(df, uri, storage_options=storage_options)
        return
    # merge: a table written by an older code version gains the new columns (null in old rows)
    options: dict[str, object] = {"predicate": equality_predicate(where), "schema_mode": "merge"}
    if partition_by:
        options["partition_by"] = list(partition_by)
    _with_commit_retries(
        lambda: df.write_delta(
            uri, mode="overwrite", storage_options=_options(storage_options), delta_write_options=options
        ),
        uri,
        storage_options,
    )


def append_chunk(
    df: pl.DataFrame,
    uri: str,
    *,
    partition_by: Sequence[str] = PARTITION_COLUMNS,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Append `df` as one commit, creating the table when it is missing.

    Concurrent writers (several workers on different partitions) may race on the same commit
    version or on creating the table; the losing writer retries, so no chunk is lost.
    """

    def append() -> None:
        df.write_delta(
            uri,
            mode="append",
            storage_options=_options(storage_options),
            delta_write_options={"partition_by": list(partition_by)} if partition_by else None,
        )

    _with_commit_retries(append, uri, storage_options)


def insert_absent(
    df: pl.DataFrame,
    uri: str,
    *,
    partition: Mapping[str, str],
    key: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Insert the rows whose key is not yet in the partition, as one MERGE commit; returns how
    many were inserted.

    Idempotent on (partition, key): a key already committed, by this run or a concurrent one, is
    never added again, and a key twice in `df` is inserted once. The merge predicate names the
    partition's values, so the merge reads only that partition and a concurrent commit to it is a
    conflict that is retried against the new table version (which then holds the other's keys).
    """
    _require_partition(df, partition)
    source = df.unique(subset=list(key), keep="first", maintain_order=True)
    predicate = " AND ".join(
        [f"target.{column} = {sql_literal(value)}" for column, value in partition.items()]
        + [f"target.{column} = source.{column}" for column in key]
    )

    def merge() -> int:
        if not table_exists(uri, storage_options):
            # The chunk creates the table. delta-rs would re-commit a creation that lost version 0
            # as version 1 without a conflict check (both creators' rows would land): with no
            # internal retry the loser fails instead, and its retry merges into the winner's table.
            source.write_delta(
                uri,
                mode="error",
                storage_options=_options(storage_options),
                delta_write_options={
                    "partition_by": list(partition),
                    "commit_properties": CommitProperties(max_commit_retries=0),
                },
            )
            return source.height
        metrics = (
            _open(uri, storage_options)
            .merge(source, predicate, source_alias="source", target_alias="target")
            .when_not_matched_insert_all()
            .execute()
        )
        return int(metrics["num_target_rows_inserted"])

    return _with_commit_retries(merge, uri, storage_options)


def keep_one_row_per_key(
    uri: str,
    predicate: str,
    *,
    key: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Among the rows matching `predicate`, keep one row of each key (which one is unspecified);
    returns how many rows were removed.

    One commit replaces the matching rows with one row per key, so a reader sees either the
    duplicates or the single row, never no row. The rows are read from the same table version the
    commit starts from: a concurrent change to them is a conflict, and the retry reads them again.
    """

    def rewrite() -> int:
        table = _open(uri, storage_options)
        reader = QueryBuilder().register("t", table).execute(f"SELECT * FROM t WHERE {predicate}")
        matching = pl.DataFrame(reader.read_all())
        kept = matching.unique(subset=list(key), keep="any")
        if kept.height == matching.height:
            return 0
        write_deltalake(table, kept, mode="overwrite", predicate=predicate)
        return matching.height - kept.height

    return _with_commit_retries(rewrite, uri, storage_options)


def delete_where(uri: str, predicate: str, storage_options: Mapping[str, str] | None = None) -> int:
    """Delete the rows matching a SQL predicate; returns how many were deleted."""

    def delete() -> int:
        metrics = _open(uri, storage_options).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0))

    return _with_commit_retries(delete, uri, storage_options)


def scan(
    uri: str,
    *,
    filters: Mapping[str, object] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy scan with equality filters (on partition columns they prune whole files)."""
    if not table_exists(uri, storage_options):
        raise LakeTableNotFoundError(uri)
    frame = pl.scan_delta(uri, storage_options=_options(storage_options))
    for column, value in (filters or {}).items():
        frame = frame.filter(pl.col(column).is_null() if value is None else pl.col(column) == value)
    return frame


def read(
    uri: str,
    *,
    filters: Mapping[str, object] | None = None,
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    frame = scan(uri, filters=filters, storage_options=storage_options)
    if columns is not None:
        frame = frame.select(list(columns))
    return frame.collect()


def _open(uri: str, storage_options: Mapping[str, str] | None) -> DeltaTable:
    try:
        return DeltaTable(uri, storage_options=_options(storage_options))
    except TableNotFoundError as error:
        raise LakeTableNotFoundError(uri) from error


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(storage_options) if storage_options else None


def _require_single_partition(df: pl.DataFrame, *, model: str, method: str) -> None:
    _require_partition(df, {"model": model, "method": method})


def _require_partition(df: pl.DataFrame, partition: Mapping[str, str]) -> None:
    name = "/".join(partition.values())
    for column, expected in partition.items():
        if column not in df.columns:
            raise ValueError(f"partition rows need a `{column}` column")
        found = set(df.get_column(column).unique().to_list())
        if found - {expected}:
            raise ValueError(f"rows for partition {name} carry other {column} values: {sorted(map(str, found))}")


def _is_retryable(error: Exception) -> bool:
    """A concurrent writer won the commit (CommitFailedError), or created the table first."""
    if isinstance(error, CommitFailedError):
        return True
    return isinstance(error, DeltaError) and "already exists" in str(error).lower()


def _table_version(uri: str, storage_options: Mapping[str, str] | None) -> int | None:
    try:
        return _open(uri, storage_options).version()
    except Exception:  # noqa: BLE001 - the version only enriches a log line
        return None


def _with_commit_retries(action: Callable[[], T], uri: str, storage_options: Mapping[str, str] | None = None) -> T:
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return action()
        except Exception as error:  # filtered by _is_retryable, re-raised otherwise
            if attempt == COMMIT_ATTEMPTS or not _is_retryable(error):
                raise
            delay = random.uniform(0.05, 0.2) * attempt
            version = _table_version(uri, storage_options)
            log.warning(
                "%s: commit attempt %d of %d lost to a concurrent writer (table now at version %s); "
                "retrying in %.2f s: %s",
                uri,
                attempt,
                COMMIT_ATTEMPTS,
                "unknown" if version is None else version,
                delay,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class _CallbackHandler(logging.Handler):
    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        self._emit(record.getMessage())


@contextmanager
def commit_retries_logged_to(emit: Callable[[str], None]) -> Iterator[None]:
    """Forward this module's log lines (commit retries) to `emit` while the block runs: a worker
    passes its Dagster Pipes logger, so each retry shows in the run's event log."""
    handler = _CallbackHandler(emit)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
