import polars as pl

from quantbias_assets import figures
from quantbias_assets.markdown import report_table


def test_plot_order_names_every_dataset_group_in_the_papers_order():
    assert figures.DATASET_ORDER == (
        "CEB-Recognition", "Adult", "Credit", "Jigsaw", "StereoSet", "SocialStigmaQA", "BBQ", "IAT",
        "BiasLens-Choices", "CEB-Continuation", "CEB-Conversation", "BiasLens-GenWhy", "FMT10K",
    )  # fmt: skip
    assert figures.ordered(["FMT10K", "BBQ", "Adult", "zzz", "CEB-Recognition"], figures.DATASET_ORDER) == [
        "CEB-Recognition",
        "Adult",
        "BBQ",
        "FMT10K",
        "zzz",
    ]


def test_a_figure_without_data_is_skipped_not_drawn():
    empty = pl.DataFrame(
        schema={"dataset_group": pl.String, "pct_significant": pl.Float64, "pct_more_biased": pl.Float64}
    )
    assert figures.fig3a_significant_changes(empty) is None


def test_markdown_table_rounds_floats_and_keeps_other_values():
    table = pl.DataFrame({"bin": ["high"], "rows": [3], "flip": [66.666]})
    assert report_table(table, 1) == "| bin | rows | flip |\n|---|---|---|\n| high | 3 | 66.7 |"
