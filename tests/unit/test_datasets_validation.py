"""Every bad-input case gives `<file>: record <idx or #position>: <field>: <problem>` and fails only its dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantbias_assets.catalog.datasets import DATASETS, build_questions, load_dataset

STEREO_FILE = "closed_datasets/StereoSet-Intersentence/gender.json"


def stereo(idx: str, **overrides: Any) -> dict[str, Any]:
    record = {"idx": idx, "task": "intersentence", "axis": "gender", "descriptor": "mother", "prompt": "p",
              "choices": ["a", "b", "c"], "label": ["unrelated", "anti-stereotype", "stereotype"]}  # fmt: skip
    record.update(overrides)
    return {key: value for key, value in record.items() if value is not ...}


def errors_for(dataset: str, files: dict[str, bytes | None]) -> tuple[str, ...]:
    return build_questions(DATASETS[dataset], files).errors


def test_malformed_json_names_the_whole_file() -> None:
    (error,) = errors_for("StereoSet-Intersentence", {"gender": b'[{"idx": "a",'})
    assert error.startswith(f"{STEREO_FILE}: record (whole file): json: malformed JSON (")
    assert "line 1 column" in error


def test_file_that_is_not_a_list() -> None:
    (error,) = errors_for("StereoSet-Intersentence", {"gender": b'{"idx": "a"}'})
    assert error == f"{STEREO_FILE}: record (whole file): json: expected a list of records, got dict"


def test_missing_required_field_uses_idx_or_position() -> None:
    records = [stereo("St/0", descriptor=...), stereo(..., prompt="no idx")]
    errors = errors_for("StereoSet-Intersentence", {"gender": json.dumps(records).encode()})
    assert errors == (
        f"{STEREO_FILE}: record St/0: descriptor: missing required field",
        f"{STEREO_FILE}: record #1: idx: missing required field",
    )


def test_label_index_out_of_range() -> None:
    bbq = {"idx": "BBQ/age/7", "question_polarity": "neg", "context_condition": "ambig", "stereotyped_groups": ["old"],
           "prompt": "p", "choices": ["a", "b", "c"],
           "unknown_label": 3, "answer_label": 3, "target_label": 4}  # fmt: skip
    (error,) = errors_for("BBQ", {"age": json.dumps([bbq]).encode()})
    assert error == "closed_datasets/BBQ/age.json: record BBQ/age/7: target_label: index 4 out of range 1..3"
    recognition = {"prompt": "p", "label": "toxic", "target": 0, "choices": ["Yes", "No"], "idx": "R/0"}
    (error,) = errors_for("CEB-Recognition-T", {"age": json.dumps([recognition]).encode()})
    assert error == "closed_datasets/CEB-Recognition-T/age.json: record R/0: target: index 0 out of range 1..2"


def test_choices_and_label_lists_of_different_length() -> None:
    records = [stereo("St/0", label=["unrelated", "stereotype"])]
    (error,) = errors_for("StereoSet-Intersentence", {"gender": json.dumps(records).encode()})
    assert error == f"{STEREO_FILE}: record St/0: label: 2 labels for 3 choices"


def test_empty_choice_list() -> None:
    records = [stereo("St/0", choices=[], label=[])]
    (error,) = errors_for("StereoSet-Intersentence", {"gender": json.dumps(records).encode()})
    assert error == f"{STEREO_FILE}: record St/0: choices: empty choice list"


def test_duplicate_idx_across_files_of_one_dataset() -> None:
    first = json.dumps([stereo("St/0"), stereo("St/1")]).encode()
    second = json.dumps([stereo("St/2"), stereo("St/0")]).encode()
    result = build_questions(DATASETS["StereoSet-Intersentence"], {"gender": first, "race": second})
    assert result.errors == (
        "closed_datasets/StereoSet-Intersentence/race.json: record St/0: idx: duplicate idx "
        f"(first seen at {STEREO_FILE} #0)",
    )
    assert result.frame.get_column("idx").to_list() == ["St/0", "St/1", "St/2"]


def test_wrong_types_and_unknown_scalar_labels() -> None:
    adult = {"prompt": 5, "label": "yes", "sensitive_attr": "male", "choices": ["Y", "N"], "idx": "A/0"}
    maybe = {"prompt": "p", "label": "maybe", "sensitive_attr": "male", "choices": ["Y", "N"], "idx": "A/1"}
    errors = errors_for("CEB-Adult", {"gender": json.dumps([adult, maybe, ["not", "a", "record"]]).encode()})
    assert errors == (
        "closed_datasets/CEB-Adult/gender.json: record A/0: prompt: expected a string, got int",
        "closed_datasets/CEB-Adult/gender.json: record A/1: label: expected one of yes, no, got 'maybe'",
        "closed_datasets/CEB-Adult/gender.json: record #2: record: expected an object, got list",
    )


def test_every_error_of_a_file_is_reported_and_good_rows_still_load() -> None:
    records = [stereo("St/0"), stereo("St/1", choices=[]), stereo("St/2", prompt=None)]
    result = build_questions(DATASETS["StereoSet-Intersentence"], {"gender": json.dumps(records).encode()})
    assert len(result.errors) == 2
    assert not result.ok
    assert result.frame.get_column("idx").to_list() == ["St/0"]


def test_a_bad_file_fails_only_its_dataset(tmp_path: Path) -> None:
    good = tmp_path / "closed_datasets" / "CEB-Adult"
    good.mkdir(parents=True)
    (good / "gender.json").write_text(
        json.dumps([{"prompt": "p", "label": "no", "sensitive_attr": "male", "choices": ["Y", "N"], "idx": "A/0"}])
    )
    bad = tmp_path / "closed_datasets" / "StereoSet-Intersentence"
    bad.mkdir(parents=True)
    (bad / "gender.json").write_text("not json")
    adult = load_dataset(DATASETS["CEB-Adult"], tmp_path)
    stereoset = load_dataset(DATASETS["StereoSet-Intersentence"], tmp_path)
    assert adult.ok and adult.frame.height == 1
    assert adult.axes_present == ("gender",) and adult.axes_absent == ("race",)
    assert not stereoset.ok
    assert stereoset.errors[0].startswith(f"{STEREO_FILE}: record (whole file): json: malformed JSON")
