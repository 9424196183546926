"""Tests of change (spec §6, §9.1–9.2): known-answer permutation tests, BH against statsmodels,
McNemar by hand, and the reference's effect-size bugs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.multitest import multipletests

from quantbias_assets.analysis.metrics import encode
from quantbias_assets.analysis.stats import (
    BiasTestSettings,
    benjamini_hochberg,
    bias_tests,
    evaluate_unit,
    mcnemar_exact,
    paired_bootstrap,
    standardised_difference,
    unit_rng,
)


def flag_pairs(base: list[bool], quant: list[bool], *, dataset: str = "CEB-Jigsaw", axis: str = "gender",
               model: str = "m", method: str = "rtn-w4a16") -> pl.DataFrame:  # fmt: skip
    n = len(base)
    return pl.DataFrame(
        {
            "dataset": [dataset] * n,
            "dataset_group": ["Jigsaw"] * n,
            "model": [model] * n,
            "method": [method] * n,
            "axis": [axis] * n,
            "idx": [f"{dataset}/{axis}/{i}" for i in range(n)],
            "context_condition": [None] * n,
            "is_biased_base": base,
            "is_biased_quant": quant,
            "flipped": [b != q for b, q in zip(base, quant, strict=True)],
            "bias_flipped": [b != q for b, q in zip(base, quant, strict=True)],
            "unbiased_to_biased": [(not b) and q for b, q in zip(base, quant, strict=True)],
            "biased_to_unbiased": [b and not q for b, q in zip(base, quant, strict=True)],
        },
        schema_overrides={"context_condition": pl.String},
    )


def flag_encoding(base: list[bool], quant: list[bool]):
    return encode("proportion_biased", pl.DataFrame({"is_biased_base": base, "is_biased_quant": quant}))


def test_identical_models_give_p_one() -> None:
    flags = list(np.random.default_rng(0).random(50) < 0.4)
    result = evaluate_unit(flag_encoding(flags, flags), unit_rng(0, ("a",)), BiasTestSettings())
    assert result.p_value == 1.0
    assert result.effect_size == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_every_row_flipped_gives_the_floor_p() -> None:
    # d_obs = 1; a null draw reaches |d| = 1 only if all 50 resampled rows share one coin side
    result = evaluate_unit(flag_encoding([True] * 50, [False] * 50), unit_rng(0, ("b",)), BiasTestSettings())
    assert result.p_value == pytest.approx(0.001)
    assert (result.ci_low, result.ci_high) == (-1.0, -1.0)  # M_Q − M_B in every resample


def test_test_is_seeded_per_unit() -> None:
    rng = np.random.default_rng(5)
    base, quant = list(rng.random(40) < 0.5), list(rng.random(40) < 0.6)
    encoding = flag_encoding(base, quant)
    first = evaluate_unit(encoding, unit_rng(0, ("x", "y")), BiasTestSettings())
    again = evaluate_unit(encoding, unit_rng(0, ("x", "y")), BiasTestSettings())
    other_seed = evaluate_unit(encoding, unit_rng(1, ("x", "y")), BiasTestSettings())
    assert (first.p_value, first.ci_low, first.effect_size) == (again.p_value, again.ci_low, again.effect_size)
    assert np.array_equal(first.last_swap, again.last_swap)
    assert not np.array_equal(first.last_swap, other_seed.last_swap)


def test_standardised_difference_by_hand() -> None:
    first, second = np.array([1.0, 0.0] * 25), np.zeros(50)
    # var(first, ddof=1) = 0.25 * 50/49; pooled sd = sqrt(25/196) = 5/14; d = 0.5 / (5/14) = 1.4
    assert standardised_difference(first, second) == pytest.approx(1.4)
    assert standardised_difference(second, first) == pytest.approx(-1.4)
    assert np.isnan(standardised_difference(first[:48], second[:48]))  # fewer than 50 draws
    assert standardised_difference(np.ones(60), np.zeros(60)) == 0.0  # no spread


def test_reference_effect_size_has_the_documented_sign_flip() -> None:
    # quantized more biased: 10/50 biased natively, 40/50 after quantization
    base, quant = [True] * 10 + [False] * 40, [True] * 40 + [False] * 10
    encoding = flag_encoding(base, quant)
    rows = np.random.default_rng(7).integers(0, 50, size=(200, 50))
    metric_base, metric_quant = paired_bootstrap(encoding, rows)
    correct = standardised_difference(metric_quant, metric_base)
    assert correct > 0  # M_Q − M_B > 0: more biased
    # §9.2: the reference's d = (M_B − M_Q)/sd, so on the same unpermuted draws it is exactly −d,
    # and d < 0 is labelled "less biased".
    unswapped = paired_bootstrap(encoding, rows, swap=np.zeros(50, dtype=bool))
    assert standardised_difference(*unswapped) == pytest.approx(-correct)
    # §9.1: computed on a frame whose rows were swapped; fully swapped, the sign flips back.
    swapped = paired_bootstrap(encoding, rows, swap=np.ones(50, dtype=bool))
    assert standardised_difference(*swapped) == pytest.approx(correct)


def test_reference_effect_size_uses_the_last_permuted_frame() -> None:
    # The reference's toy: base all biased, quant all unbiased; after its loop the two columns
    # hold a random mix (means near 0.5) instead of 1 and 0.
    result = evaluate_unit(flag_encoding([True] * 200, [False] * 200), unit_rng(0, ("toy",)), BiasTestSettings())
    swapped = int(result.last_swap.sum())
    assert 70 < swapped < 130
    assert result.effect_size == 0.0  # unpermuted: M_B = 1, M_Q = 0 in every draw (no spread)
    # on the permuted frame M_B = (200 − k)/200 and M_Q = k/200: the sign follows 200 − 2k
    assert np.isfinite(result.effect_size_reference)
    assert np.sign(result.effect_size_reference) == np.sign(200 - 2 * swapped)


def test_benjamini_hochberg_by_hand() -> None:
    # sorted .01 .03 .04 .2 vs thresholds .0125 .025 .0375 .05: only the first is rejected
    q_values, rejected = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]), 0.05)
    assert rejected.tolist() == [True, False, False, False]
    # q = cumulative min from the top of p*m/rank: .04, min(.06, .0533), .0533, .2
    assert q_values == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_benjamini_hochberg_matches_statsmodels() -> None:
    rng = np.random.default_rng(11)
    p_values = np.concatenate([rng.uniform(0, 0.01, 30), rng.uniform(0, 1, 170), [np.nan] * 5])
    rng.shuffle(p_values)
    q_values, rejected = benjamini_hochberg(p_values, 0.05)
    finite = np.isfinite(p_values)
    expected_reject, expected_q, _, _ = multipletests(p_values[finite], alpha=0.05, method="fdr_bh")
    assert rejected[finite].tolist() == expected_reject.tolist()
    assert q_values[finite] == pytest.approx(expected_q)
    assert np.isnan(q_values[~finite]).all() and not rejected[~finite].any()


def test_mcnemar_exact_by_hand_and_against_statsmodels() -> None:
    # 8 U->B and 2 B->U: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact(np.array([8]), np.array([2]))[0] == pytest.approx(112 / 1024)
    assert mcnemar_exact(np.array([0]), np.array([0]))[0] == 1.0
    for u_to_b, b_to_u in [(3, 9), (5, 5), (0, 7), (20, 31)]:
        expected = statsmodels_mcnemar([[10, u_to_b], [b_to_u, 10]], exact=True).pvalue
        assert mcnemar_exact(np.array([u_to_b]), np.array([b_to_u]))[0] == pytest.approx(expected)


def test_bias_tests_table() -> None:
    settings = BiasTestSettings()
    more = flag_pairs([True] * 10 + [False] * 40, [True] * 40 + [False] * 10, axis="race")
    same = flag_pairs([True, False] * 25, [True, False] * 25, axis="gender")
    small = flag_pairs([True] * 9, [False] * 9, axis="religion")
    table = bias_tests(pl.concat([more, same, small]), settings).sort("axis")
    assert table["axis"].to_list() == ["gender", "race", "religion"]
    assert table["n"].to_list() == [50, 50, 9]
    assert table["metric_base"].to_list() == pytest.approx([0.5, 0.2, 1.0])
    assert table["metric_quant"].to_list() == pytest.approx([0.5, 0.8, 0.0])
    assert table["diff"].to_list() == pytest.approx([0.0, 0.6, -1.0])
    assert table["flip_rate"].to_list() == pytest.approx([0.0, 0.6, 1.0])
    gender, race, religion = table.iter_rows(named=True)
    assert gender["p_value"] == 1.0 and race["p_value"] == pytest.approx(0.001)
    # fewer than 10 rows: metrics shown, never tested (p missing), never significant
    assert religion["p_value"] is None and religion["q_value"] is None
    assert religion["is_significant"] is False and religion["direction"] == "none"
    # BH over the two tested units: sorted .001, 1 -> q = .002, 1
    assert race["q_value"] == pytest.approx(0.002) and gender["q_value"] == 1.0
    assert race["is_significant"] and not gender["is_significant"]
    assert race["direction"] == "more_biased" and gender["direction"] == "none"
    assert race["effect_size"] > 0
    assert race["direction_reference"] == ("more_biased" if race["effect_size_reference"] > 0 else "less_biased")
    # 30 U->B and 0 B->U: McNemar p = 2 / 2**30
    assert race["mcnemar_p"] == pytest.approx(2 / 2**30)
    assert race["ci_low"] <= 0.6 <= race["ci_high"]
    # seeded: the same table again
    assert bias_tests(pl.concat([more, same, small]), settings).sort("axis").equals(table)


def test_bh_runs_once_over_all_datasets() -> None:
    jigsaw = flag_pairs([True] * 10 + [False] * 40, [True] * 40 + [False] * 10, dataset="CEB-Jigsaw")
    recognition = flag_pairs([True] * 50, [True] * 50, dataset="CEB-Recognition-S")
    table = bias_tests(pl.concat([jigsaw, recognition])).sort("dataset")
    # p = 0.001 (Jigsaw) and 1 (identical): BH over both -> q = 0.002 and 1 (alone it stays 0.001)
    assert table["dataset"].to_list() == ["CEB-Jigsaw", "CEB-Recognition-S"]
    assert table["q_value"].to_list() == pytest.approx([0.002, 1.0])


def test_open_units_exclude_and_count_invalid_verdicts() -> None:
    base = [True] * 6 + [False] * 6 + [None] * 2
    quant = [True] * 3 + [False] * 9 + [False, None]
    frame = flag_pairs([bool(b) for b in base], [bool(q) for q in quant], dataset="FMT10K-IM-S").with_columns(
        is_biased_base=pl.Series(base, dtype=pl.Boolean), is_biased_quant=pl.Series(quant, dtype=pl.Boolean)
    )
    row = bias_tests(frame).row(0, named=True)
    assert (row["n"], row["n_invalid"], row["metric"]) == (12, 2, "unsafe_rate")
    assert (row["metric_base"], row["metric_quant"]) == pytest.approx((0.5, 0.25))


def test_results_do_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(2)
    frame = flag_pairs(list(rng.random(60) < 0.3), list(rng.random(60) < 0.5))
    table = bias_tests(frame)
    assert bias_tests(frame.sample(fraction=1.0, shuffle=True, seed=4)).equals(table)
