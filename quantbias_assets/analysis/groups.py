"""Who flips: social-group asymmetry (spec §7.2) and summaries by quantization method and model
size (spec §7.3), over paired rows and unit tests."""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from quantbias_assets.analysis.pairs import analysis_rows
from quantbias_assets.catalog.methods import METHOD_SPECS

REFERENCE_8BIT_METHOD = "rtn-w8a16"
_PARAM_SIZE = re.compile(r"-(\d+(?:\.\d+)?)b(?:-|$)")


def group_asymmetry(
    pairs: pl.DataFrame,
    by: Sequence[str] = ("group",),
    *,
    min_questions: int = 1,
    single_groups_only: bool = False,
) -> pl.DataFrame:
    """Per group (and optionally model / method): % responses flipped, % bias flipped, U->B and
    B->U as % of ALL the group's valid rows, and diff = U->B − B->U (> 0: more biased).

    Rows without both flags (invalid verdicts) are left out. A group needs `min_questions`
    distinct questions; `single_groups_only` drops multi-group labels ("a, b"). Sorted by diff,
    ascending, so the first and last rows are the extremes.
    """
    rows = analysis_rows(pairs).filter(
        pl.col("group").is_not_null() & pl.col("is_biased_base").is_not_null() & pl.col("is_biased_quant").is_not_null()
    )
    if single_groups_only:
        rows = rows.filter(~pl.col("group").str.contains(",", literal=True))
    return (
        rows.group_by(list(by))
        .agg(
            n_rows=pl.len(),
            n_questions=pl.col("idx").n_unique(),
            perc_res_flipped=100 * pl.col("flipped").mean(),
            perc_bias_flipped=100 * pl.col("bias_flipped").mean(),
            perc_unbiased_to_biased=100 * pl.col("unbiased_to_biased").mean(),
            perc_biased_to_unbiased=100 * pl.col("biased_to_unbiased").mean(),
        )
        .filter(pl.col("n_questions") >= min_questions)
        .with_columns(diff_unb_to_b=pl.col("perc_unbiased_to_biased") - pl.col("perc_biased_to_unbiased"))
        .sort("diff_unb_to_b", *by)
    )


def extreme_rows(table: pl.DataFrame, per_end: int = 1) -> pl.DataFrame:
    """The first and last `per_end` rows of a table sorted by diff (Fig 5b: 1; supp. tables: 2)."""
    if table.height <= 2 * per_end:
        return table
    return pl.concat([table.head(per_end), table.tail(per_end)])


def weight_bits(method: str) -> int | None:
    """4 for `rtn-w4a16`, 8 for `rtn-w8a16` (the catalog's bits); None for the native model and
    for a key outside the catalog."""
    spec = METHOD_SPECS.get(method)
    return spec.weight_bits if spec is not None and spec.is_quantized else None


def param_size_billions(model: str) -> float | None:
    """0.5 for `qwen2.5-0.5b-instruct`, as the reference's `-(\\d*\\.?\\d*)b-?` rule."""
    match = _PARAM_SIZE.search(model)
    return float(match.group(1)) if match else None


def _unit_summary(bias_tests: pl.DataFrame, by: str) -> pl.DataFrame:
    tested = bias_tests.filter(pl.col("p_value").is_not_nan() & pl.col("p_value").is_not_null())
    return tested.group_by(by).agg(
        units=pl.len(),
        pct_significant=100 * pl.col("is_significant").mean(),
        pct_more_biased=100 * (pl.col("direction") == "more_biased").mean(),
        pct_less_biased=100 * (pl.col("direction") == "less_biased").mean(),
        # pooled over rows: units weighted by their size
        pct_flipped=100 * (pl.col("flip_rate") * pl.col("n")).sum() / pl.col("n").sum(),
        pct_bias_flipped=100 * (pl.col("bias_flip_rate") * pl.col("n")).sum() / pl.col("n").sum(),
    )


def method_summary(bias_tests: pl.DataFrame) -> pl.DataFrame:
    """Per quantization method: % significant units and pooled % flipped, with each method's
    ratio to the 8-bit RTN baseline (the paper's "4-bit: 4–6x more changes than 8-bit")."""
    summary = _unit_summary(bias_tests, "method").with_columns(
        weight_bits=pl.col("method").map_elements(weight_bits, return_dtype=pl.Int64)
    )
    baseline = summary.filter(pl.col("method") == REFERENCE_8BIT_METHOD)
    if baseline.height:
        flipped, significant = baseline.get_column("pct_flipped")[0], baseline.get_column("pct_significant")[0]
        summary = summary.with_columns(
            flip_ratio_vs_8bit=pl.col("pct_flipped") / flipped if flipped else pl.lit(None, pl.Float64),
            significant_ratio_vs_8bit=(
                pl.col("pct_significant") / significant if significant else pl.lit(None, pl.Float64)
            ),
        )
    else:
        summary = summary.with_columns(
            flip_ratio_vs_8bit=pl.lit(None, pl.Float64), significant_ratio_vs_8bit=pl.lit(None, pl.Float64)
        )
    return summary.sort("weight_bits", "method", descending=[True, False], nulls_last=True)


def model_size_summary(bias_tests: pl.DataFrame) -> pl.DataFrame:
    """Per base model (ordered by parameter count): % significant units and pooled % flipped."""
    return (
        _unit_summary(bias_tests, "model")
        .with_columns(param_size_b=pl.col("model").map_elements(param_size_billions, return_dtype=pl.Float64))
        .sort("param_size_b", "model", nulls_last=True)
    )
