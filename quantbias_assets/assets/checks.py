"""Blocking asset checks and table metadata of the worker tables (`responses/*`, `verdicts/*`).

The checks run in the asset's own step, right after the worker reported a dataset: they read
the partition just written from the lake. Blocking: a failed check fails the step, so nothing
downstream in the same run reads a table that breaks them. The rules are plain functions over
a polars frame of the partition (`*_check_outcomes`), tested without Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from quantbias_assets.assets.table_metadata import column_schema, markdown_preview
from quantbias_assets.guard import VERDICT_KEY
from quantbias_assets.responding import RESPONSE_KEY

PROBABILITY_TOLERANCE = 1e-6
PREVIEW_ROWS = 5
SAMPLE_IDX = 5  # offending idx values named in a failed check's metadata

NO_FAILED_QUESTIONS = "no_failed_questions"
NO_FAILED_ROWS = "no_failed_rows"
ONE_ROW_PER_KEY = "one_row_per_key"
NO_BAD_ROWS = "no_bad_rows"
PROBABILITIES_SUM_TO_ONE = "probabilities_sum_to_one"

CHECK_DESCRIPTIONS = {
    NO_FAILED_QUESTIONS: "The worker answered every selected question (no question logged as failed).",
    NO_FAILED_ROWS: "The guard judged every response it was given (a response whose question is gone is "
    "skipped and only counted: `responses_without_question`).",
    ONE_ROW_PER_KEY: "One row per content key in the partition: {key}.",
    NO_BAD_ROWS: "{what}",
    PROBABILITIES_SUM_TO_ONE: f"Every row's choice probabilities sum to 1 (within {PROBABILITY_TOLERANCE:g}).",
}
BAD_RESPONSE_ROWS = {
    "closed": "Closed rows are whole: one probability, log-prob and token count per choice, a chosen index "
    "among the choices, a finite log-prob <= 0 and a normalized entropy in [0, 1].",
    "open": "Open rows are whole: a reply per turn (at least one), and `response` is the last of them.",
}
BAD_VERDICT_ROWS = "Every row keeps the guard's raw text; a valid verdict says safe or unsafe, an invalid one neither."


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict[str, object]


def _outcome(name: str, frame: pl.DataFrame, bad: pl.Expr) -> CheckOutcome:
    offending = frame.filter(bad)
    return CheckOutcome(
        name,
        offending.height == 0,
        {
            "rows": frame.height,
            "offending_rows": offending.height,
            "offending_idx_sample": ", ".join(offending["idx"].head(SAMPLE_IDX).cast(pl.String).to_list()),
        },
    )


def duplicate_keys(frame: pl.DataFrame, key: Sequence[str]) -> CheckOutcome:
    duplicated = frame.select(pl.struct(list(key)).is_duplicated().alias("dup"))["dup"]
    return _outcome(ONE_ROW_PER_KEY, frame, duplicated)


def response_check_outcomes(frame: pl.DataFrame, *, style: str, failed_questions: int) -> list[CheckOutcome]:
    """The responses checks over one partition (responses worker schema) of a dataset."""
    outcomes = [
        CheckOutcome(NO_FAILED_QUESTIONS, failed_questions == 0, {"failed_questions": failed_questions}),
        duplicate_keys(frame, RESPONSE_KEY),
    ]
    if style == "closed":
        n_choices = pl.col("choices_n")
        bad = (
            pl.col("probs").is_null()
            | (pl.col("probs").list.len() != n_choices)
            | (pl.col("choice_sum_logprob").list.len() != n_choices)
            | (pl.col("choice_n_tokens").list.len() != n_choices)
            | pl.col("chosen_idx").is_null()
            | (pl.col("chosen_idx") < 0)
            | (pl.col("chosen_idx") >= n_choices)
            | ~pl.col("entropy_norm").is_between(0.0, 1.0)
            | pl.col("entropy_norm").is_null()
            | ~pl.col("choice_sum_logprob").list.eval(pl.element().is_finite() & (pl.element() <= 0)).list.all()
        ).fill_null(True)
        closed = frame.with_columns(choices_n=pl.col("choice_n_chars").list.len())
        outcomes.append(_outcome(NO_BAD_ROWS, closed, bad))
        off_by = (pl.col("probs").list.sum() - 1.0).abs()
        outcomes.append(_outcome(PROBABILITIES_SUM_TO_ONE, frame, (off_by > PROBABILITY_TOLERANCE).fill_null(True)))
    else:
        bad = (
            pl.col("turns_out").is_null()
            | (pl.col("turns_out").list.len() < 1)
            | pl.col("response").is_null()
            | (pl.col("turns_out").list.last() != pl.col("response"))
        ).fill_null(True)
        outcomes.append(_outcome(NO_BAD_ROWS, frame, bad))
    return outcomes


def verdict_check_outcomes(
    frame: pl.DataFrame, *, failed_rows: int, responses_without_question: int
) -> list[CheckOutcome]:
    """The verdicts checks over one partition (VERDICT_SCHEMA) of a dataset."""
    bad = (
        pl.col("verdict_raw").is_null()
        | pl.col("valid").is_null()
        | (pl.col("valid") & pl.col("is_safe").is_null())
        | (~pl.col("valid") & pl.col("is_safe").is_not_null())
    ).fill_null(True)
    return [
        CheckOutcome(
            NO_FAILED_ROWS,
            failed_rows == 0,
            {"failed_rows": failed_rows, "responses_without_question": responses_without_question},
        ),
        duplicate_keys(frame, VERDICT_KEY),
        _outcome(NO_BAD_ROWS, frame, bad),
    ]


# ---------------------------------------------------------------- Dagster edge


def _spec(key: dg.AssetKey, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name=name, asset=key, description=description, blocking=True)


def response_check_specs(key: dg.AssetKey, style: str) -> list[dg.AssetCheckSpec]:
    names = [NO_FAILED_QUESTIONS, ONE_ROW_PER_KEY, NO_BAD_ROWS] + (
        [PROBABILITIES_SUM_TO_ONE] if style == "closed" else []
    )
    return [
        _spec(key, name, CHECK_DESCRIPTIONS[name].format(key=" + ".join(RESPONSE_KEY), what=BAD_RESPONSE_ROWS[style]))
        for name in names
    ]


def verdict_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        _spec(key, name, CHECK_DESCRIPTIONS[name].format(key=" + ".join(VERDICT_KEY), what=BAD_VERDICT_ROWS))
        for name in (NO_FAILED_ROWS, ONE_ROW_PER_KEY, NO_BAD_ROWS)
    ]


def check_results(
    key: dg.AssetKey, outcomes: Sequence[CheckOutcome], selected: set[dg.AssetCheckKey]
) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name=outcome.name,
            passed=outcome.passed,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.ERROR,
        )
        for outcome in outcomes
        if dg.AssetCheckKey(key, outcome.name) in selected
    ]


def schema_metadata(schema: pl.Schema) -> dict[str, object]:
    """The column schema of a worker table, for its asset definition."""
    return {"dagster/column_schema": column_schema(pl.DataFrame(schema=schema))}


def table_metadata(uri: str, partition: pl.DataFrame, preview_columns: Sequence[str]) -> dict[str, object]:
    """Where the table lives and what the partition's first rows look like."""
    return {
        "dagster/uri": dg.MetadataValue.path(uri),
        "partition_rows": dg.MetadataValue.int(partition.height),
        "preview": dg.MetadataValue.md(markdown_preview(partition.select(preview_columns).head(PREVIEW_ROWS))),
    }


def metadata_value(metadata: Mapping[str, object], name: str, default: int = 0) -> int:
    """An int the worker reported (raw or as a MetadataValue)."""
    value = metadata.get(name, default)
    return int(getattr(value, "value", value) or 0)
