"""`responses/<dataset>`: one multi-asset for the 17 datasets, one respond worker per partition.

A (model, method) partition runs ONE worker (`quantbias_assets.workers.respond`) through the
`workers` launcher (local subprocess or GPU pod); it loads the checkpoint once, answers every
selected dataset and reports one materialization per dataset. The asset can be subset: a run
that selects three datasets answers only those.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import polars as pl

from quantbias_assets import lake
from quantbias_assets.assets import checks
from quantbias_assets.assets.worker_runs import partition_frame, run_partition_worker
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import DATASETS
from quantbias_assets.partitions import model_and_method, model_method_partitions
from quantbias_assets.workers.pipes_io import FAILED_DATASETS
from quantbias_assets.workers.respond import CLOSED_SCHEMA, OPEN_SCHEMA, RESPONSE_KEY

# Bump when the worker's output for the same inputs changes (its config_hash covers settings).
RESPONSES_CODE_VERSION = "1"
RESPONSE_PREFIX = "responses"
PREVIEW_COLUMNS = {
    "closed": ("idx", "axis", "probs_rounded", "chosen_idx", "chosen_text", "entropy_norm"),
    "open": ("idx", "axis", "response", "n_new_tokens", "finish_reason"),
}


def response_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([RESPONSE_PREFIX, dataset])


def response_spec(dataset: str) -> dg.AssetSpec:
    style = DATASETS[dataset].style
    what = "choice log-probs, probabilities, chosen answer, entropy" if style == "closed" else "generated replies"
    return dg.AssetSpec(
        key=response_key(dataset),
        deps=[
            dg.AssetDep(dg.AssetKey(["questions", dataset])),
            # Same model x method partition of the checkpoint (identity mapping).
            dg.AssetDep(dg.AssetKey("checkpoint")),
        ],
        description=f"{dataset} ({style}): one row per question, {what}; see docs/responses.md",
        group_name="responses",
        kinds={"pytorch", "delta"},
        code_version=RESPONSES_CODE_VERSION,
        skippable=True,
        metadata={
            "dataset": dataset,
            "style": style,
            **checks.schema_metadata(CLOSED_SCHEMA if style == "closed" else OPEN_SCHEMA),
        },
    )


def response_checks(dataset: str) -> list[dg.AssetCheckSpec]:
    return checks.response_check_specs(response_key(dataset), DATASETS[dataset].style)


def worker_results(invocation: dg.PipesClientCompletedInvocation) -> Iterator[dg.MaterializeResult]:
    """The worker's materializations, then a failure naming every dataset it could not answer.

    Pipes fills in an empty result for every selected asset the worker did not report; those
    of failed datasets are dropped, so a failed dataset is never recorded as materialized.
    """
    failures: dict[str, str] = {}
    for message in invocation.get_custom_messages():
        if isinstance(message, Mapping):
            failures.update(message.get(FAILED_DATASETS, {}))
    failed_keys = {response_key(dataset) for dataset in failures}
    yield from (result for result in invocation.get_results() if result.asset_key not in failed_keys)
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} dataset(s) failed:\n" + "\n".join(failures.values()),
            metadata={"failed_datasets": sorted(failures)},
        )


def with_table_checks(
    context: dg.AssetExecutionContext, results: Iterator[dg.MaterializeResult], extras: Mapping[str, Any]
) -> Iterator[dg.MaterializeResult]:
    """Each dataset's materialization with its table's path and preview, and its checks' results
    (computed on the partition as the worker left it)."""
    partition = {"model": extras["model"], "method": extras["method"]}
    options = dict(extras.get("storage_options") or {})
    selected = set(context.selected_asset_check_keys)
    for result in results:
        dataset = result.asset_key.path[-1]
        style = DATASETS[dataset].style
        uri = lake.table_uri(extras["lake_root"], RESPONSE_PREFIX, dataset)
        frame = partition_frame(uri, partition, options)
        if frame.is_empty():
            frame = pl.DataFrame(schema=CLOSED_SCHEMA if style == "closed" else OPEN_SCHEMA)
        metadata = dict(result.metadata or {})
        outcomes = checks.response_check_outcomes(
            frame, style=style, failed_questions=checks.metadata_value(metadata, "failed_questions")
        )
        yield dg.MaterializeResult(
            asset_key=result.asset_key,
            metadata={**metadata, **checks.table_metadata(uri, frame, PREVIEW_COLUMNS[style])},
            data_version=result.data_version,
            check_results=checks.check_results(result.asset_key, outcomes, selected),
            tags=result.tags,
        )


def respond_extras(context: dg.AssetExecutionContext, *, lake: Any, inference: Any, model_store: Any) -> dict[str, Any]:
    model, method = model_and_method(context)
    selected = {key.path[-1] for key in context.selected_asset_keys}
    return {
        "lake_root": lake.root,
        "storage_options": dict(lake.storage_options),
        "model_store_root": model_store.root,
        "model": model,
        "method": method,
        "datasets": [name for name in DATASETS if name in selected],  # catalog order
        # a refresh by automation keeps the partition's recorded settings (automation.py)
        **worker_settings(context, inference.to_extras()),
    }


@dg.multi_asset(
    name="responses",
    specs=[response_spec(name) for name in DATASETS],
    check_specs=[spec for name in DATASETS for spec in response_checks(name)],
    partitions_def=model_method_partitions,
    can_subset=True,
    pool="gpu",
    backfill_policy=ONE_MODEL_LOAD_PER_RUN,
    required_resource_keys={"workers", "lake", "inference", "model_store"},
)
def responses(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
    """Answer the selected datasets for one (model, method) partition in one worker."""
    resources = context.resources
    extras = respond_extras(
        context, lake=resources.lake, inference=resources.inference, model_store=resources.model_store
    )
    selected = [key.path[-1] for key in context.selected_asset_keys]
    yield from run_partition_worker(
        context,
        "respond",
        extras,
        tables={response_key(name): lake.table_uri(extras["lake_root"], RESPONSE_PREFIX, name) for name in selected},
        key=RESPONSE_KEY,
        results=lambda invocation: with_table_checks(context, worker_results(invocation), extras),
    )


response_assets = [responses]
