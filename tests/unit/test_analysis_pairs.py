"""Pairs (spec §3–4): join on idx, flips, U->B / B->U, bins, stale and bad rows, open verdicts."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import polars as pl
import pytest

from quantbias_assets.analysis.pairs import ANALYSED, analysis_rows, build_pairs

T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


def recognition_questions(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": ["CEB-Recognition-S"] * n,
            "idx": [f"R/{i}" for i in range(n)],
            "axis": ["age"] * n,
            "group": [None] * n,
            "choices": [["Yes", "No"]] * n,
            "choice_labels": [["stereotype", "anti-stereotype"]] * n,
            "target": [0] * n,
            "question_hash": [f"q{i}" for i in range(n)],
        },
        schema_overrides={"target": pl.Int32, "group": pl.String},
    )


def closed_responses(model: str, method: str, probs: list[list[float]], entropy: list[float],
                     *, idx: list[str] | None = None, created_at: datetime = T0) -> pl.DataFrame:  # fmt: skip
    n = len(probs)
    idx = idx or [f"R/{i}" for i in range(n)]
    return pl.DataFrame(
        {
            "model": [model] * n,
            "method": [method] * n,
            "dataset": ["CEB-Recognition-S"] * n,
            "idx": idx,
            "axis": ["age"] * n,
            "question_hash": [f"q{i.split('/')[1]}" for i in idx],
            "probs_rounded": probs,
            "chosen_idx": [max(range(len(p)), key=p.__getitem__) if p else 0 for p in probs],
            "entropy_norm": entropy,
            "created_at": [created_at] * n,
        },
        schema_overrides={"chosen_idx": pl.Int32, "probs_rounded": pl.List(pl.Float64)},
    )


def test_closed_pairs_flips_bins_and_entropy_delta() -> None:
    # target 0 (the correct answer); b = wrong answer chosen
    base = closed_responses("m", "none", [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3]],
                            [0.0, 1 / 3, 0.34, 2 / 3, 0.7, math.nan])  # fmt: skip
    quant = closed_responses("m", "rtn-w4a16", [[0.4, 0.6], [0.9, 0.1], [0.7, 0.3], [0.1, 0.9], [0.9, 0.1], [0.8, 0.2]],
                             [0.2, 0.3, 0.3, 0.5, 0.5, 0.1])  # fmt: skip
    result = build_pairs("CEB-Recognition-S", pl.concat([base, quant]), recognition_questions(6))
    frame = result.frame.sort("idx")
    assert result.errors == [] and result.n_stale == 0
    assert frame["dataset_group"].unique().to_list() == ["CEB-Recognition"]
    assert frame["chosen_base"].to_list() == [0, 1, 0, 1, 0, 0]
    assert frame["chosen_quant"].to_list() == [1, 0, 0, 1, 0, 0]
    assert frame["is_biased_base"].to_list() == [False, True, False, True, True, False]  # 0.5 tie: biased
    assert frame["is_biased_quant"].to_list() == [True, False, False, True, False, False]
    assert frame["flipped"].to_list() == [True, True, False, False, False, False]
    assert frame["bias_flipped"].to_list() == [True, True, False, False, True, False]
    assert frame["unbiased_to_biased"].to_list() == [True, False, False, False, False, False]
    assert frame["biased_to_unbiased"].to_list() == [False, True, False, False, True, False]
    assert frame["prob_biased_base"].to_list() == pytest.approx([0.1, 0.8, 0.4, 0.7, 0.5, 0.3])
    # low <= 1/3 < medium <= 2/3 < high; NaN -> high
    assert frame["uncertainty_bin"].to_list() == ["low", "low", "medium", "medium", "high", "high"]
    assert frame["entropy_delta"].to_list()[:5] == pytest.approx([0.2, 0.3 - 1 / 3, -0.04, 0.5 - 2 / 3, -0.2])
    assert frame["correct_idx"].to_list() == [0] * 6 and frame["n_choices"].to_list() == [2] * 6


def test_pairs_join_within_model_and_drop_stale_duplicate_and_bad_rows() -> None:
    questions = recognition_questions(3)
    rows = pl.concat(
        [
            closed_responses("a", "none", [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]], [0.1] * 3),
            closed_responses("a", "gptq-w4a16", [[0.9, 0.1], [0.2, 0.8]], [0.1] * 2),  # idx 2 unanswered
            # a newer answer to R/0 replaces the older one
            closed_responses("a", "gptq-w4a16", [[0.1, 0.9]], [0.1], idx=["R/0"], created_at=T1),
            # another model's native answers never pair with model a
            closed_responses("b", "none", [[0.1, 0.9]], [0.1]),
            # bad: three probabilities for two choices
            closed_responses("a", "gptq-w4a16", [[0.3, 0.3, 0.4]], [0.1], idx=["R/2"]),
        ]
    )
    stale = closed_responses("a", "gptq-w4a16", [[0.5, 0.5]], [0.1], idx=["R/1"]).with_columns(
        question_hash=pl.lit("an-older-version")
    )
    result = build_pairs("CEB-Recognition-S", pl.concat([rows, stale]), questions)
    assert result.n_stale == 1
    assert result.n_errors == 1
    assert result.errors == [
        "responses/CEB-Recognition-S: record R/2 (a/gptq-w4a16): probs_rounded: "
        "length does not match the question's choices"
    ]
    frame = result.frame.sort("idx")
    assert frame.select("model", "method", "idx").rows() == [("a", "gptq-w4a16", "R/0"), ("a", "gptq-w4a16", "R/1")]
    assert frame["chosen_quant"].to_list() == [1, 1]


def bbq_questions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "idx": ["B/0", "B/1"],
            "question_hash": ["b0", "b1"],
            "group": ["old", "old"],
            "context_condition": ["ambig", "disambig"],
            "choices": [["x", "y", "z"]] * 2,
            "choice_labels": [["target", "non-target", "unknown"]] * 2,
            "answer_label": [2, 0],
            "unknown_label": [2, 2],
        },
        schema_overrides={"answer_label": pl.Int32, "unknown_label": pl.Int32},
    )


def test_bbq_disambiguated_rows_are_kept_but_left_out_of_the_analysis() -> None:
    def responses(method: str, probs: list[list[float]]) -> pl.DataFrame:
        return pl.DataFrame(
            {"model": "m", "method": method, "idx": ["B/0", "B/1"], "axis": "age", "question_hash": ["b0", "b1"],
             "probs_rounded": probs, "chosen_idx": [p.index(max(p)) for p in probs], "entropy_norm": [0.9, 0.1]},
            schema_overrides={"chosen_idx": pl.Int32},
        )  # fmt: skip

    result = build_pairs(
        "BBQ",
        pl.concat(
            [
                responses("none", [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]),
                responses("rtn-w8a16", [[0.5, 0.3, 0.2], [0.8, 0.1, 0.1]]),
            ]
        ),
        bbq_questions(),
    )
    frame = result.frame.sort("idx")
    assert frame["context_condition"].to_list() == ["ambig", "disambig"]
    assert frame["chosen_label_quant"].to_list() == ["target", "target"]
    assert frame["correct_idx"].to_list() == [2, 0]
    assert frame["unbiased_to_biased"].to_list() == [True, False]
    assert frame["analysed"].to_list() == [True, False]
    assert analysis_rows(frame)["idx"].to_list() == ["B/0"]


def test_analysed_rows_bbq_ambiguous_only_and_a_missing_context_is_not_ambiguous() -> None:
    frame = pl.DataFrame(
        {
            "dataset": ["BBQ", "BBQ", "BBQ", "CEB-Jigsaw"],
            "context_condition": ["ambig", "disambig", None, None],
        }
    )
    # as the reference's BBQ loader: only `context_condition == "ambig"` is analysed
    assert frame.select(ANALYSED)["dataset"].to_list() == [True, False, False, True]
    assert analysis_rows(frame)["context_condition"].to_list() == ["ambig", None]


def test_parameter_sizes_come_from_the_given_registry_sizes() -> None:
    rows = pl.concat(
        [
            closed_responses(model, method, [[0.9, 0.1]], [0.1])
            for model in ("qwen2.5-0.5b-instruct", "my-4bit-model")
            for method in ("none", "rtn-w8a16")
        ]
    )
    sizes = {"qwen2.5-0.5b-instruct": 0.5, "my-4bit-model": None}
    frame = build_pairs("CEB-Recognition-S", rows, recognition_questions(1), param_sizes=sizes).frame.sort("model")
    # no size parsed from a name: a registry entry without `size_b` stays null
    assert frame.select("model", "param_size_b").rows() == [("my-4bit-model", None), ("qwen2.5-0.5b-instruct", 0.5)]
    assert (
        build_pairs("CEB-Recognition-S", rows, recognition_questions(1)).frame["param_size_b"].to_list() == [None] * 2
    )


def test_open_pairs_use_current_verdicts_and_keep_invalid_as_null() -> None:
    questions = pl.DataFrame({"idx": ["O/0", "O/1", "O/2", "O/3"], "question_hash": ["o0", "o1", "o2", "o3"],
                              "group": ["male", "female", "male", "female"]})  # fmt: skip

    def responses(method: str) -> pl.DataFrame:
        return pl.DataFrame({"model": "m", "method": method, "idx": ["O/0", "O/1", "O/2", "O/3"], "axis": "gender",
                             "question_hash": ["o0", "o1", "o2", "o3"],
                             "response_hash": [f"{method}-{i}" for i in range(4)]})  # fmt: skip

    verdicts = pl.DataFrame(
        {
            "model": "m",
            "method": ["none"] * 4 + ["awq-w4a16"] * 4,
            "idx": ["O/0", "O/1", "O/2", "O/3"] * 2,
            # the quantized O/3 verdict judged an older response: it does not count
            "response_hash": [f"none-{i}" for i in range(4)] + ["awq-w4a16-0", "awq-w4a16-1", "awq-w4a16-2", "old"],
            "is_safe": [True, False, None, True, False, True, True, False],
            "is_safe_reference": [True, False, True, True, False, True, True, False],
        }
    )
    result = build_pairs("FMT10K-IM-S", pl.concat([responses("none"), responses("awq-w4a16")]), questions, verdicts)
    frame = result.frame.sort("idx")
    assert frame["style"].unique().to_list() == ["open"] and frame["dataset_group"][0] == "FMT10K"
    assert frame["is_biased_base"].to_list() == [False, True, None, False]
    assert frame["is_biased_quant"].to_list() == [True, False, False, None]
    assert frame["flipped"].to_list() == [True, True, None, None]
    assert frame["unbiased_to_biased"].to_list() == [True, False, None, None]
    assert frame["biased_to_unbiased"].to_list() == [False, True, None, None]
    assert frame["uncertainty_bin"].to_list() == [None] * 4
    assert frame["group"].to_list() == ["male", "female", "male", "female"]
    reference = build_pairs("FMT10K-IM-S", pl.concat([responses("none"), responses("awq-w4a16")]), questions,
                            verdicts, verdict_column="is_safe_reference").frame.sort("idx")  # fmt: skip
    assert reference["is_biased_base"].to_list() == [False, True, False, False]


def test_a_question_without_its_target_drops_only_that_row() -> None:
    questions = recognition_questions(2).with_columns(target=pl.Series([0, None], dtype=pl.Int32))
    responses = pl.concat(
        [
            closed_responses("m", "none", [[0.9, 0.1], [0.9, 0.1]], [0.1, 0.1]),
            closed_responses("m", "rtn-w4a16", [[0.2, 0.8], [0.9, 0.1]], [0.1, 0.1]),
        ]
    )
    result = build_pairs("CEB-Recognition-S", responses, questions)
    assert result.frame["idx"].to_list() == ["R/0"]
    assert result.n_errors == 2  # the native and the quantized answer to R/1
    assert result.errors[0] == (
        "responses/CEB-Recognition-S: record R/1 (m/none): target: missing or out of range in the question table"
    )


def test_a_verdict_counts_by_response_hash_and_the_latest_of_several_wins() -> None:
    """docs/schemas.md: the judge keeps verdicts current by (conversation_hash, guard_config_hash);
    the analysis pairs a response with the verdict on its response_hash, the latest if several."""
    from datetime import datetime

    questions = pl.DataFrame({"idx": ["O/0"], "question_hash": ["o0"], "group": ["male"]})
    responses = pl.DataFrame({"model": "m", "method": ["none", "rtn-w4a16"], "idx": "O/0", "axis": "gender",
                              "question_hash": "o0", "response_hash": ["r-base", "r-quant"]})  # fmt: skip
    verdicts = pl.DataFrame(
        {
            "model": "m",
            "method": ["none", "none", "rtn-w4a16"],
            "idx": "O/0",
            "response_hash": ["r-base", "r-base", "r-quant"],
            # a second guard configuration judged the same base response later: its verdict counts
            "guard_config_hash": ["g-old", "g-new", "g-new"],
            "conversation_hash": ["c-base", "c-base", "c-quant"],
            "is_safe": [True, False, False],
            "is_safe_reference": [True, False, False],
            "created_at": [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 1)],
        }
    )
    frame = build_pairs("FMT10K-IM-S", responses, questions, verdicts).frame
    assert frame.select("is_biased_base", "is_biased_quant", "bias_flipped").rows() == [(True, True, False)]
    older_last = verdicts.with_columns(created_at=pl.Series([datetime(2026, 1, d, tzinfo=UTC) for d in (3, 2, 1)]))
    frame = build_pairs("FMT10K-IM-S", responses, questions, older_last).frame
    assert frame.select("is_biased_base", "is_biased_quant", "bias_flipped").rows() == [(False, True, True)]
