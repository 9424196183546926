"""Two runs of one (model, method) partition at once, against a real Delta table.

A backfill plus a manual run, or a retry while the first attempt is alive, run the same
partition concurrently: each key must end up in the table exactly once, and each run must report
the table as it is. A table left with duplicate keys (by older code) is repaired by the next run.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import polars as pl

from quantbias_assets import lake
from quantbias_assets.workers.resume import run_resumable

KEY = ("question_hash", "config_hash")
PARTITION = {"model": "tiny", "method": "none"}
QUESTIONS = 240
CHUNK_ROWS = 20


def wanted_rows(count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "idx": [f"BBQ/age/{i}" for i in range(count)],
            "question_hash": [f"q{i:04d}" for i in range(count)],
            "config_hash": ["c1"] * count,
        }
    )


def answer(chunk: pl.DataFrame, *, worker: str = "w", pause: float = 0.0) -> pl.DataFrame:
    """Output rows as the respond worker writes them (partition + key + a value per row)."""
    time.sleep(pause)  # a model would take this long; it lets the two runs' chunks interleave
    return chunk.with_columns(model=pl.lit("tiny"), method=pl.lit("none"), written_by=pl.lit(worker))


def _run_partition(uri: str, worker: str, start, results) -> None:
    start.wait()
    report = run_resumable(
        wanted_rows(QUESTIONS),
        uri=uri,
        partition=PARTITION,
        key=KEY,
        process_chunk=lambda chunk: answer(chunk, worker=worker, pause=0.05),
        chunk_rows=CHUNK_ROWS,
    )
    results.put((worker, report.row_counts()))


def duplicate_keys(table: pl.DataFrame) -> int:
    """Rows beyond the first of each key."""
    return table.height - table.select(KEY).n_unique()


def test_two_concurrent_runs_of_one_partition_write_each_key_once(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    runs = [context.Process(target=_run_partition, args=(uri, worker, start, results)) for worker in ("a", "b")]
    for run in runs:
        run.start()
    reports = dict(results.get(timeout=300) for _ in runs)
    for run in runs:
        run.join(timeout=60)
    assert [run.exitcode for run in runs] == [0, 0]

    table = lake.read(uri, filters=PARTITION)
    assert duplicate_keys(table) == 0, f"{duplicate_keys(table)} duplicate rows in {table.height}"
    assert table.height == QUESTIONS
    assert sorted(table["question_hash"].to_list()) == [f"q{i:04d}" for i in range(QUESTIONS)]
    # both runs report the table as it is, and together they inserted each key once
    assert [reports[w]["dagster/row_count"] for w in ("a", "b")] == [QUESTIONS, QUESTIONS]
    assert reports["a"]["new_rows"] + reports["b"]["new_rows"] == QUESTIONS
    written = table.group_by("written_by").len().sort("written_by")
    assert dict(written.rows()) == {w: reports[w]["new_rows"] for w in ("a", "b") if reports[w]["new_rows"]}


def test_next_run_removes_duplicate_keys_and_never_leaves_a_key_without_a_row(tmp_path: Path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "BBQ")
    first = answer(wanted_rows(6), worker="first")
    lake.append_chunk(first, uri)
    # duplicates as two blind appends left them: q0000..q0003 twice, q0000 three times
    lake.append_chunk(answer(wanted_rows(4), worker="second"), uri)
    lake.append_chunk(answer(wanted_rows(1), worker="third"), uri)
    # another partition's identical keys are not duplicates of this one's and stay as they are
    lake.append_chunk(first.with_columns(model=pl.lit("other")), uri)
    before = lake._open(uri, None).version()

    report = run_resumable(
        wanted_rows(8), uri=uri, partition=PARTITION, key=KEY, process_chunk=answer, chunk_rows=CHUNK_ROWS
    )

    table = lake.read(uri, filters=PARTITION).sort("question_hash")
    assert duplicate_keys(table) == 0, f"{duplicate_keys(table)} duplicate rows in {table.height}"
    counts = report.row_counts()
    assert (counts["dagster/row_count"], counts["new_rows"], counts["reused_rows"], counts["deduplicated_rows"]) == (
        8,
        2,
        6,
        5,
    )
    assert table["question_hash"].to_list() == [f"q{i:04d}" for i in range(8)]
    # one of each key's rows is kept (they answer the same question under the same config)
    writers = dict(table.select("question_hash", "written_by").rows())
    assert writers["q0000"] in {"first", "second", "third"}
    assert {writers[f"q{i:04d}"] for i in (1, 2, 3)} <= {"first", "second"}
    assert [writers[f"q{i:04d}"] for i in (4, 5, 6, 7)] == ["first", "first", "w", "w"]
    assert lake.read(uri, filters={"model": "other"}).height == 6
    # every table version a reader could have seen during the run holds each old key at least once
    after = lake._open(uri, None).version()
    for version in range(before, after + 1):
        seen = pl.read_delta(uri, version=version).filter(pl.col("model") == "tiny")
        assert seen["question_hash"].n_unique() >= 6, f"version {version}"
