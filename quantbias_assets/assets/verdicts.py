"""`verdicts/<dataset>`: Llama Guard verdicts of the 7 open datasets, one judge worker per partition.

A (model, method) partition runs ONE worker (`quantbias_assets.workers.judge`) through the
`workers` launcher; it loads the guard once, judges the selected datasets' responses of that
partition (only new or changed ones) and reports one materialization per dataset with the
safe / unsafe / invalid counts. The asset can be subset.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from quantbias_assets.assets.responses import response_key, worker_results
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import open_datasets
from quantbias_assets.partitions import model_and_method, model_method_partitions
from quantbias_assets.workers.pipes_io import FAILED_DATASETS

# Bump when the worker's output for the same inputs changes (guard_config_hash covers settings).
VERDICTS_CODE_VERSION = "1"
OPEN_DATASETS = tuple(spec.name for spec in open_datasets())


def verdict_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["verdicts", dataset])


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
        metadata={"dataset": dataset},
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


@dg.multi_asset(
    name="verdicts",
    specs=[verdict_spec(name) for name in OPEN_DATASETS],
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
    invocation = resources.workers.run(context, "judge", extras)
    yield from judge_results(invocation)


verdict_assets = [verdicts]
