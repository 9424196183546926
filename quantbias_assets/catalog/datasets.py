"""The 17 file-level datasets of PostTrainingBiasBench: specs, loaders and validation.

The catalog is the one home of every per-dataset fact: files, axes, loader, bias-flag rule,
metric, dataset group, plot order and multi-turn; everything else derives from `DATASETS`.
It imports nothing heavier than polars, so workers can use it.

Each dataset is a folder `<closed_datasets|open_datasets>/<name>/` of JSON files, one per social
axis (the file stem). A loader turns one source record into the canonical question row of
docs/schemas.md (`questions/<dataset>`). Validation problems never raise: they come back as
lines `<file>: record <idx or #position>: <field>: <problem>`, and a bad file fails only its own
dataset. An absent file is "not available" (an absent axis), never an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from quantbias_assets.hashing import canonical_json, file_sha256

Style = Literal["closed", "open"]
# How one response's bias flags (π, b) are computed (spec §2); analysis/flags.py implements each.
FlagRule = Literal["wrong_answer", "bbq", "iat", "labelled_biased", "stereoset", "guard_verdict"]
# The dataset-aggregate bias metric M(D) (spec §5); analysis/metrics.py implements each.
Metric = Literal[
    "proportion_biased", "equalized_odds_difference", "bbq_ambiguous_bias_score", "one_minus_icat",
    "iat_deviation", "non_refusal_rate", "unsafe_rate",
]  # fmt: skip

QUESTION_SCHEMA = pl.Schema(
    {
        "dataset": pl.String,
        "idx": pl.String,
        "axis": pl.String,
        "group": pl.String,
        "prompt": pl.String,
        "turns": pl.List(pl.String),
        "choices": pl.List(pl.String),
        "choice_labels": pl.List(pl.String),
        "target": pl.Int32,
        "answer_label": pl.Int32,
        "unknown_label": pl.Int32,
        "target_label": pl.Int32,
        "context_condition": pl.String,
        "question_polarity": pl.String,
        "label": pl.String,
        "source_json": pl.String,
        "question_hash": pl.String,
    }
)

FMT_TURN_FIELDS = tuple(f"{turn}-turn Conv" for turn in range(5))
BBQ_GROUP_ALIASES = {"m": "male", "f": "female"}
YES_NO_TARGET = {"yes": 0, "no": 1}


class RecordProblem(Exception):
    """One problem with one field of one record; the caller adds the file and record."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field_name = field_name
        self.problem = problem


RecordLoader = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything about one file-level dataset: its files and axes, how to load a record, how its
    responses are flagged and aggregated, and where it sits in the paper's figures."""

    name: str
    style: Style
    axes: tuple[str, ...]
    loader: RecordLoader = field(repr=False)
    flag_rule: FlagRule
    metric: Metric
    # The reference's plot label: S and T variants merged, CEB prefixes dropped (spec §1.2).
    group: str
    # Position of the group in the paper's figures (datasets of one group share it).
    plot_order: int
    # Several user turns per question, the model's own replies fed back (FMT10K, spec §4.2);
    # the respond worker generates and the guard judges by this flag.
    multi_turn: bool = False
    # The analysis keeps only rows with this context condition (BBQ: ambiguous contexts, spec
    # §1.2); None keeps every row.
    analysed_context: str | None = None

    def __post_init__(self) -> None:
        if (self.style == "open") != (self.flag_rule == "guard_verdict"):
            raise ValueError(f"{self.name}: flag_rule: {self.flag_rule!r} does not fit style {self.style!r}")

    @property
    def folder(self) -> str:
        return f"{self.style}_datasets"

    def relative_path(self, axis: str) -> str:
        return f"{self.folder}/{self.name}/{axis}.json"


@dataclass(frozen=True)
class DatasetLoad:
    """What loading one dataset gave: the canonical frame, which axes exist, and every problem."""

    spec: DatasetSpec
    frame: pl.DataFrame
    axes_present: tuple[str, ...]
    axes_absent: tuple[str, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # valid but suspicious records (absurd sizes); they still load

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------- field checks


def _required(record: Mapping[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        raise RecordProblem(name, "missing required field")
    return record[name]


def _string(record: Mapping[str, Any], name: str) -> str:
    value = _required(record, name)
    if not isinstance(value, str):
        raise RecordProblem(name, f"expected a string, got {type(value).__name__}")
    return value


def _optional_string(record: Mapping[str, Any], name: str) -> str | None:
    return None if record.get(name) is None else _string(record, name)


def _string_list(record: Mapping[str, Any], name: str) -> list[str]:
    value = _required(record, name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RecordProblem(name, "expected a list of strings")
    return value


def _choices(record: Mapping[str, Any], expected: int | None = None) -> list[str]:
    choices = _string_list(record, "choices")
    if not choices:
        raise RecordProblem("choices", "empty choice list")
    if expected is not None and len(choices) != expected:
        raise RecordProblem("choices", f"expected {expected} choices, got {len(choices)}")
    return choices


def _aligned_labels(record: Mapping[str, Any], choices: Sequence[str]) -> list[str]:
    labels = _string_list(record, "label")
    if len(labels) != len(choices):
        raise RecordProblem("label", f"{len(labels)} labels for {len(choices)} choices")
    return labels


def _one_based(record: Mapping[str, Any], name: str, choices: Sequence[str]) -> int:
    """A 1-based source index into `choices`, returned 0-based."""
    value = _required(record, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordProblem(name, f"expected an integer, got {type(value).__name__}")
    if not 1 <= value <= len(choices):
        raise RecordProblem(name, f"index {value} out of range 1..{len(choices)}")
    return value - 1


def _one_of(record: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = _string(record, name)
    if value not in allowed:
        raise RecordProblem(name, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


# ---------------------------------------------------------------- loaders (one source record -> canonical fields)


def _recognition_loader(choice_labels: tuple[str, str]) -> RecordLoader:
    def load(record: Mapping[str, Any]) -> dict[str, Any]:
        choices = _choices(record, expected=2)
        return {
            "prompt": _string(record, "prompt"),
            "choices": choices,
            "choice_labels": list(choice_labels),
            "target": _one_based(record, "target", choices),
            "label": _one_of(record, "label", choice_labels),
        }

    return load


def load_yes_no_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """CEB-Adult / -Credit / -Jigsaw: `yes` is choices[0], `no` choices[1]."""
    choices = _choices(record, expected=2)
    label = _one_of(record, "label", tuple(YES_NO_TARGET))
    return {
        "group": _string(record, "sensitive_attr"),
        "prompt": _string(record, "prompt"),
        "choices": choices,
        "choice_labels": list(YES_NO_TARGET),
        "target": YES_NO_TARGET[label],
        "label": label,
    }


def _labelled_choices_loader(group_field: str | None) -> RecordLoader:
    """Closed datasets whose source `label` list is aligned with `choices`."""

    def load(record: Mapping[str, Any]) -> dict[str, Any]:
        choices = _choices(record)
        return {
            "group": _string(record, group_field) if group_field else None,
            "prompt": _string(record, "prompt"),
            "choices": choices,
            "choice_labels": _aligned_labels(record, choices),
        }

    return load


def load_social_stigma_record(record: Mapping[str, Any]) -> dict[str, Any]:
    choices = _choices(record)
    return {
        # `stigma` is null on the rows that open a new question pattern
        "group": _optional_string(record, "stigma"),
        "prompt": _string(record, "prompt"),
        "choices": choices,
        "choice_labels": _aligned_labels(record, choices),
    }


def bbq_group(stereotyped_groups: Sequence[str], target_choice: str) -> str | None:
    """The stereotyped group named by the target option, else the first one listed."""
    if not stereotyped_groups:
        return None
    target_text = target_choice.lower()
    matching = [group for group in stereotyped_groups if group.lower() in target_text]
    group = (matching or list(stereotyped_groups))[0].lower()
    return BBQ_GROUP_ALIASES.get(group, group)


def load_bbq_record(record: Mapping[str, Any]) -> dict[str, Any]:
    choices = _choices(record)
    target = _one_based(record, "target_label", choices)
    unknown = _one_based(record, "unknown_label", choices)
    answer = _one_based(record, "answer_label", choices)
    if target == unknown:
        raise RecordProblem("target_label", "the stereotyped option cannot be the unknown option")
    labels = ["non-target"] * len(choices)
    labels[target] = "target"
    labels[unknown] = "unknown"
    return {
        "group": bbq_group(_string_list(record, "stereotyped_groups"), choices[target]),
        "prompt": _string(record, "prompt"),
        "choices": choices,
        "choice_labels": labels,
        "answer_label": answer,
        "unknown_label": unknown,
        "target_label": target,
        "context_condition": _one_of(record, "context_condition", ("ambig", "disambig")),
        "question_polarity": _one_of(record, "question_polarity", ("neg", "nonneg")),
    }


def load_iat_record(record: Mapping[str, Any]) -> dict[str, Any]:
    choices = _choices(record)
    groups = _string_list(record, "social_groups")
    order = _string_list(record, "group_order")
    if "stigma" not in order:
        raise RecordProblem("group_order", "no 'stigma' entry")
    stigma_position = order.index("stigma")
    if stigma_position >= len(groups):
        raise RecordProblem("social_groups", f"no group at the stigma position {stigma_position}")
    return {
        "group": groups[stigma_position],
        "prompt": _string(record, "prompt"),
        "choices": choices,
        "choice_labels": _aligned_labels(record, choices),
    }


def _open_loader(group_field: str | None) -> RecordLoader:
    def load(record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "group": _string(record, group_field) if group_field else None,
            "prompt": _string(record, "prompt"),
        }

    return load


def load_fmt_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"turns": [_string(record, turn) for turn in FMT_TURN_FIELDS]}


# ---------------------------------------------------------------- the catalog

CEB_AXES = ("age", "gender", "race", "religion")
BIASLENS_AXES = (
    "ability", "age", "body", "character", "culture", "gender",
    "occupations", "race", "religion", "social", "victim",
)  # fmt: skip
BBQ_AXES = (
    "age", "disability_status", "gender_identity", "nationality", "physical_appearance",
    "race_ethnicity", "race_x_gender", "race_x_ses", "religion", "ses", "sexual_orientation",
)  # fmt: skip


def _closed(
    name: str, axes: tuple[str, ...], loader: RecordLoader, *, flag_rule: FlagRule, metric: Metric, group: str,
    plot_order: int, analysed_context: str | None = None,
) -> DatasetSpec:  # fmt: skip
    return DatasetSpec(name, "closed", axes, loader, flag_rule, metric, group, plot_order,
                       analysed_context=analysed_context)  # fmt: skip


def _open(
    name: str, axes: tuple[str, ...], loader: RecordLoader, *, group: str, plot_order: int, multi_turn: bool = False
) -> DatasetSpec:
    """Open datasets are flagged by the guard's verdict and aggregated as the unsafe rate."""
    return DatasetSpec(name, "open", axes, loader, "guard_verdict", "unsafe_rate", group, plot_order, multi_turn)


_RECOGNITION = {"flag_rule": "wrong_answer", "metric": "proportion_biased", "group": "CEB-Recognition", "plot_order": 0}
_YES_NO_FAIRNESS = {"flag_rule": "wrong_answer", "metric": "equalized_odds_difference"}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _closed("CEB-Recognition-S", CEB_AXES, _recognition_loader(("stereotype", "anti-stereotype")), **_RECOGNITION),
        _closed("CEB-Recognition-T", CEB_AXES, _recognition_loader(("toxic", "non-toxic")), **_RECOGNITION),
        _closed("CEB-Adult", ("gender", "race"), load_yes_no_record, **_YES_NO_FAIRNESS, group="Adult", plot_order=1),
        _closed("CEB-Credit", ("age", "gender"), load_yes_no_record, **_YES_NO_FAIRNESS, group="Credit", plot_order=2),
        _closed(
            "CEB-Jigsaw", ("gender", "race", "religion"), load_yes_no_record,
            flag_rule="wrong_answer", metric="proportion_biased", group="Jigsaw", plot_order=3,
        ),
        _closed(
            "StereoSet-Intersentence", ("gender", "profession", "race", "religion"),
            _labelled_choices_loader("descriptor"),
            flag_rule="stereoset", metric="one_minus_icat", group="StereoSet", plot_order=4,
        ),
        _closed(
            "SocialStigmaQA", ("yes_no",), load_social_stigma_record,
            flag_rule="labelled_biased", metric="proportion_biased", group="SocialStigmaQA", plot_order=5,
        ),
        _closed(
            "BBQ", BBQ_AXES, load_bbq_record,
            flag_rule="bbq", metric="bbq_ambiguous_bias_score", group="BBQ", plot_order=6, analysed_context="ambig",
        ),
        _closed(
            "IAT", ("age", "gender", "health", "race", "religion"), load_iat_record,
            flag_rule="iat", metric="iat_deviation", group="IAT", plot_order=7,
        ),
        _closed(
            "BiasLens-Choices", BIASLENS_AXES, _labelled_choices_loader(None),
            flag_rule="labelled_biased", metric="non_refusal_rate", group="BiasLens-Choices", plot_order=8,
        ),
        _open("BiasLens-GenWhy", BIASLENS_AXES, _open_loader(None), group="BiasLens-GenWhy", plot_order=11),
        _open("CEB-Continuation-S", CEB_AXES, _open_loader("descriptor"), group="CEB-Continuation", plot_order=9),
        _open("CEB-Continuation-T", CEB_AXES, _open_loader("descriptor"), group="CEB-Continuation", plot_order=9),
        _open("CEB-Conversation-S", CEB_AXES, _open_loader("descriptor"), group="CEB-Conversation", plot_order=10),
        _open("CEB-Conversation-T", CEB_AXES, _open_loader("descriptor"), group="CEB-Conversation", plot_order=10),
        _open(
            "FMT10K-IM-S", ("age", "appearance", "disable", "gender", "race", "religion"), load_fmt_record,
            group="FMT10K", plot_order=12, multi_turn=True,
        ),
        _open(
            "FMT10K-IM-T", ("disable", "gender", "race", "religion"), load_fmt_record,
            group="FMT10K", plot_order=12, multi_turn=True,
        ),
    )
}  # fmt: skip


def closed_datasets() -> list[DatasetSpec]:
    return [spec for spec in DATASETS.values() if spec.style == "closed"]


def open_datasets() -> list[DatasetSpec]:
    return [spec for spec in DATASETS.values() if spec.style == "open"]


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def dataset_style(name: str) -> Style:
    return get_dataset(name).style


def dataset_group(name: str) -> str:
    return get_dataset(name).group


def group_plot_order() -> tuple[str, ...]:
    """Dataset groups in the order of the paper's figures."""
    ordered = sorted(DATASETS.values(), key=lambda spec: spec.plot_order)
    return tuple(dict.fromkeys(spec.group for spec in ordered))


# ---------------------------------------------------------------- building the question table (pure)


def question_hash(dataset: str, source_json: str) -> str:
    """sha256 of `<dataset>\\n<canonical source JSON>`: the same record in two datasets differs."""
    return hashlib.sha256(f"{dataset}\n{source_json}".encode()).hexdigest()


# The largest record of the 13 benchmark files has ~1,600 characters of JSON; one 60x larger is
# almost surely a broken file, and would exceed a small model's context (it fails alone when answered).
RECORD_SIZE_WARNING_CHARS = 100_000


def _record_label(record: object, position: int) -> str:
    if isinstance(record, Mapping) and isinstance(record.get("idx"), str):
        return str(record["idx"])
    return f"#{position}"


def build_questions(spec: DatasetSpec, files: Mapping[str, bytes | None]) -> DatasetLoad:
    """Validate and load one dataset from the raw bytes of its files (None = absent file)."""
    columns: dict[str, list[Any]] = {name: [] for name in QUESTION_SCHEMA}
    errors: list[str] = []
    warnings: list[str] = []
    first_seen: dict[str, str] = {}
    present = tuple(axis for axis in spec.axes if files.get(axis) is not None)
    absent = tuple(axis for axis in spec.axes if files.get(axis) is None)
    empty_row = dict.fromkeys(QUESTION_SCHEMA)
    for axis in present:
        path = spec.relative_path(axis)
        try:
            records = json.loads(files[axis])  # type: ignore[arg-type]
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            errors.append(f"{path}: record (whole file): json: malformed JSON ({error})")
            continue
        if not isinstance(records, list):
            errors.append(
                f"{path}: record (whole file): json: expected a list of records, got {type(records).__name__}"
            )
            continue
        for position, record in enumerate(records):
            label = _record_label(record, position)
            try:
                if not isinstance(record, dict):
                    raise RecordProblem("record", f"expected an object, got {type(record).__name__}")
                idx = _string(record, "idx")
                fields = spec.loader(record)
            except RecordProblem as problem:
                errors.append(f"{path}: record {label}: {problem}")
                continue
            if idx in first_seen:
                errors.append(f"{path}: record {label}: idx: duplicate idx (first seen at {first_seen[idx]})")
                continue
            first_seen[idx] = f"{path} #{position}"
            source_json = canonical_json(record)
            if len(source_json) > RECORD_SIZE_WARNING_CHARS:
                warnings.append(
                    f"{path}: record {label}: size: {len(source_json)} characters of JSON "
                    f"(more than {RECORD_SIZE_WARNING_CHARS}); it will likely exceed the model's context and fail alone"
                )
            row = {
                **empty_row,
                "choices": [],
                "choice_labels": [],
                **fields,
                "dataset": spec.name,
                "idx": idx,
                "axis": axis,
                "source_json": source_json,
                "question_hash": question_hash(spec.name, source_json),
            }
            for name, column in columns.items():
                column.append(row[name])
    frame = pl.DataFrame(columns, schema=QUESTION_SCHEMA)
    return DatasetLoad(
        spec=spec, frame=frame, axes_present=present, axes_absent=absent, errors=tuple(errors), warnings=tuple(warnings)
    )


# ---------------------------------------------------------------- disk edge


def read_dataset_files(spec: DatasetSpec, data_dir: Path) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {}
    for axis in spec.axes:
        path = data_dir / spec.relative_path(axis)
        files[axis] = path.read_bytes() if path.is_file() else None
    return files


def load_dataset(spec: DatasetSpec, data_dir: Path) -> DatasetLoad:
    return build_questions(spec, read_dataset_files(spec, data_dir))


def files_content_hash(spec: DatasetSpec, data_dir: Path, file_hash_of: Callable[[Path], str] | None = None) -> str:
    """sha256 over (relative path, file sha256 or "absent") of every axis file: the data version.
    `file_hash_of` replaces `file_sha256` (e.g. one that reuses the hash of an unchanged file)."""
    digest = hashlib.sha256()
    for axis in spec.axes:
        relative = spec.relative_path(axis)
        path = data_dir / relative
        file_hash = (file_hash_of or file_sha256)(path) if path.is_file() else "absent"
        digest.update(f"{relative}={file_hash}\n".encode())
    return digest.hexdigest()
