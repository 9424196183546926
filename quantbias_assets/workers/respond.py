"""The respond worker: one (model, method) partition, every selected dataset, resumable.

Run by Dagster Pipes as `python -m quantbias_assets.workers.respond` with a
`contracts.RespondRequest`. It loads the checkpoint ONCE, then for each dataset reads
`questions/<dataset>`, computes the run's `config_hash`, answers (quantbias_assets.responding)
only the (question_hash, config_hash) pairs missing from `responses/<dataset>`, appends them
chunk by chunk (one Delta commit each), deletes the partition's stale rows and reports one
materialization. A dataset that fails as a whole is reported as failed after the others have
been answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster_pipes import open_dagster_pipes

from quantbias_assets import lake, tables
from quantbias_assets.checkpoint_manifest import CheckpointManifest, manifest_path, read_manifest
from quantbias_assets.contracts import RespondRequest
from quantbias_assets.engines.base import Engine, LengthGuard
from quantbias_assets.responding import (
    QUESTION_COLUMNS,
    RESPONSE_KEY,
    ChunkStats,
    DatasetRun,
    ErrorLog,
    chunk_answerer,
    sample_per_axis,
)
from quantbias_assets.workers.pipes_io import DatasetResult, keys_data_version, materialize_each_dataset
from quantbias_assets.workers.resume import ChunkProgress, read_partition_keys, run_resumable


def respond_dataset(
    engine: Engine,
    checkpoint_identity: Mapping[str, Any],
    request: RespondRequest,
    dataset: str,
    *,
    log_info: Callable[[str], None],
    log_error: ErrorLog,
) -> DatasetResult:
    """Answer the pending questions of one dataset for the request's partition."""
    from quantbias_assets import prompts
    from quantbias_assets.catalog.datasets import get_dataset

    spec = get_dataset(dataset)
    target = request.target
    questions = lake.read(
        target.uri(*tables.questions(dataset)), columns=QUESTION_COLUMNS, storage_options=target.storage_options
    )
    settings = request.settings
    questions = sample_per_axis(questions, settings.sample_per_axis)
    generation = None if spec.style == "closed" else settings.generation_settings(spec.multi_turn)
    digest = settings.config_hash(
        checkpoint_identity=checkpoint_identity,
        template_hash=prompts.template_hash(engine.tokenizer),
        generation=generation,
        questions_alone=engine.questions_alone,
    )
    run = DatasetRun(target.model, target.method, dataset, digest, engine.name)
    stats = ChunkStats()
    process = chunk_answerer(
        engine,
        run,
        settings,
        generation=generation,
        multi_turn=spec.multi_turn,
        stats=stats,
        log_error=log_error,
        guard=LengthGuard.for_engine(engine, settings.max_context_tokens),
    )

    def progress(p: ChunkProgress) -> None:
        rate = p.done / p.seconds if p.seconds > 0 else 0.0
        log_info(
            f"responses/{dataset}: chunk {p.chunk}/{p.chunks} committed: "
            f"{p.done}/{p.pending} pending questions done ({p.rows_failed} failed in this chunk), "
            f"{rate:.2f} questions/s"
        )

    uri = target.uri(*tables.responses(dataset))
    report = run_resumable(
        questions.with_columns(config_hash=pl.lit(digest)),
        uri=uri,
        partition=target.partition,
        key=RESPONSE_KEY,
        process_chunk=process,
        chunk_rows=settings.chunk_rows,
        storage_options=target.storage_options,
        on_chunk=progress,
    )
    current = read_partition_keys(
        uri, partition=target.partition, key=RESPONSE_KEY, storage_options=target.storage_options
    )
    seconds = report.seconds
    metadata = {
        **report.row_counts(),
        "failed_questions": report.failed,
        "failed_idx_sample": ", ".join(stats.failed_questions[:20]),
        "questions_per_s": round(stats.questions / seconds, 3) if seconds > 0 else None,
        "tokens_per_s": round(stats.tokens / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3),
        "engine": engine.name,
        "versions": {"raw_value": engine.versions(), "type": "json"},
        "config_hash": digest,
    }
    return DatasetResult(metadata, keys_data_version(current))


def load_checkpoint_engine(request: RespondRequest) -> tuple[Engine, CheckpointManifest]:
    """Load the partition's checkpoint once; trust_remote_code only when its manifest says so."""
    from quantbias_assets.catalog.models import is_local_source
    from quantbias_assets.workers.lazy_engine import LazyEngine

    target = request.target
    manifest = read_manifest(request.model_store_root, target.model, target.method)
    if is_local_source(manifest.path) and not Path(manifest.path).is_dir():
        raise FileNotFoundError(
            f"{manifest.path}: model folder not found (checkpoint manifest "
            f"{manifest_path(request.model_store_root, target.model, target.method)})"
        )
    # loaded on first use: a partition with nothing pending never loads the model
    engine_settings = request.settings.engine
    engine = LazyEngine(
        engine_settings.backend,
        manifest.path,
        trust_remote_code=manifest.trust_remote_code,
        **engine_settings.load_kwargs(),
    )
    return engine, manifest


def main() -> None:
    with open_dagster_pipes() as pipes:
        request = RespondRequest.from_extras(pipes.extras)
        engine, manifest = load_checkpoint_engine(request)
        pipes.log.info(
            f"opened {manifest.path} ({request.target.model}/{request.target.method}) with {engine.name}; "
            f"datasets: {', '.join(request.datasets)}"
        )

        def build(dataset: str) -> DatasetResult:
            result = respond_dataset(
                engine, manifest.identity, request, dataset, log_info=pipes.log.info, log_error=pipes.log.error
            )
            # the source format and GGUF type also enter every row's config_hash (manifest.identity)
            return DatasetResult({**result.metadata, **manifest.provenance()}, result.data_version)

        try:
            materialize_each_dataset(pipes, tables.RESPONSES, request.datasets, build)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
