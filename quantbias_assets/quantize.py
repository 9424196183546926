"""llmcompressor 0.14 recipes per method, calibration data, and checkpoint building.

Recipes follow the reference (spec §6.2): `QuantizationModifier(targets="Linear", ignore=["lm_head"])`
for RTN, `SmoothQuantModifier(smoothing_strength=0.8)` before it for SQ, `GPTQModifier` with
dampening 0.01, and AWQ as `AWQModifier` + an asymmetric W4A16 QuantizationModifier (AutoAWQ's
`zero_point: True`). Schemes are written out field by field instead of using compressed-tensors
presets, because preset contents moved between versions (0.19's W8A16 preset is grouped; the
paper's W8A16 is per-channel). Heavy imports (torch, llmcompressor) happen inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import resource
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantbias_assets.catalog.methods import QuantMethod, get_method
from quantbias_assets.catalog.models import is_local_source, read_model_config
from quantbias_assets.checkpoint_manifest import (
    MANIFEST_NAME,
    CheckpointManifest,
    installed_versions,
    read_manifest_file,
    replace_folder,
    weight_files,
    weights_digest,
    write_manifest_file,
)
from quantbias_assets.hashing import file_sha256

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

DEFAULT_GROUP_SIZE = 128
SMOOTHING_STRENGTH = 0.8
GPTQ_DAMPENING_FRAC = 0.01
# The reference's actorder=True meant GROUP ordering, which compressed-tensors 0.19 removed;
# "weight" (static) ordering is the closest that remains and keeps the same checkpoint format.
GPTQ_ACTORDER = "weight"
REFERENCE_CALIBRATION = "reference"
REFERENCE_CALIBRATION_DATASET = "neuralmagic/LLM_compression_calibration"
REFERENCE_CALIBRATION_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n{text}"
)
VERSIONED_PACKAGES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "datasets")


@dataclass(frozen=True)
class CalibrationSettings:
    """`source`: "reference" (the hub calibration set) or a local .txt (one sample per line) or
    .jsonl (a "text" field per line). The seed picks and orders the samples and is part of a
    checkpoint's identity."""

    source: str = REFERENCE_CALIBRATION
    num_samples: int = 512
    max_seq_length: int = 6144
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"calibration: num_samples: {self.num_samples} must be >= 1")
        if self.max_seq_length < 1:
            raise ValueError(f"calibration: max_seq_length: {self.max_seq_length} must be >= 1")

    def identity(self) -> dict[str, Any]:
        """What is recorded in the manifest: the settings plus a content hash of a local source."""
        record: dict[str, Any] = asdict(self)
        if self.source != REFERENCE_CALIBRATION:
            record["source_digest"] = _file_digest(Path(self.source))
        return record


def _file_digest(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration source file not found")
    return file_sha256(path)


# ---------------------------------------------------------------- schemes and recipes (pure)


def weight_args(method: QuantMethod, group_size: int = DEFAULT_GROUP_SIZE) -> dict[str, Any]:
    """compressed-tensors QuantizationArgs fields for the weights of a quantized method."""
    if not method.is_quantized:
        raise ValueError(f"method: {method.key!r} does not quantize")
    if method.weight_bits == 4:
        return {
            "num_bits": 4,
            "type": "int",
            "strategy": "group",
            "group_size": group_size,
            # AutoAWQ's zero_point=True: AWQ checkpoints are asymmetric
            "symmetric": method.algorithm != "awq",
            "dynamic": False,
        }
    return {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True, "dynamic": False}


def activation_args(method: QuantMethod) -> dict[str, Any] | None:
    if method.activation_bits == 16:
        return None
    return {"num_bits": 8, "type": "int", "strategy": "token", "symmetric": True, "dynamic": True}


def build_recipe(method_key: str, group_size: int = DEFAULT_GROUP_SIZE) -> list[Any]:
    """The llmcompressor modifiers for a method (empty for `none`)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    method = get_method(method_key)
    if not method.is_quantized:
        return []
    if group_size < 1:
        raise ValueError(f"group_size: {group_size} must be >= 1")
    activations = activation_args(method)
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(**weight_args(method, group_size)),
        input_activations=QuantizationArgs(**activations) if activations else None,
    )
    quantize = {"config_groups": {"group_0": scheme}, "ignore": ["lm_head"]}
    recipe: list[Any] = []
    if method.smoothquant:
        recipe.append(SmoothQuantModifier(smoothing_strength=SMOOTHING_STRENGTH))
    if method.algorithm == "gptq":
        recipe.append(GPTQModifier(**quantize, dampening_frac=GPTQ_DAMPENING_FRAC, actorder=GPTQ_ACTORDER))
    elif method.algorithm == "awq":
        recipe += [AWQModifier(), QuantizationModifier(**quantize)]
    else:
        recipe.append(QuantizationModifier(**quantize))
    return recipe


def recipe_yaml(recipe: Sequence[Any]) -> str:
    from llmcompressor.recipe import Recipe

    return Recipe.from_modifiers(list(recipe)).yaml()


# ---------------------------------------------------------------- calibration data


def select_calibration_texts(texts: Sequence[str], settings: CalibrationSettings, origin: str) -> list[str]:
    """Seeded shuffle, then the first `num_samples` (the reference's shuffle had no seed)."""
    usable = [text for text in texts if text.strip()]
    if len(usable) < settings.num_samples:
        raise ValueError(
            f"{origin}: calibration set has {len(usable)} samples, fewer than the "
            f"{settings.num_samples} requested (num_samples)"
        )
    order = list(range(len(usable)))
    random.Random(settings.seed).shuffle(order)
    return [usable[i] for i in order[: settings.num_samples]]


def read_local_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration source file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for idx, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}: record {idx}: text: missing or not JSON") from None
    return texts


def load_calibration_texts(settings: CalibrationSettings) -> list[str]:
    if settings.source != REFERENCE_CALIBRATION:
        path = Path(settings.source)
        return select_calibration_texts(read_local_texts(path), settings, str(path))
    from datasets import load_dataset

    try:
        rows = load_dataset(REFERENCE_CALIBRATION_DATASET, split="train")
    except Exception as error:  # offline, gated, renamed: all end here
        raise RuntimeError(
            f"calibration: cannot load {REFERENCE_CALIBRATION_DATASET} from the hub ({error}); "
            "set a local calibration source (a .txt or .jsonl file) instead"
        ) from error
    texts = select_calibration_texts(rows["text"], settings, REFERENCE_CALIBRATION_DATASET)
    return [REFERENCE_CALIBRATION_TEMPLATE.format(text=text) for text in texts]


def tokenize_calibration(texts: Sequence[str], tokenizer: Any, max_seq_length: int) -> Dataset:
    """A datasets.Dataset of token ids, which llmcompressor's oneshot takes as it is."""
    from datasets import Dataset

    encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_length, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})


# ---------------------------------------------------------------- the AWQ CPU fix


@contextlib.contextmanager
def awq_cpu_pin_memory_fix() -> Iterator[bool]:
    """llmcompressor 0.14's AWQ pins its activation cache with `Tensor.pin_memory()`, which
    raises "Cannot access accelerator device when none is available" on a CPU-only machine.
    Pinning only speeds host-to-device copies, so without an accelerator it is skipped; with
    one, nothing is patched. Yields whether the fix is active; restores the method on exit."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield False
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None  # type: ignore[method-assign]
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


# ---------------------------------------------------------------- building checkpoints


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(folder))


def check_base_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: base model folder does not exist")
    if not weight_files(folder):
        raise FileNotFoundError(f"{folder}: base model folder has no weight files (*.safetensors, *.bin)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: base model folder has no config.json")
    check_model_files(folder)


def check_model_files(folder: Path) -> None:
    """Read config.json and every safetensors header, so a broken file fails with its name
    (transformers' own errors for both do not say which file)."""
    read_model_config(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a safetensors file (name -> dtype, shape, data_offsets), without the data."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        header_bytes = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        try:
            header = json.loads(handle.read(header_bytes))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: header: not valid JSON ({error})") from None
    return {name: tensor for name, tensor in header.items() if name != "__metadata__"}


def linear_input_widths(folder: Path) -> set[int]:
    """The input widths (columns) of the 2-D weight matrices a Linear-targeting recipe quantizes
    (everything 2-D but the embeddings and lm_head, which the recipes leave alone)."""
    widths: set[int] = set()
    for weights in sorted(folder.glob("*.safetensors")):
        for name, tensor in read_safetensors_header(weights).items():
            shape = tensor.get("shape") or []
            if len(shape) == 2 and name.endswith(".weight") and "embed" not in name and "lm_head" not in name:
                widths.add(int(shape[1]))
    return widths


def fitting_group_size(widths: set[int], requested: int) -> int:
    """`requested` when it divides every input width, else the largest power of two below it that
    does: group quantization needs columns % group_size == 0 (SmolLM2's hidden size 576 is not a
    multiple of 128), and kernels such as Marlin take only powers of two."""
    if all(width % requested == 0 for width in widths):
        return requested
    size = 1 << (requested.bit_length() - 1)
    while size > 1 and any(width % size for width in widths):
        size //= 2
    return size


def check_safetensors(path: Path) -> None:
    """The file holds its whole header and exactly the bytes its tensors' data_offsets announce."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        header_bytes = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        if header_bytes is None or 8 + header_bytes > size:
            raise ValueError(f"{path}: header: truncated safetensors file ({size} bytes)")
        try:
            header = json.loads(handle.read(header_bytes))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: header: not valid JSON ({error})") from None
    try:
        end = max(
            (int(tensor["data_offsets"][1]) for name, tensor in header.items() if name != "__metadata__"),
            default=0,
        )
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path}: header: data_offsets: missing or malformed") from None
    expected = 8 + header_bytes + end
    if size != expected:
        problem = "truncated" if size < expected else "longer than its tensors"
        raise ValueError(f"{path}: data_offsets: {problem}: the tensors need {expected} bytes, the file has {size}")


def peak_memory_bytes() -> int:
    """GPU: peak allocated by torch on the device; CPU: the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def is_project_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a checkpoint manifest this project wrote (any version of it)."""
    try:
        document = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and {"model", "method", "source"} <= document.keys()


def check_replaceable(target: Path) -> None:
    """Refuse to replace anything but nothing, an empty folder, or a checkpoint written here:
    a wrong target (a typo in --out, a model's own folder) must never lose its files."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target}: exists and is not a checkpoint folder; refusing to replace it")
    if target.is_dir() and any(target.iterdir()) and not is_project_checkpoint(target):
        raise FileExistsError(
            f"{target}: folder exists without a {MANIFEST_NAME} written by quantbias; refusing to "
            "replace it (remove it yourself or choose another target)"
        )


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a temp folder next to `target`; on success it replaces `target` by renames, on
    failure it is removed. Readers see the old folder or the complete new one, never a part.
    Only an absent target, an empty folder or a checkpoint this project wrote is replaced."""
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        check_replaceable(target)  # again: something may have appeared while building
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(staging, target)


def quantize_into(
    base_dir: Path,
    method_key: str,
    out_dir: Path,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
    calibration: Dataset | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize `base_dir` with the method's recipe and save compressed-tensors into `out_dir`
    (which must be a staging folder). Returns the recipe text and the quantization_config."""
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    method = get_method(method_key)
    if method.needs_calibration and calibration is None:
        raise ValueError(f"calibration: method {method_key!r} needs calibration data")
    recipe = build_recipe(method_key, group_size)
    random.seed(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto", trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    data_args: dict[str, Any] = {}
    if method.needs_calibration:
        data_args = {
            "dataset": calibration,
            "num_calibration_samples": len(calibration),
            "max_seq_length": max(len(ids) for ids in calibration["input_ids"]),
            "shuffle_calibration_samples": False,  # already shuffled with the recorded seed
        }
    recipe_text = recipe_yaml(recipe)  # before oneshot, which mutates the modifiers
    fix = awq_cpu_pin_memory_fix() if method.algorithm == "awq" else contextlib.nullcontext(False)
    with fix:
        oneshot(model=model, recipe=recipe, **data_args)
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    return {"recipe": recipe_text, "quantization_config": config.get("quantization_config", {})}


@dataclass(frozen=True)
class BuildRequest:
    """Everything that decides a checkpoint: where from, how, and where to."""

    model: str
    method: str
    base_source: str  # local folder or hub id
    target: Path
    revision: str | None = None
    trust_remote_code: bool = False
    published: str | None = None  # hub id of a published checkpoint for this method
    group_size: int = DEFAULT_GROUP_SIZE
    calibration: CalibrationSettings = CalibrationSettings()
    # the manifest's source_* fields when the base was imported from another format (GGUF)
    base_provenance: dict[str, Any] = field(default_factory=dict)


def resolve_base_folder(request: BuildRequest) -> Path | None:
    """The local folder of the base weights; None when the base is only a hub id (not fetched)."""
    if is_local_source(request.base_source):
        return Path(request.base_source).expanduser().absolute()
    return None


def download_base(request: BuildRequest) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(request.base_source, revision=request.revision))
    except Exception as error:
        raise RuntimeError(f"model: cannot download {request.base_source!r} from the hub ({error})") from error


def _reusable(target: Path, recipe: str, base_digest: str, calibration: dict[str, Any]) -> CheckpointManifest | None:
    manifest_file = target / MANIFEST_NAME
    if not manifest_file.is_file():
        return None
    try:
        previous = read_manifest_file(manifest_file)
        unchanged = (
            previous.source == "quantized"
            and previous.recipe == recipe
            and previous.base_digest == base_digest
            and previous.calibration == calibration
            and previous.digest == weights_digest(target)
        )
    except (ValueError, FileNotFoundError):
        return None
    return previous if unchanged else None


def build_checkpoint(
    request: BuildRequest, calibration_texts: Sequence[str] | None = None
) -> tuple[CheckpointManifest, str]:
    """Make `request.target` hold the checkpoint and its manifest; returns (manifest, status)
    with status "quantized", "reused", "base" or "published". `calibration_texts` overrides the
    configured source (still sampled with its count and seed)."""
    method = get_method(request.method)
    common = {
        "model": request.model,
        "method": request.method,
        "trust_remote_code": request.trust_remote_code,
        "versions": installed_versions(VERSIONED_PACKAGES),
        **request.base_provenance,
    }
    base_folder = resolve_base_folder(request)
    if base_folder is not None:
        check_base_folder(base_folder)

    if not method.is_quantized or request.published:
        if request.published:
            manifest = CheckpointManifest(source="published", path=request.published, **common)
        elif base_folder is not None:
            digest = weights_digest(base_folder)
            manifest = CheckpointManifest(
                source="base",
                path=str(base_folder),
                digest=digest,
                base_digest=digest,
                size_bytes=folder_size(base_folder),
                compression_ratio=1.0,
                **common,
            )
        else:
            manifest = CheckpointManifest(source="base", path=request.base_source, revision=request.revision, **common)
        with staged_folder(request.target) as staging:
            write_manifest_file(staging, manifest)
        return manifest, manifest.source

    if base_folder is None:
        base_folder = download_base(request)
        check_base_folder(base_folder)
    group_size = request.group_size
    if get_method(request.method).weight_bits == 4:
        group_size = fitting_group_size(linear_input_widths(base_folder), request.group_size)
        if group_size != request.group_size:
            logger.warning(
                "%s: group_size %d does not divide every layer's input width; using %d (recorded in the recipe)",
                base_folder,
                request.group_size,
                group_size,
            )
    recipe = recipe_yaml(build_recipe(request.method, group_size))
    base_digest = weights_digest(base_folder)
    calibration_record: dict[str, Any] = {}
    if method.needs_calibration and calibration_texts is not None:
        texts_digest = hashlib.sha256("\0".join(calibration_texts).encode()).hexdigest()
        calibration_record = {**asdict(request.calibration), "source": "in-memory", "source_digest": texts_digest}
    elif method.needs_calibration:
        calibration_record = request.calibration.identity()
    previous = _reusable(request.target, recipe, base_digest, calibration_record)
    if previous is not None:
        return previous, "reused"

    dataset = None
    if method.needs_calibration:
        from transformers import AutoTokenizer

        texts = (
            select_calibration_texts(calibration_texts, request.calibration, "calibration texts")
            if calibration_texts is not None
            else load_calibration_texts(request.calibration)
        )
        tokenizer = AutoTokenizer.from_pretrained(base_folder, trust_remote_code=request.trust_remote_code)
        dataset = tokenize_calibration(texts, tokenizer, request.calibration.max_seq_length)

    started = time.perf_counter()
    with staged_folder(request.target) as staging:
        built = quantize_into(
            base_folder,
            request.method,
            staging,
            group_size=group_size,
            calibration=dataset,
            trust_remote_code=request.trust_remote_code,
            seed=request.calibration.seed,
        )
        seconds = time.perf_counter() - started
        manifest = CheckpointManifest(
            source="quantized",
            path=str(request.target.absolute()),
            digest=weights_digest(staging),
            base_digest=base_digest,
            recipe=built["recipe"],
            calibration=calibration_record,
            quantization_config=built["quantization_config"],
            size_bytes=folder_size(staging),
            compression_ratio=weights_size(base_folder) / weights_size(staging),
            seconds=round(seconds, 3),
            peak_memory_bytes=peak_memory_bytes(),
            **common,
        )
        write_manifest_file(staging, manifest)
    return manifest, "quantized"
