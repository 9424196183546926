"""Choice probabilities, chosen answer and entropy against hand-computed values."""

from __future__ import annotations

import math

import polars as pl
import pytest

from quantbias_assets.scoring import (
    add_choice_views,
    choice_probabilities,
    chosen_index,
    normalized_entropy,
    uncertainty_bin,
    uncertainty_bin_expr,
)

# Means -1, -1, -2: scores e^-1, e^-1, e^-2, so p = 1/(2 + e^-1) twice and e^-1/(2 + e^-1).
SUMS, COUNTS = [-1.0, -2.0, -6.0], [1, 2, 3]
P_HIGH = 1 / (2 + math.exp(-1))  # 0.42231880...
P_LOW = math.exp(-1) / (2 + math.exp(-1))  # 0.15536240...


def test_geometric_mean_probabilities_are_normalised():
    probs = choice_probabilities(SUMS, COUNTS)
    assert probs.tolist() == pytest.approx([P_HIGH, P_HIGH, P_LOW], abs=1e-15)
    assert pytest.approx(0.4223188, abs=1e-7) == P_HIGH and pytest.approx(0.1553624, abs=1e-7) == P_LOW


def test_not_a_softmax_over_summed_logprobs():
    # Summed log-probs would make the 1-token choice clearly the most likely (e^-1 vs e^-2).
    probs = choice_probabilities([-1.0, -2.0], [1, 2])
    assert probs.tolist() == [0.5, 0.5]


def test_chosen_index_takes_the_first_on_ties():
    assert chosen_index(choice_probabilities(SUMS, COUNTS)) == 0
    assert chosen_index([0.2, 0.4, 0.4]) == 1


def test_normalized_entropy_by_hand():
    expected = -(2 * P_HIGH * math.log2(P_HIGH) + P_LOW * math.log2(P_LOW)) / math.log2(3)
    assert normalized_entropy([P_HIGH, P_HIGH, P_LOW]) == pytest.approx(expected, abs=1e-12)
    assert normalized_entropy([0.5, 0.5]) == 1.0
    assert normalized_entropy([1.0, 0.0, 0.0]) == 0.0  # zeros dropped, no NaN
    assert normalized_entropy([0.5, 0.5, 0.0]) == pytest.approx(1 / math.log2(3), abs=1e-12)
    assert normalized_entropy([1.0]) == 0.0


def test_uncertainty_bins_edges():
    assert [uncertainty_bin(v) for v in (0.0, 1 / 3, 0.34, 2 / 3, 0.67, 1.0)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
    frame = pl.DataFrame({"entropy_norm": [0.0, 1 / 3, 0.34, 2 / 3, 0.67, 1.0]})
    assert frame.select(uncertainty_bin_expr(pl.col("entropy_norm")).alias("bin"))["bin"].to_list() == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]


def test_frame_views_match_hand_values():
    frame = pl.DataFrame(
        {
            "choice_sum_logprob": [SUMS, [-3.0, -1.0], [-0.7]],
            "choice_n_tokens": [COUNTS, [3, 2], [4]],
            "choices": [["a", "b", "c"], ["x", "y"], ["only"]],
        },
        schema_overrides={"choice_n_tokens": pl.List(pl.Int32)},
    )
    out = add_choice_views(frame)
    # Row 2: means -1 and -0.5, so p = (1/(1+e^0.5), e^0.5/(1+e^0.5)).
    p_y = math.exp(0.5) / (1 + math.exp(0.5))
    assert out["probs"][0].to_list() == pytest.approx([P_HIGH, P_HIGH, P_LOW], abs=1e-15)
    assert out["probs"][1].to_list() == pytest.approx([1 - p_y, p_y], abs=1e-15)
    assert out["probs"][2].to_list() == [1.0]
    assert out["probs_rounded"][0].to_list() == [0.4223188, 0.4223188, 0.15536240]
    assert out["probs_rounded"][1].to_list() == [0.37754067, 0.62245933]
    assert out["chosen_idx"].to_list() == [0, 1, 0]
    assert out["chosen_text"].to_list() == ["a", "y", "only"]
    h_row2 = -((1 - p_y) * math.log2(1 - p_y) + p_y * math.log2(p_y))
    assert out["entropy_norm"].to_list() == pytest.approx(
        [normalized_entropy([P_HIGH, P_HIGH, P_LOW]), h_row2, 0.0], abs=1e-12
    )
    assert out.schema["chosen_idx"] == pl.Int32
    assert out.schema["probs_rounded"] == pl.List(pl.Float64)


def test_frame_views_work_lazily():
    frame = pl.LazyFrame({"choice_sum_logprob": [[-2.0, -2.0]], "choice_n_tokens": [[1, 1]], "choices": [["p", "q"]]})
    out = add_choice_views(frame).collect()
    assert out["probs"][0].to_list() == [0.5, 0.5]
    assert out["chosen_text"].to_list() == ["p"]
    assert out["entropy_norm"].to_list() == [1.0]


def test_uncertainty_bin_of_nan_and_null_is_high():
    # the reference bins NaN entropy as high; the scalar and the vectorised bin are one rule
    assert uncertainty_bin(math.nan) == "high"
    frame = pl.DataFrame({"entropy_norm": [math.nan, None, 0.1]}, schema={"entropy_norm": pl.Float64})
    assert frame.select(uncertainty_bin_expr(pl.col("entropy_norm")).alias("bin"))["bin"].to_list() == [
        "high",
        "high",
        "low",
    ]
