import polars as pl
import pytest

from quantbias_assets.replication import (
    ReplicationInputs,
    RunInfo,
    drift_checks,
    headlines,
    pooled_bins,
    render_report,
    text_summary,
)


def table1() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("BBQ", "high", 10, 25.0, 50.0, 20.0),
            ("BBQ", "low", 10, 25.0, 10.0, 0.0),
            ("BBQ", "medium", 20, 50.0, 20.0, 10.0),
            ("IAT", "high", 10, 25.0, 30.0, 10.0),
            ("IAT", "low", 30, 75.0, 0.0, 0.0),
        ],
        schema=["dataset_group", "uncertainty_bin", "n_rows", "pct_responses", "response_flip", "bias_flip"],
        orient="row",
    )


def inputs(**overrides) -> ReplicationInputs:
    base = dict(
        table1=table1(),
        ratio=pl.DataFrame(
            {
                "dataset_group": ["BBQ", "IAT"],
                "response_flip_high": [50.0, 30.0],
                "response_flip_low": [10.0, 0.0],
                "high_to_low_ratio": [5.0, None],
            }
        ),
        per_method=pl.DataFrame(
            [
                ("rtn-w8a16", "RTN W8A16", 8, 16, "closed", 100, 2.0, 1.0),
                ("rtn-w8a16", "RTN W8A16", 8, 16, "open", 10, 50.0, None),
                ("rtn-w4a16", "RTN W4A16", 4, 16, "closed", 100, 10.0, 4.0),
                ("gptq-w4a16", "GPTQ W4A16", 4, 16, "closed", 300, 6.0, 3.0),
            ],
            schema=["method", "method_label", "w_bits", "a_bits", "style", "n_rows", "pct_flipped", "pct_bias_flipped"],
            orient="row",
        ),
        significance=pl.DataFrame(
            [
                ("rtn-w8a16", "RTN W8A16", 12, 10, 1, 10.0),
                ("rtn-w4a16", "RTN W4A16", 12, 10, 3, 30.0),
                ("gptq-w4a16", "GPTQ W4A16", 12, 10, 1, 10.0),
                ("awq-w4a16", "AWQ W4A16", 2, 0, 0, None),
            ],
            schema=["method", "method_label", "units", "tested", "significant", "pct_significant"],
            orient="row",
        ),
        # the mart's 4-bit row of the methods above: closed flips (100 x 10% + 300 x 6%) / 400 = 7% vs
        # RTN W8A16 2%; significant: 4 of 20 tested units = 20% vs 1 of 10 = 10%
        four_bit=pl.DataFrame(
            [("all", 5.0, 2.0), ("closed", 3.5, 2.0)],
            schema=["style", "flip_ratio_vs_8bit", "significant_ratio_vs_8bit"],
            orient="row",
        ),
        fig3c=pl.DataFrame(
            [
                ("BBQ", "not significant", 3, 30, 12.5),
                ("IAT", "not significant", 2, 20, 21.0),
                ("BBQ", "significant", 1, 10, 40.0),
            ],
            schema=["dataset_group", "effect", "n_units", "n_rows", "pct_responses_flipped"],
            orient="row",
        ),
        groups=pl.DataFrame(
            [
                ("BBQ", "RTN W4A16", "old", 40, 50, 20.0, 10.0, 12.5, 5.0, 7.5),
                ("BBQ", "GPTQ W4A16", "young", 35, 45, 10.0, 5.0, 1.0, 4.4, -3.4),
                ("IAT", "RTN W8A16", "muslim", 31, 31, 2.0, 1.0, 1.5, 0.5, 1.0),
            ],
            schema=[
                "dataset_group",
                "method_label",
                "group",
                "n_questions",
                "n_rows",
                "perc_res_flipped",
                "perc_bias_flipped",
                "unbiased_to_biased",
                "biased_to_unbiased",
                "diff_unb_to_b",
            ],
            orient="row",
        ),
        coverage=pl.DataFrame(
            {
                "dataset": ["BBQ", "IAT"],
                "style": ["closed", "closed"],
                "questions": [20, 40],
                "rows": [60, 120],
                "methods": [3, 3],
            }
        ),
        open_verdicts=pl.DataFrame({"method": ["rtn-w8a16"], "rows": [10], "invalid": [10]}),
        text=pl.DataFrame(
            {
                "method": ["gptq-w4a16", "gptq-w4a16"],
                "num_words_base": [10, 20],
                "num_words_quant": [12, 18],
                "num_words_diff": [2, -2],
                "rougeLsum_recall": [0.5, 0.7],
                "common_prefix_frac": [1.0, 0.5],
                "max_3gram_rep_diff": [0, 1],
                "prop_non_english_diff": [0.0, 0.1],
            }
        ),
        drift=pl.DataFrame(
            {
                "method": ["rtn-w8a16", "rtn-w4a16", "gptq-w4a16", "awq-w4a16", "sq-rtn-w8a8"],
                "tokens": [100] * 5,
                "mean_kl": [0.01, 0.1, 0.05, 0.2, 0.03],
                "median_kl": [0.0] * 5,
                "p95_kl": [0.0] * 5,
                "top1_agreement": [1.0] * 5,
            }
        ),
    )
    return ReplicationInputs(**{**base, **overrides})


RUN = RunInfo(
    command="bench/replicate.py --quick",
    model="smollm2-135m-instruct",
    model_source="`SmolLM2.gguf`",
    parameters="134.5M-parameter",
    native_note="Native is a dequantized Q4_1.",
    sizes={"closed datasets": "the first 6 questions of every axis"},
    timings={"questions": 10.0, "none: checkpoint + closed responses": 20.5},
    label="quick run",
    date="2026-12-02",
)


def test_pooled_bins_weight_flip_rates_by_rows():
    pooled = pooled_bins(table1())
    assert pooled["uncertainty_bin"].to_list() == ["low", "medium", "high"]
    assert pooled["n_rows"].to_list() == [40, 20, 20]
    assert pooled["pct_responses"].to_list() == [50.0, 25.0, 25.0]
    assert pooled["response_flip"].to_list() == [2.5, 20.0, 40.0]
    assert pooled["bias_flip"].to_list() == [0.0, 10.0, 15.0]


def test_headlines_from_the_marts():
    h = headlines(inputs())
    assert h.high_low_pooled == pytest.approx(16.0)
    assert (h.high_low_min, h.high_low_max) == (5.0, 5.0)
    # the 4-bit vs 8-bit ratios of the mart: response flips on closed datasets, significance over all
    assert h.four_vs_eight_flips == pytest.approx(3.5)
    assert h.four_vs_eight_significant == pytest.approx(2.0)
    assert (h.masked_flip_max, h.masked_flip_dataset) == (21.0, "IAT")
    assert h.group_worse == ("BBQ", "RTN W4A16", "old", 7.5)
    assert h.group_better == ("BBQ", "GPTQ W4A16", "young", -3.4)


def test_headlines_without_an_8bit_method_or_improving_groups():
    only_positive = inputs().groups.filter(pl.col("diff_unb_to_b") > 0)
    no_8bit = inputs().four_bit.with_columns(flip_ratio_vs_8bit=None, significant_ratio_vs_8bit=None)
    h = headlines(inputs(four_bit=no_8bit, groups=only_positive))
    assert h.four_vs_eight_flips is None and h.four_vs_eight_significant is None
    assert h.group_better is None
    assert h.group_worse == ("BBQ", "RTN W4A16", "old", 7.5)


def test_drift_checks():
    assert drift_checks(inputs().drift) == [
        ("GPTQ W4A16 < RTN W4A16", True),
        ("AWQ W4A16 < RTN W4A16", False),
        ("RTN W8A16 < 1/4 of RTN W4A16", True),
        ("RTN W8A8 + SQ < 1/4 of RTN W4A16", False),
    ]
    partial = inputs().drift.filter(pl.col("method") != "awq-w4a16")
    assert drift_checks(partial)[1] == ("AWQ W4A16 < RTN W4A16", None)


def test_text_summary_per_method():
    row = text_summary(inputs().text).row(0, named=True)
    assert row == {
        "method": "gptq-w4a16",
        "pairs": 2,
        "words_native": 15.0,
        "words_quantized": 15.0,
        "words_change": 0.0,
        "rougeLsum_recall": pytest.approx(0.6),
        "common_prefix_frac": 0.75,
        "identical": 50.0,
        "max_3gram_rep_change": 0.5,
        "non_english_change": pytest.approx(0.05),
    }
    assert text_summary(pl.DataFrame()).is_empty()


def test_report_shows_our_numbers_next_to_the_paper():
    text = render_report(inputs(), RUN)
    assert text.startswith("# Replication report (quick run)\n")
    assert "_Generated by `bench/replicate.py --quick` on 2026-12-02" in text
    assert "| response flips, high vs low uncertainty bin | 16.00x pooled; per dataset 5.00–5.00x | 3–11x" in text
    assert "| 4-bit vs 8-bit (RTN W8A16): response flips | 3.50x | 4–6x" in text
    assert "| most responses flipped where the aggregate did not change | 21.0% (IAT) | up to 21%" in text
    assert (
        "| largest group worsening / improvement (U→B − B→U) | +7.5% (old, BBQ, RTN W4A16) / "
        "-3.4% (young, BBQ, GPTQ W4A16) | +18.6% / −14.1%"
    ) in text
    assert "| low | 40 | 50.0 | 2.5 | 0.0 |" in text  # pooled Table 1
    assert "| IAT | 0.00 | 30.00 | – |" in text  # no low-bin flips: no ratio
    assert "- GPTQ W4A16 < RTN W4A16: yes\n- AWQ W4A16 < RTN W4A16: no\n" in text
    assert "| none: checkpoint + closed responses | 20.5 |\n| total | 30.5 |" in text
    assert "one 134.5M-parameter model on a sample" in text
    assert "- closed datasets: the first 6 questions of every axis" in text
    assert "This report:\n\n```bash\nbench/replicate.py --quick\n```" in text
    assert "int8 per token" not in text  # no method quantizes activations


def test_report_warns_that_int8_activation_flips_are_one_draw_of_rounding_noise():
    w8a8 = pl.DataFrame(
        [("sq-rtn-w8a8", "RTN W8A8 + SQ", 8, 8, "closed", 100, 3.0, 2.0)],
        schema=inputs().per_method.columns,
        orient="row",
    )
    text = render_report(inputs(per_method=pl.concat([inputs().per_method, w8a8])), RUN)
    assert "at all (docs/vllm.md).\n- RTN W8A8 + SQ: activations rounded to int8 per token on the fly" in text
    assert "each question is scored alone so that its answer is reproducible" in text
    assert "read these flip rates as rates, not as per-question results.\n\nSizes of this run:" in text


def test_report_of_a_run_without_groups_or_open_answers():
    empty_groups = inputs().groups.clear()
    text = render_report(inputs(groups=empty_groups, text=pl.DataFrame(), drift=inputs().drift.clear()), RUN)
    assert "| largest group worsening / improvement (U→B − B→U) | n/a / n/a |" in text
    assert "- GPTQ W4A16 < RTN W4A16: not measured" in text
    assert text.count("_(no rows)_") == 3  # groups, text statistics, drift


def test_missing_ratios_say_why():
    """A low bin where nothing flipped makes the ratio unbounded; no significant unit anywhere
    makes the significance ratio undefined: the report says so instead of a bare n/a."""
    no_low_flips = table1().with_columns(
        response_flip=pl.when(pl.col("uncertainty_bin") == "low").then(0.0).otherwise(pl.col("response_flip"))
    )
    nothing_significant = inputs().significance.with_columns(significant=0)
    no_ratio = inputs().four_bit.with_columns(significant_ratio_vs_8bit=None)
    case = inputs(table1=no_low_flips, significance=nothing_significant, four_bit=no_ratio)
    h = headlines(case)
    assert (h.high_low_pooled, h.pooled_low_flip, h.pooled_low_rows, h.significant_units) == (None, 0.0, 40, 0)
    assert h.pooled_high_flip == pytest.approx(40.0)
    text = render_report(case, RUN)
    assert (
        "| response flips, high vs low uncertainty bin | unbounded pooled: 40.0% of high-uncertainty rows "
        "flipped, none of 40 low-uncertainty rows; per dataset 5.00–5.00x |"
    ) in text
    assert "| 4-bit vs 8-bit (RTN W8A16): % units significant | n/a: no unit significant in any method |" in text
    # with a significant unit somewhere, a missing ratio stays a plain n/a
    assert "| 4-bit vs 8-bit (RTN W8A16): % units significant | n/a |" in render_report(inputs(four_bit=no_ratio), RUN)
