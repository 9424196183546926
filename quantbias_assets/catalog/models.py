"""The model registry: the paper's 10 base models, their published quantized checkpoints,
and user entries from `$QUANTBIAS_HOME/models.yaml` (format in docs/models.md).

A model's nickname is its `model` partition key and a folder name in the model store, so it
may hold only `[a-z0-9._-]`, must start with a letter or digit (never `.`, `..` or a hidden
name) and has at most 100 characters.
A source is a hub id (`owner/name`), a local folder holding a transformers checkpoint, or a
local `.gguf` file (an absolute path; imported as a dequantized checkpoint by gguf_import.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quantbias_assets import settings
from quantbias_assets.catalog.methods import METHOD_SPECS
from quantbias_assets.gguf_import import is_gguf_source

# A single, visible path component: `.`, `..` and hidden names cannot start with a letter or digit.
NICKNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NICKNAME_MAX_LENGTH = 100
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# The account that holds the paper authors' own llmcompressor checkpoints (spec §6.1, `U`).
PAPER_HUB_USER = "stan-hua"
ENTRY_FIELDS = ("nickname", "source", "family", "size_b", "revision", "trust_remote_code", "published")


@dataclass(frozen=True)
class ModelEntry:
    nickname: str
    source: str  # hub id or local folder
    family: str | None = None
    size_b: float | None = None  # parameters, billions
    revision: str | None = None
    trust_remote_code: bool = False
    published: dict[str, str] = field(default_factory=dict)  # method -> hub id
    builtin: bool = False

    @property
    def is_local(self) -> bool:
        return is_local_source(self.source)

    def published_checkpoint(self, method: str) -> str | None:
        return self.published.get(method)

    def to_dict(self) -> dict[str, Any]:
        """The registry-file form (also what the quantize worker receives in its extras)."""
        return {name: getattr(self, name) for name in ENTRY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        return cls(**{name: data[name] for name in ENTRY_FIELDS if name in data})


def validate_nickname(nickname: str) -> str:
    """The nickname itself, or ValueError: it becomes a partition key and a model-store folder."""
    if (
        not isinstance(nickname, str)
        or not NICKNAME_PATTERN.fullmatch(nickname)  # fullmatch: `$` admits a trailing newline
        or len(nickname) > NICKNAME_MAX_LENGTH
    ):
        raise ValueError(
            f"nickname: {nickname!r} is not a valid model partition key; use only lower-case "
            "letters, digits, '.', '_' and '-', starting with a letter or digit (no '/', spaces, "
            f"'.' or '..'), at most {NICKNAME_MAX_LENGTH} characters"
        )
    return nickname


def is_valid_nickname(nickname: str) -> bool:
    try:
        validate_nickname(nickname)
    except ValueError:
        return False
    return True


def is_local_source(source: str) -> bool:
    """A source is local when it is an existing folder or written as a path (not owner/name)."""
    if Path(source).expanduser().is_dir() or is_gguf_source(source):
        return True
    return not HUB_ID_PATTERN.match(source)


def _published(model_name: str, gptq: str, awq: str) -> dict[str, str]:
    """The reference's llmcompressor checkpoints for a base plus its GPTQ / AWQ releases."""
    lc = f"{PAPER_HUB_USER}/{model_name}-LC"
    return {
        "rtn-w4a16": f"{lc}-RTN-W4A16",
        "rtn-w8a16": f"{lc}-RTN-W8A16",
        "sq-rtn-w4a16": f"{lc}-SmoothQuant-RTN-W4A16",
        "gptq-w4a16": gptq,
        "awq-w4a16": awq,
    }


def _qwen(nickname: str, hub_id: str, family: str, size_b: float) -> ModelEntry:
    name = hub_id.split("/")[1]
    published = _published(name, f"Qwen/{name}-GPTQ-Int4", f"Qwen/{name}-AWQ")
    return ModelEntry(nickname, hub_id, family, size_b, published=published, builtin=True)


def _own(nickname: str, hub_id: str, family: str, size_b: float, name: str | None = None) -> ModelEntry:
    """Bases whose GPTQ/AWQ checkpoints the authors made themselves (`name` = MODELS_RENAMED)."""
    name = name or hub_id.split("/")[1]
    published = _published(name, f"{PAPER_HUB_USER}/{name}-LC-GPTQ-W4A16", f"{PAPER_HUB_USER}/{name}-AWQ-W4A16")
    return ModelEntry(nickname, hub_id, family, size_b, published=published, builtin=True)


PAPER_MODELS: tuple[ModelEntry, ...] = (
    _qwen("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5", 0.5),
    _qwen("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "qwen2.5", 1.5),
    _qwen("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct", "qwen2.5", 3.0),
    _qwen("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "qwen2.5", 7.0),
    _qwen("qwen2.5-14b-instruct", "Qwen/Qwen2.5-14B-Instruct", "qwen2.5", 14.0),
    _qwen("qwen2-7b-instruct", "Qwen/Qwen2-7B-Instruct", "qwen2", 7.0),
    _own("llama3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", "llama3.2", 1.0),
    _own(
        "llama3.2-3b-instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
        "llama3.2",
        3.0,
        name="Meta-Llama-3.2-3B-Instruct",
    ),
    ModelEntry(
        "llama3.1-8b-instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "llama3.1",
        8.0,
        published={
            **_published("Llama-3.1-8B-Instruct", "", ""),
            "gptq-w4a16": "neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w4a16",
            "awq-w4a16": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        },
        builtin=True,
    ),
    _own("ministral-8b-instruct", "mistralai/Ministral-8B-Instruct-2410", "ministral", 8.0),
)


def _record_error(path: Path, idx: int, field_name: str, problem: str) -> ValueError:
    return ValueError(f"{path}: record {idx}: {field_name}: {problem}")


def _parse_entry(path: Path, idx: int, raw: Any) -> ModelEntry:
    if not isinstance(raw, dict):
        raise _record_error(path, idx, "<record>", "expected a mapping")
    unknown = sorted(set(raw) - set(ENTRY_FIELDS))
    if unknown:
        raise _record_error(path, idx, unknown[0], "unknown field")
    for required in ("nickname", "source"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise _record_error(path, idx, required, "missing or not a string")
    try:
        validate_nickname(raw["nickname"])
    except ValueError as error:
        raise _record_error(path, idx, "nickname", str(error).removeprefix("nickname: ")) from None
    if is_gguf_source(raw["source"]) and not Path(raw["source"]).is_absolute():
        raise _record_error(path, idx, "source", "a GGUF file must be given as an absolute path")
    published = raw.get("published") or {}
    if not isinstance(published, dict):
        raise _record_error(path, idx, "published", "expected a mapping method -> hub id")
    for method, hub_id in published.items():
        if method not in METHOD_SPECS or method == "none":
            raise _record_error(path, idx, f"published.{method}", "unknown quantization method")
        if not isinstance(hub_id, str) or not HUB_ID_PATTERN.match(hub_id):
            raise _record_error(path, idx, f"published.{method}", f"{hub_id!r} is not a hub id")
    if not isinstance(raw.get("trust_remote_code", False), bool):
        raise _record_error(path, idx, "trust_remote_code", "expected true or false")
    for optional_text in ("family", "revision"):
        if raw.get(optional_text) is not None and not isinstance(raw[optional_text], str):
            raise _record_error(path, idx, optional_text, "expected a string")
    size_b = raw.get("size_b")
    if size_b is not None and (isinstance(size_b, bool) or not isinstance(size_b, (int, float))):
        raise _record_error(path, idx, "size_b", "expected a number (billions of parameters)")
    return ModelEntry(
        nickname=raw["nickname"],
        source=raw["source"],
        family=raw.get("family"),
        size_b=float(size_b) if size_b is not None else None,
        revision=raw.get("revision"),
        trust_remote_code=raw.get("trust_remote_code", False),
        published=dict(published),
    )


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: PyYAML's own message spans several lines with a caret drawing."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def load_user_entries(path: Path | None = None) -> list[ModelEntry]:
    path = Path(path) if path is not None else settings.registry_file()
    if not path.is_file():
        return []
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    records = document.get("models", []) if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise ValueError(f"{path}: models: expected a list of model entries")
    return [_parse_entry(path, idx, raw) for idx, raw in enumerate(records)]


def load_registry(path: Path | None = None) -> dict[str, ModelEntry]:
    """Paper models first, then user entries; a user nickname may not shadow another one."""
    registry = {entry.nickname: entry for entry in PAPER_MODELS}
    registry_path = Path(path) if path is not None else settings.registry_file()
    for idx, entry in enumerate(load_user_entries(registry_path)):
        if entry.nickname in registry:
            raise _record_error(registry_path, idx, "nickname", f"{entry.nickname!r} is already registered")
        registry[entry.nickname] = entry
    return registry


def get_model(nickname: str, path: Path | None = None) -> ModelEntry:
    registry = load_registry(path)
    if nickname not in registry:
        raise KeyError(f"model: {nickname!r} is not in the registry; add it with `quantbias models add`")
    return registry[nickname]


def default_nickname(source: str) -> str:
    name = Path(source.rstrip("/"))
    return (name.stem if is_gguf_source(source) else name.name).lower()


def read_model_config(folder: Path) -> dict[str, Any] | None:
    """A model folder's config.json (None when absent); a broken one fails naming the file."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{config}: not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{config}: expected a JSON object, got {type(document).__name__}")
    return document


def _local_family(folder: Path) -> str | None:
    document = read_model_config(folder)
    if document is None:
        return None
    family = document.get("model_type")
    if family is not None and not isinstance(family, str):
        raise ValueError(f"{folder / 'config.json'}: model_type: expected a string, got {family!r}")
    return family


def add_model(
    source: str,
    nickname: str | None = None,
    *,
    family: str | None = None,
    size_b: float | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    published: dict[str, str] | None = None,
    path: Path | None = None,
) -> ModelEntry:
    """Validate a new entry and append it to the registry file (written atomically)."""
    registry_path = Path(path) if path is not None else settings.registry_file()
    nickname = validate_nickname(nickname if nickname is not None else default_nickname(source))
    folder = Path(source).expanduser()
    if is_gguf_source(source):
        from quantbias_assets.gguf_import import check_gguf_file

        info = check_gguf_file(folder)  # GGUFImportError (a ValueError) names the file
        source = info.path
        family = family or info.architecture
    elif folder.is_dir():
        source = str(folder.absolute())
        family = family or _local_family(folder)
    elif not HUB_ID_PATTERN.match(source):
        raise ValueError(f"source: {source!r} is neither an existing local folder nor a hub id (owner/name)")
    entry = ModelEntry(
        nickname=nickname,
        source=source,
        family=family,
        size_b=size_b,
        revision=revision,
        trust_remote_code=trust_remote_code,
        published=dict(published or {}),
    )
    existing = load_user_entries(registry_path)
    records = [e.to_dict() for e in existing] + [entry.to_dict()]
    # Re-parse the full new document so every rule (duplicates, published methods) applies.
    registry_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry_path.with_name(f".{registry_path.name}.tmp")
    tmp.write_text(yaml.safe_dump({"models": records}, sort_keys=False))
    try:
        load_registry(tmp)
    except ValueError as error:
        tmp.unlink()
        raise ValueError(str(error).replace(str(tmp), str(registry_path))) from None
    os.replace(tmp, registry_path)
    return entry
