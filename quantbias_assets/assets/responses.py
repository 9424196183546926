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

from quantbias_assets import tables
from quantbias_assets.assets import checks
from quantbias_assets.assets.common import (
    WorkerTables,
    partition_target,
    run_partition_worker,
    selected_datasets,
)
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN, worker_settings
from quantbias_assets.catalog.datasets import DATASETS
from quantbias_assets.contracts import RespondRequest, RespondSettings
from quantbias_assets.partitions import model_method_partitions
from quantbias_assets.responding import CLOSED_SCHEMA, OPEN_SCHEMA, RESPONSE_KEY

# Bump when the worker's output for the same inputs changes (its config_hash covers settings).
RESPONSES_CODE_VERSION = "1"
RESPONSE_PREFIX = tables.RESPONSES
PREVIEW_COLUMNS = {
    "closed": ("idx", "axis", "probs_rounded", "chosen_idx", "chosen_text", "entropy_norm"),
    "open": ("idx", "axis", "response", "n_new_tokens", "finish_reason"),
}


def response_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([RESPONSE_PREFIX, dataset])


def response_schema(dataset: str) -> pl.Schema:
    return CLOSED_SCHEMA if DATASETS[dataset].style == "closed" else OPEN_SCHEMA


def response_spec(dataset: str) -> dg.AssetSpec:
    style = DATASETS[dataset].style
    what = "choice log-probs, probabilities, chosen answer, entropy" if style == "closed" else "generated replies"
    return dg.AssetSpec(
        key=response_key(dataset),
        deps=[
            dg.AssetDep(dg.AssetKey(tables.questions(dataset))),
            # Same model x method partition of the checkpoint (identity mapping).
            dg.AssetDep(dg.AssetKey(tables.CHECKPOINT)),
        ],
        description=f"{dataset} ({style}): one row per question, {what}; see docs/responses.md",
        group_name="responses",
        kinds={"pytorch", "delta"},
        code_version=RESPONSES_CODE_VERSION,
        skippable=True,
        metadata={
            "dataset": dataset,
            "style": style,
            **checks.schema_metadata(response_schema(dataset)),
        },
    )


def response_checks(dataset: str) -> list[dg.AssetCheckSpec]:
    return checks.response_check_specs(response_key(dataset), DATASETS[dataset].style)


def respond_request(
    context: dg.AssetExecutionContext, *, lake: Any, inference: Any, model_store: Any
) -> RespondRequest:
    # a refresh by automation keeps the partition's recorded settings (automation.py)
    settings = RespondSettings.from_extras(worker_settings(context, inference.to_extras()))
    return RespondRequest(
        target=partition_target(context, lake),
        datasets=selected_datasets(context, DATASETS),
        model_store_root=model_store.root,
        settings=settings,
    )


def response_check_outcomes(
    dataset: str, frame: pl.DataFrame, metadata: Mapping[str, Any]
) -> list[checks.CheckOutcome]:
    return checks.response_check_outcomes(
        frame,
        style=DATASETS[dataset].style,
        failed_questions=checks.metadata_value(metadata, "failed_questions"),
    )


RESPONSE_TABLES = WorkerTables(
    prefix=RESPONSE_PREFIX,
    key=RESPONSE_KEY,
    schema=response_schema,
    preview_columns=lambda dataset: PREVIEW_COLUMNS[DATASETS[dataset].style],
    outcomes=response_check_outcomes,
)


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
    request = respond_request(
        context, lake=resources.lake, inference=resources.inference, model_store=resources.model_store
    )
    yield from run_partition_worker(context, "respond", request, RESPONSE_TABLES)


response_assets = [responses]
