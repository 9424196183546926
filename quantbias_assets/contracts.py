"""What the orchestrator asks a worker to do: one typed request per worker kind.

The assets build a request and send `to_extras()` over Dagster Pipes; the worker reads it back
with `from_extras()`, so the keys are written in one place. Which settings change a worker's
results is declared here, next to each type, and the config hashes derive from it: an engine's
speed-only fields (`EngineSettings.SPEED_ONLY`, as inspect_ai's cache key leaves out its
connection settings) and each request's `UNHASHED` fields never enter a hash; every other field
does (a test holds each type to that split).

No Dagster: workers import this in images that have only dagster-pipes and their engine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

from quantbias_assets import lake
from quantbias_assets.catalog.models import ModelEntry
from quantbias_assets.engines.base import PINNED_TEMPLATE_DATE, GenerationSettings
from quantbias_assets.guard import DEFAULT_GUARD_MODEL, GuardConfig
from quantbias_assets.hashing import json_sha256
from quantbias_assets.prompts import prompt_rule_version
from quantbias_assets.quantize import DEFAULT_GROUP_SIZE, CalibrationSettings


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

    def to_extras(self) -> dict[str, Any]:
        return {
            "lake_root": self.lake_root,
            "storage_options": dict(self.storage_options),
            "model": self.model,
            "method": self.method,
        }

    @property
    def partition(self) -> dict[str, str]:
        return {"model": self.model, "method": self.method}

    def uri(self, *key: str) -> str:
        return lake.table_uri(self.lake_root, *key)


def _described(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class EngineSettings:
    """How a worker loads its engine (engines.load_engine); the resources' `engine` config."""

    backend: Literal["hf", "vllm"] = _described("hf", "transformers or vLLM")
    dtype: str = _described("float32", "float32, bfloat16, float16 or auto")
    device: str = _described("cpu", "hf: torch device, e.g. cpu, cuda, cuda:1")
    torch_threads: int | None = _described(None, "hf: torch.set_num_threads; None = torch default")
    max_batch_tokens: int | None = _described(None, "hf: tokens per forward batch; None = engine default")
    prepacked_linears: bool | None = _described(
        None, "hf: float32 Linear layers through oneDNN on prepacked weights (CPU); None = when the copy fits memory"
    )
    max_model_len: int = _described(
        4096, "vLLM: the engine's context; the guard (either backend) cuts conversations to fit it"
    )
    gpu_memory_utilization: float = _described(0.85, "vLLM: share of GPU memory the engine may take")
    tensor_parallel_size: int = _described(1, "vLLM: GPUs one model is split over")
    enforce_eager: bool = _described(False, "vLLM: no CUDA graphs (faster start, slower decoding)")

    # They change how fast a model answers, not what it answers: at most the last bits of a score
    # (summation order). Under int8 activations (W8A8) such bits can move an answer, so the hf
    # engine scores those checkpoints one question per call (`questions_alone`, which is hashed;
    # docs/scoring.md). The context length only decides which inputs fit; the judge, which cuts
    # conversations to it, hashes it itself.
    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset(
        {
            "device",
            "torch_threads",
            "max_batch_tokens",
            "prepacked_linears",
            "max_model_len",
            "gpu_memory_utilization",
            "tensor_parallel_size",
            "enforce_eager",
        }
    )

    def hashed(self) -> dict[str, Any]:
        """The fields that enter a config hash."""
        return {name: value for name, value in asdict(self).items() if name not in self.SPEED_ONLY}

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `engines.load_engine`: each backend takes only its own settings."""
        if self.backend == "vllm":
            return {
                "dtype": self.dtype,
                "max_model_len": self.max_model_len,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "tensor_parallel_size": self.tensor_parallel_size,
                "enforce_eager": self.enforce_eager,
            }
        kwargs: dict[str, Any] = {"device": self.device, "dtype": self.dtype}
        if self.torch_threads is not None:
            kwargs["torch_threads"] = self.torch_threads
        if self.max_batch_tokens is not None:
            kwargs["max_batch_tokens"] = self.max_batch_tokens
        if self.prepacked_linears is not None:
            kwargs["prepacked_linears"] = self.prepacked_linears
        return kwargs

    def to_extras(self) -> dict[str, Any]:
        return {"backend": self.backend, "engine_config": self.load_kwargs()}

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> EngineSettings:
        kwargs = dict(extras.get("engine_config") or {})
        known = {item.name for item in fields(cls)} - {"backend"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ExtrasError(f"worker extras: engine_config: unknown field(s) {', '.join(unknown)}")
        return cls(backend=str(require(extras, "backend")), **kwargs)  # type: ignore[arg-type]


GENERATION_STYLES = ("single_turn", "multi_turn")
# What the reference code actually ran (spec §4): seeded T=1 sampling for single-turn
# generation and T=0.7 for the FMT10K conversations, both with per-request seed 1.
REFERENCE_TEMPERATURE = 1.0
REFERENCE_FMT_TEMPERATURE = 0.7
REFERENCE_SEED = 1


def generation_styles(
    *, max_new_tokens: int = 512, fmt_max_new_tokens_per_turn: int = 150, reference_sampling: bool = False
) -> dict[str, dict[str, Any]]:
    """GenerationSettings fields (but the template date) for single-turn datasets and for each
    FMT10K turn: greedy, or the reference's seeded sampling."""
    return {
        "single_turn": {
            "max_new_tokens": max_new_tokens,
            "temperature": REFERENCE_TEMPERATURE if reference_sampling else 0.0,
            "top_p": 1.0,
            "seed": REFERENCE_SEED,
        },
        "multi_turn": {
            "max_new_tokens": fmt_max_new_tokens_per_turn,
            "temperature": REFERENCE_FMT_TEMPERATURE if reference_sampling else 0.0,
            "top_p": 1.0,
            "seed": REFERENCE_SEED,
        },
    }


@dataclass(frozen=True)
class RespondSettings:
    """What the `inference` resource decides for the respond worker.

    `generation` holds, per style (single_turn; multi_turn: each FMT10K turn), the
    GenerationSettings fields but the template date, which is `template_date` for both.
    """

    engine: EngineSettings = field(default_factory=EngineSettings)
    generation: Mapping[str, Mapping[str, Any]] = field(default_factory=generation_styles)
    add_special_tokens_reference: bool = False
    template_date: str | None = PINNED_TEMPLATE_DATE  # None: the run's own date (with_run_date)
    chunk_rows: int = 256
    sample_per_axis: int | None = None
    max_context_tokens: int | None = None

    # Which questions are answered and how they are committed; never a number of an answer.
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"chunk_rows", "sample_per_axis", "max_context_tokens"})

    def __post_init__(self) -> None:
        for style in GENERATION_STYLES:
            GenerationSettings(**require(self.generation, style))  # fails early on unknown fields

    def with_run_date(self) -> RespondSettings:
        """No date means the run's own date, as the reference's Llama-3.2 prompts had: resolved
        once, by the worker, so it is explicit in every prompt and in the config hash."""
        return self if self.template_date else replace(self, template_date=time.strftime("%d %b %Y"))

    def generation_settings(self, multi_turn: bool) -> GenerationSettings:
        style = self.generation["multi_turn" if multi_turn else "single_turn"]
        return GenerationSettings(**style, template_date=self.resolved_date())

    def resolved_date(self) -> str:
        if self.template_date is None:
            raise ValueError("template_date: not resolved yet (RespondSettings.with_run_date)")
        return self.template_date

    def config_hash(
        self,
        *,
        checkpoint_identity: Mapping[str, Any],
        template_hash: str,
        generation: GenerationSettings | None,
        questions_alone: bool,
    ) -> str:
        """sha256 of everything that changes a response's numbers (docs/schemas.md).

        `generation` is None for closed (scored) datasets; the double-BOS switch changes scored
        prompts only (generation never adds special tokens).
        """
        return config_hash(
            checkpoint_identity=checkpoint_identity,
            engine=self.engine,
            template_hash=template_hash,
            prompt_rule_version=prompt_rule_version(self.resolved_date()),
            add_special_tokens=self.add_special_tokens_reference and generation is None,
            generation=generation,
            questions_alone=questions_alone,
        )

    def to_extras(self) -> dict[str, Any]:
        return {
            **self.engine.to_extras(),
            "generation": {style: dict(self.generation[style]) for style in GENERATION_STYLES},
            "add_special_tokens_reference": self.add_special_tokens_reference,
            "template_date": self.template_date,
            "chunk_rows": self.chunk_rows,
            "sample_per_axis": self.sample_per_axis,
            "max_context_tokens": self.max_context_tokens,
        }

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RespondSettings:
        generation = require(extras, "generation")
        return cls(
            engine=EngineSettings.from_extras(extras),
            generation={style: dict(require(generation, style)) for style in GENERATION_STYLES},
            add_special_tokens_reference=bool(extras.get("add_special_tokens_reference", False)),
            template_date=extras.get("template_date"),
            chunk_rows=int(require(extras, "chunk_rows")),
            sample_per_axis=extras.get("sample_per_axis"),
            max_context_tokens=extras.get("max_context_tokens"),
        )


def config_hash(
    *,
    checkpoint_identity: Mapping[str, Any],
    engine: EngineSettings,
    template_hash: str,
    prompt_rule_version: str,
    add_special_tokens: bool,
    generation: GenerationSettings | None,
    questions_alone: bool,
) -> str:
    """The responses' config_hash: the checkpoint, the engine's hashed fields, the chat template,
    the prompt rule and, for generated answers, the generation settings."""
    # questions_alone only when set: every hash from before it existed stays valid
    alone = {"questions_alone": True} if questions_alone else {}
    payload = {
        "checkpoint": dict(checkpoint_identity),
        "engine": {**engine.hashed(), "add_special_tokens": add_special_tokens, **alone},
        "chat_template": template_hash,
        "prompt_rule": prompt_rule_version,
        "generation": asdict(generation) if generation is not None else None,
    }
    return json_sha256(payload)


@dataclass(frozen=True)
class RespondRequest:
    """One respond worker run: the partition, its datasets, the checkpoint store, the settings."""

    target: PartitionTarget
    datasets: tuple[str, ...]
    model_store_root: str
    settings: RespondSettings

    def to_extras(self) -> dict[str, Any]:
        return {
            **self.target.to_extras(),
            "model_store_root": self.model_store_root,
            "datasets": list(self.datasets),
            **self.settings.to_extras(),
        }

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RespondRequest:
        """The worker's side: the template date is resolved here (RespondSettings.with_run_date)."""
        return cls(
            target=PartitionTarget.from_extras(extras),
            datasets=tuple(require(extras, "datasets")),
            model_store_root=str(require(extras, "model_store_root")),
            settings=RespondSettings.from_extras(extras).with_run_date(),
        )


@dataclass(frozen=True)
class JudgeSettings:
    """What the `guard` resource decides for the judge worker.

    The guard's context is `engine.max_model_len` with either backend: conversations are cut
    to it minus `max_new_tokens`, so it enters the hash.
    """

    engine: EngineSettings
    guard_model: str = DEFAULT_GUARD_MODEL
    guard_revision: str | None = None
    max_new_tokens: int = 100
    judge_full_conversation: bool = False
    chunk_rows: int = 256

    # How verdicts are committed, never what they say. The model and its revision enter the hash
    # as one identity (a weights digest or `<hub id>@<revision>`), never as a machine path.
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"chunk_rows", "guard_model", "guard_revision"})

    def __post_init__(self) -> None:
        if self.max_new_tokens >= self.engine.max_model_len:
            raise ValueError(
                f"guard: max_new_tokens: {self.max_new_tokens} leaves no room for the "
                f"conversation in max_model_len {self.engine.max_model_len}"
            )

    @property
    def prompt_budget(self) -> int:
        return self.engine.max_model_len - self.max_new_tokens

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=0.0, top_p=1.0, seed=1)

    def guard_config(self, *, model_identity: str, chat_template_hash: str) -> GuardConfig:
        """Everything that can change a verdict (guard.guard_config_hash keys the verdict rows)."""
        return GuardConfig(
            model_identity=model_identity,
            chat_template_hash=chat_template_hash,
            **self.engine.hashed(),
            max_new_tokens=self.max_new_tokens,
            max_model_len=self.engine.max_model_len,
            judge_full_conversation=self.judge_full_conversation,
        )

    def to_extras(self) -> dict[str, Any]:
        return {
            "guard_model": self.guard_model,
            "guard_revision": self.guard_revision,
            **self.engine.to_extras(),
            "max_model_len": self.engine.max_model_len,
            "max_new_tokens": self.max_new_tokens,
            "judge_full_conversation": self.judge_full_conversation,
            "chunk_rows": self.chunk_rows,
        }

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> JudgeSettings:
        # hf's engine_config has no context length: the guard's travels beside it
        engine = replace(EngineSettings.from_extras(extras), max_model_len=int(require(extras, "max_model_len")))
        return cls(
            engine=engine,
            guard_model=str(extras.get("guard_model") or DEFAULT_GUARD_MODEL),
            guard_revision=extras.get("guard_revision"),
            max_new_tokens=int(require(extras, "max_new_tokens")),
            judge_full_conversation=bool(extras.get("judge_full_conversation", False)),
            chunk_rows=int(require(extras, "chunk_rows")),
        )


@dataclass(frozen=True)
class JudgeRequest:
    """One judge worker run: the partition, its open datasets, the guard settings."""

    target: PartitionTarget
    datasets: tuple[str, ...]
    settings: JudgeSettings

    def to_extras(self) -> dict[str, Any]:
        return {**self.target.to_extras(), "datasets": list(self.datasets), **self.settings.to_extras()}

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> JudgeRequest:
        return cls(
            target=PartitionTarget.from_extras(extras),
            datasets=tuple(require(extras, "datasets")),
            settings=JudgeSettings.from_extras(extras),
        )


@dataclass(frozen=True)
class QuantizeRequest:
    """One quantize worker run: the registry entry, the method, the checkpoint store, the recipe
    settings (all recorded in the checkpoint manifest, which decides reuse)."""

    model_entry: ModelEntry
    method: str
    model_store_root: str
    group_size: int = DEFAULT_GROUP_SIZE
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    prefer_published: bool = True  # record a registered published checkpoint instead of quantizing

    def to_extras(self) -> dict[str, Any]:
        return {
            "model_entry": self.model_entry.to_dict(),
            "method": self.method,
            "model_store_root": self.model_store_root,
            "group_size": self.group_size,
            "calibration": asdict(self.calibration),
            "prefer_published": self.prefer_published,
        }

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> QuantizeRequest:
        return cls(
            model_entry=ModelEntry.from_dict(dict(require(extras, "model_entry"))),
            method=str(require(extras, "method")),
            model_store_root=str(require(extras, "model_store_root")),
            group_size=int(extras.get("group_size") or DEFAULT_GROUP_SIZE),
            calibration=CalibrationSettings(**dict(extras.get("calibration") or {})),
            prefer_published=bool(extras.get("prefer_published", True)),
        )
