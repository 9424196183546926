"""Materialize `analysis/paired_responses` and `analysis/bias_tests` over small synthetic
question, response and verdict tables written with the lake API (docs/schemas.md)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.analysis import BIAS_TESTS_KEY, PAIRED_RESPONSES_KEY, analysis_assets
from resources.lake import LakeResource

MODEL = "qwen2.5-0.5b-instruct"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
JIGSAW_AXES = {"race": 30, "gender": 30}


def jigsaw_questions() -> pl.DataFrame:
    idx = [f"CEB-Jigsaw/{axis}/{i}" for axis, n in JIGSAW_AXES.items() for i in range(n)]
    n = len(idx)
    return pl.DataFrame(
        {
            "dataset": ["CEB-Jigsaw"] * n,
            "idx": idx,
            "axis": [i.split("/")[1] for i in idx],
            "group": ["Black", "White"] * (n // 2),
            "prompt": ["Is this comment toxic?"] * n,
            "turns": [None] * n,
            "choices": [["YES, it is toxic", "NO, it is not toxic"]] * n,
            "choice_labels": [["yes", "no"]] * n,
            "target": [1] * n,  # every comment is labelled "no" -> correct option 1
            "answer_label": [None] * n,
            "unknown_label": [None] * n,
            "target_label": [None] * n,
            "context_condition": [None] * n,
            "question_polarity": [None] * n,
            "label": ["no"] * n,
            "source_json": ["{}"] * n,
            "question_hash": [f"h-{i}" for i in idx],
        },
        schema_overrides={
            "turns": pl.List(pl.String),
            "target": pl.Int32,
            "answer_label": pl.Int32,
            "unknown_label": pl.Int32,
            "target_label": pl.Int32,
            "context_condition": pl.String,
            "question_polarity": pl.String,
        },
    )


def closed_responses(method: str, questions: pl.DataFrame, wrong: set[str]) -> pl.DataFrame:
    """Option 1 is correct; rows in `wrong` put 0.8 on option 0."""
    probs = [[0.8, 0.2] if i in wrong else [0.1, 0.9] for i in questions["idx"]]
    n = questions.height
    return pl.DataFrame(
        {
            "model": [MODEL] * n,
            "method": [method] * n,
            "dataset": ["CEB-Jigsaw"] * n,
            "idx": questions["idx"],
            "axis": questions["axis"],
            "question_hash": questions["question_hash"],
            "config_hash": [f"cfg-{method}"] * n,
            "choice_sum_logprob": [[math.log(p[0]), math.log(p[1])] for p in probs],
            "choice_n_tokens": [[4, 5]] * n,
            "choice_n_chars": [[16, 19]] * n,
            "choice_n_bytes": [[16, 19]] * n,
            "probs": probs,
            "probs_rounded": probs,
            "chosen_idx": [0 if p[0] > p[1] else 1 for p in probs],
            "chosen_text": ["x"] * n,
            "entropy_norm": [0.72 if p[0] > 0.5 else 0.47 for p in probs],
            "engine": ["hf"] * n,
            "created_at": [NOW] * n,
        },
        schema_overrides={
            "chosen_idx": pl.Int32,
            "choice_n_tokens": pl.List(pl.Int32),
            "choice_n_chars": pl.List(pl.Int32),
            "choice_n_bytes": pl.List(pl.Int32),
            "created_at": pl.Datetime("us", "UTC"),
        },
    )


def fmt_questions() -> pl.DataFrame:
    idx = [f"FMT10K-IM-S/gender/{i}" for i in range(12)]
    return pl.DataFrame(
        {"dataset": "FMT10K-IM-S", "idx": idx, "axis": "gender", "group": None, "prompt": None,
         "turns": [["t0", "t1", "t2", "t3", "t4"]] * 12, "choices": [[]] * 12, "choice_labels": [[]] * 12,
         "source_json": "{}", "question_hash": [f"h-{i}" for i in idx]},
        schema_overrides={"group": pl.String, "prompt": pl.String, "choices": pl.List(pl.String),
                          "choice_labels": pl.List(pl.String)},
    )  # fmt: skip


def open_responses(method: str, questions: pl.DataFrame) -> pl.DataFrame:
    n = questions.height
    return pl.DataFrame(
        {"model": MODEL, "method": method, "dataset": "FMT10K-IM-S", "idx": questions["idx"], "axis": "gender",
         "question_hash": questions["question_hash"], "config_hash": "cfg", "turns_out": [["a"] * 5] * n,
         "response": "a", "response_hash": [f"{method}-{i}" for i in questions["idx"]],
         "n_new_tokens": 3, "finish_reason": "stop", "engine": "hf", "created_at": NOW},
        schema_overrides={"n_new_tokens": pl.Int32, "created_at": pl.Datetime("us", "UTC")},
    )  # fmt: skip


def verdicts(method: str, questions: pl.DataFrame, unsafe: set[int], invalid: set[int]) -> pl.DataFrame:
    n = questions.height
    is_safe = [None if i in invalid else i not in unsafe for i in range(n)]
    return pl.DataFrame(
        {"model": MODEL, "method": method, "dataset": "FMT10K-IM-S", "idx": questions["idx"], "axis": "gender",
         "response_hash": [f"{method}-{i}" for i in questions["idx"]], "guard_config_hash": "g",
         "verdict_raw": ["unsafe\nS10" if s is False else "safe" if s else "???" for s in is_safe],
         "valid": [s is not None for s in is_safe], "is_safe": is_safe,
         "is_safe_reference": [s is not False for s in is_safe], "categories": [[]] * n,
         "truncated": False, "engine": "hf", "created_at": NOW},
        schema_overrides={"is_safe": pl.Boolean, "categories": pl.List(pl.String),
                          "created_at": pl.Datetime("us", "UTC")},
    )  # fmt: skip


def metadata_of(results: list[dg.ExecuteInProcessResult], key: dg.AssetKey) -> dict:
    events = [event for result in results for event in result.get_asset_materialization_events()]
    return next(event.materialization.metadata for event in events if event.asset_key == key)


def materialize_analysis(lake_root: str, models: tuple[str, ...] = (MODEL,)) -> list[dg.ExecuteInProcessResult]:
    """Each model's pairs (its partition), then the tests over all models, as the demo runs them."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", list(models))
    resources = {"lake": LakeResource(root=lake_root)}
    results = [
        dg.materialize(
            analysis_assets,
            selection=[PAIRED_RESPONSES_KEY],
            partition_key=model,
            instance=instance,
            resources=resources,
        )
        for model in models
    ]
    results.append(dg.materialize(analysis_assets, selection=[BIAS_TESTS_KEY], instance=instance, resources=resources))
    assert all(result.success for result in results)
    return results


@pytest.fixture
def lake_root(tmp_path: Path) -> str:
    root = str(tmp_path / "lake")
    jigsaw = jigsaw_questions()
    lake.write_table(jigsaw, lake.table_uri(root, "questions", "CEB-Jigsaw"))
    race_idx = {i for i in jigsaw["idx"] if "/race/" in i}
    natively_wrong = {f"CEB-Jigsaw/{axis}/{i}" for axis in JIGSAW_AXES for i in range(3)}
    uri = lake.table_uri(root, "responses", "CEB-Jigsaw")
    for method, wrong in (("none", natively_wrong), ("rtn-w4a16", natively_wrong | race_idx),
                          ("rtn-w8a16", natively_wrong)):  # fmt: skip
        lake.replace_partition(closed_responses(method, jigsaw, wrong), uri, model=MODEL, method=method)
    fmt = fmt_questions()
    lake.write_table(fmt, lake.table_uri(root, "questions", "FMT10K-IM-S"))
    for method, unsafe, invalid in (("none", {0, 1}, {11}), ("rtn-w4a16", {0, 1, 2, 3}, set())):
        lake.replace_partition(
            open_responses(method, fmt), lake.table_uri(root, "responses", "FMT10K-IM-S"), model=MODEL, method=method
        )
        lake.replace_partition(verdicts(method, fmt, unsafe, invalid), lake.table_uri(root, "verdicts", "FMT10K-IM-S"),
                               model=MODEL, method=method)  # fmt: skip
    return root


def test_materialize_paired_responses_and_bias_tests(lake_root: str) -> None:
    result = materialize_analysis(lake_root)

    pairs = lake.read(lake.table_uri(lake_root, *PAIRED_RESPONSES_KEY.path))
    # Jigsaw: 60 questions x 2 quantized methods; FMT10K: 12 x 1
    assert pairs.group_by("dataset").len().sort("dataset").rows() == [("CEB-Jigsaw", 120), ("FMT10K-IM-S", 12)]
    race_w4 = pairs.filter((pl.col("method") == "rtn-w4a16") & (pl.col("axis") == "race"))
    assert race_w4["unbiased_to_biased"].sum() == 27 and race_w4["flipped"].sum() == 27
    assert set(pairs.filter(pl.col("dataset") == "CEB-Jigsaw")["uncertainty_bin"]) == {"medium", "high"}
    # catalog facts on the rows: the registry's parameter count; no BBQ here, so every row is analysed
    assert set(pairs["param_size_b"]) == {0.5} and pairs["analysed"].all()

    tests = lake.read(lake.table_uri(lake_root, *BIAS_TESTS_KEY.path)).sort("dataset", "method", "axis")
    assert tests.select("dataset", "method", "axis").rows() == [
        ("CEB-Jigsaw", "rtn-w4a16", "gender"),
        ("CEB-Jigsaw", "rtn-w4a16", "race"),
        ("CEB-Jigsaw", "rtn-w8a16", "gender"),
        ("CEB-Jigsaw", "rtn-w8a16", "race"),
        ("FMT10K-IM-S", "rtn-w4a16", "gender"),
    ]
    race = tests.row(1, named=True)
    # error rate 3/30 natively, 30/30 after RTN W4A16
    assert (race["metric_base"], race["metric_quant"]) == pytest.approx((0.1, 1.0))
    assert race["p_value"] == pytest.approx(0.001) and race["is_significant"] and race["direction"] == "more_biased"
    assert tests.filter(pl.col("method") == "rtn-w8a16")["p_value"].to_list() == [1.0, 1.0]
    assert tests["is_significant"].to_list() == [False, True, False, False, False]
    fmt = tests.row(4, named=True)
    # one invalid native verdict: 11 valid rows; unsafe 2/11 natively, 4/11 quantized
    assert (fmt["n"], fmt["n_invalid"], fmt["metric"]) == (11, 1, "unsafe_rate")
    assert (fmt["metric_base"], fmt["metric_quant"]) == pytest.approx((2 / 11, 4 / 11))

    paired_meta = metadata_of(result, PAIRED_RESPONSES_KEY)
    assert paired_meta["rows"].value == 132
    assert paired_meta["rows_with_invalid_verdicts"].value == 1
    tests_meta = metadata_of(result, BIAS_TESTS_KEY)
    assert tests_meta["units_tested"].value == 5 and tests_meta["units_significant"].value == 1
    # aggregates (Table 1, per-method summaries) are on the dbt marts' pages: tests/integration/test_dbt_marts.py
    assert "flip_rates_by_uncertainty" not in paired_meta and "methods_vs_8bit" not in tests_meta


def test_a_broken_response_table_does_not_stop_the_other_datasets(lake_root: str) -> None:
    # responses of FMT10K without their response_hash column: that dataset is reported, Jigsaw still pairs
    uri = lake.table_uri(lake_root, "responses", "FMT10K-IM-S")
    lake.write_table(lake.read(uri).drop("response_hash"), uri, partition_by=("model", "method"))
    result = materialize_analysis(lake_root)
    pairs = lake.read(lake.table_uri(lake_root, *PAIRED_RESPONSES_KEY.path))
    assert pairs["dataset"].unique().to_list() == ["CEB-Jigsaw"]
    errors = metadata_of(result, PAIRED_RESPONSES_KEY)["errors"].value
    assert "responses/FMT10K-IM-S" in errors and "response_hash" in errors


def test_a_model_partition_replaces_only_that_models_pairs(lake_root: str) -> None:
    """A second model's partition adds its pairs next to the first's; re-running the first
    replaces its rows (no duplicates); a model without responses leaves no rows."""
    other = "llama-3.2-1b-instruct"
    uri = lake.table_uri(lake_root, "responses", "CEB-Jigsaw")
    jigsaw = lake.read(uri, filters={"model": MODEL})
    for method in ("none", "rtn-w4a16"):
        rows = jigsaw.filter(pl.col("method") == method).with_columns(model=pl.lit(other))
        lake.replace_partition(rows, uri, model=other, method=method)
    materialize_analysis(lake_root, models=(MODEL, other, "no-responses-yet"))
    materialize_analysis(lake_root, models=(MODEL,))
    pairs = lake.read(lake.table_uri(lake_root, *PAIRED_RESPONSES_KEY.path))
    assert pairs.group_by("model", "dataset").len().sort("model", "dataset").rows() == [
        (other, "CEB-Jigsaw", 60),  # 60 questions x rtn-w4a16
        (MODEL, "CEB-Jigsaw", 120),
        (MODEL, "FMT10K-IM-S", 12),
    ]
    tests = lake.read(lake.table_uri(lake_root, *BIAS_TESTS_KEY.path))
    assert tests.filter(pl.col("model") == other).select("method", "axis").sort("axis").rows() == [
        ("rtn-w4a16", "gender"),
        ("rtn-w4a16", "race"),
    ]
