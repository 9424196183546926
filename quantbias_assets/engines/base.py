"""The Engine protocol shared by the transformers (hf) and vLLM engines, and its data classes.

Both engines receive the same `ChoiceSequence`s (built once by `prompts.build_choice_sequences`),
so they score exactly the same token ids; they differ only in how they compute log-probs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# Llama-3.2's chat template writes today's date (strftime_now) unless `date_string` is given, so
# the reference's prompts depend on the run date. We pin it (Llama-3.1's own fixed date) so a
# prompt, and hence every score, is reproducible; the respond worker's `template_date` setting
# puts the run date back (the reference behaviour).
PINNED_TEMPLATE_DATE = "26 Jul 2024"


@dataclass(frozen=True)
class ChoiceSequence:
    """Token ids of `prompt + sep + choice`; tokens score_start..end are the choice's scored tokens."""

    token_ids: tuple[int, ...]
    score_start: int
    n_chars: int
    n_bytes: int


@dataclass(frozen=True)
class ChoiceScore:
    """Raw quantities per choice; every probability view is derived from them (scoring.py)."""

    sum_logprob: float
    n_tokens: int
    n_chars: int
    n_bytes: int
    token_logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 1
    template_date: str = PINNED_TEMPLATE_DATE  # the date Llama-3.x templates write (prompts.py)


@dataclass(frozen=True)
class Generation:
    text: str
    n_new_tokens: int
    finish_reason: Literal["stop", "length"]


class Engine(Protocol):
    name: str
    tokenizer: Any

    def score(
        self, questions: Sequence[Sequence[ChoiceSequence]], *, return_token_logprobs: bool = False
    ) -> list[list[ChoiceScore]]:
        """One list of ChoiceScore per question, in the order of its choices."""
        ...

    def generate(
        self, conversations: Sequence[list[dict[str, str]]], settings: GenerationSettings
    ) -> list[Generation]:
        """One reply per conversation (chat messages; the chat template adds the generation prompt)."""
        ...

    def versions(self) -> dict[str, str]:
        """Library versions that can change the numbers (recorded with every response)."""
        ...

    def close(self) -> None: ...


def choice_score_from_logprobs(sequence: ChoiceSequence, token_logprobs: Sequence[float], keep: bool) -> ChoiceScore:
    """Build a ChoiceScore from the log-probs of the sequence's scored tokens (in order)."""
    values = tuple(float(v) for v in token_logprobs)
    if len(values) != len(sequence.token_ids) - sequence.score_start:
        raise ValueError(
            f"choice sequence: expected {len(sequence.token_ids) - sequence.score_start} token log-probs, got {len(values)}"
        )
    return ChoiceScore(
        sum_logprob=float(sum(values)),
        n_tokens=len(values),
        n_chars=sequence.n_chars,
        n_bytes=sequence.n_bytes,
        token_logprobs=values if keep else None,
    )
