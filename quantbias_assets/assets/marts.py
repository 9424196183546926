"""dbt marts as Dagster assets: the paper's tables, built by dbt-duckdb over the lake.

dbt sources are the upstream Delta assets (`analysis/paired_responses`, ...), through the
`meta.dagster.asset_key` of dbt_analysis/models/sources.yml.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from quantbias_assets import settings
from resources.dbt import dbt_env, dbt_project, ensure_manifest, temporary_env
from resources.lake import LakeResource


class MartTranslator(DagsterDbtTranslator):
    """dbt models and seeds live under `marts/<name>` in the `analysis` group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(["marts", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "analysis"


@dbt_assets(
    manifest=ensure_manifest(dbt_project),
    project=dbt_project,
    dagster_dbt_translator=MartTranslator(),
)
def analysis_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource):
    """`dbt build` (models, seeds and their data tests) over the current lake."""
    duckdb_path = settings.analysis_duckdb_path()
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    # dbt reads the lake root and the database path from the environment (profiles.yml, sources.yml).
    with temporary_env(dbt_env(lake.root, str(duckdb_path))):
        invocation = dbt.cli(["build"], context=context)
    yield from invocation.stream()
