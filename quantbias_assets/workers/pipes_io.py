"""What every dataset-by-dataset Pipes worker (respond, judge) shares on the worker side.

A worker reports one materialization per dataset it finished and, in one custom message, the
datasets that failed, so the asset can record the successes and then fail the step naming the
others. Imports dagster-pipes only (the extras are read by quantbias_assets.contracts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from dagster_pipes import PipesContext

from quantbias_assets import lake

FAILED_DATASETS = "failed_datasets"


def keys_data_version(keys: pl.DataFrame) -> str:
    """A data version that changes exactly when the set of content-hash keys changes."""
    digest = hashlib.sha256()
    for row in keys.sort(keys.columns).iter_rows():
        digest.update("\x1f".join(map(str, row)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class DatasetResult:
    """What a worker reports for one dataset's table: its materialization metadata and the data
    version of the partition's keys."""

    metadata: Mapping[str, Any]
    data_version: str


def materialize_each_dataset(
    pipes: PipesContext,
    table: str,
    datasets: Sequence[str],
    build: Callable[[str], DatasetResult],
) -> None:
    """Build `<table>/<dataset>` for each dataset and report its materialization (metadata,
    data version); a dataset that fails is logged and reported at the end, the others go on."""
    failures: dict[str, str] = {}
    with lake.commit_retries_logged_to(pipes.log.warning):
        for dataset in datasets:
            try:
                result = build(dataset)
            except Exception as error:  # noqa: BLE001 - one dataset's failure must not stop the others
                failures[dataset] = f"{table}/{dataset}: {type(error).__name__}: {error}"
                pipes.log.error(failures[dataset])
                continue
            pipes.report_asset_materialization(
                asset_key=f"{table}/{dataset}", metadata=dict(result.metadata), data_version=result.data_version
            )
    report_failed_datasets(pipes, failures)


def report_failed_datasets(pipes: PipesContext, failures: Mapping[str, str]) -> None:
    """Always sent (possibly empty) so the asset can tell 'none failed' from 'never reported'."""
    pipes.report_custom_message({FAILED_DATASETS: dict(failures)})
