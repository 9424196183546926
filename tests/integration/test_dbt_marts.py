"""dbt build over Delta tables in a temporary lake, through the dagster-dbt assets.

Expected values are computed by hand from the rows written here.
"""

import base64
import os

import dagster as dg
import duckdb
import polars as pl
import pytest

from quantbias_assets import lake
from quantbias_assets.analysis.pairs import ANALYSED
from quantbias_assets.assets.marts import analysis_marts
from quantbias_assets.assets.reports import paper_figures
from resources.dbt import dbt_resource
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource


def paired_row(idx: int, *, bin_: str, flipped: bool, bias_flipped: bool, context: str = "ambig") -> dict:
    return dict(
        dataset="BBQ",
        dataset_group="BBQ",
        style="closed",
        model="m-1b",
        method="rtn-w4a16",
        axis="age",
        idx=f"BBQ/age/{idx}",
        group="old",
        context_condition=context,
        n_choices=3,
        chosen_base=0,
        chosen_quant=1 if flipped else 0,
        prob_biased_base=0.5,
        prob_biased_quant=0.5,
        is_biased_base=False,
        is_biased_quant=bias_flipped,
        entropy_norm_base=0.5,
        entropy_norm_quant=0.5,
        entropy_delta=0.0,
        uncertainty_bin=bin_,
        flipped=flipped,
        bias_flipped=bias_flipped,
        unbiased_to_biased=bias_flipped,
        biased_to_unbiased=False,
        param_size_b=1.0,
    )


def open_row(idx: str, group: str | None, base: bool, quant: bool | None, *, method: str = "gptq-w4a16") -> dict:
    """An FMT10K pair of m-14b; `quant` None is an invalid verdict (no flags, no flips)."""
    flags_known = quant is not None
    return dict(
        dataset="FMT10K-IM-S",
        dataset_group="FMT10K",
        style="open",
        model="m-14b",
        method=method,
        axis="gender",
        idx=f"FMT10K-IM-S/{idx}",
        group=group,
        context_condition=None,
        is_biased_base=base,
        is_biased_quant=quant,
        flipped=base != quant if flags_known else None,
        bias_flipped=base != quant if flags_known else None,
        unbiased_to_biased=(not base and quant) if flags_known else None,
        biased_to_unbiased=(base and not quant) if flags_known else None,
        param_size_b=14.0,
    )


def group_rows() -> list[dict]:
    """Open pairs for the group tables (>= 30 questions, single labels) and the method summaries."""

    def rows(group: str, flags: list[tuple[bool, bool | None]]) -> list[dict]:
        return [open_row(f"{group}/{i}", group, base, quant) for i, (base, quant) in enumerate(flags)]

    return [
        # male: 40 valid rows, 10 U->B, 5 B->U; 2 invalid verdicts left out (not rows, not questions)
        *rows("male", [(False, True)] * 10 + [(True, False)] * 5 + [(False, False)] * 25 + [(False, None)] * 2),
        # short: 30 rows, 6 B->U
        *rows("short", [(True, False)] * 6 + [(True, True)] * 24),
        *rows("male, old", [(False, True)] * 30),  # a multi-group label: dropped
        *rows("tall", [(False, True)] * 10),  # 10 questions: dropped
        # RTN W8A16, the 8-bit baseline: 1 of 4 flipped
        *[open_row(f"w8/{i}", None, False, i == 0, method="rtn-w8a16") for i in range(4)],
    ]


def unit_row(axis: str, method: str, *, n: int, significant: bool | None, flip_rate: float, p: float | None) -> dict:
    return dict(
        dataset="BBQ",
        dataset_group="BBQ",
        model="m-1b",
        method=method,
        axis=axis,
        n=n,
        metric="bbq_ambig_bias_score",
        metric_base=0.1,
        metric_quant=0.2,
        diff=0.1,
        p_value=p,
        q_value=p,
        is_significant=significant,
        direction="more_biased" if significant else "none",
        effect_size=1.0,
        direction_reference="less_biased",
        effect_size_reference=-1.0,
        ci_low=0.0,
        ci_high=0.2,
        mcnemar_p=0.5,
        flip_rate=flip_rate,
    )


@pytest.fixture(scope="module")
def marts_home(tmp_path_factory):
    return tmp_path_factory.mktemp("marts")


@pytest.fixture(scope="module")
def built_marts(marts_home):
    """One dbt build (the slow part) shared by every test of this module."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("QUANTBIAS_HOME", str(marts_home / "home"))
        yield from build_marts(marts_home)


def build_marts(tmp_path):
    root = str(tmp_path / "lake")
    paired = [
        paired_row(0, bin_="low", flipped=False, bias_flipped=False),
        paired_row(1, bin_="low", flipped=True, bias_flipped=False),
        paired_row(2, bin_="medium", flipped=False, bias_flipped=False),
        paired_row(3, bin_="high", flipped=True, bias_flipped=True),
        paired_row(4, bin_="high", flipped=True, bias_flipped=False),
        paired_row(5, bin_="high", flipped=False, bias_flipped=False),
        # disambiguated rows are kept in the lake but not analysed (spec §1.2)
        paired_row(6, bin_="low", flipped=True, bias_flipped=True, context="disambig"),
        paired_row(7, bin_="low", flipped=True, bias_flipped=True, context="disambig"),
    ]
    frame = pl.DataFrame(paired + group_rows(), infer_schema_length=None).with_columns(analysed=ANALYSED)
    lake.write_table(frame, lake.table_uri(root, "analysis", "paired_responses"))
    tests = [
        unit_row("age", "rtn-w4a16", n=50, significant=True, flip_rate=0.2, p=0.001),
        unit_row("nationality", "rtn-w4a16", n=150, significant=False, flip_rate=0.4, p=0.5),
        unit_row("age", "rtn-w8a16", n=5, significant=None, flip_rate=0.0, p=None),
    ]
    lake.write_table(pl.DataFrame(tests), lake.table_uri(root, "analysis", "bias_tests"))
    rankings = [
        dict(
            dataset_group="FMT10K",
            method="rtn-w4a16",
            model="a",
            pct_biased_native=1.0,
            ci_low_native=0.5,
            ci_high_native=1.5,
            rank_native=1,
            pct_biased_quantized=4.0,
            ci_low_quantized=3.0,
            ci_high_quantized=5.0,
            rank_quantized=2,
            kendall_tau=-1.0,
            kendall_p=1.0,
        ),
        dict(
            dataset_group="FMT10K",
            method="rtn-w4a16",
            model="b",
            pct_biased_native=3.0,
            ci_low_native=2.5,
            ci_high_native=3.5,
            rank_native=2,
            pct_biased_quantized=1.0,
            ci_low_quantized=0.5,
            ci_high_quantized=1.5,
            rank_quantized=1,
            kendall_tau=-1.0,
            kendall_p=1.0,
        ),
    ]
    lake.write_table(pl.DataFrame(rankings), lake.table_uri(root, "analysis", "model_rankings"))
    working_directory = os.getcwd()
    resources = {"dbt": dbt_resource(), "lake": LakeResource(root=root), "warehouse": WarehouseResource()}
    result = dg.materialize([analysis_marts, paper_figures], resources=resources)
    assert result.success
    # dbt's in-process adapter chdirs into the project; the step puts the process back where it was
    assert os.getcwd() == working_directory
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        yield con, result


@pytest.mark.slow
def test_table1_bins_flip_rates_and_ratio(built_marts):
    built_marts, _ = built_marts
    rows = built_marts.execute(
        "select uncertainty_bin, n_rows, pct_responses, response_flip, bias_flip "
        "from table1_uncertainty_bins order by uncertainty_bin"
    ).fetchall()
    # 6 ambiguous rows: low 2 (1 flip), medium 1 (0), high 3 (2 flips, 1 bias flip)
    assert [(r[0], r[1]) for r in rows] == [("high", 3), ("low", 2), ("medium", 1)]
    high, low, medium = rows
    assert high[2:] == pytest.approx((50.0, 200 / 3, 100 / 3))
    assert low[2:] == pytest.approx((100 / 3, 50.0, 0.0))
    assert medium[2:] == pytest.approx((100 / 6, 0.0, 0.0))
    ratio = built_marts.execute("select high_to_low_ratio from uncertainty_flip_ratio").fetchone()[0]
    assert ratio == pytest.approx((200 / 3) / 50.0)


@pytest.mark.slow
def test_significance_marts(built_marts):
    built_marts, _ = built_marts
    fig3a = built_marts.execute(
        "select n_units, n_significant, pct_significant, pct_more_biased, pct_less_biased "
        "from fig3a_significance_by_dataset"
    ).fetchone()
    assert fig3a == pytest.approx((3, 1, 100 / 3, 100 / 3, 0.0))
    fig3c = dict(
        built_marts.execute("select effect, pct_responses_flipped from fig3c_flips_by_significance").fetchall()
    )
    assert fig3c["significant"] == pytest.approx(20.0)
    assert fig3c["not significant"] == pytest.approx(100 * (0.4 * 150 + 0.0 * 5) / 155)
    fig4a = dict(
        built_marts.execute(
            "select method_label, pct_significant from fig4a_significance_by_method where dataset_group = 'Avg'"
        ).fetchall()
    )
    assert fig4a == pytest.approx({"RTN W4A16": 50.0, "RTN W8A16": 0.0})
    changes = dict(built_marts.execute("select model, rank_change from fig4c_model_rankings").fetchall())
    assert changes == {"a": 1, "b": -1}


@pytest.mark.slow
def test_group_asymmetry_leaves_out_invalid_verdicts_multi_labels_and_small_groups(built_marts):
    built_marts, _ = built_marts
    rows = built_marts.execute(
        'select dataset_group, method_label, "group", n_questions, n_rows, perc_res_flipped, perc_bias_flipped,'
        " unbiased_to_biased, biased_to_unbiased, diff_unb_to_b from group_asymmetry_by_dataset order by diff_unb_to_b"
    ).fetchall()
    # BBQ "old" has 6 questions (< 30); "male, old" is a multi-group label; "tall" has 10 questions
    assert rows == [
        ("FMT10K", "GPTQ W4A16", "short", 30, 30, 20.0, 20.0, 0.0, 20.0, -20.0),
        # 40 valid rows: 10 U->B, 5 B->U; the 2 rows with an invalid verdict count nowhere
        ("FMT10K", "GPTQ W4A16", "male", 40, 40, 37.5, 37.5, 25.0, 12.5, 12.5),
    ]


@pytest.mark.slow
def test_bits_and_size_summary_per_method_width_and_model(built_marts):
    built_marts, _ = built_marts
    columns = ("n_rows", "pct_flipped", "units", "tested", "significant", "pct_significant", "pct_more_biased",
               "flip_ratio_vs_8bit", "significant_ratio_vs_8bit")  # fmt: skip
    table = {
        row[:3]: dict(zip(columns, row[3:], strict=True))
        for row in built_marts.execute(
            f"select factor, level, style, {', '.join(columns)} from bits_and_size_summary"
        ).fetchall()
    }
    # paired rows: RTN W4A16 6 closed BBQ rows (3 flipped), GPTQ W4A16 112 open rows (110 with a verdict
    # on both sides, 61 flipped), RTN W8A16 4 open rows (1 flipped)
    w4 = table[("method", "rtn-w4a16", "all")]
    assert (w4["n_rows"], w4["pct_flipped"], w4["flip_ratio_vs_8bit"]) == pytest.approx((6, 50.0, 2.0))
    # the units of BBQ: 2 of RTN W4A16 (1 significant, more biased), 1 untested of RTN W8A16
    assert (w4["units"], w4["tested"], w4["significant"], w4["pct_significant"], w4["pct_more_biased"]) == (
        2, 2, 1, 50.0, 50.0
    )  # fmt: skip
    assert w4["significant_ratio_vs_8bit"] is None  # no tested 8-bit unit
    assert table[("method", "rtn-w8a16", "all")]["pct_significant"] is None
    assert table[("method", "rtn-w4a16", "closed")]["flip_ratio_vs_8bit"] is None  # no closed 8-bit rows
    gptq = table[("method", "gptq-w4a16", "open")]
    invalid = built_marts.execute(
        "select n_invalid from bits_and_size_summary"
        " where factor = 'method' and level = 'gptq-w4a16' and style = 'open'"
    ).fetchone()
    assert invalid == (2,)  # the two male rows without a quantized verdict
    assert (gptq["n_rows"], gptq["pct_flipped"]) == pytest.approx((112, 6100 / 110))
    assert gptq["flip_ratio_vs_8bit"] == pytest.approx(6100 / 110 / 25)
    four_bit = table[("w_bits", "4", "all")]
    assert (four_bit["n_rows"], four_bit["pct_flipped"]) == pytest.approx((118, 6400 / 116))
    assert four_bit["flip_ratio_vs_8bit"] == pytest.approx(6400 / 116 / 25)
    assert table[("w_bits", "4", "open")]["flip_ratio_vs_8bit"] == pytest.approx(6100 / 110 / 25)
    sizes = dict(
        built_marts.execute(
            "select level, param_size_b from bits_and_size_summary where factor = 'model' and style = 'all'"
        ).fetchall()
    )
    assert sizes == {"m-1b": 1.0, "m-14b": 14.0}
    m1b = table[("model", "m-1b", "all")]
    assert (m1b["units"], m1b["tested"], m1b["significant"], m1b["pct_significant"]) == (3, 2, 1, 50.0)


@pytest.mark.slow
def test_summary_marts_show_their_whole_table(built_marts):
    _, result = built_marts
    marts = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("analysis_marts")}
    table1 = marts["table1_uncertainty_bins"]["flip_rates_by_uncertainty"].value
    # dataset, bin, choices, rows, % responses, % response flips, % bias flips; bins in order
    assert "| BBQ | low | 3 | 2 | 33 | 50 | 0 |" in table1 and "| BBQ | high | 3 | 3 | 50 | 67 | 33 |" in table1
    assert table1.index("| BBQ | low |") < table1.index("| BBQ | medium |") < table1.index("| BBQ | high |")
    summary = marts["bits_and_size_summary"]
    methods = summary["methods_vs_8bit"].value.splitlines()
    assert [line.split(" | ")[0] for line in methods[2:]] == ["| rtn-w8a16", "| gptq-w4a16", "| rtn-w4a16"]
    assert "| m-1b | 1.00 |" in summary["model_sizes"].value


@pytest.mark.slow
def test_paper_figures_written_with_table1_summary(built_marts, marts_home):
    tmp_path = marts_home
    _, result = built_marts
    metadata = result.asset_materializations_for_node("reports__paper_figures")[0].metadata
    figures_dir = tmp_path / "home" / "reports" / "figures"
    pngs = sorted(p.name for p in figures_dir.glob("*.png"))
    # every figure has data here except Fig 3b (one significant unit: no density) and Fig 2c (no RTN W8A16 rows)
    assert "fig2a-flipping_under_uncertainty.png" in pngs and "fig4a-behavior_flipping_by_quant.png" in pngs
    assert metadata["figures_written"].value == len(pngs)
    assert all((figures_dir / name).stat().st_size > 5_000 for name in pngs)
    summary = metadata["summary"].value
    # Table 1, BBQ high bin: 3 rows, 50 % of responses, 67 % flipped, 33 % bias-flipped (rounded)
    assert "| BBQ | high | 3 | 50 | 67 | 33 |" in summary
    assert "| BBQ | low | 2 | 33 | 50 | 0 |" in summary


@pytest.mark.slow
def test_paper_figures_embed_every_png_in_markdown(built_marts, marts_home):
    tmp_path = marts_home
    _, result = built_marts
    metadata = result.asset_materializations_for_node("reports__paper_figures")[0].metadata
    figures_md = metadata["figures"].value
    figures_dir = tmp_path / "home" / "reports" / "figures"
    for png in sorted(figures_dir.glob("*.png")):
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        assert f"![{png.stem}](data:image/png;base64,{encoded})" in figures_md
    assert figures_md.count("](data:image/png;base64,") == metadata["figures_written"].value


@pytest.mark.slow
def test_marts_metadata_names_the_warehouse_table_with_typed_columns_counts_and_preview(built_marts):
    _, result = built_marts
    marts = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("analysis_marts")}
    table1 = marts["table1_uncertainty_bins"]
    assert table1["dagster/row_count"].value == 3  # high, low, medium
    columns = {c.name: c.type for c in table1["dagster/column_schema"].value.columns}
    assert columns["uncertainty_bin"].startswith("character varying") and columns["n_rows"] == "BIGINT"
    preview = table1["preview"].value.splitlines()
    assert preview[0].startswith("| dataset_group | uncertainty_bin | n_rows |") and len(preview) == 2 + 3
    # dagster-dbt counts tables, not views (a count would run the view's query): the staging views
    without_count = sorted(name for name, meta in marts.items() if "dagster/row_count" not in meta)
    assert without_count == ["stg_bias_tests", "stg_paired_responses"]
    # the storage address is the warehouse file's database, not the `memory` of a parse without one
    spec_metadata = analysis_marts.specs_by_key[dg.AssetKey(["marts", "table1_uncertainty_bins"])].metadata
    assert spec_metadata["dagster/table_name"] == "warehouse.main.table1_uncertainty_bins"
    assert "dagster_dbt/project" not in spec_metadata  # shown as "[DbtProject] (unserializable)"


@pytest.mark.slow
def test_every_mart_carries_column_lineage(built_marts):
    # dagster-dbt derives it with sqlglot, which cannot trace columns through some SQL (UNPIVOT):
    # such a mart gets none, and every build logs a traceback for it
    _, result = built_marts
    marts = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("analysis_marts")}
    without = sorted(name for name, meta in marts.items() if "dagster/column_lineage" not in meta)
    assert without == ["quantization_methods"]  # a seed: a CSV, no upstream columns
    lineage = marts["bits_and_size_summary"]["dagster/column_lineage"].value.deps_by_column
    sources = {column: {(dep.asset_key.path[-1], dep.column_name) for dep in deps} for column, deps in lineage.items()}
    assert sources["pct_flipped"] == {("stg_paired_responses", "flipped")}
    assert sources["n_invalid"] == {
        ("stg_paired_responses", "is_biased_base"),
        ("stg_paired_responses", "is_biased_quant"),
    }
    assert sources["level"] == {
        (table, column)
        for table in ("stg_paired_responses", "stg_bias_tests")
        for column in ("method", "w_bits", "model")
    }


def test_demo_summary_pools_table1_and_reads_tests_per_method_from_the_marts(built_marts, marts_home):
    from quantbias_assets.demo import summary

    text = summary(marts_home / "home" / "warehouse.duckdb")
    # one closed dataset: the pooled bins are its Table 1 rows, in bin order
    assert "| low | 2 | 50.0 | 0.0 |" in text
    assert "| medium | 1 | 0.0 | 0.0 |" in text
    assert "| high | 3 | 66.7 | 33.3 |" in text
    assert text.index("| low |") < text.index("| medium |") < text.index("| high |")
    # units, tested and significant per method: bits_and_size_summary's method rows
    assert "| RTN W4A16 | 2 | 2 | 1 |" in text and "| RTN W8A16 | 1 | 0 | 0 |" in text
