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

from quantbias_assets import tables
from quantbias_assets.assets import checks
from quantbias_assets.assets.common import (
    WorkerTables,
    partition_target,
    run_partition_worker,
    selected_datasets,
)
from quantbias_assets.assets.responses import response_key
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import open_datasets
from quantbias_assets.contracts import JudgeRequest, JudgeSettings
from quantbias_assets.guard import VERDICT_KEY, VERDICT_SCHEMA
from quantbias_assets.partitions import model_method_partitions

# Bump when the worker's output for the same inputs changes (guard_config_hash covers settings).
VERDICTS_CODE_VERSION = "1"
OPEN_DATASETS = tuple(spec.name for spec in open_datasets())
VERDICT_PREFIX = tables.VERDICTS
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


def judge_request(context: dg.AssetExecutionContext, *, lake: Any, guard: Any) -> JudgeRequest:
    # a refresh by automation keeps the partition's recorded settings (automation.py)
    settings = JudgeSettings.from_extras(worker_settings(context, guard.to_extras()))
    return JudgeRequest(
        target=partition_target(context, lake),
        datasets=selected_datasets(context, OPEN_DATASETS),
        settings=settings,
    )


def verdict_check_outcomes(dataset: str, frame: pl.DataFrame, metadata: Mapping[str, Any]) -> list[checks.CheckOutcome]:
    return checks.verdict_check_outcomes(
        frame,
        failed_rows=checks.metadata_value(metadata, "failed_rows"),
        responses_without_question=checks.metadata_value(metadata, "responses_without_question"),
    )


VERDICT_TABLES = WorkerTables(
    prefix=VERDICT_PREFIX,
    key=VERDICT_KEY,
    schema=lambda dataset: VERDICT_SCHEMA,
    preview_columns=lambda dataset: PREVIEW_COLUMNS,
    outcomes=verdict_check_outcomes,
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
    request = judge_request(context, lake=resources.lake, guard=resources.guard)
    yield from run_partition_worker(context, "judge", request, VERDICT_TABLES)


verdict_assets = [verdicts]
