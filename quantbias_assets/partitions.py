"""Partitions of everything a model produces: model (dynamic, registry nicknames) x method."""

from __future__ import annotations

import warnings

import dagster as dg

from quantbias_assets.catalog.methods import METHOD_KEYS
from quantbias_assets.catalog.models import validate_nickname

METHODS = METHOD_KEYS  # the method catalog's keys, in its order

model_partitions = dg.DynamicPartitionsDefinition(name="model")
method_partitions = dg.StaticPartitionsDefinition(list(METHODS))
model_method_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "method": method_partitions})

# A per-model asset (the analysis of one model) reads every method partition of that model.
with warnings.catch_warnings():  # its beta notice would open every CLI command's output
    warnings.simplefilter("ignore", dg.BetaWarning)
    PER_MODEL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")


def partition_key(model: str, method: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "method": method})


def model_and_method(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    # A key added by hand (UI, API) skipped the registry's rules; it names folders downstream.
    return validate_nickname(keys["model"]), keys["method"]
