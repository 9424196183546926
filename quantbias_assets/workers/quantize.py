"""The quantize worker: builds (or resolves) one `checkpoint` partition under Dagster Pipes.

Run as `python -m quantbias_assets.workers.quantize`. Extras:
  model_entry       the registry entry (ModelEntry.to_dict())
  method            the method partition key
  model_store_root  local folder of the model store
  group_size        weight group size of the 4-bit methods (default 128)
  calibration       {source, num_samples, max_seq_length, seed} (CalibrationSettings)
  prefer_published  record a published checkpoint instead of quantizing when one is registered
The checkpoint lands in <model_store_root>/<model>/<method>/ with its checkpoint.json, written
into a temp folder and renamed; unchanged recipe + base weights + calibration are "reused".
A GGUF model is first imported (dequantized) into <model_store_root>/.gguf/<sha256>/, once per
file; that folder is the base of every method, and `none` points at it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from quantbias_assets.catalog.methods import get_method
from quantbias_assets.catalog.models import ModelEntry, validate_nickname
from quantbias_assets.checkpoint_manifest import CheckpointManifest
from quantbias_assets.gguf_import import GGUFImport, import_gguf, is_gguf_source
from quantbias_assets.quantize import DEFAULT_GROUP_SIZE, BuildRequest, CalibrationSettings, build_checkpoint
from quantbias_assets.workers.pipes_io import require


def local_store_root(root: str) -> Path:
    if "://" in root:
        raise ValueError(
            f"model_store_root: {root!r}: the quantize worker writes checkpoints to a local or "
            "mounted folder (e.g. a persistent volume); object-store URIs are not supported"
        )
    return Path(root)


def request_from_extras(extras: Mapping[str, Any], gguf: GGUFImport | None = None) -> BuildRequest:
    """The build request; for a GGUF model, `gguf` is its import, whose folder is the base."""
    entry = ModelEntry.from_dict(dict(require(extras, "model_entry")))
    validate_nickname(entry.nickname)
    method = get_method(str(require(extras, "method")))
    calibration = CalibrationSettings(**dict(extras.get("calibration") or {}))
    published = entry.published_checkpoint(method.key) if extras.get("prefer_published", True) else None
    root = local_store_root(str(require(extras, "model_store_root")))
    return BuildRequest(
        model=entry.nickname,
        method=method.key,
        base_source=str(gguf.folder) if gguf else entry.source,
        target=root / entry.nickname / method.key,
        revision=entry.revision,
        trust_remote_code=entry.trust_remote_code,
        published=published,
        group_size=int(extras.get("group_size") or DEFAULT_GROUP_SIZE),
        calibration=calibration,
        base_provenance=gguf.info.provenance() if gguf else {},
    )


def import_gguf_base(extras: Mapping[str, Any], log_info: Any = print) -> GGUFImport | None:
    """Import the entry's GGUF file into the model store (or reuse its import); None otherwise."""
    entry = ModelEntry.from_dict(dict(require(extras, "model_entry")))
    if not is_gguf_source(entry.source):
        return None
    root = local_store_root(str(require(extras, "model_store_root")))
    return import_gguf(entry.source, root, log=log_info)


def materialization_metadata(manifest: CheckpointManifest, status: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "status": status,
        "source": manifest.source,
        "path": manifest.path,
        "trust_remote_code": manifest.trust_remote_code,
        "versions": {"raw_value": manifest.versions, "type": "json"},
        "created_at": manifest.created_at,
        **manifest.provenance(),
    }
    optional = {
        "digest": manifest.digest,
        "base_digest": manifest.base_digest,
        "revision": manifest.revision,
        "size_bytes": manifest.size_bytes,
        "compression_ratio": manifest.compression_ratio,
        "seconds": manifest.seconds,
        "peak_memory_bytes": manifest.peak_memory_bytes,
        "source_file": manifest.source_file,
        "source_sha256": manifest.source_sha256,
    }
    metadata.update({key: value for key, value in optional.items() if value is not None})
    if manifest.recipe:
        metadata["recipe"] = {"raw_value": f"```yaml\n{manifest.recipe}```", "type": "md"}
    if manifest.calibration:
        metadata["calibration"] = {"raw_value": manifest.calibration, "type": "json"}
    if manifest.quantization_config:
        metadata["quantization_config"] = {"raw_value": manifest.quantization_config, "type": "json"}
    return metadata


def data_version(manifest: CheckpointManifest) -> str:
    return manifest.digest or json.dumps(manifest.identity, sort_keys=True)


def run(pipes: PipesContext) -> None:
    gguf = import_gguf_base(pipes.extras, pipes.log.info)
    request = request_from_extras(pipes.extras, gguf)
    pipes.log.info(f"checkpoint {request.model}/{request.method} -> {request.target}")
    manifest, status = build_checkpoint(request)
    metadata = materialization_metadata(manifest, status)
    if gguf is not None:
        # `none` of a GGUF model is its import: "imported" once per file, "reused" after that
        metadata["gguf_import"] = gguf.status
        metadata["status"] = gguf.status if request.method == "none" else status
        pipes.log.info(f"{gguf.info.path}: {gguf.status} as {gguf.folder}")
    pipes.log.info(f"checkpoint {request.model}/{request.method}: {metadata['status']} ({manifest.path})")
    pipes.report_asset_materialization(metadata=metadata, data_version=data_version(manifest))


def main() -> None:
    with open_dagster_pipes() as pipes:
        run(pipes)


if __name__ == "__main__":
    main()
