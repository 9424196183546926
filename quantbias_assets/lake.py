"""Delta Lake access: table URIs, whole-table writes, partition replacement, chunked appends, scans.

A pure module (polars + deltalake, no Dagster) so that workers can write to the lake directly.
Every table lives at `<root>/<asset key path>`; the root is a local folder or an object-store URI
(s3://, gs://, az://, abfss://) reached with `storage_options`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import TypeVar

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

PARTITION_COLUMNS = ("model", "method")
COMMIT_ATTEMPTS = 12

T = TypeVar("T")


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
        )
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
    _require_single_partition(df, model=model, method=method)
    if not table_exists(uri, storage_options):
        append_chunk(df, uri, storage_options=storage_options)
        return
    predicate = equality_predicate({"model": model, "method": method})
    _with_commit_retries(
        lambda: df.write_delta(
            uri,
            mode="overwrite",
            storage_options=_options(storage_options),
            delta_write_options={"partition_by": list(PARTITION_COLUMNS), "predicate": predicate},
        )
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

    _with_commit_retries(append)


def delete_where(
    uri: str, predicate: str, storage_options: Mapping[str, str] | None = None
) -> int:
    """Delete the rows matching a SQL predicate; returns how many were deleted."""

    def delete() -> int:
        metrics = _open(uri, storage_options).delete(predicate)
        return int(metrics.get("num_deleted_rows", 0))

    return _with_commit_retries(delete)


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
    for column, expected in (("model", model), ("method", method)):
        if column not in df.columns:
            raise ValueError(f"partition rows need a `{column}` column")
        found = set(df.get_column(column).unique().to_list())
        if found - {expected}:
            raise ValueError(
                f"rows for partition {model}/{method} carry other {column} values: {sorted(map(str, found))}"
            )


def _is_retryable(error: Exception) -> bool:
    """A concurrent writer won the commit (CommitFailedError), or created the table first."""
    if isinstance(error, CommitFailedError):
        return True
    return isinstance(error, DeltaError) and "already exists" in str(error).lower()


def _with_commit_retries(action: Callable[[], T]) -> T:
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - filtered by _is_retryable
            if attempt == COMMIT_ATTEMPTS - 1 or not _is_retryable(error):
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    raise AssertionError("unreachable")
