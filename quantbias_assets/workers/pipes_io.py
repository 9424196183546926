"""What every dataset-by-dataset Pipes worker (respond, judge) shares on the worker side.

The extras name the lake and the partition; a worker reports one materialization per dataset
it finished and, in one custom message, the datasets that failed, so the asset can record the
successes and then fail the step naming the others. Imports dagster-pipes only.
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


class ExtrasError(ValueError):
    """The orchestrator sent incomplete or malformed extras."""


def require(extras: Mapping[str, Any], name: str) -> Any:
    if name not in extras or extras[name] is None:
        raise ExtrasError(f"worker extras: {name}: missing (got keys {sorted(extras)})")
    return extras[name]


@dataclass(frozen=True)
class PartitionTarget:
    """Where a worker writes: the lake and the (model, method) partition."""

    lake_root: str
    storage_options: dict[str, str]
    model: str
    method: str

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> PartitionTarget:
        return cls(
            lake_root=str(require(extras, "lake_root")),
            storage_options=dict(extras.get("storage_options") or {}),
            model=str(require(extras, "model")),
            method=str(require(extras, "method")),
        )

    @property
    def partition(self) -> dict[str, str]:
        return {"model": self.model, "method": self.method}

    def uri(self, *key: str) -> str:
        return lake.table_uri(self.lake_root, *key)


def keys_data_version(keys: pl.DataFrame) -> str:
    """A data version that changes exactly when the set of content-hash keys changes."""
    digest = hashlib.sha256()
    for row in keys.sort(keys.columns).iter_rows():
        digest.update("\x1f".join(map(str, row)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def materialize_each_dataset(
    pipes: PipesContext,
    table: str,
    datasets: Sequence[str],
    build: Callable[[str], tuple[Mapping[str, Any], str]],
) -> None:
    """Build `<table>/<dataset>` for each dataset and report its materialization (metadata,
    data version); a dataset that fails is logged and reported at the end, the others go on."""
    failures: dict[str, str] = {}
    with lake.commit_retries_logged_to(pipes.log.warning):
        for dataset in datasets:
            try:
                metadata, data_version = build(dataset)
            except Exception as error:  # noqa: BLE001 - one dataset's failure must not stop the others
                failures[dataset] = f"{table}/{dataset}: {type(error).__name__}: {error}"
                pipes.log.error(failures[dataset])
                continue
            pipes.report_asset_materialization(
                asset_key=f"{table}/{dataset}", metadata=dict(metadata), data_version=data_version
            )
    report_failed_datasets(pipes, failures)


def report_failed_datasets(pipes: PipesContext, failures: Mapping[str, str]) -> None:
    """Always sent (possibly empty) so the asset can tell 'none failed' from 'never reported'."""
    pipes.report_custom_message({FAILED_DATASETS: dict(failures)})
