"""Resume planning and stale-row predicates (pure), and one round trip through a real Delta table."""

from __future__ import annotations

import polars as pl

from quantbias_assets import lake
from quantbias_assets.workers.resume import key_predicates, plan_resume, run_resumable

KEY = ("question_hash", "config_hash")
PARTITION = {"model": "tiny", "method": "none"}


def wanted_frame(hashes: list[str], config: str = "c1") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "idx": [f"D/a/{i}" for i in range(len(hashes))],
            "question_hash": hashes,
            "config_hash": [config] * len(hashes),
        }
    )


def test_plan_splits_pending_reused_and_stale() -> None:
    wanted = wanted_frame(["q1", "q2", "q3", "q4"])
    existing = pl.DataFrame(
        {
            "question_hash": ["q1", "q2", "q2", "q9", "q3"],
            "config_hash": ["c1", "c1", "c1", "c1", "c0"],
        }
    )
    plan = plan_resume(wanted, existing, KEY)
    assert plan.pending["question_hash"].to_list() == ["q3", "q4"]  # q3 exists only under the old config
    assert plan.pending["idx"].to_list() == ["D/a/2", "D/a/3"]  # wanted columns and order kept
    assert plan.reused == 2
    assert plan.stale.rows() == [("q3", "c0"), ("q9", "c1")]
    assert plan.duplicated.rows() == [("q2", "c1")]  # wanted and twice in the partition


def test_plan_with_empty_table_makes_everything_pending() -> None:
    wanted = wanted_frame(["q1", "q2"])
    plan = plan_resume(wanted, pl.DataFrame(schema={"question_hash": pl.String, "config_hash": pl.String}), KEY)
    assert plan.pending.height == 2 and plan.reused == 0 and plan.stale.height == 0


def test_key_predicates_group_by_config_and_split_long_lists() -> None:
    stale = pl.DataFrame({"question_hash": ["a", "b", "c", "it's"], "config_hash": ["c0", "c0", "c0", "c1"]})
    predicates = key_predicates(PARTITION, stale, KEY, max_values=2)
    assert predicates == [
        "model = 'tiny' AND method = 'none' AND config_hash = 'c0' AND question_hash IN ('a', 'b')",
        "model = 'tiny' AND method = 'none' AND config_hash = 'c0' AND question_hash IN ('c')",
        "model = 'tiny' AND method = 'none' AND config_hash = 'c1' AND question_hash IN ('it''s')",
    ]
    assert key_predicates(PARTITION, stale.clear(), KEY) == []


def fake_outputs(chunk: pl.DataFrame) -> pl.DataFrame:
    """Rows as a worker would write them; question q3 'fails' and yields nothing."""
    kept = chunk.filter(pl.col("question_hash") != "q3")
    return kept.with_columns(
        model=pl.lit("tiny"), method=pl.lit("none"), answer=pl.col("question_hash").str.to_uppercase()
    )


def test_run_resumable_commits_chunks_and_deletes_stale(tmp_path) -> None:
    uri = lake.table_uri(str(tmp_path), "responses", "D")
    progress = []
    first = run_resumable(
        wanted_frame(["q1", "q2", "q3", "q4", "q5"]),
        uri=uri,
        partition=PARTITION,
        key=KEY,
        process_chunk=fake_outputs,
        chunk_rows=2,
        on_chunk=progress.append,
    )
    assert (first.new, first.reused, first.failed, first.deleted_stale, first.rows) == (4, 0, 1, 0, 4)
    assert [(p.chunk, p.chunks, p.rows_written, p.rows_failed, p.done) for p in progress] == [
        (1, 3, 2, 0, 2),
        (2, 3, 1, 1, 4),
        (3, 3, 1, 0, 5),
    ]
    assert len(list((tmp_path / "responses" / "D" / "_delta_log").glob("*.json"))) == 3  # one commit per chunk

    # another partition of the same table must survive this partition's stale deletion
    lake.append_chunk(
        pl.DataFrame(
            {
                "idx": ["x"],
                "question_hash": ["q1"],
                "config_hash": ["c0"],
                "model": ["other"],
                "method": ["none"],
                "answer": ["Q1"],
            }
        ),
        uri,
    )
    second = run_resumable(
        wanted_frame(["q1", "q2", "q6"]),
        uri=uri,
        partition=PARTITION,
        key=KEY,
        process_chunk=fake_outputs,
        chunk_rows=2,
    )
    assert (second.new, second.reused, second.failed, second.deleted_stale, second.rows) == (1, 2, 0, 2, 3)
    table = lake.read(uri).sort("model", "question_hash")
    assert table.select("model", "question_hash", "config_hash").rows() == [
        ("other", "q1", "c0"),
        ("tiny", "q1", "c1"),
        ("tiny", "q2", "c1"),
        ("tiny", "q6", "c1"),
    ]
