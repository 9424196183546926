"""Inference engines behind one protocol (base.Engine); backends are imported only when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from quantbias_assets.engines.base import (
    ChoiceScore,
    ChoiceSequence,
    Engine,
    Generation,
    GenerationSettings,
)

BACKENDS = ("hf", "vllm")

__all__ = ["BACKENDS", "ChoiceScore", "ChoiceSequence", "Engine", "Generation", "GenerationSettings", "load_engine"]


def load_engine(backend: Literal["hf", "vllm"], model_path: str | Path, **engine_config: Any) -> Engine:
    """Load a model with the chosen backend; engine_config goes to the engine's constructor."""
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"{model_path}: model folder not found")
    if backend == "hf":
        from quantbias_assets.engines.hf import HFEngine

        return HFEngine(model_path, **engine_config)
    if backend == "vllm":
        from quantbias_assets.engines.vllm import VLLMEngine

        return VLLMEngine(model_path, **engine_config)
    raise ValueError(f"engine backend: {backend!r} is not one of {', '.join(BACKENDS)}")
