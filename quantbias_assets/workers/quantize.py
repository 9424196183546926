"""The quantize worker: builds (or resolves) one `checkpoint` partition under Dagster Pipes.

Run as `python -m quantbias_assets.workers.quantize` with a `contracts.QuantizeRequest`. The
checkpoint lands in <model_store_root>/<model>/<method>/ with its checkpoint.json, written
into a temp folder and renamed; unchanged recipe + base weights + calibration are "reused".
A GGUF model is first imported (dequantized) into <model_store_root>/.gguf/<sha256>/, once per
file; that folder is the base of every method, and `none` points at it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from quantbias_assets.catalog.methods import get_method
from quantbias_assets.catalog.models import validate_nickname
from quantbias_assets.checkpoint_manifest import CheckpointManifest
from quantbias_assets.contracts import QuantizeRequest
from quantbias_assets.gguf_import import GGUFImport, import_gguf, is_gguf_source
from quantbias_assets.quantize import BuildRequest, build_checkpoint


def local_store_root(root: str) -> Path:
    if "://" in root:
        raise ValueError(
            f"model_store_root: {root!r}: the quantize worker writes checkpoints to a local or "
            "mounted folder (e.g. a persistent volume); object-store URIs are not supported"
        )
    return Path(root)


def build_request(request: QuantizeRequest, gguf: GGUFImport | None = None) -> BuildRequest:
    """The build request; for a GGUF model, `gguf` is its import, whose folder is the base."""
    entry = request.model_entry
    validate_nickname(entry.nickname)
    method = get_method(request.method)
    return BuildRequest(
        model=entry.nickname,
        method=method.key,
        base_source=str(gguf.folder) if gguf else entry.source,
        target=local_store_root(request.model_store_root) / entry.nickname / method.key,
        revision=entry.revision,
        trust_remote_code=entry.trust_remote_code,
        published=entry.published_checkpoint(method.key) if request.prefer_published else None,
        group_size=request.group_size,
        calibration=request.calibration,
        base_provenance=gguf.info.provenance() if gguf else {},
    )


def import_gguf_base(request: QuantizeRequest, log_info: Any = print) -> GGUFImport | None:
    """Import the entry's GGUF file into the model store (or reuse its import); None otherwise."""
    if not is_gguf_source(request.model_entry.source):
        return None
    return import_gguf(request.model_entry.source, local_store_root(request.model_store_root), log=log_info)


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
    quantize = QuantizeRequest.from_extras(pipes.extras)
    gguf = import_gguf_base(quantize, pipes.log.info)
    request = build_request(quantize, gguf)
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
