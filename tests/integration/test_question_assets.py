"""Question assets materialized with Dagster over the real files into a temp Delta lake."""

import json
import shutil
from pathlib import Path

import dagster as dg
from benchmark_counts import README_ROWS

from quantbias_assets import lake
from quantbias_assets.assets.datasets import (
    dataset_file_assets,
    observe_dataset_files_job,
    question_assets,
    questions_key,
)
from resources.dataset_files import DatasetFilesResource
from resources.lake import LakeResource


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.asset_key.path[-1]: event.materialization.metadata for event in result.get_asset_materialization_events()
    }


def assets_named(*names: str) -> list[dg.AssetsDefinition]:
    return [asset for asset in question_assets if asset.key.path[-1] in names]


def test_all_question_tables_from_the_real_files(data_dir: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    resources = {"lake": LakeResource(root=root), "dataset_files": DatasetFilesResource(folder=str(data_dir))}
    result = dg.materialize(question_assets, resources=resources)
    assert result.success
    metadata = materializations(result)
    assert {name: md["rows"].value for name, md in metadata.items()} == README_ROWS
    assert {name: md["dagster/row_count"].value for name, md in metadata.items()} == README_ROWS
    for name, rows in README_ROWS.items():
        assert lake.read(lake.table_uri(root, "questions", name), columns=["idx"]).height == rows

    bbq = metadata["BBQ"]
    assert bbq["axes_absent"].value == ["gender_identity", "race_ethnicity", "race_x_gender", "race_x_ses", "ses"]
    assert "| age | 3680 |" in bbq["rows_per_axis"].value
    assert "| ses | absent |" in bbq["rows_per_axis"].value
    assert bbq["preview"].value.count("\n| BBQ/") == 5
    assert metadata["SocialStigmaQA"]["axes_present"].value == []
    assert metadata["SocialStigmaQA"]["axes_absent"].value == ["yes_no"]
    assert len(metadata["IAT"]["source_data_version"].value) == 64
    assert lake.read(lake.table_uri(root, "questions", "BBQ"), filters={"context_condition": "ambig"}).height == 5_978


def test_a_corrupted_file_fails_only_its_dataset_and_keeps_the_last_table(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    for relative in ("closed_datasets/CEB-Adult", "closed_datasets/IAT"):
        shutil.copytree(data_dir / relative, copy / relative)
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "dataset_files": DatasetFilesResource(folder=str(copy)),
    }
    chosen = assets_named("CEB-Adult", "IAT")
    assert dg.materialize(chosen, resources=resources).success

    iat_age = copy / "closed_datasets/IAT/age.json"
    records = json.loads(iat_age.read_text())
    records[3]["choices"] = []
    del records[5]["prompt"]
    iat_age.write_text(json.dumps(records))
    result = dg.materialize(chosen, resources=resources, raise_on_error=False)

    assert not result.success
    assert list(materializations(result)) == ["CEB-Adult"]
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "questions__IAT"
    message = failure.step_failure_data.error.message
    assert "closed_datasets/IAT/age.json: record IAT/age/age/3: choices: empty choice list" in message
    assert "closed_datasets/IAT/age.json: record IAT/age/age/5: prompt: missing required field" in message
    # the failed run wrote nothing: the previous IAT table is intact
    assert lake.read(lake.table_uri(str(tmp_path / "lake"), "questions", "IAT")).height == 1_444


def test_observed_data_version_follows_the_file_contents(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "closed_datasets/IAT", copy / "closed_datasets/IAT")
    defs = dg.Definitions(
        assets=dataset_file_assets,
        jobs=[observe_dataset_files_job],
        resources={"dataset_files": DatasetFilesResource(folder=str(copy))},
    )
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey(["dataset_files", "IAT"])

    def observe() -> str:
        assert defs.resolve_job_def("observe_dataset_files").execute_in_process(instance=instance).success
        record = instance.get_latest_data_version_record(key)
        assert record is not None
        return record.asset_observation.tags["dagster/data_version"]  # type: ignore[union-attr]

    first = observe()
    assert observe() == first
    (copy / "closed_datasets/IAT/age.json").write_text("[]")
    changed = observe()
    assert changed != first
    (copy / "closed_datasets/IAT/age.json").unlink()
    assert observe() not in {first, changed}


def test_question_assets_depend_on_their_files() -> None:
    (asset,) = assets_named("FMT10K-IM-T")
    assert asset.key == questions_key("FMT10K-IM-T")
    assert set(asset.dependency_keys) == {dg.AssetKey(["dataset_files", "FMT10K-IM-T"])}
    assert asset.group_names_by_key[asset.key] == "datasets"
    assert asset.code_versions_by_key[asset.key] == "questions-v1"
    assert len(question_assets) == len(dataset_file_assets) == 17
