"""Inference settings for the respond worker: engine, numerics, generation, chunking, sampling."""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import Field

from quantbias_assets.engines.base import PINNED_TEMPLATE_DATE

# What the reference code actually ran (spec §4): seeded T=1 sampling for single-turn
# generation and T=0.7 for the FMT10K conversations, both with per-request seed 1.
REFERENCE_TEMPERATURE = 1.0
REFERENCE_FMT_TEMPERATURE = 0.7
REFERENCE_SEED = 1


def engine_kwargs(
    backend: str,
    *,
    dtype: str,
    device: str,
    torch_threads: int | None,
    max_model_len: int,
    gpu_memory_utilization: float,
    tensor_parallel_size: int,
    enforce_eager: bool,
    max_batch_tokens: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `engines.load_engine`: each backend takes only its own settings."""
    if backend == "vllm":
        return {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager,
        }
    config: dict[str, Any] = {"device": device, "dtype": dtype}
    if torch_threads is not None:
        config["torch_threads"] = torch_threads
    if max_batch_tokens is not None:
        config["max_batch_tokens"] = max_batch_tokens
    return config


class InferenceResource(dg.ConfigurableResource):
    """How the respond worker loads its engine and answers questions.

    Settings that change numbers (backend, dtype, double BOS, generation settings) enter the
    responses' `config_hash`; the rest (device, threads, batch size, chunk size) only change speed.
    """

    backend: Literal["hf", "vllm"] = Field(default="hf", description="transformers or vLLM")
    device: str = Field(default="cpu", description="hf: torch device, e.g. cpu, cuda, cuda:1")
    dtype: str = Field(default="float32", description="float32, bfloat16, float16 or auto")
    torch_threads: int | None = Field(default=None, description="hf: torch.set_num_threads; None = torch default")
    max_batch_tokens: int | None = Field(
        default=None, description="hf: tokens per forward batch; None = engine default"
    )

    vllm_max_model_len: int = 4096
    vllm_gpu_memory_utilization: float = 0.85
    vllm_tensor_parallel_size: int = 1
    vllm_enforce_eager: bool = False

    max_new_tokens: int = Field(default=512, description="single-turn open datasets")
    fmt_max_new_tokens_per_turn: int = Field(default=150, description="each of the 5 FMT10K turns")
    reference_sampling: bool = Field(
        default=False,
        description="reproduce the reference code: T=1 seed 1 (FMT10K: T=0.7) instead of greedy",
    )
    add_special_tokens_reference: bool = Field(
        default=False,
        description="tokenize templated prompts with special tokens (vLLM 0.8.3's double BOS)",
    )

    template_date: str | None = Field(
        default=PINNED_TEMPLATE_DATE,
        description="the date Llama-3.x chat templates write into the system header; "
        "None = the run's own date (the reference: its Llama-3.2 prompts depend on the day)",
    )

    max_context_tokens: int | None = Field(
        default=None,
        description="the most tokens one question may take (scored: prompt + choice; generated: prompt + "
        "max_new_tokens); a longer question fails alone. None = the model's context",
    )

    chunk_rows: int = Field(default=256, description="questions per Delta commit")
    sample_per_axis: int | None = Field(default=None, description="only the first N questions of each axis (demos)")

    def engine_config(self) -> dict[str, Any]:
        """Keyword arguments of `engines.load_engine` for the chosen backend."""
        return engine_kwargs(
            self.backend,
            dtype=self.dtype,
            device=self.device,
            torch_threads=self.torch_threads,
            max_batch_tokens=self.max_batch_tokens,
            max_model_len=self.vllm_max_model_len,
            gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            tensor_parallel_size=self.vllm_tensor_parallel_size,
            enforce_eager=self.vllm_enforce_eager,
        )

    def generation_config(self) -> dict[str, dict[str, Any]]:
        """GenerationSettings fields for single-turn datasets and for each FMT10K turn."""
        single_temperature = REFERENCE_TEMPERATURE if self.reference_sampling else 0.0
        fmt_temperature = REFERENCE_FMT_TEMPERATURE if self.reference_sampling else 0.0
        return {
            "single_turn": {
                "max_new_tokens": self.max_new_tokens,
                "temperature": single_temperature,
                "top_p": 1.0,
                "seed": REFERENCE_SEED,
            },
            "multi_turn": {
                "max_new_tokens": self.fmt_max_new_tokens_per_turn,
                "temperature": fmt_temperature,
                "top_p": 1.0,
                "seed": REFERENCE_SEED,
            },
        }

    def to_extras(self) -> dict[str, Any]:
        """The part of the respond worker's Pipes extras that this resource decides."""
        return {
            "backend": self.backend,
            "engine_config": self.engine_config(),
            "generation": self.generation_config(),
            "add_special_tokens_reference": self.add_special_tokens_reference,
            "template_date": self.template_date,
            "chunk_rows": self.chunk_rows,
            "sample_per_axis": self.sample_per_axis,
            "max_context_tokens": self.max_context_tokens,
        }
