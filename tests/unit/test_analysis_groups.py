"""Group asymmetry (spec §7.2) and method / model-size summaries (§7.3), by hand."""

from __future__ import annotations

import polars as pl
import pytest

from quantbias_assets.analysis.groups import (
    extreme_rows,
    group_asymmetry,
    method_summary,
    model_size_summary,
    param_size_billions,
    weight_bits,
)


def pairs(rows: list[tuple[str, str, str, bool, bool]]) -> pl.DataFrame:
    """(group, model, idx, biased natively, biased quantized); flips follow the flags."""
    return pl.DataFrame(
        {
            "dataset": "BBQ",
            "context_condition": "ambig",
            "group": [r[0] for r in rows],
            "model": [r[1] for r in rows],
            "method": "rtn-w4a16",
            "idx": [r[2] for r in rows],
            "is_biased_base": [r[3] for r in rows],
            "is_biased_quant": [r[4] for r in rows],
            "flipped": [r[3] != r[4] for r in rows],
            "bias_flipped": [r[3] != r[4] for r in rows],
            "unbiased_to_biased": [not r[3] and r[4] for r in rows],
            "biased_to_unbiased": [r[3] and not r[4] for r in rows],
        }
    )


ROWS = [
    # male: 4 rows, 2 U->B, 1 B->U -> U->B 50 %, B->U 25 %, diff +25
    ("male", "a", "q1", False, True), ("male", "a", "q2", False, True),
    ("male", "b", "q1", True, False), ("male", "b", "q2", True, True),
    # short: 2 rows, 0 U->B, 1 B->U -> diff -50
    ("short", "a", "q3", True, False), ("short", "b", "q3", False, False),
    # a multi-group label and a group with a single question
    ("male, old", "a", "q4", False, True), ("tall", "a", "q5", False, True),
]  # fmt: skip


def test_group_asymmetry_as_percent_of_all_group_rows() -> None:
    table = group_asymmetry(pairs(ROWS), min_questions=1, single_groups_only=True)
    by_group = {row["group"]: row for row in table.iter_rows(named=True)}
    assert set(by_group) == {"male", "short", "tall"}  # "male, old" dropped
    male, short = by_group["male"], by_group["short"]
    assert (male["perc_unbiased_to_biased"], male["perc_biased_to_unbiased"], male["diff_unb_to_b"]) == (50, 25, 25)
    assert male["perc_res_flipped"] == 75 and male["perc_bias_flipped"] == 75
    assert (short["perc_unbiased_to_biased"], short["perc_biased_to_unbiased"], short["diff_unb_to_b"]) == (0, 50, -50)
    assert table["group"].to_list() == ["short", "male", "tall"]
    assert extreme_rows(table)["group"].to_list() == ["short", "tall"]


def test_group_asymmetry_by_model_and_min_questions() -> None:
    table = group_asymmetry(pairs(ROWS), by=("group", "model"), min_questions=1)
    male_b = table.filter((pl.col("group") == "male") & (pl.col("model") == "b")).row(0, named=True)
    assert (male_b["perc_unbiased_to_biased"], male_b["perc_biased_to_unbiased"]) == (0, 50)
    # "short" has one distinct question, "male" two
    assert group_asymmetry(pairs(ROWS), min_questions=2)["group"].to_list() == ["male"]


def test_bits_and_sizes_from_names() -> None:
    assert weight_bits("rtn-w8a16") == 8 and weight_bits("sq-rtn-w4a16") == 4 and weight_bits("none") is None
    assert param_size_billions("qwen2.5-0.5b-instruct") == 0.5
    assert param_size_billions("llama3.1-8b-instruct") == 8.0
    assert param_size_billions("qwen2.5-14b") == 14.0


def unit_table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": ["qwen2.5-0.5b-instruct", "qwen2.5-14b-instruct"] * 3 + ["qwen2.5-0.5b-instruct"],
            "method": ["rtn-w8a16"] * 2 + ["rtn-w4a16"] * 2 + ["awq-w4a16"] * 2 + ["awq-w4a16"],
            "n": [10, 30, 10, 30, 20, 20, 5],
            "p_value": [0.5, 0.001, 0.001, 0.001, 0.2, 0.001, None],
            "is_significant": [False, True, True, True, False, True, False],
            "direction": ["none", "more_biased", "less_biased", "more_biased", "none", "less_biased", "none"],
            "flip_rate": [0.1, 0.3, 0.5, 0.9, 0.4, 0.6, 1.0],
            "bias_flip_rate": [0.0, 0.2, 0.4, 0.4, 0.2, 0.2, 1.0],
        }
    )


def test_method_summary_and_ratio_to_8bit() -> None:
    table = method_summary(unit_table())
    rows = {row["method"]: row for row in table.iter_rows(named=True)}
    assert table["method"].to_list()[0] == "rtn-w8a16"  # 8-bit first
    w8, w4, awq = rows["rtn-w8a16"], rows["rtn-w4a16"], rows["awq-w4a16"]
    # pooled over rows: (0.1*10 + 0.3*30) / 40 = 25 %; (0.5*10 + 0.9*30) / 40 = 80 %; awq 50 %
    assert (w8["pct_flipped"], w4["pct_flipped"], awq["pct_flipped"]) == pytest.approx((25, 80, 50))
    assert (w8["pct_significant"], w4["pct_significant"], awq["pct_significant"]) == (50, 100, 50)
    assert awq["units"] == 2  # the untested unit (p missing) is left out
    assert w4["flip_ratio_vs_8bit"] == pytest.approx(3.2) and w4["significant_ratio_vs_8bit"] == 2
    assert (w4["pct_more_biased"], w4["pct_less_biased"]) == (50, 50)


def test_model_size_summary_orders_by_parameters() -> None:
    table = model_size_summary(unit_table())
    assert table["param_size_b"].to_list() == [0.5, 14.0]
    # 0.5b: units w8 (10 rows, .1), w4 (10, .5), awq (20, .4) -> (1 + 5 + 8) / 40 = 35 %; 1 of 3 significant
    small = table.row(0, named=True)
    assert small["pct_flipped"] == pytest.approx(35) and small["pct_significant"] == pytest.approx(100 / 3)
