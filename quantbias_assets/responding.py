"""Answering questions: the respond worker's pure core.

Closed questions are scored by choice log-probs, open ones generated (FMT10K: 5 turns, the
model's own replies fed back, spec §4.2), into the rows of the responses schemas. Plain Python
and polars over an `Engine`; no Dagster, no lake. The respond worker
(`quantbias_assets.workers.respond`) and `quantbias score` are thin edges over it.

A question that cannot be answered (a choice that cannot be located in the tokens, a prompt
longer than the model's context or the `max_context_tokens` cap...) records nothing, is logged
as `questions/<dataset>: record <idx>: <field>: <problem>` and counted. The length is checked
before the engine sees the question, so an oversized one costs no forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from quantbias_assets.batches import with_fallback
from quantbias_assets.contracts import RespondSettings
from quantbias_assets.engines.base import (
    PINNED_TEMPLATE_DATE,
    ChoiceSequence,
    ContextTooLong,
    Engine,
    GenerationSettings,
    LengthGuard,
)
from quantbias_assets.hashing import json_sha256

RESPONSE_KEY = ("question_hash", "config_hash")
QUESTION_COLUMNS = ("idx", "axis", "prompt", "turns", "choices", "question_hash")
CREATED_AT = pl.Datetime("us", "UTC")

COMMON_SCHEMA = {
    "model": pl.String,
    "method": pl.String,
    "dataset": pl.String,
    "idx": pl.String,
    "axis": pl.String,
    "question_hash": pl.String,
    "config_hash": pl.String,
}
CLOSED_SCHEMA = pl.Schema(
    {
        **COMMON_SCHEMA,
        "choice_sum_logprob": pl.List(pl.Float64),
        "choice_n_tokens": pl.List(pl.Int32),
        "choice_n_chars": pl.List(pl.Int32),
        "choice_n_bytes": pl.List(pl.Int32),
        "probs": pl.List(pl.Float64),
        "probs_rounded": pl.List(pl.Float64),
        "chosen_idx": pl.Int32,
        "chosen_text": pl.String,
        "entropy_norm": pl.Float64,
        "engine": pl.String,
        "created_at": CREATED_AT,
    }
)
OPEN_SCHEMA = pl.Schema(
    {
        **COMMON_SCHEMA,
        "turns_out": pl.List(pl.String),
        "response": pl.String,
        "response_hash": pl.String,
        "n_new_tokens": pl.Int32,
        "finish_reason": pl.String,
        "engine": pl.String,
        "created_at": CREATED_AT,
    }
)

ErrorLog = Callable[[str], None]


def response_hash(user_turn: str, response: str) -> str:
    """sha256 of the canonical JSON `[judged user turn, response]` (no concatenation ambiguity)."""
    return json_sha256([user_turn, response])


def sample_per_axis(questions: pl.DataFrame, per_axis: int | None) -> pl.DataFrame:
    """The first `per_axis` questions of each axis in file order (idx ends in the row number)."""
    if per_axis is None:
        return questions
    if per_axis < 1:
        raise ValueError(f"sample_per_axis must be >= 1 or None, got {per_axis}")
    position = pl.col("idx").str.extract(r"(\d+)$").cast(pl.Int64)
    return (
        questions.with_columns(_position=position)
        .sort("axis", "_position", "idx", nulls_last=True)
        .group_by("axis", maintain_order=True)
        .head(per_axis)
        .drop("_position")
    )


def take_rows(frame: pl.DataFrame, positions: Sequence[int]) -> pl.DataFrame:
    return frame.select(pl.all().gather(pl.Series(list(positions), dtype=pl.UInt32)))


def question_error(dataset: str, idx: str, field_name: str, problem: object) -> str:
    return f"questions/{dataset}: record {idx}: {field_name}: {problem}"


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens of a rendered text as the engines tokenize it (the template writes its own specials)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class ChunkStats:
    """Work done, for questions/s and tokens/s (closed: tokens scored; open: tokens generated)."""

    questions: int = 0
    tokens: int = 0
    failed_questions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetRun:
    """What every chunk of one dataset shares."""

    model: str
    method: str
    dataset: str
    config_hash: str
    engine_name: str

    def identity_columns(self, chunk: pl.DataFrame) -> dict[str, pl.Series | str]:
        return {
            "model": self.model,
            "method": self.method,
            "dataset": self.dataset,
            "idx": chunk["idx"],
            "axis": chunk["axis"],
            "question_hash": chunk["question_hash"],
            "config_hash": self.config_hash,
        }


def closed_rows(
    chunk: pl.DataFrame,
    engine: Engine,
    run: DatasetRun,
    *,
    add_special_tokens: bool,
    stats: ChunkStats,
    log_error: ErrorLog,
    template_date: str = PINNED_TEMPLATE_DATE,
    guard: LengthGuard | None = None,
) -> pl.DataFrame:
    """Score every choice of every question of the chunk: the closed responses schema.

    `guard` defaults to the engine's context; a question longer than its limit is never scored.
    """
    from quantbias_assets import prompts, scoring

    guard = guard or LengthGuard.for_engine(engine)
    kept: list[int] = []
    sequences: list[list[ChoiceSequence]] = []
    for position, (idx, prompt, choices) in enumerate(chunk.select("idx", "prompt", "choices").iter_rows()):
        if prompt is None:
            problem: tuple[str, object] | None = ("prompt", "missing (a closed question needs a prompt)")
        elif not choices:
            problem = ("choices", "empty choice list")
        else:
            try:
                templated = prompts.render_user_prompt(engine.tokenizer, prompt, date_string=template_date)
                # the prompt alone first: one tokenization, not one per choice, for an absurd prompt
                too_long = guard and guard.text_problem(templated, token_counter(engine.tokenizer))
                if too_long:
                    problem = ("prompt", too_long)
                else:
                    question = prompts.build_choice_sequences(
                        engine.tokenizer, templated, choices, add_special_tokens=add_special_tokens
                    )
                    longest = max(len(s.token_ids) for s in question)
                    too_long = guard and guard.tokens_problem(longest, what="tokens with its longest choice")
                    problem = ("prompt", too_long) if too_long else None
                    if problem is None:
                        sequences.append(question)
                        kept.append(position)
            except prompts.ChoiceNotFound as error:
                problem = ("choices", error)
        if problem is not None:
            log_error(question_error(run.dataset, idx, *problem))
            stats.failed_questions.append(idx)

    def report_score_error(position: int, error: Exception) -> None:
        idx = chunk["idx"][kept[position]]
        log_error(question_error(run.dataset, idx, "choices", f"scoring failed: {error}"))
        stats.failed_questions.append(idx)

    scores = with_fallback(sequences, engine.score, report_score_error)
    answered = [(kept[i], s) for i, s in enumerate(scores) if s is not None]
    rows = take_rows(chunk, [position for position, _ in answered])
    choice_scores = [s for _, s in answered]
    stats.questions += rows.height
    stats.tokens += sum(len(seq.token_ids) for i, qs in enumerate(sequences) if scores[i] is not None for seq in qs)
    raw = pl.DataFrame(
        {
            **run.identity_columns(rows),
            "choices": rows["choices"],
            "choice_sum_logprob": [[c.sum_logprob for c in q] for q in choice_scores],
            "choice_n_tokens": [[c.n_tokens for c in q] for q in choice_scores],
            "choice_n_chars": [[c.n_chars for c in q] for q in choice_scores],
            "choice_n_bytes": [[c.n_bytes for c in q] for q in choice_scores],
            "engine": run.engine_name,
            "created_at": datetime.now(UTC),
        },
        # explicit types, so that a chunk where every question failed still makes a typed frame
        schema_overrides={**CLOSED_SCHEMA, "choices": pl.List(pl.String)},
    )
    frame = scoring.add_choice_views(raw)
    return frame.select(CLOSED_SCHEMA.names()).cast(dict(CLOSED_SCHEMA))


def generate_conversations(
    engine: Engine,
    turns: Sequence[Sequence[str]],
    settings: GenerationSettings,
    on_error: Callable[[int, Exception], None],
    guard: LengthGuard | None = None,
) -> list[list[Any] | None]:
    """Answer every turn of every conversation, feeding each reply back (spec §4.2).

    All conversations advance one turn per engine call; a conversation whose generation fails, or
    whose next prompt + max_new_tokens exceeds the guard's limit (ContextTooLong), is dropped from
    later turns and comes back as None.
    """
    from quantbias_assets.prompts import render_conversation

    count_tokens = token_counter(engine.tokenizer)
    histories: list[list[dict[str, str]]] = [[] for _ in turns]
    replies: list[list[Any] | None] = [[] for _ in turns]
    n_turns = max((len(t) for t in turns), default=0)
    for turn in range(n_turns):
        active = []
        for i, t in enumerate(turns):
            if replies[i] is None or turn >= len(t):
                continue
            if guard is not None:
                conversation = [*histories[i], {"role": "user", "content": t[turn]}]
                text = render_conversation(engine.tokenizer, conversation, date_string=settings.template_date)
                problem = guard.text_problem(text, count_tokens, new_tokens=settings.max_new_tokens)
                if problem is not None:
                    replies[i] = None
                    on_error(i, ContextTooLong(f"turn {turn + 1}: {problem}" if len(t) > 1 else problem))
                    continue
            active.append(i)
        conversations = [[*histories[i], {"role": "user", "content": turns[i][turn]}] for i in active]

        # `active` is bound now: the fallback calls this within this turn, never later
        def failed(position: int, error: Exception, active: list[int] = active) -> None:
            replies[active[position]] = None
            on_error(active[position], error)

        generations = with_fallback(conversations, lambda batch: engine.generate(batch, settings), failed)
        for position, conversation, generation in zip(active, conversations, generations):
            if generation is None:
                continue
            histories[position] = [*conversation, {"role": "assistant", "content": generation.text}]
            replies[position].append(generation)  # type: ignore[union-attr]
    return replies


def open_rows(
    chunk: pl.DataFrame,
    engine: Engine,
    run: DatasetRun,
    *,
    settings: GenerationSettings,
    multi_turn: bool,
    stats: ChunkStats,
    log_error: ErrorLog,
    guard: LengthGuard | None = None,
) -> pl.DataFrame:
    """Generate the reply (FMT10K: the 5 replies) of every question: the open responses schema.

    `guard` defaults to the engine's context; a conversation longer than its limit is never generated.
    """
    guard = guard or LengthGuard.for_engine(engine)
    field_name = "turns" if multi_turn else "prompt"
    turns = [
        (question_turns if multi_turn else [prompt])
        for question_turns, prompt in zip(chunk["turns"].to_list(), chunk["prompt"].to_list())
    ]

    def report(position: int, problem: str) -> None:
        idx = chunk["idx"][position]
        log_error(question_error(run.dataset, idx, field_name, problem))
        stats.failed_questions.append(idx)

    valid: list[int] = []
    for position, question_turns in enumerate(turns):
        if not question_turns or any(not isinstance(turn, str) for turn in question_turns):
            report(position, "missing")
        else:
            valid.append(position)
    replies = generate_conversations(
        engine,
        [turns[i] for i in valid],
        settings,
        lambda i, error: report(
            valid[i], str(error) if isinstance(error, ContextTooLong) else f"generation failed: {error}"
        ),
        guard,
    )
    answered = [(valid[i], r) for i, r in enumerate(replies) if r is not None]
    rows = take_rows(chunk, [position for position, _ in answered])
    stats.questions += rows.height
    stats.tokens += sum(g.n_new_tokens for _, r in answered for g in r)
    frame = pl.DataFrame(
        {
            **run.identity_columns(rows),
            "turns_out": [[g.text for g in r] for _, r in answered],
            "response": [r[-1].text for _, r in answered],
            "response_hash": [response_hash(turns[i][-1], r[-1].text) for i, r in answered],
            "n_new_tokens": [sum(g.n_new_tokens for g in r) for _, r in answered],
            "finish_reason": [r[-1].finish_reason for _, r in answered],
            "engine": run.engine_name,
            "created_at": datetime.now(UTC),
        },
        schema_overrides=dict(OPEN_SCHEMA),
    )
    return frame.select(OPEN_SCHEMA.names()).cast(dict(OPEN_SCHEMA))


def chunk_answerer(
    engine: Engine,
    run: DatasetRun,
    settings: RespondSettings,
    *,
    generation: GenerationSettings | None,
    multi_turn: bool,
    stats: ChunkStats,
    log_error: ErrorLog,
    guard: LengthGuard,
) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """What answers one chunk of a dataset: scoring (closed, `generation` None) or generation."""
    if generation is None:
        return lambda chunk: closed_rows(
            chunk,
            engine,
            run,
            add_special_tokens=settings.add_special_tokens_reference,
            stats=stats,
            log_error=log_error,
            template_date=settings.resolved_date(),
            guard=guard,
        )
    return lambda chunk: open_rows(
        chunk,
        engine,
        run,
        settings=generation,
        multi_turn=multi_turn,
        stats=stats,
        log_error=log_error,
        guard=guard,
    )
