"""Canonical question schema rules (docs/schemas.md, spec §1.2) on hand-written source records."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl
import pytest

from quantbias_assets.catalog.datasets import (
    DATASETS,
    QUESTION_SCHEMA,
    DatasetSpec,
    bbq_group,
    build_questions,
    closed_datasets,
    group_plot_order,
    open_datasets,
)


def encode(records: list[dict[str, Any]]) -> bytes:
    return json.dumps(records).encode()


def load_one(dataset: str, axis: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = build_questions(DATASETS[dataset], {axis: encode(records)})
    assert result.errors == ()
    return result.frame.to_dicts()


def test_catalog_lists_all_17_datasets_with_the_papers_axes() -> None:
    assert len(DATASETS) == 17
    assert [spec.name for spec in closed_datasets()] == [
        "CEB-Recognition-S", "CEB-Recognition-T", "CEB-Adult", "CEB-Credit", "CEB-Jigsaw",
        "StereoSet-Intersentence", "SocialStigmaQA", "BBQ", "IAT", "BiasLens-Choices",
    ]  # fmt: skip
    assert [spec.name for spec in open_datasets()] == [
        "BiasLens-GenWhy", "CEB-Continuation-S", "CEB-Continuation-T", "CEB-Conversation-S",
        "CEB-Conversation-T", "FMT10K-IM-S", "FMT10K-IM-T",
    ]  # fmt: skip
    assert len(DATASETS["BBQ"].axes) == 11
    assert DATASETS["IAT"].axes == ("age", "gender", "health", "race", "religion")
    assert DATASETS["SocialStigmaQA"].axes == ("yes_no",)
    assert DATASETS["FMT10K-IM-T"].axes == ("disable", "gender", "race", "religion")
    assert all(spec.folder == f"{spec.style}_datasets" for spec in DATASETS.values())


def test_catalog_holds_each_datasets_flag_rule_metric_group_and_turns() -> None:
    facts = {name: (spec.flag_rule, spec.metric, spec.group) for name, spec in DATASETS.items()}
    assert facts == {
        "CEB-Recognition-S": ("wrong_answer", "proportion_biased", "CEB-Recognition"),
        "CEB-Recognition-T": ("wrong_answer", "proportion_biased", "CEB-Recognition"),
        "CEB-Adult": ("wrong_answer", "equalized_odds_difference", "Adult"),
        "CEB-Credit": ("wrong_answer", "equalized_odds_difference", "Credit"),
        "CEB-Jigsaw": ("wrong_answer", "proportion_biased", "Jigsaw"),
        "StereoSet-Intersentence": ("stereoset", "one_minus_icat", "StereoSet"),
        "SocialStigmaQA": ("labelled_biased", "proportion_biased", "SocialStigmaQA"),
        "BBQ": ("bbq", "bbq_ambiguous_bias_score", "BBQ"),
        "IAT": ("iat", "iat_deviation", "IAT"),
        "BiasLens-Choices": ("labelled_biased", "non_refusal_rate", "BiasLens-Choices"),
        "BiasLens-GenWhy": ("guard_verdict", "unsafe_rate", "BiasLens-GenWhy"),
        "CEB-Continuation-S": ("guard_verdict", "unsafe_rate", "CEB-Continuation"),
        "CEB-Continuation-T": ("guard_verdict", "unsafe_rate", "CEB-Continuation"),
        "CEB-Conversation-S": ("guard_verdict", "unsafe_rate", "CEB-Conversation"),
        "CEB-Conversation-T": ("guard_verdict", "unsafe_rate", "CEB-Conversation"),
        "FMT10K-IM-S": ("guard_verdict", "unsafe_rate", "FMT10K"),
        "FMT10K-IM-T": ("guard_verdict", "unsafe_rate", "FMT10K"),
    }
    assert [name for name, spec in DATASETS.items() if spec.multi_turn] == ["FMT10K-IM-S", "FMT10K-IM-T"]
    assert group_plot_order() == (
        "CEB-Recognition", "Adult", "Credit", "Jigsaw", "StereoSet", "SocialStigmaQA", "BBQ", "IAT",
        "BiasLens-Choices", "CEB-Continuation", "CEB-Conversation", "BiasLens-GenWhy", "FMT10K",
    )  # fmt: skip
    # one plot position per group: S and T variants are drawn as one row
    positions = {spec.group: set() for spec in DATASETS.values()}
    for spec in DATASETS.values():
        positions[spec.group].add(spec.plot_order)
    assert all(len(found) == 1 for found in positions.values())


def test_a_flag_rule_must_fit_the_style() -> None:
    spec = DATASETS["BBQ"]
    with pytest.raises(ValueError, match="Broken: flag_rule: 'guard_verdict' does not fit style 'closed'"):
        DatasetSpec("Broken", "closed", spec.axes, spec.loader, "guard_verdict", "unsafe_rate", "BBQ", 6)
    with pytest.raises(ValueError, match="Broken: flag_rule: 'bbq' does not fit style 'open'"):
        DatasetSpec("Broken", "open", spec.axes, spec.loader, "bbq", "unsafe_rate", "BBQ", 6)


def test_multi_turn_is_what_the_loader_gives() -> None:
    fmt = {f"{turn}-turn Conv": f"turn {turn}" for turn in range(5)} | {"idx": "FMT10K-IM-S/age/0"}
    (row,) = load_one("FMT10K-IM-S", "age", [fmt])
    assert DATASETS["FMT10K-IM-S"].multi_turn and row["turns"] == [f"turn {turn}" for turn in range(5)]
    (single,) = load_one("CEB-Continuation-S", "age", [{"idx": "c/0", "prompt": "p", "descriptor": "old"}])
    assert not DATASETS["CEB-Continuation-S"].multi_turn and single["turns"] is None


def test_recognition_target_is_zero_based_and_labels_fixed() -> None:
    record = {
        "prompt": "Judge this.", "axis": "gender", "label": "anti-stereotype", "target": 2,
        "sentence": "s", "choices": ["Yes, it's a stereotype", "No, it's an anti-stereotype"],
        "idx": "CEB-Recognition-S/gender/0",
    }  # fmt: skip
    (row,) = load_one("CEB-Recognition-S", "gender", [record])
    assert row["target"] == 1
    assert row["choice_labels"] == ["stereotype", "anti-stereotype"]
    assert row["label"] == "anti-stereotype"
    assert row["group"] is None
    (toxic,) = load_one("CEB-Recognition-T", "race", [{**record, "label": "toxic", "target": 1}])
    assert (toxic["target"], toxic["choice_labels"]) == (0, ["toxic", "non-toxic"])


def test_adult_credit_jigsaw_map_yes_to_0_and_no_to_1() -> None:
    base = {"prompt": "p", "choices": ["YES, it is toxic", "NO, it is not toxic"], "axis": "race"}
    rows = load_one(
        "CEB-Jigsaw",
        "race",
        [
            {**base, "label": "yes", "sensitive_attr": "Races", "idx": "J/0"},
            {**base, "label": "no", "sensitive_attr": "Non-Races", "idx": "J/1"},
        ],
    )
    assert [(r["target"], r["label"], r["group"]) for r in rows] == [(0, "yes", "Races"), (1, "no", "Non-Races")]
    assert rows[0]["choice_labels"] == ["yes", "no"]


BBQ_RECORD = {
    "idx": "BBQ/age/0", "question_idx": 1, "example_id": 0, "question_polarity": "neg",
    "context_condition": "ambig", "social_axis": "age", "subcategory": "None",
    "stereotyped_groups": ["old"], "prompt": "ctx\n\nWho?",
    "choices": ["The grandfather", "The grandson", "Can't be determined"],
    "unknown_label": 3, "answer_label": 3, "target_label": 1,
}  # fmt: skip


def test_bbq_labels_are_zero_based_and_choice_labels_aligned() -> None:
    (row,) = load_one("BBQ", "age", [BBQ_RECORD])
    assert (row["target_label"], row["unknown_label"], row["answer_label"]) == (0, 2, 2)
    assert row["choice_labels"] == ["target", "non-target", "unknown"]
    assert (row["context_condition"], row["question_polarity"]) == ("ambig", "neg")
    assert row["group"] == "old"
    assert row["target"] is None and row["label"] is None


def test_bbq_group_rule() -> None:
    # the listed group that the target option names wins, lower-cased
    assert bbq_group(["Eritrean", "Ethiopian", "Guinean"], "The Guinean friend") == "guinean"
    # none named: the first listed
    assert bbq_group(["Eritrean", "Ethiopian"], "The Thai friend") == "eritrean"
    # single-letter codes
    assert bbq_group(["M"], "The man") == "male"
    assert bbq_group(["F"], "The woman") == "female"
    assert bbq_group([], "anything") is None
    (row,) = load_one(
        "BBQ",
        "nationality",
        [{**BBQ_RECORD, "stereotyped_groups": ["Kenyan", "Malian"], "choices": ["The Malian one", "x", "Unknown"]}],
    )
    assert row["group"] == "malian"


def test_iat_group_is_the_stigma_group_for_either_order() -> None:
    base = {
        "social_aspect": "age", "keyword_order": ["positive", "negative"], "keywords": ["joy", "agony"],
        "prompt": "p", "choices": ["a", "b", "c", "d"], "label": ["biased_1", "unbiased_1", "unbiased_2", "biased_2"],
    }  # fmt: skip
    rows = load_one(
        "IAT",
        "age",
        [
            {**base, "idx": "IAT/age/age/0", "social_groups": ["young", "old"], "group_order": ["base", "stigma"]},
            {**base, "idx": "IAT/age/age/1", "social_groups": ["old", "young"], "group_order": ["stigma", "base"]},
        ],
    )
    assert [r["group"] for r in rows] == ["old", "old"]
    assert rows[0]["choice_labels"] == ["biased_1", "unbiased_1", "unbiased_2", "biased_2"]


def test_social_stigma_labels_and_null_stigma() -> None:
    base = {
        "axis": "yes_no",
        "prompt": "Shall I? Answer with yes/no/can't tell.",
        "choices": ["yes", "no", "can't tell"],
    }
    rows = load_one(
        "SocialStigmaQA",
        "yes_no",
        [
            {**base, "idx": "S/0", "stigma": None, "label": ["biased", "unbiased", "uncertain"]},
            {**base, "idx": "S/1", "stigma": "someone with autism", "label": ["unbiased", "biased", "uncertain"]},
        ],
    )
    assert [r["group"] for r in rows] == [None, "someone with autism"]
    assert rows[1]["choice_labels"] == ["unbiased", "biased", "uncertain"]


def test_stereoset_and_ceb_open_group_is_the_descriptor() -> None:
    (stereo,) = load_one(
        "StereoSet-Intersentence",
        "gender",
        [{"idx": "St/0", "task": "intersentence", "axis": "gender", "descriptor": "mother", "prompt": "p",
          "choices": ["a", "b", "c"], "label": ["unrelated", "anti-stereotype", "stereotype"]}],
    )  # fmt: skip
    assert (stereo["group"], stereo["choice_labels"]) == ("mother", ["unrelated", "anti-stereotype", "stereotype"])
    (open_row,) = load_one(
        "CEB-Conversation-T",
        "race",
        [{"prompt": "p", "axis": "race", "bucket": "b", "descriptor": "AAPI", "noun_gender": "n", "sub_text": "s",
          "idx": "C/0"}],
    )  # fmt: skip
    assert (open_row["group"], open_row["choices"], open_row["choice_labels"]) == ("AAPI", [], [])


def test_fmt10k_turns_in_order_and_no_prompt() -> None:
    record = {"idx": "FMT10K-IM-S/age/0", "social_axis": "age"} | {f"{t}-turn Conv": f"turn {t}" for t in range(5)}
    (row,) = load_one("FMT10K-IM-S", "age", [record])
    assert row["turns"] == ["turn 0", "turn 1", "turn 2", "turn 3", "turn 4"]
    assert row["prompt"] is None
    assert row["choices"] == []


def test_question_hash_is_sha256_of_dataset_and_canonical_record() -> None:
    record = {"prompt": "Ünïcode", "social_axis": "age", "task": "generate", "idx": "BiasLens/GenWhy/age/0"}
    (row,) = load_one("BiasLens-GenWhy", "age", [record])
    canonical = '{"idx":"BiasLens/GenWhy/age/0","prompt":"Ünïcode","social_axis":"age","task":"generate"}'
    assert row["source_json"] == canonical
    assert row["question_hash"] == hashlib.sha256(("BiasLens-GenWhy\n" + canonical).encode("utf-8")).hexdigest()
    assert (row["dataset"], row["axis"], row["idx"]) == ("BiasLens-GenWhy", "age", "BiasLens/GenWhy/age/0")


def test_axis_is_the_file_stem_not_a_source_field() -> None:
    record = {"idx": "IAT/religion/islam/0", "social_aspect": "islam", "social_groups": ["christian", "muslim"],
              "group_order": ["base", "stigma"], "keyword_order": ["positive", "negative"], "keywords": ["a", "b"],
              "prompt": "p", "choices": ["w", "x", "y", "z"],
              "label": ["biased_1", "unbiased_1", "unbiased_2", "biased_2"]}  # fmt: skip
    (row,) = load_one("IAT", "religion", [record])
    assert row["axis"] == "religion"


def test_all_absent_dataset_is_empty_typed_and_not_an_error() -> None:
    result = build_questions(DATASETS["SocialStigmaQA"], {"yes_no": None})
    assert result.errors == ()
    assert result.ok
    assert result.axes_present == ()
    assert result.axes_absent == ("yes_no",)
    assert result.frame.height == 0
    assert result.frame.schema == QUESTION_SCHEMA
    assert result.frame.schema["choices"] == pl.List(pl.String)
    assert result.frame.schema["target_label"] == pl.Int32
