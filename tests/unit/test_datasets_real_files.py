"""Row counts of the real benchmark files equal the datasets README (and spec §1.1 per axis)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from benchmark_counts import README_ROWS

from quantbias_assets.catalog.datasets import DATASETS, DatasetLoad, files_content_hash, load_dataset


@pytest.fixture(scope="module")
def loads(data_dir: Path) -> dict[str, DatasetLoad]:
    return {name: load_dataset(spec, data_dir) for name, spec in DATASETS.items()}


def per_axis(load: DatasetLoad) -> dict[str, int]:
    return dict(load.frame.group_by("axis").len().iter_rows())


def test_every_dataset_loads_without_errors_with_the_readme_counts(loads: dict[str, DatasetLoad]) -> None:
    assert {name: load.errors for name, load in loads.items() if load.errors} == {}
    assert {name: load.frame.height for name, load in loads.items()} == README_ROWS


def test_absent_files_are_listed_as_absent_axes(loads: dict[str, DatasetLoad]) -> None:
    absent = {name: load.axes_absent for name, load in loads.items() if load.axes_absent}
    assert absent == {
        "BBQ": ("gender_identity", "race_ethnicity", "race_x_gender", "race_x_ses", "ses"),
        "IAT": ("gender", "race"),
        "SocialStigmaQA": ("yes_no",),
    }
    assert loads["SocialStigmaQA"].axes_present == ()


def test_per_axis_counts(loads: dict[str, DatasetLoad]) -> None:
    assert per_axis(loads["StereoSet-Intersentence"]) == {"gender": 242, "profession": 827, "race": 976, "religion": 78}
    assert per_axis(loads["IAT"]) == {"age": 64, "health": 612, "religion": 768}
    assert per_axis(loads["BBQ"]) == {
        "age": 3_680, "disability_status": 1_556, "nationality": 3_080,
        "physical_appearance": 1_576, "religion": 1_200, "sexual_orientation": 864,
    }  # fmt: skip
    assert per_axis(loads["FMT10K-IM-T"]) == {"disable": 30, "gender": 61, "race": 98, "religion": 66}
    assert per_axis(loads["CEB-Jigsaw"]) == {"gender": 500, "race": 500, "religion": 500}


def test_bbq_has_5978_ambiguous_rows(loads: dict[str, DatasetLoad]) -> None:
    conditions = dict(loads["BBQ"].frame.group_by("context_condition").len().iter_rows())
    assert conditions == {"ambig": 5_978, "disambig": 5_978}


def test_balanced_labels_as_the_spec_states(loads: dict[str, DatasetLoad]) -> None:
    for name in ("CEB-Recognition-S", "CEB-Recognition-T"):
        assert sorted(loads[name].frame.group_by("target").len().rows()) == [(0, 400), (1, 400)]
    assert sorted(loads["CEB-Jigsaw"].frame.group_by("target").len().rows()) == [(0, 750), (1, 750)]
    adult_groups = loads["CEB-Adult"].frame.group_by("group").len()
    assert set(adult_groups.get_column("len").to_list()) == {250}


def test_idx_unique_and_hashes_distinct(loads: dict[str, DatasetLoad]) -> None:
    frames = pl.concat([load.frame for load in loads.values()])
    assert frames.select(pl.struct("dataset", "idx").n_unique()).item() == frames.height
    assert frames.get_column("question_hash").n_unique() == frames.height


def test_content_hash_tracks_file_changes_and_absence(data_dir: Path, tmp_path: Path) -> None:
    spec = DATASETS["IAT"]
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "closed_datasets" / "IAT", copy / "closed_datasets" / "IAT")
    original = files_content_hash(spec, copy)
    assert original == files_content_hash(spec, data_dir)
    (copy / spec.relative_path("age")).unlink()
    without_age = files_content_hash(spec, copy)
    assert without_age != original
    (copy / spec.relative_path("age")).write_bytes((data_dir / spec.relative_path("age")).read_bytes())
    assert files_content_hash(spec, copy) == original


def test_the_catalog_marks_exactly_the_datasets_with_turns_multi_turn(loads: dict[str, DatasetLoad]) -> None:
    with_turns = {name for name, load in loads.items() if load.frame["turns"].is_not_null().any()}
    assert with_turns == {name for name, spec in DATASETS.items() if spec.multi_turn} == {"FMT10K-IM-S", "FMT10K-IM-T"}
