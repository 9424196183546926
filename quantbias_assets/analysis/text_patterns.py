"""Text-pattern changes of open-ended answers (the paper's supplement), base vs quantized.

Per paired row: words, repeated n-grams and non-English share of both answers, their
differences (Q − B), ROUGE-Lsum of Q against B and the longest common word prefix. Each
distinct answer's statistics are computed once, however many pairs it appears in.
"""

from __future__ import annotations

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
