"""`checkpoint`: one quantized (or base, or published) checkpoint per (model, method) partition.

The orchestrator only resolves the registry entry and hands it to the quantize worker
(`quantbias_assets.workers.quantize`) through the `workers` launcher; the worker does the
heavy work and reports recipe, calibration, size, compression, time, memory and digest.
"""

import os

import dagster as dg
from pydantic import Field

from quantbias_assets import tables
from quantbias_assets.assets.common import run_worker
from quantbias_assets.automation import ONE_MODEL_LOAD_PER_RUN
from quantbias_assets.catalog.methods import METHOD_SPECS
from quantbias_assets.catalog.models import get_model
from quantbias_assets.contracts import QuantizeRequest
from quantbias_assets.partitions import model_and_method, model_method_partitions
from quantbias_assets.quantize import DEFAULT_GROUP_SIZE, CalibrationSettings

# Bump when the worker builds different checkpoints from the same inputs.
CHECKPOINT_CODE_VERSION = "1"
CALIBRATION_SOURCE_ENV = "QUANTBIAS_CALIBRATION_SOURCE"


class CheckpointConfig(dg.Config):
    """Quantization settings; all of them are recorded in the checkpoint manifest."""

    group_size: int = Field(
        default=DEFAULT_GROUP_SIZE,
        description="weight group size of the 4-bit methods (a smaller power of two where it does not divide a layer)",
    )
    calibration_source: str = Field(
        default_factory=lambda: os.environ.get(CALIBRATION_SOURCE_ENV, "reference"),
        description='"reference" (hub calibration set) or a local .txt/.jsonl file',
    )
    calibration_samples: int = Field(default=512, description="number of calibration samples")
    calibration_max_seq_length: int = Field(default=6144, description="tokens per calibration sample")
    calibration_seed: int = Field(default=0, description="picks and orders the calibration samples")
    prefer_published: bool = Field(
        default=True, description="record a registered published checkpoint instead of quantizing"
    )


def quantize_request(model: str, method: str, config: CheckpointConfig, model_store_root: str) -> QuantizeRequest:
    return QuantizeRequest(
        model_entry=get_model(model),
        method=method,
        model_store_root=model_store_root,
        group_size=config.group_size,
        calibration=CalibrationSettings(
            source=config.calibration_source,
            num_samples=config.calibration_samples,
            max_seq_length=config.calibration_max_seq_length,
            seed=config.calibration_seed,
        ),
        prefer_published=config.prefer_published,
    )


@dg.asset(
    key=tables.CHECKPOINT,
    partitions_def=model_method_partitions,
    pool="gpu",
    backfill_policy=ONE_MODEL_LOAD_PER_RUN,
    group_name="checkpoints",
    kinds={"pytorch"},
    code_version=CHECKPOINT_CODE_VERSION,
    required_resource_keys={"workers", "model_store"},
    description="The model's checkpoint for this method: "
    + ", ".join(f"`{m.key}` = {m.label}" for m in METHOD_SPECS.values())
    + "; see docs/models.md",
)
def checkpoint(context: dg.AssetExecutionContext, config: CheckpointConfig) -> dg.MaterializeResult:
    model, method = model_and_method(context)
    request = quantize_request(model, method, config, context.resources.model_store.root)
    invocation = run_worker(context, "quantize", request.to_extras())
    return invocation.get_materialize_result()


checkpoint_assets = [checkpoint]
