"""Inference engines behind one protocol (base.Engine); backends are imported only when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from quantbias_assets.catalog.models import HUB_ID_PATTERN
from quantbias_assets.engines.base import (
    ChoiceScore,
    ChoiceSequence,
    Engine,
    Generation,
    GenerationSettings,
)

BACKENDS = ("hf", "vllm")


__all__ = [
    "BACKENDS",
    "ChoiceScore",
    "ChoiceSequence",
    "Engine",
    "Generation",
    "GenerationSettings",
    "load_engine",
    "scores_questions_alone",
]


def scores_questions_alone(backend: str, model_path: str | Path) -> bool:
    """`Engine.questions_alone` of this backend on this checkpoint, known without loading it: the
    hf engine scores one question per call when the checkpoint quantizes activations at run time."""
    if backend != "hf" or not Path(model_path).is_dir():
        return False
    from quantbias_assets.engines.hf import quantizes_activations_at_run_time

    return quantizes_activations_at_run_time(Path(model_path))


def load_engine(backend: Literal["hf", "vllm"], model_path: str | Path, **engine_config: Any) -> Engine:
    """Load a model with the chosen backend; engine_config goes to the engine's constructor."""
    # A published checkpoint or an unfetched base is a hub id: transformers and vLLM download it
    # into their cache (HF_HOME, a volume on the GPU pods).
    if not (Path(model_path).is_dir() or HUB_ID_PATTERN.match(str(model_path))):
        raise FileNotFoundError(f"{model_path}: model folder not found (and not a hub id owner/name)")
    if backend == "hf":
        from quantbias_assets.engines.hf import HFEngine

        return HFEngine(model_path, **engine_config)
    if backend == "vllm":
        from quantbias_assets.engines.vllm import VLLMEngine

        return VLLMEngine(model_path, **engine_config)
    raise ValueError(f"engine backend: {backend!r} is not one of {', '.join(BACKENDS)}")
