"""Choice log-probs -> probabilities, chosen answer, normalized entropy, uncertainty bins.

The reference (spec §3.1-3.2, §8.2) scores a choice by the geometric mean of its token
probabilities, exp(sum_logprob / n_tokens), and normalizes these scores across the choices
(= a softmax over mean token log-probs, NOT over summed log-probs). The chosen answer is the
first argmax; entropy is -sum p log2 p over the nonzero probabilities, divided by log2(K).
The reference stores probabilities rounded to 8 decimals (`res_probs`); we keep the exact
values in `probs` and the rounded ones separately in `probs_rounded`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

REFERENCE_DECIMALS = 8
UNCERTAINTY_BINS = ("low", "medium", "high")  # normalized entropy <= 1/3 < medium <= 2/3 < high


def choice_probabilities(sum_logprob: Sequence[float], n_tokens: Sequence[int]) -> np.ndarray:
    """Normalized geometric-mean token probability per choice."""
    mean = np.asarray(sum_logprob, dtype=np.float64) / np.asarray(n_tokens, dtype=np.float64)
    scores = np.exp(mean - mean.max())  # shifting by the max changes nothing after normalizing
    return scores / scores.sum()


def chosen_index(probs: Sequence[float]) -> int:
    """The reference's `list.index(max(probs))`: the first choice on ties."""
    return int(np.argmax(np.asarray(probs)))


def normalized_entropy(probs: Sequence[float]) -> float:
    """Entropy in bits over the nonzero probabilities (renormalized), divided by log2(K)."""
    values = np.asarray(probs, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    nonzero = values[values > 0]
    nonzero = nonzero / nonzero.sum()
    return float(-(nonzero * np.log2(nonzero)).sum() / math.log2(len(values)))


def uncertainty_bin(entropy_norm: float) -> str:
    """The bin of one value, by the one rule of `uncertainty_bin_expr`."""
    return pl.select(uncertainty_bin_expr(pl.lit(entropy_norm, pl.Float64))).item()


def add_choice_views(frame: pl.DataFrame | pl.LazyFrame, *, decimals: int = REFERENCE_DECIMALS):
    """Add probs, probs_rounded, chosen_idx, chosen_text, entropy_norm to a frame of raw scores.

    Needs the list columns `choice_sum_logprob`, `choice_n_tokens` and `choices` (one row per
    question); vectorised, the same numbers as the scalar functions above.
    """
    mean = (pl.col("choice_sum_logprob") / pl.col("choice_n_tokens").cast(pl.List(pl.Float64))).list.eval(
        (pl.element() - pl.element().max()).exp()
    )
    probs = mean.list.eval(pl.element() / pl.element().sum())
    n_choices = pl.col("probs").list.len()
    entropy_bits = (
        pl.col("probs")
        .list.eval(
            (pl.element().filter(pl.element() > 0) / pl.element().filter(pl.element() > 0).sum()).pipe(
                lambda p: -(p * p.log(2)).sum()
            )
        )
        .list.first()
    )
    return (
        frame.with_columns(probs.alias("probs"))
        .with_columns(
            pl.col("probs").list.eval(pl.element().round(decimals)).alias("probs_rounded"),
            pl.col("probs").list.arg_max().cast(pl.Int32).alias("chosen_idx"),
            pl.when(n_choices > 1)
            .then(entropy_bits / n_choices.cast(pl.Float64).log(2))
            .otherwise(0.0)
            .alias("entropy_norm"),
        )
        .with_columns(pl.col("choices").list.get(pl.col("chosen_idx")).alias("chosen_text"))
    )


def uncertainty_bin_expr(entropy_norm: pl.Expr) -> pl.Expr:
    """low <= 1/3 < medium <= 2/3 < high (`UNCERTAINTY_BINS`); NaN and null fall into high, as in
    the reference."""
    return (
        pl.when(entropy_norm <= 1 / 3)
        .then(pl.lit("low"))
        .when(entropy_norm <= 2 / 3)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("high"))
    )
