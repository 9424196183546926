"""What the worker assets (checkpoint, responses, verdicts) share on the orchestrator side.

- A worker that dies says why: its own exception (sent over Pipes when it closes) becomes the
  step's failure description, instead of Pipes' bare "failed with code 1".
- A run that stops early (cancelled, or the worker died) still records what it committed: the
  resumable workers commit chunk by chunk, so the lake may hold rows the last materialization
  does not count. For every selected table whose partition changed, a materialization with the
  partition's real row count and data version is recorded before the step fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError

from quantbias_assets import lake
from quantbias_assets.workers.pipes_io import keys_data_version

PIPES_CLOSED_WITH_EXCEPTION = "[pipes] external process pipes closed with exception"
DATA_VERSION_TAG = "dagster/data_version"


def worker_exception(context: dg.AssetExecutionContext) -> str | None:
    """The exception the worker of this step reported when it closed Pipes, if it did."""
    step_key = context.get_step_execution_context().step.key
    for entry in reversed(context.instance.all_logs(context.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        if entry.user_message != PIPES_CLOSED_WITH_EXCEPTION or entry.step_key != step_key:
            continue
        error = entry.dagster_event.engine_event_data.error
        if error is not None:
            return error.message.strip()
    return None


def run_worker(
    context: dg.AssetExecutionContext, worker: str, extras: Mapping[str, Any]
) -> dg.PipesClientCompletedInvocation:
    """`workers.run`, with a failed worker's own error as the failure description."""
    try:
        return context.resources.workers.run(context, worker, extras)
    except DagsterPipesExecutionError as error:
        reason = worker_exception(context)
        if reason is None:
            raise
        raise dg.Failure(
            description=f"{worker} worker failed: {reason}",
            metadata={"worker": worker, "exit": str(error)},
        ) from error


def _recorded_data_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].event_log_entry.asset_materialization
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None


def committed_results(
    context: dg.AssetExecutionContext,
    tables: Mapping[dg.AssetKey, str],
    partition: Mapping[str, str],
    key: Sequence[str],
    storage_options: Mapping[str, str],
    stopped: str,
) -> Iterator[dg.MaterializeResult]:
    """A materialization for each table (asset key -> Delta URI) whose partition in the lake is not
    what was last recorded: the rows a stopped run committed, counted from the table itself."""
    for asset_key, uri in tables.items():
        if not lake.table_exists(uri, storage_options=storage_options):
            continue
        keys = lake.read(uri, filters=dict(partition), columns=list(key), storage_options=storage_options)
        version = keys_data_version(keys)
        if keys.height == 0 or version == _recorded_data_version(context.instance, asset_key, context.partition_key):
            continue
        yield dg.MaterializeResult(
            asset_key=asset_key,
            data_version=dg.DataVersion(version),
            metadata={
                "dagster/row_count": keys.height,
                "rows": keys.height,
                "distinct_keys": keys.unique().height,
                "stopped": stopped,
                "complete": False,
                "dagster/uri": dg.MetadataValue.path(uri),
            },
        )


def run_partition_worker(
    context: dg.AssetExecutionContext,
    worker: str,
    extras: Mapping[str, Any],
    *,
    tables: Mapping[dg.AssetKey, str],
    key: Sequence[str],
    results: Callable[[dg.PipesClientCompletedInvocation], Iterator[dg.MaterializeResult]],
) -> Iterator[dg.MaterializeResult]:
    """Run a resumable partition worker and yield `results(invocation)`; if the run stops early,
    record what the worker committed (committed_results), then fail."""
    partition = {"model": extras["model"], "method": extras["method"]}
    options = dict(extras.get("storage_options") or {})
    try:
        invocation = run_worker(context, worker, extras)
    except DagsterExecutionInterruptedError:
        context.log.warning(f"{worker} worker stopped (run cancelled): recording the rows it committed")
        yield from committed_results(context, tables, partition, key, options, "cancelled")
        raise
    except Exception:
        yield from committed_results(context, tables, partition, key, options, "worker failed")
        raise
    yield from results(invocation)


def partition_frame(uri: str, partition: Mapping[str, str], storage_options: Mapping[str, str]) -> pl.DataFrame:
    """The partition's rows as they are in the lake now (empty when the table does not exist)."""
    if not lake.table_exists(uri, storage_options=storage_options):
        return pl.DataFrame()
    return lake.read(uri, filters=dict(partition), storage_options=storage_options)
