"""The responses asset's edge in real Dagster runs (tiny model, real question files, tmp lake):
table metadata and blocking checks, the worker's own error as the failure, and a cancelled run
that records the rows it committed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from test_respond import commits, run_responses, write_checkpoint, write_questions

from quantbias_assets import lake
from quantbias_assets.assets.responses import response_key
from quantbias_assets.partitions import partition_key

pytestmark = pytest.mark.slow

CLOSED, OPEN = "CEB-Adult", "CEB-Continuation-S"


def checks_of(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (
            e.asset_check_evaluation_data.asset_key.path[-1],
            e.asset_check_evaluation_data.check_name,
        ): e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def test_responses_record_table_path_preview_and_pass_their_checks(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    write_questions(tmp_path / "lake", data_dir, [CLOSED, OPEN])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    result = run_responses(tmp_path, [CLOSED, OPEN])
    assert result.success
    assert checks_of(result) == {
        (CLOSED, "no_failed_questions"): True,
        (CLOSED, "one_row_per_key"): True,
        (CLOSED, "no_bad_rows"): True,
        (CLOSED, "probabilities_sum_to_one"): True,
        (OPEN, "no_failed_questions"): True,
        (OPEN, "one_row_per_key"): True,
        (OPEN, "no_bad_rows"): True,
    }
    metadata = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("responses")}
    closed_uri = lake.table_uri(str(tmp_path / "lake"), "responses", CLOSED)
    assert metadata[CLOSED]["dagster/uri"].value == closed_uri
    assert metadata[CLOSED]["partition_rows"].value == 2 * 2  # 2 axes x 2 sampled questions
    preview = metadata[CLOSED]["preview"].value.splitlines()
    assert preview[0] == "| idx | axis | probs_rounded | chosen_idx | chosen_text | entropy_norm |"
    assert len(preview) == 2 + 4
    assert metadata[OPEN]["preview"].value.startswith("| idx | axis | response | n_new_tokens | finish_reason |")

    # a row whose probabilities were tampered with: the worker reuses it (its key is current),
    # and the blocking check fails the step, naming the row
    table = lake.read(closed_uri)
    first = table["idx"][0]
    tampered = table.with_columns(
        probs=pl.when(pl.col("idx") == first).then(pl.lit([0.9, 0.9])).otherwise(pl.col("probs"))
    )
    lake.write_table(tampered, closed_uri)
    again = run_responses(tmp_path, [CLOSED])
    assert not again.success
    assert checks_of(again)[(CLOSED, "probabilities_sum_to_one")] is False
    assert checks_of(again)[(CLOSED, "one_row_per_key")] is True
    evaluation = next(
        e.asset_check_evaluation_data
        for e in again.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == "probabilities_sum_to_one"
    )
    assert evaluation.metadata["offending_idx_sample"].value == first
    failure = again.get_step_failure_events()[0].step_failure_data.error.message
    assert "blocking asset check" in failure and "probabilities_sum_to_one" in failure


def test_a_dead_worker_fails_the_step_with_its_own_error(tmp_path: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    write_questions(tmp_path / "lake", data_dir, [CLOSED])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    manifest_file = tmp_path / "models" / "tiny" / "none" / "checkpoint.json"
    manifest_file.write_text(manifest_file.read_text().replace(str(tiny_model_dir), str(tmp_path / "no-such-model")))
    result = run_responses(tmp_path, [CLOSED])
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data.description == (
        f"respond worker failed: FileNotFoundError: {tmp_path / 'no-such-model'}: model folder not found "
        f"(checkpoint manifest {tmp_path / 'models' / 'tiny' / 'none' / 'checkpoint.json'})"
    )


def test_a_cancelled_run_records_the_rows_it_committed(tmp_path: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    """Interrupt the run (what a cancel from the UI does to the step) once the worker committed a
    chunk: the partition's latest materialization then counts exactly the rows in the lake."""
    write_questions(tmp_path / "lake", data_dir, ["BBQ"])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    instance = dg.DagsterInstance.ephemeral()
    first = run_responses(tmp_path, ["BBQ"], instance=instance, sample_per_axis=2)
    assert first.success
    sampled = first.asset_materializations_for_node("responses")[0].metadata["dagster/row_count"].value
    assert sampled == 6 * 2  # the 6 BBQ axes in the data, 2 questions each

    table_dir = tmp_path / "lake" / "responses" / "BBQ"
    before = commits(table_dir)
    running = threading.Event()

    def interrupt_after_a_new_commit() -> None:
        running.wait()
        deadline = time.monotonic() + 300
        while commits(table_dir) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # in-process runs turn SIGINT into an interrupt of the step

    threading.Thread(target=interrupt_after_a_new_commit, daemon=True).start()
    running.set()
    stopped = run_responses(tmp_path, ["BBQ"], instance=instance, sample_per_axis=100, chunk_rows=8)
    assert not stopped.success

    in_lake = lake.read(
        lake.table_uri(str(tmp_path / "lake"), "responses", "BBQ"), filters={"model": "tiny", "method": "none"}
    )
    assert sampled < in_lake.height < 6 * 100, "the interrupt must land mid-run"
    latest = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=response_key("BBQ"), asset_partitions=[str(partition_key("tiny", "none"))]),
            limit=1,
        )
        .records[0]
        .event_log_entry.asset_materialization
    )
    assert latest.metadata["dagster/row_count"].value == in_lake.height
    assert latest.metadata["stopped"].value == "cancelled"
    assert latest.metadata["complete"].value is False
    assert in_lake.select("question_hash", "config_hash").n_unique() == in_lake.height
