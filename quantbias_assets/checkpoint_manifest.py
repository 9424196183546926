"""The record of one `checkpoint` partition: what was built (or resolved), from what, and how.

The quantize worker writes `<store_root>/<model>/<method>/checkpoint.json`; the respond worker
reads it to find the weights and to put the weights digest into its `config_hash`. Stdlib only,
so every worker image can import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from quantbias_assets.hashing import update_with_file

CheckpointSource = Literal["quantized", "base", "published"]
SOURCES: tuple[str, ...] = ("quantized", "base", "published")
MANIFEST_NAME = "checkpoint.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class CheckpointManifest:
    model: str
    method: str
    source: CheckpointSource
    # a local folder, or a hub id when the weights were not downloaded (published / base by id)
    path: str
    revision: str | None = None
    # sha256 over the weight files (see weights_digest in quantize.py); None when not local
    digest: str | None = None
    base_digest: str | None = None
    recipe: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    quantization_config: dict[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None
    compression_ratio: float | None = None
    seconds: float | None = None
    peak_memory_bytes: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # Where the base weights came from: "transformers" (a checkpoint folder or hub id) or "gguf"
    # (dequantized from a GGUF file whose llama.cpp quantization, e.g. Q4_1, is source_quant_type).
    source_format: str = "transformers"
    source_quant_type: str | None = None
    source_file: str | None = None
    source_sha256: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: {self.source!r} is not one of {', '.join(SOURCES)}")

    @property
    def identity(self) -> dict[str, str | None]:
        """What identifies the weights for a response's config_hash (so every response row's
        provenance says when its "native" model is a dequantized GGUF, and of which type)."""
        identity: dict[str, str | None] = (
            {"digest": self.digest} if self.digest is not None else {"path": self.path, "revision": self.revision}
        )
        if self.source_format != "transformers":
            identity.update(source_format=self.source_format, source_quant_type=self.source_quant_type)
        return identity

    def provenance(self) -> dict[str, str | None]:
        """The source format and GGUF quantization type, for materialization metadata."""
        return {"source_format": self.source_format, "source_quant_type": self.source_quant_type}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointManifest:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        return cls(**data)


def path_component(value: str, field_name: str) -> str:
    """`value` when it names one visible folder; partition keys become model-store folders, and
    `..`, `.` or a `/` would reach another model's checkpoints (or outside the store)."""
    if (
        not isinstance(value, str)
        or not value
        or value.startswith(".")
        or any(char in value for char in "/\\\0")
        or len(value.encode("utf-8")) > 255
    ):
        raise ValueError(
            f"{field_name}: {value!r} is not a safe folder name (empty, '.', '..', hidden, "
            "over 255 bytes, or holding '/', '\\' or NUL)"
        )
    return value


def manifest_path(store_root: str | Path, model: str, method: str) -> Path:
    return Path(store_root) / path_component(model, "model") / path_component(method, "method") / MANIFEST_NAME


def write_manifest_file(folder: str | Path, manifest: CheckpointManifest) -> Path:
    """Write `<folder>/checkpoint.json` atomically (temp file + rename): never half a manifest."""
    target = Path(folder) / MANIFEST_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return target


def write_manifest(store_root: str | Path, manifest: CheckpointManifest) -> Path:
    return write_manifest_file(manifest_path(store_root, manifest.model, manifest.method).parent, manifest)


def read_manifest(store_root: str | Path, model: str, method: str) -> CheckpointManifest:
    path = manifest_path(store_root, model, method)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no checkpoint manifest for model {model!r}, method {method!r}; "
            f"materialize the `checkpoint` asset for this partition first"
        )
    return read_manifest_file(path)


def read_manifest_file(path: str | Path) -> CheckpointManifest:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint manifest here")
    try:
        return CheckpointManifest.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error


def weight_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_digest(folder: str | Path) -> str:
    """sha256 over (relative name, content) of every weight file, in name order."""
    root = Path(folder)
    files = weight_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no weight files (*.safetensors, *.bin) in this folder")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        update_with_file(digest, path)
    return digest.hexdigest()


def replace_folder(staging: Path, target: Path) -> None:
    """Put a finished staging folder at `target`: the old folder (if any) is renamed aside first,
    so `target` is always either the old or the new folder, never a half of each."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def installed_versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed version of each package that is installed (for a build's provenance)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
