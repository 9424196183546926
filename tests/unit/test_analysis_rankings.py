"""CI-overlap dense ranks (spec §7.1) and Kendall's tau, by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quantbias_assets.analysis.rankings import (
    bootstrap_percent,
    ci_overlap_dense_rank,
    rank_models,
    ranking_kendall_tau,
)


def test_dense_ranks_with_ci_overlap_ties() -> None:
    means = np.array([0.5, 0.1, 0.9, 0.2, 0.55])
    lows = np.array([0.45, 0.05, 0.85, 0.15, 0.5])
    highs = np.array([0.6, 0.25, 0.95, 0.3, 0.6])
    # sorted: 0.1 [.05,.25] ties 0.2 (inside) -> 1, 1; 0.5 ties 0.55 -> 2, 2; 0.9 -> 3
    assert ci_overlap_dense_rank(means, lows, highs).tolist() == [2, 1, 3, 1, 2]


def test_ties_are_anchored_on_the_first_element_and_not_transitive() -> None:
    means = np.array([1.0, 2.0, 3.0])
    lows, highs = np.array([0.5, 1.5, 2.5]), np.array([2.5, 3.5, 3.5])
    # 2 lies in the first CI -> tie; 3 is neither in [0.5, 2.5] nor is 1 in [2.5, 3.5] -> new rank,
    # although 3 lies in the second model's CI
    assert ci_overlap_dense_rank(means, lows, highs).tolist() == [1, 1, 2]


def test_bootstrap_percent_of_constant_flags() -> None:
    assert bootstrap_percent(np.ones(20), np.random.default_rng(0)) == (100.0, 100.0, 100.0)
    mean, low, high = bootstrap_percent(np.array([1.0, 0.0] * 50), np.random.default_rng(0))
    assert low < mean < high and mean == pytest.approx(50, abs=2)


def test_kendall_tau_by_hand() -> None:
    ranking = pl.DataFrame(
        {
            "model": ["a", "b", "c", "d"] * 2,
            "side": ["original"] * 4 + ["quantized"] * 4,
            "rank": [1, 2, 3, 4, 2, 1, 3, 4],
        }
    )
    # one discordant pair (a, b) out of six: tau = (5 - 1) / 6
    tau, _ = ranking_kendall_tau(ranking)
    assert tau == pytest.approx(2 / 3)


def test_rank_models_original_vs_quantized() -> None:
    def rows(model: str, base: list[bool], quant: list[bool]) -> pl.DataFrame:
        n = len(base)
        return pl.DataFrame({"dataset": "FMT10K-IM-S", "dataset_group": "FMT10K", "context_condition": None,
                             "model": model, "method": "rtn-w4a16", "idx": [f"i{i}" for i in range(n)],
                             "is_biased_base": base, "is_biased_quant": quant},
                            schema_overrides={"context_condition": pl.String})  # fmt: skip

    frame = pl.concat(
        [
            rows("safe-then-unsafe", [False] * 30, [True] * 30),
            rows("unsafe-then-safe", [True] * 30, [False] * 30),
            rows("other-method", [True] * 30, [True] * 30).with_columns(method=pl.lit("rtn-w8a16")),
        ]
    )
    ranking = rank_models(frame, dataset_group="FMT10K", method="rtn-w4a16")
    ranks = {(row["model"], row["side"]): (row["rank"], row["pct_biased"]) for row in ranking.iter_rows(named=True)}
    assert ranks == {
        ("safe-then-unsafe", "original"): (1, 0.0),
        ("unsafe-then-safe", "original"): (2, 100.0),
        ("safe-then-unsafe", "quantized"): (2, 100.0),
        ("unsafe-then-safe", "quantized"): (1, 0.0),
    }
    assert ranking_kendall_tau(ranking)[0] == pytest.approx(-1.0)
