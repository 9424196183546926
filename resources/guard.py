"""Guard settings for the judge worker: which Llama Guard, which engine, context, chunking."""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import Field

from quantbias_assets.guard import DEFAULT_GUARD_MODEL
from resources.inference import engine_kwargs


class GuardResource(dg.ConfigurableResource):
    """How the judge worker loads the guard model and judges responses.

    Settings that can change a verdict (model identity, backend, dtype, max_model_len,
    max_new_tokens, judge_full_conversation, the chat template) enter `guard_config_hash`;
    device, threads and chunk size change speed only.
    """

    model: str = Field(default=DEFAULT_GUARD_MODEL, description="guard model: a local folder or a hub id")
    revision: str | None = Field(
        default=None,
        description="hub revision; for a local folder, naming it here skips hashing its weights",
    )
    backend: Literal["hf", "vllm"] = Field(default="hf", description="transformers or vLLM")
    device: str = Field(default="cpu", description="hf: torch device, e.g. cpu, cuda")
    dtype: str = Field(default="bfloat16", description="float32, bfloat16 or float16 (Llama Guard 3 ships bfloat16)")
    torch_threads: int | None = Field(default=None, description="hf: torch.set_num_threads")
    max_model_len: int = Field(default=4096, description="guard context; longer conversations are cut and flagged")
    max_new_tokens: int = Field(default=100, description="tokens of the verdict (reference: 100)")
    judge_full_conversation: bool = Field(
        default=False,
        description="FMT10K: judge all 5 turns instead of only the last one (the reference)",
    )
    chunk_rows: int = Field(default=256, description="verdicts per Delta commit")
    vllm_gpu_memory_utilization: float = 0.85
    vllm_tensor_parallel_size: int = 1
    vllm_enforce_eager: bool = False

    def engine_config(self) -> dict[str, Any]:
        """Keyword arguments of `engines.load_engine` for the chosen backend."""
        return engine_kwargs(
            self.backend,
            dtype=self.dtype,
            device=self.device,
            torch_threads=self.torch_threads,
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            tensor_parallel_size=self.vllm_tensor_parallel_size,
            enforce_eager=self.vllm_enforce_eager,
        )

    def to_extras(self) -> dict[str, Any]:
        """The part of the judge worker's Pipes extras that this resource decides."""
        return {
            "guard_model": self.model,
            "guard_revision": self.revision,
            "backend": self.backend,
            "engine_config": self.engine_config(),
            "max_model_len": self.max_model_len,
            "max_new_tokens": self.max_new_tokens,
            "judge_full_conversation": self.judge_full_conversation,
            "chunk_rows": self.chunk_rows,
        }
