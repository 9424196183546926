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

from collections.abc import Callable
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

from quantbias_assets import lake, tables
from quantbias_assets.contracts import JudgeRequest
from quantbias_assets.engines.base import Engine
from quantbias_assets.guard import (
    DEFAULT_GUARD_MODEL,
    VERDICT_KEY,
    VERDICT_SCHEMA,
    guard_config_hash,
    judge_chunk,
    judge_inputs,
    verdict_counts,
)
from quantbias_assets.workers.pipes_io import DatasetResult, keys_data_version, materialize_each_dataset
from quantbias_assets.workers.resume import ChunkProgress, run_resumable

Log = Callable[[str], None]
RESPONSE_COLUMNS = ("model", "method", "idx", "axis", "response", "turns_out", "response_hash", "created_at")


def guard_identity(model: str, revision: str | None) -> str:
    """Weights digest of a local folder (unless a revision names it), else `<hub id>@<revision>`."""
    if revision is None and Path(model).is_dir():
        from quantbias_assets.checkpoint_manifest import weights_digest

        return weights_digest(model)
    return f"{model}@{revision or 'main'}"


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
    questions = lake.read(target.uri(*tables.questions(dataset)), storage_options=options)
    responses = lake.read(
        target.uri(*tables.responses(dataset)),
        filters=target.partition,
        columns=list(RESPONSE_COLUMNS),
        storage_options=options,
    )
    inputs, errors = judge_inputs(
        questions, responses, dataset=dataset, judge_full_conversation=request.settings.judge_full_conversation
    )
    for error in errors:
        log_error(error)
    wanted = inputs.with_columns(guard_config_hash=pl.lit(config_hash))

    def progress(p: ChunkProgress) -> None:
        log_info(
            f"verdicts/{dataset}: chunk {p.chunk}/{p.chunks} committed: {p.done}/{p.pending} "
            f"pending rows done ({p.rows_failed} failed in this chunk)"
        )

    uri = target.uri(*tables.verdicts(dataset))
    report = run_resumable(
        wanted,
        uri=uri,
        partition=target.partition,
        key=VERDICT_KEY,
        process_chunk=lambda chunk: judge_chunk(
            chunk,
            engine,
            prompt_budget=request.settings.prompt_budget,
            settings=request.settings.generation,
            config_hash=config_hash,
            log_error=log_error,
        ),
        chunk_rows=request.settings.chunk_rows,
        storage_options=options,
        on_chunk=progress,
    )
    current = (
        lake.read(uri, filters=target.partition, storage_options=options)
        if lake.table_exists(uri, storage_options=options)
        else pl.DataFrame(schema=VERDICT_SCHEMA)  # nothing to judge and nothing judged before
    )
    seconds = report.seconds
    settings = request.settings
    metadata = {
        **report.row_counts(),
        "failed_rows": report.failed,
        "responses_without_question": len(errors),
        **verdict_counts(current),
        "rows_per_s": round(report.new / seconds, 3) if seconds > 0 else None,
        "seconds": round(seconds, 3),
        "guard_model": settings.guard_model,
        "judge_full_conversation": settings.judge_full_conversation,
        "guard_config_hash": config_hash,
        "engine": engine.name,
        "versions": {"raw_value": engine.versions(), "type": "json"},
    }
    return DatasetResult(metadata, keys_data_version(current.select(VERDICT_KEY)))


def main() -> None:
    from quantbias_assets import prompts
    from quantbias_assets.catalog.models import is_local_source
    from quantbias_assets.workers.lazy_engine import LazyEngine

    with open_dagster_pipes() as pipes:
        request = JudgeRequest.from_extras(pipes.extras)
        settings = request.settings
        # A hub id is downloaded by the engine (GPU pods cache it on their volume); a local
        # folder must exist.
        if is_local_source(settings.guard_model) and not Path(settings.guard_model).is_dir():
            raise FileNotFoundError(
                f"guard model: {settings.guard_model}: no such folder; give a local Llama Guard folder "
                f"(e.g. `huggingface-cli download {DEFAULT_GUARD_MODEL} --local-dir DIR`) or a hub id"
            )
        # loaded on first use: a partition with no new response never loads the guard
        engine = LazyEngine(settings.engine.backend, settings.guard_model, **settings.engine.load_kwargs())
        try:
            config = settings.guard_config(
                model_identity=guard_identity(settings.guard_model, settings.guard_revision),
                chat_template_hash=prompts.template_hash(engine.tokenizer),
            )
            config_hash = guard_config_hash(config)
            pipes.log.info(
                f"guard {settings.guard_model} opened with {engine.name} for "
                f"{request.target.model}/{request.target.method}; datasets: {', '.join(request.datasets)}"
            )

            def build(dataset: str) -> DatasetResult:
                return judge_dataset(
                    engine,
                    request,
                    dataset,
                    config_hash=config_hash,
                    log_info=pipes.log.info,
                    log_error=pipes.log.error,
                )

            materialize_each_dataset(pipes, tables.VERDICTS, request.datasets, build)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
