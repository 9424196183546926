"""Text-pattern changes of open-ended answers (the paper's supplement), base vs quantized.

Per paired row: words, repeated n-grams and non-English share of both answers, their
differences (Q − B), ROUGE-Lsum of Q against B and the longest common word prefix. Each
distinct answer's statistics are computed once, however many pairs it appears in.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from quantbias_assets.catalog.datasets import dataset_group
from quantbias_assets.textstats import NGRAM_SIZES, pair_stats, response_stats

RESPONSE_STATS = ("num_words", *(f"max_{n}gram_rep" for n in NGRAM_SIZES), "prop_non_english")
KEYS = ("model", "idx")


def text_pattern_pairs(dataset: str, responses: pl.DataFrame) -> pl.DataFrame:
    """`responses` (model, method, axis, idx, response) of one open dataset -> one row per
    (model, method != none, idx) with both answers' statistics, differences and overlap."""
    answers = responses.select("model", "method", "axis", "idx", "response").unique(
        subset=["model", "method", "idx"], keep="last", maintain_order=True
    )
    with_stats = response_stats(answers.unique(subset=["response"]).select("response")).join(
        answers, on="response", how="right"
    )
    base = with_stats.filter(pl.col("method") == "none").drop("method", "axis")
    quant = with_stats.filter(pl.col("method") != "none")
    pairs = quant.join(base, on=list(KEYS), how="inner", suffix="_base").rename(
        {"response": "response_quant", **{name: f"{name}_quant" for name in RESPONSE_STATS}}
    )
    measured = pair_stats(pairs).with_columns(
        *[(pl.col(f"{name}_quant") - pl.col(f"{name}_base")).alias(f"{name}_diff") for name in RESPONSE_STATS],
        dataset=pl.lit(dataset),
        dataset_group=pl.lit(dataset_group(dataset)),
    )
    ids = ["dataset", "dataset_group", "model", "method", "axis", "idx"]
    return measured.select(*ids, *[c for c in measured.columns if c not in ids and not c.startswith("response")])


def summarize(pairs: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Per `by` group: answer pairs, words natively and quantized, change, ROUGE-Lsum recall of the
    quantized answer against the native one, shared word prefix (and % identical), 3-gram
    repetition and non-English change."""
    if pairs.is_empty():
        return pl.DataFrame()
    return (
        pairs.group_by(*by)
        .agg(
            pairs=pl.len(),
            words_native=pl.col("num_words_base").mean(),
            words_quantized=pl.col("num_words_quant").mean(),
            words_change=pl.col("num_words_diff").mean(),
            rougeLsum_recall=pl.col("rougeLsum_recall").mean(),
            common_prefix_frac=pl.col("common_prefix_frac").mean(),
            identical=(pl.col("common_prefix_frac") == 1.0).mean() * 100.0,
            max_3gram_rep_change=pl.col("max_3gram_rep_diff").mean(),
            non_english_change=pl.col("prop_non_english_diff").mean(),
        )
        .sort(*by)
    )
