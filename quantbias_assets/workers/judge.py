"""The judge worker: Llama Guard verdicts for one (model, method) partition, every open dataset.

Run by Dagster Pipes as `python -m quantbias_assets.workers.judge`. It loads the guard model ONCE,
then for each dataset reads the partition of `responses/<dataset>` and `questions/<dataset>`,
builds the conversation of every response (quantbias_assets.guard), judges only the
(conversation_hash, guard_config_hash) pairs missing from `verdicts/<dataset>` chunk by chunk
(one Delta commit each, workers.resume), deletes the partition's stale verdicts and reports one
materialization with the safe / unsafe / invalid counts.

A conversation longer than the guard's context is cut (guard.fit_conversation) and flagged
`truncated`; a row whose generation fails records nothing and is retried on the next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from dagster_pipes import open_dagster_pipes

from quantbias_assets import lake
from quantbias_assets.engines.base import Engine, GenerationSettings
from quantbias_assets.guard import (
    DEFAULT_GUARD_MODEL,
    VERDICT_KEY,
    VERDICT_SCHEMA,
    GuardConfig,
    fit_conversation,
    guard_config_hash,
    judge_inputs,
    verdict_counts,
    verdict_rows,
)
from quantbias_assets.hashing import canonical_json
from quantbias_assets.workers.pipes_io import (
    PartitionTarget,
    keys_data_version,
    materialize_each_dataset,
    require,
)
from quantbias_assets.workers.resume import ChunkProgress, ResumeReport, run_resumable

Log = Callable[[str], None]
RESPONSE_COLUMNS = ("model", "method", "idx", "axis", "response", "turns_out", "response_hash", "created_at")


@dataclass(frozen=True)
class JudgeRequest:
    """The worker's extras, checked (resources.guard.GuardResource.to_extras + the partition)."""

    target: PartitionTarget
    datasets: tuple[str, ...]
    guard_model: str
    guard_revision: str | None
    backend: str
    engine_config: dict[str, Any]
    max_model_len: int
    max_new_tokens: int
    judge_full_conversation: bool
    chunk_rows: int

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> JudgeRequest:
        request = cls(
            target=PartitionTarget.from_extras(extras),
            datasets=tuple(require(extras, "datasets")),
            guard_model=str(extras.get("guard_model") or DEFAULT_GUARD_MODEL),
            guard_revision=extras.get("guard_revision"),
            backend=str(require(extras, "backend")),
            engine_config=dict(extras.get("engine_config") or {}),
            max_model_len=int(require(extras, "max_model_len")),
            max_new_tokens=int(require(extras, "max_new_tokens")),
            judge_full_conversation=bool(extras.get("judge_full_conversation", False)),
            chunk_rows=int(require(extras, "chunk_rows")),
        )
        if request.max_new_tokens >= request.max_model_len:
            raise ValueError(
                f"worker extras: max_new_tokens: {request.max_new_tokens} leaves no room for the "
                f"conversation in max_model_len {request.max_model_len}"
            )
        return request

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=0.0, top_p=1.0, seed=1)


def guard_identity(model: str, revision: str | None) -> str:
    """Weights digest of a local folder (unless a revision names it), else `<hub id>@<revision>`."""
    if revision is None and Path(model).is_dir():
        from quantbias_assets.checkpoint_manifest import weights_digest

        return weights_digest(model)
    return f"{model}@{revision or 'main'}"


def judge_chunk(
    chunk: pl.DataFrame,
    engine: Engine,
    request: JudgeRequest,
    *,
    config_hash: str,
    log_error: Log,
) -> pl.DataFrame:
    """Judge a chunk of judge_inputs rows; identical (fitted) conversations are judged once."""
    budget = request.max_model_len - request.max_new_tokens
    fitted: list[str] = []
    truncated: list[bool] = []
    for conversation in chunk["conversation"].to_list():
        messages, was_cut = fit_conversation(engine.tokenizer, json.loads(conversation), budget)
        fitted.append(canonical_json(messages))
        truncated.append(was_cut)
    distinct = list(dict.fromkeys(fitted))
    answers = _generate(engine, distinct, request.settings)
    if answers is None:  # the batch failed: judge one by one so a bad row costs only itself
        answers = []
        for conversation in distinct:
            single = _generate(engine, [conversation], request.settings)
            answers.append(None if single is None else single[0])
    answer_of = dict(zip(distinct, answers, strict=True))
    kept = [position for position, text in enumerate(fitted) if answer_of[text] is not None]
    for position in sorted(set(range(chunk.height)) - set(kept)):
        log_error(
            f"responses/{chunk['dataset'][position]}: record {chunk['idx'][position]}: "
            f"response: the guard failed on this conversation"
        )
    rows = chunk[kept] if kept else chunk.clear()
    return verdict_rows(
        rows,
        [answer_of[fitted[position]] for position in kept],  # type: ignore[misc]
        [truncated[position] for position in kept],
        guard_config_hash=config_hash,
        engine=engine.name,
        created_at=datetime.now(UTC),
    )


def _generate(engine: Engine, conversations: list[str], settings: GenerationSettings) -> list[str] | None:
    try:
        generations = engine.generate([json.loads(c) for c in conversations], settings)
    except Exception:  # noqa: BLE001 - the caller retries per conversation and records failures
        return None
    return [generation.text for generation in generations]


@dataclass(frozen=True)
class DatasetResult:
    dataset: str
    report: ResumeReport
    counts: dict[str, int]
    missing_questions: int
    data_version: str

    def metadata(self, engine: Engine, request: JudgeRequest, config_hash: str) -> dict[str, Any]:
        seconds = self.report.seconds
        return {
            **self.report.row_counts(),
            "failed_rows": self.report.failed,
            "responses_without_question": self.missing_questions,
            **self.counts,
            "rows_per_s": round(self.report.new / seconds, 3) if seconds > 0 else None,
            "seconds": round(seconds, 3),
            "guard_model": request.guard_model,
            "judge_full_conversation": request.judge_full_conversation,
            "guard_config_hash": config_hash,
            "engine": engine.name,
            "versions": {"raw_value": engine.versions(), "type": "json"},
        }


def judge_dataset(
    engine: Engine,
    request: JudgeRequest,
    dataset: str,
    *,
    config_hash: str,
    log_info: Log,
    log_error: Log,
) -> DatasetResult:
    """Judge the pending responses of one dataset for the request's partition."""
    target = request.target
    options = target.storage_options
    questions = lake.read(target.uri("questions", dataset), storage_options=options)
    responses = lake.read(
        target.uri("responses", dataset),
        filters=target.partition,
        columns=list(RESPONSE_COLUMNS),
        storage_options=options,
    )
    inputs, errors = judge_inputs(
        questions, responses, dataset=dataset, judge_full_conversation=request.judge_full_conversation
    )
    for error in errors:
        log_error(error)
    wanted = inputs.with_columns(guard_config_hash=pl.lit(config_hash))

    def progress(p: ChunkProgress) -> None:
        log_info(
            f"verdicts/{dataset}: chunk {p.chunk}/{p.chunks} committed: {p.done}/{p.pending} "
            f"pending rows done ({p.rows_failed} failed in this chunk)"
        )

    uri = target.uri("verdicts", dataset)
    report = run_resumable(
        wanted,
        uri=uri,
        partition=target.partition,
        key=VERDICT_KEY,
        process_chunk=lambda chunk: judge_chunk(chunk, engine, request, config_hash=config_hash, log_error=log_error),
        chunk_rows=request.chunk_rows,
        storage_options=options,
        on_chunk=progress,
    )
    current = (
        lake.read(uri, filters=target.partition, storage_options=options)
        if lake.table_exists(uri, storage_options=options)
        else pl.DataFrame(schema=VERDICT_SCHEMA)  # nothing to judge and nothing judged before
    )
    return DatasetResult(
        dataset=dataset,
        report=report,
        counts=verdict_counts(current),
        missing_questions=len(errors),
        data_version=keys_data_version(current.select(VERDICT_KEY)),
    )


def main() -> None:
    from quantbias_assets import prompts
    from quantbias_assets.catalog.models import is_local_source
    from quantbias_assets.workers.lazy_engine import LazyEngine

    with open_dagster_pipes() as pipes:
        request = JudgeRequest.from_extras(pipes.extras)
        # A hub id is downloaded by the engine (GPU pods cache it on their volume); a local
        # folder must exist.
        if is_local_source(request.guard_model) and not Path(request.guard_model).is_dir():
            raise FileNotFoundError(
                f"guard model: {request.guard_model}: no such folder; give a local Llama Guard folder "
                f"(e.g. `huggingface-cli download {DEFAULT_GUARD_MODEL} --local-dir DIR`) or a hub id"
            )
        # loaded on first use: a partition with no new response never loads the guard
        engine = LazyEngine(request.backend, request.guard_model, **request.engine_config)
        try:
            config = GuardConfig(
                model_identity=guard_identity(request.guard_model, request.guard_revision),
                chat_template_hash=prompts.template_hash(engine.tokenizer),
                backend=request.backend,
                dtype=str(request.engine_config.get("dtype", "default")),
                max_new_tokens=request.max_new_tokens,
                max_model_len=request.max_model_len,
                judge_full_conversation=request.judge_full_conversation,
            )
            config_hash = guard_config_hash(config)
            pipes.log.info(
                f"guard {request.guard_model} opened with {engine.name} for "
                f"{request.target.model}/{request.target.method}; datasets: {', '.join(request.datasets)}"
            )

            def build(dataset: str) -> tuple[dict[str, Any], str]:
                result = judge_dataset(
                    engine,
                    request,
                    dataset,
                    config_hash=config_hash,
                    log_info=pipes.log.info,
                    log_error=pipes.log.error,
                )
                return result.metadata(engine, request, config_hash), result.data_version

            materialize_each_dataset(pipes, "verdicts", request.datasets, build)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
