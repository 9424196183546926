"""`analysis/model_rankings`: how quantization reorders the models' bias rankings (Fig 4c).

The reference ranks models on FMT10K by % unsafe, natively and after RTN W4A16, with
CI-overlap dense ranks (spec §7.1). We rank every dataset group for every method (the paper's
cell is one row of this table) and add Kendall's τ between the two rankings.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from quantbias_assets import tables
from quantbias_assets.analysis.rankings import rank_models, ranking_kendall_tau
from quantbias_assets.assets.analysis import GROUP_NAME, PAIRED_RESPONSES_KEY
from quantbias_assets.assets.common import location_metadata
from quantbias_assets.markdown import markdown_table
from resources.lake import LakeResource

MODEL_RANKINGS_KEY = dg.AssetKey(tables.MODEL_RANKINGS)

RANKING_SCHEMA = {
    "dataset_group": pl.String, "method": pl.String, "model": pl.String,
    "pct_biased_native": pl.Float64, "ci_low_native": pl.Float64, "ci_high_native": pl.Float64,
    "rank_native": pl.Int64, "pct_biased_quantized": pl.Float64, "ci_low_quantized": pl.Float64,
    "ci_high_quantized": pl.Float64, "rank_quantized": pl.Int64, "kendall_tau": pl.Float64,
    "kendall_p": pl.Float64,
}  # fmt: skip


class RankingConfig(dg.Config):
    seed: int = Field(default=0, description="seeds the bootstrap of every (dataset, method, side, model)")
    resamples: int = Field(default=1000, description="bootstrap resamples per model")


def wide_ranking(long: pl.DataFrame, dataset_group: str, method: str) -> pl.DataFrame:
    """One row per model: native and quantized rate, CI and rank side by side."""
    sides = [
        long.filter(pl.col("side") == side)
        .drop("side")
        .rename(
            {
                "pct_biased": f"pct_biased_{name}",
                "ci_low": f"ci_low_{name}",
                "ci_high": f"ci_high_{name}",
                "rank": f"rank_{name}",
            }
        )
        for side, name in (("original", "native"), ("quantized", "quantized"))
    ]
    tau, p = ranking_kendall_tau(long)
    return (
        sides[0]
        .join(sides[1], on="model", how="inner")
        .with_columns(
            dataset_group=pl.lit(dataset_group), method=pl.lit(method), kendall_tau=pl.lit(tau), kendall_p=pl.lit(p)
        )
        .select(list(RANKING_SCHEMA))
        .cast(RANKING_SCHEMA)
    )


def all_rankings(pairs: pl.DataFrame, *, seed: int, resamples: int) -> pl.DataFrame:
    units = pairs.select("dataset_group", "method").unique().sort("dataset_group", "method").iter_rows()
    frames = [
        wide_ranking(
            rank_models(pairs, dataset_group=group, method=method, seed=seed, resamples=resamples), group, method
        )
        for group, method in units
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema=RANKING_SCHEMA)


@dg.asset(
    key=MODEL_RANKINGS_KEY,
    deps=[PAIRED_RESPONSES_KEY],
    group_name=GROUP_NAME,
    code_version="model-rankings-v1",
    kinds={"delta", "polars"},
    description="Models ranked by bootstrapped % biased (open: % unsafe) natively and quantized, "
    "with CI-overlap dense ranks and Kendall's tau, per dataset group and method.",
)
def model_rankings(
    context: dg.AssetExecutionContext, config: RankingConfig, lake: LakeResource
) -> dg.MaterializeResult:
    pairs = lake.scan(lake.uri(*PAIRED_RESPONSES_KEY.path)).collect()
    rankings = all_rankings(pairs, seed=config.seed, resamples=config.resamples)
    uri = lake.uri(*MODEL_RANKINGS_KEY.path)
    lake.write_table(rankings, uri)
    taus = rankings.unique(subset=["dataset_group", "method"]).select("dataset_group", "method", "kendall_tau")
    context.log.info(f"ranked {rankings['model'].n_unique()} models in {taus.height} (dataset, method) cells")
    return dg.MaterializeResult(
        metadata={
            **location_metadata(uri, rankings.height),
            "kendall_tau": dg.MetadataValue.md(markdown_table(taus.sort("dataset_group", "method"), 2)),
        }
    )
