"""Content-addressed, chunked, resumable writing of one (model, method) partition of a table.

A worker knows the rows it *wants*: one per input, each carrying a key of content hashes
(respond: `question_hash, config_hash`; judge: `conversation_hash, guard_config_hash`). The rows
already in the table under the same key are current and are reused; only the missing ones are
computed, in chunks, each committed as ONE Delta commit, so a killed worker loses at most the
chunk in flight and never leaves a half-written chunk visible. At the end the partition's rows
whose key is not wanted any more (an edited question, a changed config) are deleted.

Two runs of one partition may overlap (a backfill and a manual run, a retry while the first
attempt lives): a chunk is inserted only where its key is absent (`lake.insert_absent`, a MERGE),
so no key is ever added twice, and a run first collapses any duplicate keys it finds (left by
older code) to one row each. The report counts the partition as it is after the run.

`plan_resume` and `key_predicates` are pure; `run_resumable` is the edge that touches the lake.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from quantbias_assets import lake

# DataFusion parses every predicate; keep each IN list small enough to stay fast.
MAX_PREDICATE_VALUES = 2000


@dataclass(frozen=True)
class ResumePlan:
    pending: pl.DataFrame  # wanted rows whose key is absent from the partition
    reused: int  # wanted rows whose key is already there
    stale: pl.DataFrame  # distinct keys in the partition that are not wanted
    duplicated: pl.DataFrame  # wanted keys that have more than one row in the partition


@dataclass(frozen=True)
class ChunkProgress:
    chunk: int  # 1-based
    chunks: int
    rows_written: int  # rows committed by this chunk
    rows_skipped: int  # rows computed but not inserted: a concurrent run committed their key first
    rows_failed: int  # inputs of this chunk that produced no row
    done: int  # inputs handled so far (written, skipped or failed)
    pending: int  # inputs to handle in this run
    seconds: float  # since the first chunk started


@dataclass(frozen=True)
class ResumeReport:
    rows: int  # rows of the wanted keys in the partition after the run, counted in the table
    new: int  # rows this run inserted
    reused: int
    failed: int  # inputs that produced no row (recorded nothing; retried next run)
    deleted_stale: int
    skipped: int  # rows computed but not inserted: a concurrent run committed their key first
    deduplicated: int  # duplicate rows removed (one row per key kept)
    seconds: float  # computing and committing the pending chunks

    def row_counts(self) -> dict[str, int]:
        """The materialization metadata every resumable worker reports."""
        return {
            "dagster/row_count": self.rows,
            "rows": self.rows,
            "new_rows": self.new,
            "reused_rows": self.reused,
            "deleted_stale_rows": self.deleted_stale,
            "skipped_rows": self.skipped,
            "deduplicated_rows": self.deduplicated,
        }


def _empty_keys(key: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(schema={column: pl.String for column in key})


def plan_resume(wanted: pl.DataFrame, existing_keys: pl.DataFrame, key: Sequence[str]) -> ResumePlan:
    """Split the wanted rows into pending and reused, and find the partition's stale keys.

    `existing_keys` holds the key columns of the rows now in the partition (duplicates allowed).
    """
    key = list(key)
    rows = existing_keys.select(key) if existing_keys.height else _empty_keys(key)
    rows = rows.cast({column: wanted.schema[column] for column in key})
    existing = rows.unique()
    wanted_keys = wanted.select(key).unique()
    pending = wanted.join(existing, on=key, how="anti", maintain_order="left")
    stale = existing.join(wanted_keys, on=key, how="anti").sort(key)
    duplicated = rows.filter(pl.len().over(key) > 1).unique().join(wanted_keys, on=key, how="semi").sort(key)
    return ResumePlan(pending=pending, reused=wanted.height - pending.height, stale=stale, duplicated=duplicated)


def key_predicates(
    partition: Mapping[str, str],
    keys: pl.DataFrame,
    key: Sequence[str],
    *,
    max_values: int = MAX_PREDICATE_VALUES,
) -> list[str]:
    """Delta predicates that together select exactly the rows of `keys` in one partition.

    Keys are grouped by every key column but the first (few distinct values: a config
    hash), and the first column's values go into IN lists of at most `max_values`.
    """
    if keys.height == 0:
        return []
    first, rest = key[0], list(key[1:])
    scope = [f"{column} = {lake.sql_literal(value)}" for column, value in partition.items()]
    predicates = []
    groups = keys.group_by(rest, maintain_order=True) if rest else [((), keys)]
    for rest_values, group in groups:
        fixed = [f"{column} = {lake.sql_literal(value)}" for column, value in zip(rest, rest_values)]
        values = group[first].to_list()
        for start in range(0, len(values), max_values):
            in_list = ", ".join(lake.sql_literal(value) for value in values[start : start + max_values])
            predicates.append(" AND ".join([*scope, *fixed, f"{first} IN ({in_list})"]))
    return predicates


def read_partition_keys(
    uri: str,
    *,
    partition: Mapping[str, str],
    key: Sequence[str],
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Key columns of the partition's rows; empty when the table does not exist yet."""
    if not lake.table_exists(uri, storage_options=storage_options):
        return _empty_keys(key)
    return lake.read(uri, filters=dict(partition), columns=list(key), storage_options=storage_options)


def run_resumable(
    wanted: pl.DataFrame,
    *,
    uri: str,
    partition: Mapping[str, str],
    key: Sequence[str],
    process_chunk: Callable[[pl.DataFrame], pl.DataFrame],
    chunk_rows: int,
    storage_options: Mapping[str, str] | None = None,
    on_chunk: Callable[[ChunkProgress], None] | None = None,
) -> ResumeReport:
    """Remove duplicate keys, compute the wanted rows that are missing chunk by chunk, then
    delete stale rows.

    `process_chunk` turns a chunk of wanted rows into output rows (table schema, including the
    partition and key columns). An input it cannot handle simply yields no row: it is counted
    as failed and is pending again on the next run. Safe to run concurrently with another run
    of the same partition and wanted rows: each key ends up in the partition exactly once.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    options = dict(storage_options or {})
    key = list(key)
    existing = read_partition_keys(uri, partition=partition, key=key, storage_options=options)
    plan = plan_resume(wanted, existing, key)
    deduplicated = sum(
        lake.keep_one_row_per_key(uri, predicate, key=key, storage_options=options)
        for predicate in key_predicates(partition, plan.duplicated, key)
    )
    chunks = (plan.pending.height + chunk_rows - 1) // chunk_rows
    new = skipped = failed = 0
    started = time.perf_counter()
    for number, chunk in enumerate(plan.pending.iter_slices(chunk_rows), start=1):
        rows = process_chunk(chunk)
        chunk_failed = chunk.join(rows.select(key).unique(), on=key, how="anti").height
        inserted = (
            lake.insert_absent(rows, uri, partition=partition, key=key, storage_options=options) if rows.height else 0
        )
        new += inserted
        skipped += rows.height - inserted
        failed += chunk_failed
        if on_chunk is not None:
            on_chunk(
                ChunkProgress(
                    chunk=number,
                    chunks=chunks,
                    rows_written=inserted,
                    rows_skipped=rows.height - inserted,
                    rows_failed=chunk_failed,
                    done=new + skipped + failed,
                    pending=plan.pending.height,
                    seconds=time.perf_counter() - started,
                )
            )
    seconds = time.perf_counter() - started
    deleted = sum(
        lake.delete_where(uri, predicate, storage_options=options)
        for predicate in key_predicates(partition, plan.stale, key)
    )
    # count the table, not this run's arithmetic: a concurrent run may have added or removed rows
    current = read_partition_keys(uri, partition=partition, key=key, storage_options=options)
    wanted_keys = wanted.select(key).unique()
    present = current.cast({column: wanted.schema[column] for column in key}).join(wanted_keys, on=key, how="semi")
    return ResumeReport(
        rows=present.height,
        new=new,
        reused=plan.reused,
        failed=failed,
        deleted_stale=deleted,
        skipped=skipped,
        deduplicated=deduplicated,
        seconds=seconds,
    )
