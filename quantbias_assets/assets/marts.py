"""dbt marts as Dagster assets: the paper's tables, built by dbt-duckdb over the lake.

dbt sources are the upstream Delta assets (`analysis/paired_responses`, ...), through the
`meta.dagster.asset_key` of dbt_analysis/models/sources.yml. Every built model and seed is
recorded with its row count, typed column schema (read back from the warehouse after the
build, when dbt has released its lock on the DuckDB file) and a preview of its first rows; Table 1
and the method / model-size summaries carry their whole table (`SUMMARIES`).
"""

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import dagster as dg
import polars as pl
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, dbt_assets

from quantbias_assets.assets.table_metadata import markdown_preview
from quantbias_assets.markdown import markdown_table
from quantbias_assets.scoring import UNCERTAINTY_BINS
from resources.dbt import dbt_project, dbt_vars, prepare_manifest, restored_working_directory
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource

PREVIEW_ROWS = 5


class MartTranslator(DagsterDbtTranslator):
    """dbt models and seeds live under `marts/<name>` in the `analysis` group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(["marts", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "analysis"


# Whole small marts as markdown tables on their asset page (the preview holds only the first
# rows): Table 1 and the §7.3 summaries. {relation} is the built table.
SUMMARIES: dict[str, dict[str, tuple[str, int]]] = {
    "table1_uncertainty_bins": {
        "flip_rates_by_uncertainty": (
            "select dataset_group, uncertainty_bin, num_choices, n_rows, pct_responses, response_flip, bias_flip"
            f" from {{relation}} order by dataset_group, array_position({list(UNCERTAINTY_BINS)}, uncertainty_bin)",
            0,
        ),
    },
    "bits_and_size_summary": {
        "methods_vs_8bit": (
            "select level as method, method_label, w_bits, a_bits, n_rows, pct_flipped, pct_bias_flipped, units,"
            " tested, significant, pct_significant, pct_more_biased, pct_less_biased, flip_ratio_vs_8bit,"
            " significant_ratio_vs_8bit from {relation} where factor = 'method' and style = 'all'"
            " order by w_bits desc, a_bits desc, method",
            2,
        ),
        "model_sizes": (
            "select level as model, param_size_b, n_rows, pct_flipped, pct_bias_flipped, units, tested,"
            " significant, pct_significant from {relation} where factor = 'model' and style = 'all'"
            " order by param_size_b nulls last, model",
            2,
        ),
    },
}


def query(invocation: DbtCliInvocation, unique_id: str, sql: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a built model or seed (`{relation}` in `sql`), read through dbt's
    own adapter: in this process it holds the DuckDB file open, and a second connection with
    other settings is refused."""
    relation = invocation.manifest["nodes"][unique_id]["relation_name"]
    with invocation.adapter.connection_named(f"query_{unique_id}"):
        _, table = invocation.adapter.execute(sql.format(relation=relation), fetch=True)
    return list(table.column_names), [tuple(row) for row in table.rows]


def preview(invocation: DbtCliInvocation, unique_id: str) -> dg.MetadataValue:
    """The first rows of a built model or seed, as stored."""
    columns, rows = query(invocation, unique_id, f"select * from {{relation}} limit {PREVIEW_ROWS}")
    text = [[None if value is None else str(value) for value in row] for row in rows]
    return dg.MetadataValue.md(markdown_preview(pl.DataFrame(text, schema=columns, orient="row")))


def summary_table(invocation: DbtCliInvocation, unique_id: str, sql: str, digits: int) -> dg.MetadataValue:
    """The rows of `sql` as a markdown table, floats with `digits` decimals."""
    columns, rows = query(invocation, unique_id, sql)
    # agate reads every number as a Decimal; the query's own column types tell ints from floats
    _, described = query(invocation, unique_id, f"describe {sql}")
    types = {row[0]: str(row[1]) for row in described}

    def typed(name: str, value: object) -> object:
        if isinstance(value, Decimal):
            return int(value) if "INT" in types[name] else float(value)
        return value

    frame = pl.DataFrame({name: [typed(name, row[i]) for row in rows] for i, name in enumerate(columns)}, strict=False)
    return dg.MetadataValue.md(markdown_table(frame, digits))


def summaries(invocation: DbtCliInvocation, unique_id: str, name: str) -> dict[str, dg.MetadataValue]:
    return {
        key: summary_table(invocation, unique_id, sql, digits) for key, (sql, digits) in SUMMARIES.get(name, {}).items()
    }


def with_preview(events: Iterator[Any], invocation: DbtCliInvocation) -> Iterator[Any]:
    """Each model's and seed's materialization (those with a row count) with a preview of its first
    rows, and the whole table where it is one of the SUMMARIES."""
    for event in events:
        if isinstance(event, dg.Output | dg.AssetMaterialization) and "dagster/row_count" in event.metadata:
            unique_id = event.metadata["unique_id"].value
            name = invocation.manifest["nodes"][unique_id]["name"]
            event = event.with_metadata(
                {
                    **event.metadata,
                    "preview": preview(invocation, unique_id),
                    **summaries(invocation, unique_id, name),
                }
            )
        yield event


def release_warehouse(invocation: DbtCliInvocation) -> None:
    """Close the DuckDB file dbt-duckdb keeps open in this process for the row counts, columns and
    previews: a later step in the same process (the figures, in-process runs) opens it read-only,
    which DuckDB refuses while a read-write handle is open."""
    if invocation.adapter is None:
        return
    invocation.adapter.cleanup_connections()
    manager = type(invocation.adapter.connections)
    environment = getattr(manager, "_ENV", None)  # dbt-duckdb's process-wide database handle
    if environment is not None:
        environment.close()
        manager.close_all_connections()


# No `project=`: dagster-dbt would put the DbtProject object into every mart's metadata, where the
# UI can only show it as "[DbtProject] (unserializable)"; the resource names the project instead.
@dbt_assets(manifest=prepare_manifest(dbt_project), dagster_dbt_translator=MartTranslator())
def analysis_marts(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource, warehouse: WarehouseResource
):
    """`dbt build` (models, seeds and their data tests) over the current lake."""
    warehouse.database_file.parent.mkdir(parents=True, exist_ok=True)
    # the row counts and column types are read through dbt's adapter, which takes the same --vars
    with restored_working_directory():
        invocation = dbt.cli(["build", "--vars", dbt_vars(lake.root, warehouse.database_file)], context=context)
        try:
            events = invocation.stream().fetch_row_counts().fetch_column_metadata()
            yield from with_preview(events, invocation)
        finally:
            release_warehouse(invocation)
