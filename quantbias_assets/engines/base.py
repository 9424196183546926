"""The Engine protocol shared by the transformers (hf) and vLLM engines, and its data classes.

Both engines receive the same `ChoiceSequence`s (built once by `prompts.build_choice_sequences`),
so they score exactly the same token ids; they differ only in how they compute log-probs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    # True when each question is scored in a call of its own, so that its scores do not depend on
    # the other questions of a call (it then enters the responses' config_hash)
    questions_alone: bool

    def score(
        self, questions: Sequence[Sequence[ChoiceSequence]], *, return_token_logprobs: bool = False
    ) -> list[list[ChoiceScore]]:
        """One list of ChoiceScore per question, in the order of its choices."""
        ...

    def generate(self, conversations: Sequence[list[dict[str, str]]], settings: GenerationSettings) -> list[Generation]:
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
            f"choice sequence: expected {len(sequence.token_ids) - sequence.score_start} token log-probs, "
            f"got {len(values)}"
        )
    return ChoiceScore(
        sum_logprob=float(sum(values)),
        n_tokens=len(values),
        n_chars=sequence.n_chars,
        n_bytes=sequence.n_bytes,
        token_logprobs=values if keep else None,
    )


# ---------------------------------------------------------------- length guard

# transformers' model_max_length when a tokenizer names no limit is int(1e30); anything this large names none.
NO_LENGTH_NAMED = 10**9


class ContextTooLong(ValueError):
    """A question's tokens (plus its generation budget) do not fit the model's context or the cap."""


def model_context(engine: Any) -> int | None:
    """The most tokens one sequence may have: vLLM's max_model_len, else the model config's
    max_position_embeddings, else the tokenizer's model_max_length when it names one."""
    max_model_len = getattr(engine, "max_model_len", None)
    if max_model_len:
        return int(max_model_len)
    config = getattr(getattr(engine, "model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and 0 < value < NO_LENGTH_NAMED:
            return value
    named = getattr(engine.tokenizer, "model_max_length", None)
    return int(named) if isinstance(named, int) and 0 < named < NO_LENGTH_NAMED else None


def max_token_chars(tokenizer: Any) -> int | None:
    """An upper bound on the characters one token covers: its longest vocabulary string.

    Byte-level BPE and SentencePiece vocabulary strings are at least as long as the text a token
    covers (one symbol per byte, "▁" for a space), so n_chars / this is a lower bound on n_tokens.
    """
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return None
    return max((len(token) for token in vocab), default=0) or None


@dataclass(frozen=True)
class LengthGuard:
    """Checks a question's length before any engine work, so one oversized question fails alone.

    `limit` is the model's context, or the configured cap when that is smaller. A text is first
    judged by its character count (tokenizing a 5 MB string takes seconds), then by its tokens.
    """

    limit: int
    limit_name: str
    chars_per_token: int | None = None

    @classmethod
    def for_engine(cls, engine: Any, cap: int | None = None) -> LengthGuard | None:
        """None when neither the model nor the settings name a limit."""
        if cap is not None and cap < 1:
            raise ValueError(f"max_context_tokens must be >= 1 or None, got {cap}")
        context = model_context(engine)
        if context is None and cap is None:
            return None
        chars = max_token_chars(engine.tokenizer)
        if cap is not None and (context is None or cap < context):
            return cls(cap, f"the max_context_tokens cap of {cap}", chars)
        return cls(context, f"the model's context of {context}", chars)  # type: ignore[arg-type]

    def _exceeds(self, amount: str, new_tokens: int) -> str:
        budget = f" + max_new_tokens {new_tokens}" if new_tokens else ""
        return f"{amount}{budget} exceed {self.limit_name}"

    def characters_problem(self, n_chars: int, *, new_tokens: int = 0) -> str | None:
        """A problem when n_chars alone proves the text cannot fit; None when it may fit."""
        if not self.chars_per_token or n_chars <= (self.limit - new_tokens) * self.chars_per_token:
            return None
        at_least = -(-n_chars // self.chars_per_token)
        return self._exceeds(
            f"at least {at_least} tokens ({n_chars} characters, at most {self.chars_per_token} per token)", new_tokens
        )

    def tokens_problem(self, n_tokens: int, *, new_tokens: int = 0, what: str = "tokens") -> str | None:
        return self._exceeds(f"{n_tokens} {what}", new_tokens) if n_tokens + new_tokens > self.limit else None

    def text_problem(self, text: str, count_tokens: Callable[[str], int], *, new_tokens: int = 0) -> str | None:
        """Characters first; tokenize only a text that might not fit (at most one token per byte for
        byte-level and byte-fallback tokenizers; doubled to allow for a normalizer's markers)."""
        problem = self.characters_problem(len(text), new_tokens=new_tokens)
        if problem is not None or 2 * len(text.encode("utf-8")) + new_tokens <= self.limit:
            return problem
        return self.tokens_problem(count_tokens(text), new_tokens=new_tokens)
