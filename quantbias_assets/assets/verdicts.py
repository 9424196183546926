"""`verdicts/<dataset>`: Llama Guard verdicts of the 7 open datasets, one judge worker per partition.

A (model, method) partition runs ONE worker (`quantbias_assets.workers.judge`) through the
`workers` launcher; it loads the guard once, judges the selected datasets' responses of that
partition (only new or changed ones) and reports one materialization per dataset with the
safe / unsafe / invalid counts. The asset can be subset.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import polars as pl

from quantbias_assets import lake
from quantbias_assets.assets import checks
from quantbias_assets.assets.responses import response_key, worker_results
from quantbias_assets.assets.worker_runs import partition_frame, run_partition_worker
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import open_datasets
from quantbias_assets.guard import VERDICT_KEY, VERDICT_SCHEMA
from quantbias_assets.partitions import model_and_method, model_method_partitions
from quantbias_assets.workers.pipes_io import FAILED_DATASETS

# Bump when the worker's output for the same inputs changes (guard_config_hash covers settings).
VERDICTS_CODE_VERSION = "1"
OPEN_DATASETS = tuple(spec.name for spec in open_datasets())
VERDICT_PREFIX = "verdicts"
PREVIEW_COLUMNS = ("idx", "axis", "valid", "is_safe", "categories", "truncated", "verdict_raw")


def verdict_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([VERDICT_PREFIX, dataset])


def verdict_spec(dataset: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=verdict_key(dataset),
        # Same model x method partition of the responses (identity mapping).
        deps=[dg.AssetDep(response_key(dataset))],
        description=(
            f"{dataset}: one Llama Guard verdict per response (raw text, valid, is_safe, "
            f"categories, truncated); see docs/guard.md"
        ),
        group_name="verdicts",
        kinds={"pytorch", "delta"},
        code_version=VERDICTS_CODE_VERSION,
        skippable=True,
        metadata={"dataset": dataset, **checks.schema_metadata(VERDICT_SCHEMA)},
    )


def judge_extras(context: dg.AssetExecutionContext, *, lake: Any, guard: Any) -> dict[str, Any]:
    model, method = model_and_method(context)
    selected = {key.path[-1] for key in context.selected_asset_keys}
    return {
        "lake_root": lake.root,
        "storage_options": dict(lake.storage_options),
        "model": model,
        "method": method,
        "datasets": [name for name in OPEN_DATASETS if name in selected],  # catalog order
        # a refresh by automation keeps the partition's recorded settings (automation.py)
        **worker_settings(context, guard.to_extras()),
    }


def judge_results(invocation: dg.PipesClientCompletedInvocation) -> Iterator[dg.MaterializeResult]:
    """The worker's results (then the failure naming failed datasets, from worker_results),
    without the empty result Pipes fills in for a failed dataset's verdicts asset."""
    failed = {
        verdict_key(dataset)
        for message in invocation.get_custom_messages()
        if isinstance(message, Mapping)
        for dataset in message.get(FAILED_DATASETS, {})
    }
    yield from (result for result in worker_results(invocation) if result.asset_key not in failed)


def with_table_checks(
    context: dg.AssetExecutionContext, results: Iterator[dg.MaterializeResult], extras: Mapping[str, Any]
) -> Iterator[dg.MaterializeResult]:
    """Each dataset's materialization with its table's path and preview, and its checks' results."""
    partition = {"model": extras["model"], "method": extras["method"]}
    options = dict(extras.get("storage_options") or {})
    selected = set(context.selected_asset_check_keys)
    for result in results:
        uri = lake.table_uri(extras["lake_root"], VERDICT_PREFIX, result.asset_key.path[-1])
        frame = partition_frame(uri, partition, options)
        if frame.is_empty():
            frame = pl.DataFrame(schema=VERDICT_SCHEMA)
        metadata = dict(result.metadata or {})
        outcomes = checks.verdict_check_outcomes(
            frame,
            failed_rows=checks.metadata_value(metadata, "failed_rows"),
            responses_without_question=checks.metadata_value(metadata, "responses_without_question"),
        )
        yield dg.MaterializeResult(
            asset_key=result.asset_key,
            metadata={**metadata, **checks.table_metadata(uri, frame, PREVIEW_COLUMNS)},
            data_version=result.data_version,
            check_results=checks.check_results(result.asset_key, outcomes, selected),
            tags=result.tags,
        )


@dg.multi_asset(
    name="verdicts",
    specs=[verdict_spec(name) for name in OPEN_DATASETS],
    check_specs=[spec for name in OPEN_DATASETS for spec in checks.verdict_check_specs(verdict_key(name))],
    partitions_def=model_method_partitions,
    can_subset=True,
    pool="gpu",
    backfill_policy=ONE_MODEL_LOAD_PER_RUN,
    required_resource_keys={"workers", "lake", "guard"},
)
def verdicts(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
    """Judge the selected datasets' responses of one (model, method) partition in one worker."""
    resources = context.resources
    extras = judge_extras(context, lake=resources.lake, guard=resources.guard)
    selected = [key.path[-1] for key in context.selected_asset_keys]
    yield from run_partition_worker(
        context,
        "judge",
        extras,
        tables={verdict_key(name): lake.table_uri(extras["lake_root"], VERDICT_PREFIX, name) for name in selected},
        key=VERDICT_KEY,
        results=lambda invocation: with_table_checks(context, judge_results(invocation), extras),
    )


verdict_assets = [verdicts]
