"""The table names: asset keys, lake paths and dbt's sources name the same tables."""

from pathlib import Path

import yaml

from quantbias_assets import lake, tables

SOURCES = Path(__file__).resolve().parents[2] / "dbt_analysis" / "models" / "sources.yml"


def test_dbt_sources_name_the_analysis_tables_by_their_lake_paths():
    [source] = yaml.safe_load(SOURCES.read_text())["sources"]
    for table in source["tables"]:
        path = tuple(table["meta"]["dagster"]["asset_key"])
        assert path in tables.ANALYSIS_TABLES
        assert table["meta"]["delta_table_path"] == "{{ var('lake_root') }}/" + "/".join(path)
        assert table["name"] == path[-1]


def test_a_tables_asset_key_path_is_its_lake_path():
    assert tables.responses("BBQ") == ("responses", "BBQ")
    assert lake.table_uri("s3://lake", *tables.verdicts("FMT10K-IM-S")) == "s3://lake/verdicts/FMT10K-IM-S"
    assert lake.table_uri("/lake", *tables.PAIRED_RESPONSES) == "/lake/analysis/paired_responses"


def test_the_assets_use_these_paths():
    import definitions

    keys = {tuple(key.path) for key in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    assert {path[0] for path in keys} >= {tables.DATASET_FILES, tables.QUESTIONS, tables.CHECKPOINT, tables.RESPONSES,
                                          tables.VERDICTS, tables.ANALYSIS}  # fmt: skip
    assert set(tables.ANALYSIS_TABLES) <= keys
    assert {tables.dataset_files("BBQ"), tables.questions("BBQ"), tables.responses("BBQ"),
            tables.verdicts("FMT10K-IM-S")} <= keys  # fmt: skip
