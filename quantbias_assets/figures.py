"""The paper's figures (spec reference_metrics.md §8.2) drawn from the marts and paired rows.

Each `fig*` function takes polars frames and returns a matplotlib Figure, or None when its
data is empty (a figure about datasets nobody has scored yet is skipped, not an error).
Pure: no disk, no Dagster. matplotlib only (KDEs through scipy), with the Agg backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from scipy.stats import gaussian_kde

from quantbias_assets.catalog.datasets import group_plot_order
from quantbias_assets.catalog.methods import quantized_label_order

DATASET_ORDER = group_plot_order()  # the paper's plot order of dataset groups, from the catalog
METHOD_ORDER = quantized_label_order()  # labels of the quantized methods in plot order, from the catalog
GREEN, RED, BLUE, CLAY = "#4c9a6a", "#c0504d", "#4f81bd", "#d99a6c"


def ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    known = [v for v in order if v in values]
    return known + sorted(v for v in values if v not in order)


def _kde_rows(
    groups: dict[str, dict[str, np.ndarray]], x_range: tuple[float, float], xlabel: str, title: str
) -> Figure | None:
    """One row per dataset, one density curve per series (each normalised separately)."""
    rows = {name: series for name, series in groups.items() if any(len(v) > 1 for v in series.values())}
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(6, 1.3 * len(rows) + 0.8), sharex=True, squeeze=False)
    grid = np.linspace(*x_range, 200)
    for ax, (name, series) in zip(axes[:, 0], rows.items()):
        for label, values in series.items():
            values = values[np.isfinite(values)]
            if len(values) > 1 and np.ptp(values) > 0:
                ax.plot(grid, gaussian_kde(values)(grid), label=label)
            elif len(values):
                ax.axvline(values[0], label=label, linestyle="--")
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(xlabel)
    axes[-1, 0].set_xlim(*x_range)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _by_dataset(frame: pl.DataFrame, series: Callable[[pl.DataFrame], dict[str, np.ndarray]]) -> dict:
    names = ordered(frame["dataset_group"].unique().to_list(), DATASET_ORDER)
    return {name: series(frame.filter(pl.col("dataset_group") == name)) for name in names}


def fig2a_flipping_under_uncertainty(closed_pairs: pl.DataFrame) -> Figure | None:
    groups = _by_dataset(
        closed_pairs,
        lambda d: {
            "changed": d.filter(pl.col("flipped"))["entropy_norm_base"].to_numpy(),
            "unchanged": d.filter(~pl.col("flipped"))["entropy_norm_base"].to_numpy(),
        },
    )
    return _kde_rows(groups, (0.0, 1.0), "Initial Model Uncertainty", "Fig 2a: flips happen under uncertainty")


def fig2b_entropy_before_after(closed_pairs: pl.DataFrame) -> Figure | None:
    if closed_pairs.is_empty():
        return None
    names = ordered(closed_pairs["dataset_group"].unique().to_list(), DATASET_ORDER)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.2))
    positions = np.arange(len(names))
    for offset, (label, column, dedup) in zip(
        (-0.18, 0.18), (("original", "entropy_norm_base", True), ("quantized", "entropy_norm_quant", False))
    ):
        data = []
        for name in names:
            rows = closed_pairs.filter(pl.col("dataset_group") == name)
            if dedup:  # each base response once, not once per quantized model
                rows = rows.unique(subset=["model", "idx"])
            data.append(rows[column].drop_nulls().to_numpy())
        ax.boxplot(
            data,
            positions=positions + offset,
            widths=0.3,
            orientation="horizontal",
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": BLUE if dedup else CLAY},
            label=label,
        )
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Normalized entropy")
    ax.legend(fontsize=7)
    ax.set_title("Fig 2b: uncertainty before and after quantization", fontsize=10)
    fig.tight_layout()
    return fig


def fig2c_uncertainty_change_w8_vs_w4(closed_pairs: pl.DataFrame) -> Figure | None:
    rtn = closed_pairs.filter(pl.col("method").is_in(["rtn-w8a16", "rtn-w4a16"]))
    groups = _by_dataset(
        rtn,
        lambda d: {
            "RTN W8A16": d.filter(pl.col("method") == "rtn-w8a16")["entropy_delta"].to_numpy(),
            "RTN W4A16": d.filter(pl.col("method") == "rtn-w4a16")["entropy_delta"].to_numpy(),
        },
    )
    return _kde_rows(
        groups, (-0.3, 0.3), "Change in normalized entropy", "Fig 2c: 4-bit moves uncertainty more than 8-bit"
    )


def _overlaid_bars(
    names: list[str],
    full: np.ndarray,
    overlay: np.ndarray,
    labels: tuple[str, str],
    colors: tuple[str, str],
    xlabel: str,
    title: str,
    xlim: float,
) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, full, color=colors[0], label=labels[0])
    ax.barh(names, overlay, color=colors[1], label=labels[1])
    ax.invert_yaxis()
    ax.set_xlim(0, max(xlim, float(np.nanmax(full, initial=0)) * 1.05))
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig3a_significant_changes(fig3a: pl.DataFrame) -> Figure | None:
    if fig3a.is_empty():
        return None
    names = ordered(fig3a["dataset_group"].to_list(), DATASET_ORDER)
    rows = fig3a.join(pl.DataFrame({"dataset_group": names}), on="dataset_group", how="right")
    return _overlaid_bars(
        names,
        rows["pct_significant"].to_numpy(),
        rows["pct_more_biased"].to_numpy(),
        ("less biased", "more biased"),
        (GREEN, RED),
        "% of units with a significant change",
        "Fig 3a: aggregate bias rarely changes",
        50,
    )


def fig3b_effect_sizes(bias_tests: pl.DataFrame) -> Figure | None:
    significant = bias_tests.filter(pl.col("is_significant").fill_null(False))
    groups = _by_dataset(significant, lambda d: {"effect size": d["effect_size"].drop_nulls().to_numpy()})
    return _kde_rows(
        groups, (-5.0, 5.0), "Effect size (M_Q - M_B over bootstrap SE)", "Fig 3b: effect sizes of significant changes"
    )


def fig3c_flips_by_significance(fig3c: pl.DataFrame) -> Figure | None:
    if fig3c.is_empty():
        return None
    names = ordered(fig3c["dataset_group"].unique().to_list(), DATASET_ORDER)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.2))
    positions = np.arange(len(names))
    for offset, effect, color in ((-0.2, "significant", RED), (0.2, "not significant", BLUE)):
        rows = pl.DataFrame({"dataset_group": names}).join(
            fig3c.filter(pl.col("effect") == effect), on="dataset_group", how="left"
        )
        ax.barh(
            positions + offset,
            rows["pct_responses_flipped"].fill_null(0).to_numpy(),
            height=0.4,
            color=color,
            label=f"{effect} effect",
        )
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% responses flipped")
    ax.legend(fontsize=7)
    ax.set_title("Fig 3c: responses flip even where aggregates do not move", fontsize=10)
    fig.tight_layout()
    return fig


def _heatmap(
    frame: pl.DataFrame,
    row: str,
    column: str,
    value: str,
    columns_order: Sequence[str],
    cmap: str,
    title: str,
    colorbar: str,
) -> Figure | None:
    if frame.is_empty():
        return None
    rows = ordered([r for r in frame[row].unique().to_list() if r != "Avg"], DATASET_ORDER)
    rows += ["Avg"] if "Avg" in frame[row].to_list() else []
    cols = ordered(frame[column].unique().to_list(), columns_order)
    grid = np.full((len(rows), len(cols)), np.nan)
    for r, c, v in frame.select(row, column, value).iter_rows():
        grid[rows.index(r), cols.index(c)] = v
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.45 * len(rows) + 1.5))
    image = ax.imshow(grid, cmap=cmap, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig4a_by_method(fig4a: pl.DataFrame) -> Figure | None:
    return _heatmap(
        fig4a,
        "dataset_group",
        "method_label",
        "pct_significant",
        METHOD_ORDER,
        "Blues",
        "Fig 4a: significant changes by quantization method",
        "Behavior Flipping (%)",
    )


def fig4b_by_model(fig4b: pl.DataFrame) -> Figure | None:
    return _heatmap(
        fig4b,
        "dataset_group",
        "model",
        "pct_significant",
        (),
        "OrRd",
        "Fig 4b: significant changes by base model",
        "Behavior Flipping (%)",
    )


def fig4c_rankings(rankings: pl.DataFrame, dataset_group: str = "FMT10K", method: str = "rtn-w4a16") -> Figure | None:
    """The paper's cell (FMT10K, RTN W4A16), or the first ranked cell when that one is absent."""
    if rankings.is_empty():
        return None
    cell = rankings.filter((pl.col("dataset_group") == dataset_group) & (pl.col("method") == method))
    if cell.is_empty():
        first = rankings.sort("dataset_group", "method").row(0, named=True)
        dataset_group, method = first["dataset_group"], first["method"]
        cell = rankings.filter((pl.col("dataset_group") == dataset_group) & (pl.col("method") == method))
    long = pl.concat(
        [
            cell.select("model", pl.lit("Original").alias("column"), pl.col("rank_native").alias("rank")),
            cell.select("model", pl.lit(method).alias("column"), pl.col("rank_quantized").alias("rank")),
        ]
    )
    return _heatmap(
        long.with_columns(pl.col("rank").cast(pl.Float64)),
        "model",
        "column",
        "rank",
        ("Original",),
        "BuGn_r",
        f"Fig 4c: {dataset_group} rankings before and after {method}",
        "Rank (1 = least biased)",
    )


def fig5a_flips_per_question(fig5a: pl.DataFrame) -> Figure | None:
    groups = _by_dataset(fig5a, lambda d: {"questions": d["pct_flipped"].to_numpy()})
    return _kde_rows(groups, (0.0, 100.0), "% Flipped Per Question", "Fig 5a: a few questions flip everywhere")


def fig5b_bbq_groups(fig5b: pl.DataFrame) -> Figure | None:
    levels = [lv for lv in ("all", "model", "method") if lv in fig5b["level"].to_list()] if not fig5b.is_empty() else []
    if not levels:
        return None
    fig, axes = plt.subplots(len(levels), 1, figsize=(6, 2.2 * len(levels) + 0.5), squeeze=False)
    for ax, level in zip(axes[:, 0], levels):
        rows = fig5b.filter(pl.col("level") == level).sort("diff_unb_to_b")
        rows = pl.concat([rows.head(3), rows.tail(3)]).unique(maintain_order=True)
        labels = [f"{g} ({v})" if level != "all" else g for g, v in rows.select("group", "level_value").iter_rows()]
        ax.barh(labels, rows["perc_bias_flipped"].to_numpy(), color=BLUE, label="Biased→Unbiased")
        ax.barh(labels, rows["unbiased_to_biased"].to_numpy(), color=CLAY, label="Unbiased→Biased")
        ax.set_title(f"across {level}" if level == "all" else f"by {level}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("Percentage of Responses")
    fig.suptitle("Fig 5b: BBQ bias flips are asymmetric across groups", fontsize=10)
    fig.tight_layout()
    return fig
