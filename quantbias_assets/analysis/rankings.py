"""Ranking disruption (spec §7.1, Fig 4c): models ranked by a bootstrapped rate of biased
(for open datasets: unsafe) answers, natively and after one quantization method, with the
reference's CI-overlap dense ranks, plus Kendall's τ between the two rankings (an extra)."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from quantbias_assets.analysis.pairs import analysis_rows
from quantbias_assets.analysis.stats import unit_rng


def bootstrap_percent(
    flags: np.ndarray, rng: np.random.Generator, resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(bootstrap mean, CI low, CI high) of 100·mean(flags), percentile CI, vectorised."""
    rows = rng.integers(0, flags.size, size=(resamples, flags.size))
    means = 100 * flags[rows].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(means.mean()), float(low), float(high)


def ci_overlap_dense_rank(means: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Dense ranks (1 = lowest mean) where a model ties with the FIRST model of the current group
    when either's mean lies in the other's CI; the group ends at the first model that does not
    (so, as in the reference, the relation is anchored and not transitive)."""
    order = np.argsort(means, kind="stable")
    ranks = np.zeros(means.size, dtype=np.int64)
    rank, start = 0, 0
    while start < order.size:  # loops over models (a handful), not rows
        rank += 1
        anchor = order[start]
        end = start + 1
        while end < order.size and _overlaps(order[end], anchor, means, lows, highs):
            end += 1
        ranks[order[start:end]] = rank
        start = end
    return ranks


def _overlaps(j: int, i: int, means: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> bool:
    return bool(lows[i] <= means[j] <= highs[i] or lows[j] <= means[i] <= highs[j])


def rank_models(
    pairs: pl.DataFrame,
    *,
    dataset_group: str,
    method: str,
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """One row per (model, side ∈ {original, quantized}): % biased, its CI and the rank.

    The original side is each base model's native answers, deduplicated by (model, idx); the
    quantized side is that model's answers after `method`.
    """
    # sorted so the seeded resamples do not depend on the order rows were read in
    rows = (
        analysis_rows(pairs)
        .filter((pl.col("dataset_group") == dataset_group) & (pl.col("method") == method))
        .sort("model", "dataset", "idx")
    )
    sides = {
        "original": rows.filter(pl.col("is_biased_base").is_not_null())
        .unique(subset=["model", "idx"], keep="first", maintain_order=True)
        .select("model", flag="is_biased_base"),
        "quantized": rows.filter(pl.col("is_biased_quant").is_not_null()).select("model", flag="is_biased_quant"),
    }
    records = []
    for side, frame in sides.items():
        by_model = frame.partition_by("model", as_dict=True, maintain_order=True)
        models = sorted(str(key[0]) for key in by_model)
        estimates = [
            bootstrap_percent(
                by_model[(model,)].get_column("flag").cast(pl.Float64).to_numpy(),
                unit_rng(seed, ("ranking", dataset_group, method, side, model)),
                resamples,
                confidence,
            )
            for model in models
        ]
        if not estimates:
            continue
        means, lows, highs = (np.array(column) for column in zip(*estimates, strict=True))
        ranks = ci_overlap_dense_rank(means, lows, highs)
        records += [
            {"model": model, "side": side, "pct_biased": mean, "ci_low": low, "ci_high": high, "rank": int(rank)}
            for model, mean, low, high, rank in zip(models, means, lows, highs, ranks, strict=True)
        ]
    schema = {"model": pl.String, "side": pl.String, "pct_biased": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "rank": pl.Int64}  # fmt: skip
    return pl.DataFrame(records, schema=schema).sort("side", "rank", "model")


def ranking_kendall_tau(ranking: pl.DataFrame) -> tuple[float, float]:
    """Kendall's τ-b (and its p value) between the original and quantized ranks of the models
    ranked on both sides; NaN with fewer than two such models."""
    wide = ranking.pivot(on="side", index="model", values="rank").drop_nulls()
    if wide.height < 2 or not {"original", "quantized"} <= set(wide.columns):
        return float("nan"), float("nan")
    result = scipy_stats.kendalltau(wide.get_column("original").to_numpy(), wide.get_column("quantized").to_numpy())
    return float(result.statistic), float(result.pvalue)
