"""What the assets share: table location metadata, and the worker-asset pattern on the
orchestrator side (checkpoint, responses, verdicts).

- Every Delta-backed materialization names its table and row count the same way
  (`location_metadata`).
- A partition worker (respond, judge) gets a typed request (quantbias_assets.contracts) for the
  selected datasets; it reports one materialization per dataset, each completed here with the
  table's path, preview and blocking checks, and the datasets it could not build fail the step.
- A worker that dies says why: its own exception (sent over Pipes when it closes) becomes the
  step's failure description, instead of Pipes' bare "failed with code 1".
- A run that stops early (cancelled, or the worker died) still records what it committed: the
  resumable workers commit chunk by chunk, so the lake may hold rows the last materialization
  does not count. For every selected table whose partition changed, a materialization with the
  partition's real row count and data version is recorded before the step fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
import polars as pl
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterPipesExecutionError

from quantbias_assets import lake
from quantbias_assets.assets import checks
from quantbias_assets.contracts import PartitionTarget
from quantbias_assets.partitions import model_and_method
from quantbias_assets.workers.pipes_io import FAILED_DATASETS, keys_data_version

PIPES_CLOSED_WITH_EXCEPTION = "[pipes] external process pipes closed with exception"
DATA_VERSION_TAG = "dagster/data_version"


def location_metadata(uri: str, rows: int) -> dict[str, dg.MetadataValue]:
    """Where a materialized Delta table lives and how many rows it has (Dagster's own keys)."""
    return {"dagster/row_count": dg.MetadataValue.int(rows), "dagster/uri": dg.MetadataValue.path(uri)}


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
                **location_metadata(uri, keys.height),
                "rows": keys.height,
                "distinct_keys": keys.unique().height,
                "stopped": stopped,
                "complete": False,
            },
        )


class PartitionWorkerRequest(Protocol):
    """contracts.RespondRequest or JudgeRequest."""

    target: PartitionTarget
    datasets: tuple[str, ...]

    def to_extras(self) -> dict[str, Any]: ...


def partition_target(context: dg.AssetExecutionContext, lake_resource: Any) -> PartitionTarget:
    model, method = model_and_method(context)
    return PartitionTarget(lake_resource.root, dict(lake_resource.storage_options), model, method)


def selected_datasets(context: dg.AssetExecutionContext, catalog_order: Iterable[str]) -> tuple[str, ...]:
    """The datasets whose table the run selected, in catalog order."""
    selected = {key.path[-1] for key in context.selected_asset_keys}
    return tuple(name for name in catalog_order if name in selected)


def worker_results(invocation: dg.PipesClientCompletedInvocation, table: str) -> Iterator[dg.MaterializeResult]:
    """The worker's materializations of `<table>/<dataset>`, then a failure naming every dataset
    it could not build.

    Pipes fills in an empty result for every selected asset the worker did not report; those
    of failed datasets are dropped, so a failed dataset is never recorded as materialized.
    """
    failures: dict[str, str] = {}
    for message in invocation.get_custom_messages():
        if isinstance(message, Mapping):
            failures.update(message.get(FAILED_DATASETS, {}))
    failed_keys = {dg.AssetKey([table, dataset]) for dataset in failures}
    yield from (result for result in invocation.get_results() if result.asset_key not in failed_keys)
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} dataset(s) failed:\n" + "\n".join(failures.values()),
            metadata={"failed_datasets": sorted(failures)},
        )


@dataclass(frozen=True)
class WorkerTables:
    """The `<prefix>/<dataset>` Delta tables a partition worker writes, and how each is checked."""

    prefix: str  # responses, verdicts
    key: Sequence[str]  # the content-hash key of a row
    schema: Callable[[str], pl.Schema]  # per dataset
    preview_columns: Callable[[str], Sequence[str]]  # per dataset
    # (dataset, the partition's rows, the worker's metadata) -> the outcomes of the table's checks
    outcomes: Callable[[str, pl.DataFrame, Mapping[str, Any]], Sequence[checks.CheckOutcome]]

    def asset_key(self, dataset: str) -> dg.AssetKey:
        return dg.AssetKey([self.prefix, dataset])


def with_table_checks(
    context: dg.AssetExecutionContext,
    results: Iterator[dg.MaterializeResult],
    target: PartitionTarget,
    tables: WorkerTables,
) -> Iterator[dg.MaterializeResult]:
    """Each dataset's materialization with its table's path and preview, and its checks' results
    (computed on the partition as the worker left it)."""
    selected = set(context.selected_asset_check_keys)
    for result in results:
        dataset = result.asset_key.path[-1]
        uri = target.uri(tables.prefix, dataset)
        frame = partition_frame(uri, target.partition, target.storage_options)
        if frame.is_empty():
            frame = pl.DataFrame(schema=tables.schema(dataset))
        metadata = dict(result.metadata or {})
        yield dg.MaterializeResult(
            asset_key=result.asset_key,
            metadata={**metadata, **checks.table_metadata(uri, frame, tables.preview_columns(dataset))},
            data_version=result.data_version,
            check_results=checks.check_results(result.asset_key, tables.outcomes(dataset, frame, metadata), selected),
            tags=result.tags,
        )


def run_partition_worker(
    context: dg.AssetExecutionContext, worker: str, request: PartitionWorkerRequest, tables: WorkerTables
) -> Iterator[dg.MaterializeResult]:
    """Run a resumable partition worker on the request's datasets and yield each dataset's
    checked materialization, then fail naming the datasets it could not build; if the run stops
    early, record what the worker committed (committed_results), then fail."""
    target = request.target
    uris = {tables.asset_key(dataset): target.uri(tables.prefix, dataset) for dataset in request.datasets}
    options = target.storage_options
    try:
        invocation = run_worker(context, worker, request.to_extras())
    except DagsterExecutionInterruptedError:
        context.log.warning(f"{worker} worker stopped (run cancelled): recording the rows it committed")
        yield from committed_results(context, uris, target.partition, tables.key, options, "cancelled")
        raise
    except Exception:
        yield from committed_results(context, uris, target.partition, tables.key, options, "worker failed")
        raise
    yield from with_table_checks(context, worker_results(invocation, tables.prefix), target, tables)


def partition_frame(uri: str, partition: Mapping[str, str], storage_options: Mapping[str, str]) -> pl.DataFrame:
    """The partition's rows as they are in the lake now (empty when the table does not exist)."""
    if not lake.table_exists(uri, storage_options=storage_options):
        return pl.DataFrame()
    return lake.read(uri, filters=dict(partition), storage_options=storage_options)
