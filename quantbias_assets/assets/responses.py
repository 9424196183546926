"""`responses/<dataset>`: one multi-asset for the 17 datasets, one respond worker per partition.

A (model, method) partition runs ONE worker (`quantbias_assets.workers.respond`) through the
`workers` launcher (local subprocess or GPU pod); it loads the checkpoint once, answers every
selected dataset and reports one materialization per dataset. The asset can be subset: a run
that selects three datasets answers only those.
"""


from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import DATASETS
from quantbias_assets.partitions import model_and_method, model_method_partitions
from quantbias_assets.workers.pipes_io import FAILED_DATASETS

# Bump when the worker's output for the same inputs changes (its config_hash covers settings).
RESPONSES_CODE_VERSION = "1"
RESPONSE_PREFIX = "responses"


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
        metadata={"dataset": dataset, "style": style},
    )


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


def respond_extras(
    context: dg.AssetExecutionContext, *, lake: Any, inference: Any, model_store: Any
) -> dict[str, Any]:
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
    invocation = resources.workers.run(context, "respond", extras)
    yield from worker_results(invocation)


response_assets = [responses]
