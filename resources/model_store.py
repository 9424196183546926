"""The model store as a Dagster resource: where `checkpoint` partitions live.

Checkpoints go to `<root>/<model>/<method>/` with a `checkpoint.json` manifest (see
quantbias_assets/checkpoint_manifest.py). The quantize worker writes to a local or mounted
folder; `storage_options` travel with it for workers that read from object storage.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from quantbias_assets import settings
from quantbias_assets.checkpoint_manifest import CheckpointManifest, read_manifest


class ModelStoreResource(dg.ConfigurableResource):
    root: str = Field(default_factory=settings.model_store_root, description="folder of the checkpoints")
    storage_options: dict[str, str] = Field(default_factory=dict, description="object-store settings")

    def manifest(self, model: str, method: str) -> CheckpointManifest:
        return read_manifest(self.root, model, method)
