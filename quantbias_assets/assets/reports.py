"""`reports/paper_figures`: the paper's figures as PNG files, shown on the asset page.

Everything is read from the dbt warehouse (the marts and the staged paired rows), so the
figures show exactly what the marts say. The materialization carries the headline numbers and
Table 1 as markdown tables (`summary`) and every figure embedded in markdown as a base64 data
URI (`figures`): the Dagster UI renders `data:` images in markdown metadata, so the figures are
on the asset page, not only paths on the orchestrator's disk.
"""

import base64
from pathlib import Path

import dagster as dg
import polars as pl

from quantbias_assets import figures
from quantbias_assets.markdown import report_table
from quantbias_assets.warehouse import warehouse_query
from resources.warehouse import WarehouseResource

MART_DEPS = [
    dg.AssetKey(["marts", name])
    for name in (
        "stg_paired_responses",
        "stg_bias_tests",
        "table1_uncertainty_bins",
        "uncertainty_flip_ratio",
        "fig3a_significance_by_dataset",
        "fig3c_flips_by_significance",
        "fig4a_significance_by_method",
        "fig4b_significance_by_model",
        "fig4c_model_rankings",
        "fig5a_flips_per_question",
        "fig5b_bbq_group_asymmetry",
    )
]


def read_warehouse(duckdb_path: Path) -> dict[str, pl.DataFrame]:
    with warehouse_query(duckdb_path) as table:
        return {
            "closed_pairs": table(
                "select dataset_group, model, method, idx, flipped, entropy_norm_base, entropy_norm_quant,"
                " entropy_delta from stg_paired_responses where style = 'closed'"
            ),
            "bias_tests": table("select * from stg_bias_tests"),
            "table1": table("select * from table1_uncertainty_bins order by dataset_group, uncertainty_bin"),
            "ratio": table("select * from uncertainty_flip_ratio order by dataset_group"),
            "fig3a": table("select * from fig3a_significance_by_dataset"),
            "fig3c": table("select * from fig3c_flips_by_significance"),
            "fig4a": table("select * from fig4a_significance_by_method"),
            "fig4b": table("select * from fig4b_significance_by_model"),
            "fig4c": table("select * from fig4c_model_rankings"),
            "fig5a": table("select * from fig5a_flips_per_question"),
            "fig5b": table("select * from fig5b_bbq_group_asymmetry"),
        }


def draw_all(data: dict[str, pl.DataFrame]) -> dict[str, object]:
    return {
        "fig2a-flipping_under_uncertainty": figures.fig2a_flipping_under_uncertainty(data["closed_pairs"]),
        "fig2b-entropy_before_after_quant": figures.fig2b_entropy_before_after(data["closed_pairs"]),
        "fig2c-uncertainty_changes_in_w4_vs_w8": figures.fig2c_uncertainty_change_w8_vs_w4(data["closed_pairs"]),
        "fig3a-perc_significant": figures.fig3a_significant_changes(data["fig3a"]),
        "fig3b-effect_size": figures.fig3b_effect_sizes(data["bias_tests"]),
        "fig3c-response_flipping_by_sig": figures.fig3c_flips_by_significance(data["fig3c"]),
        "fig4a-behavior_flipping_by_quant": figures.fig4a_by_method(data["fig4a"]),
        "fig4b-behavior_flipping_by_model": figures.fig4b_by_model(data["fig4b"]),
        "fig4c-rtnw4_reranking": figures.fig4c_rankings(data["fig4c"]),
        "fig5a-flipping_per_question": figures.fig5a_flips_per_question(data["fig5a"]),
        "fig5b-bbq_bias_flipping_by_social_group": figures.fig5b_bbq_groups(data["fig5b"]),
    }


def summary_markdown(data: dict[str, pl.DataFrame]) -> str:
    table1 = data["table1"].select(
        "dataset_group",
        "uncertainty_bin",
        "n_rows",
        pl.col("pct_responses_rounded").alias("% responses"),
        pl.col("response_flip_rounded").alias("response flip %"),
        pl.col("bias_flip_rounded").alias("bias flip %"),
    )
    fig3a = data["fig3a"].select(
        "dataset_group", "n_units", "n_significant", "pct_significant", "pct_more_biased", "pct_less_biased"
    )
    return (
        "### Table 1: flips by the base model's uncertainty\n"
        + report_table(table1, 0)
        + "\n\n### High- vs low-uncertainty flip rate\n"
        + report_table(data["ratio"], 2)
        + "\n\n### Fig 3a: units with a significant change of the aggregate metric\n"
        + report_table(fig3a, 1)
    )


def figures_markdown(paths: dict[str, Path]) -> str:
    """Each figure under its name, embedded as a PNG data URI."""
    sections = []
    for name, path in paths.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        sections.append(f"### {name}\n![{name}](data:image/png;base64,{encoded})\n\n`{path.name}`")
    return "\n\n".join(sections) or "No figure has data yet."


@dg.asset(
    key=["reports", "paper_figures"],
    deps=MART_DEPS,
    group_name="analysis",
    kinds={"matplotlib"},
    code_version="2",
    description="The paper's figures (Fig 2a-5b) as PNG files, shown in the `figures` metadata; Table 1 and "
    "the headline numbers as markdown tables in `summary`.",
)
def paper_figures(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    data = read_warehouse(warehouse.database_file)
    out_dir = warehouse.figures_folder
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    skipped = []
    for name, figure in draw_all(data).items():
        if figure is None:
            skipped.append(name)
            continue
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=150)
        figures.plt.close(figure)
        written[name] = path
    context.log.info(f"wrote {len(written)} figures to {out_dir}; no data yet for {skipped or 'none'}")
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary_markdown(data)),
            "figures": dg.MetadataValue.md(figures_markdown(written)),
            "figures_dir": dg.MetadataValue.path(str(out_dir)),
            "figures_written": len(written),
            "figures_without_data": ", ".join(skipped) or "none",
        }
    )
