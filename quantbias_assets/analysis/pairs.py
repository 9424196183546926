"""Base vs quantized pairs (spec §3–4): one row per (model, method != none, idx) joined with the
same model's native answer (method `none`) on idx, with flips, bias flags, uncertainty bins, the
base model's parameter count (from the model registry) and whether the paper analyses the row.
These are row-level tables only: every aggregate over them is a dbt model (dbt_analysis/).

Bad response rows (probabilities missing or not matching the question's options, a chosen index
out of range) are dropped with one error line each; rows answering an older version of a question
(stale `question_hash`) are dropped and counted. Nothing else is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from quantbias_assets.analysis.flags import CORRECT_OPTION_FIELD, RULE_QUESTION_FIELDS, closed_flags, open_flags
from quantbias_assets.catalog.datasets import DATASETS, dataset_group, dataset_style, get_dataset
from quantbias_assets.scoring import uncertainty_bin_expr

NATIVE_METHOD = "none"
MAX_ERROR_LINES = 50


def _analysed_rows() -> pl.Expr:
    """The rows the reference analyses: a dataset with an `analysed_context` in the catalog keeps
    only that context condition (BBQ: ambiguous; spec §1.2: its loader keeps
    `context_condition == "ambig"`, so a BBQ row without a context condition is left out too)."""
    restricted = {spec.name: spec.analysed_context for spec in DATASETS.values() if spec.analysed_context}
    keep = ~pl.col("dataset").is_in(list(restricted))
    for dataset, context in restricted.items():
        keep = keep | ((pl.col("dataset") == dataset) & (pl.col("context_condition") == context))
    return keep.fill_null(False)


ANALYSED = _analysed_rows()

PAIR_SCHEMA = pl.Schema(
    {
        "dataset": pl.String,
        "dataset_group": pl.String,
        "style": pl.String,
        "model": pl.String,
        "method": pl.String,
        "axis": pl.String,
        "idx": pl.String,
        "group": pl.String,
        "context_condition": pl.String,
        "n_choices": pl.Int32,
        "chosen_base": pl.Int32,
        "chosen_quant": pl.Int32,
        "chosen_label_base": pl.String,
        "chosen_label_quant": pl.String,
        "correct_idx": pl.Int32,
        "prob_biased_base": pl.Float64,
        "prob_biased_quant": pl.Float64,
        "is_biased_base": pl.Boolean,
        "is_biased_quant": pl.Boolean,
        "entropy_norm_base": pl.Float64,
        "entropy_norm_quant": pl.Float64,
        "entropy_delta": pl.Float64,
        "uncertainty_bin": pl.String,
        "flipped": pl.Boolean,
        "bias_flipped": pl.Boolean,
        "unbiased_to_biased": pl.Boolean,
        "biased_to_unbiased": pl.Boolean,
        "param_size_b": pl.Float64,
        "analysed": pl.Boolean,
    }
)

# Columns that differ between the native and the quantized answer of one question.
_SIDE_COLUMNS = ("chosen", "chosen_label", "prob_biased", "is_biased", "entropy_norm")


@dataclass
class PairsResult:
    frame: pl.DataFrame
    errors: list[str] = field(default_factory=list)
    n_errors: int = 0
    n_stale: int = 0


def build_pairs(
    dataset: str,
    responses: pl.DataFrame,
    questions: pl.DataFrame,
    verdicts: pl.DataFrame | None = None,
    *,
    verdict_column: str = "is_safe",
    stereoset_reference: bool = False,
    param_sizes: Mapping[str, float | None] | None = None,
) -> PairsResult:
    """Pair every quantized answer of `dataset` with its model's native answer.

    `responses` and `verdicts` hold all (model, method) partitions of the dataset's tables,
    `questions` the current question table. `verdict_column` selects the guard flag of open
    datasets (`is_safe`, or the reference's `is_safe_reference`). `param_sizes` maps a model
    nickname to its parameters in billions (the registry's `size_b`); other models get null.
    """
    source = f"responses/{dataset}"
    current, n_stale = _current_rows(responses, questions)
    if dataset_style(dataset) == "closed":
        valid, errors, n_errors = _valid_closed_rows(
            current, source, RULE_QUESTION_FIELDS[get_dataset(dataset).flag_rule]
        )
        flagged = _closed_side_rows(dataset, valid, stereoset_reference)
    else:
        errors, n_errors = [], 0
        flagged = _open_side_rows(current, verdicts, verdict_column)
    frame = _pair_sides(flagged).with_columns(
        dataset=pl.lit(dataset),
        dataset_group=pl.lit(dataset_group(dataset)),
        style=pl.lit(dataset_style(dataset)),
        param_size_b=pl.col("model").replace_strict(dict(param_sizes or {}), default=None, return_dtype=pl.Float64),
    )
    return PairsResult(
        frame=_derive_flips(frame, closed=dataset_style(dataset) == "closed"),
        errors=errors,
        n_errors=n_errors,
        n_stale=n_stale,
    )


def analysis_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    """The rows the reference analyses (`ANALYSED`)."""
    return pairs.filter(ANALYSED)


def _current_rows(responses: pl.DataFrame, questions: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Latest answer per (model, method, idx) to the current version of each question."""
    question_columns = [
        c
        for c in ("idx", "question_hash", "group", "context_condition", "choices", "choice_labels",
                  "target", "answer_label", "unknown_label")
        if c in questions.columns
    ]  # fmt: skip
    joined = responses.join(questions.select(question_columns), on=["idx", "question_hash"], how="inner")
    n_stale = responses.height - joined.height
    if "created_at" in joined.columns:
        joined = joined.sort("created_at", nulls_last=False, maintain_order=True)
    latest = joined.unique(subset=["model", "method", "idx"], keep="last", maintain_order=True)
    return latest, n_stale


def _valid_closed_rows(
    frame: pl.DataFrame, source: str, question_fields: tuple[str, ...]
) -> tuple[pl.DataFrame, list[str], int]:
    n_choices = pl.col("choices").list.len()
    problems = [
        *[
            (pl.col(name).is_null() | (pl.col(name) < 0) | (pl.col(name) >= n_choices), name,
             "missing or out of range in the question table")
            for name in question_fields
        ],
        (pl.col("choice_labels").list.len() != n_choices, "choice_labels",
         "length does not match the question's choices"),
        (pl.col("probs_rounded").is_null(), "probs_rounded", "missing"),
        (
            pl.col("probs_rounded").list.len() != n_choices,
            "probs_rounded",
            "length does not match the question's choices",
        ),
        (pl.col("probs_rounded").list.eval(pl.element().is_null()).list.any(), "probs_rounded",
         "contains null"),
        (pl.col("chosen_idx").is_null(), "chosen_idx", "missing"),
        (
            (pl.col("chosen_idx") < 0) | (pl.col("chosen_idx") >= n_choices),
            "chosen_idx",
            "out of range of the question's choices",
        ),
    ]  # fmt: skip
    problem_expr = pl.coalesce(
        *[pl.when(cond.fill_null(False)).then(pl.lit(f"{col}: {text}")) for cond, col, text in problems]
    )
    checked = frame.with_columns(_problem=problem_expr)
    bad = checked.filter(pl.col("_problem").is_not_null())
    errors = [
        f"{source}: record {row['idx']} ({row['model']}/{row['method']}): {row['_problem']}"
        for row in bad.sort("model", "method", "idx").head(MAX_ERROR_LINES).iter_rows(named=True)
    ]
    return checked.filter(pl.col("_problem").is_null()).drop("_problem"), errors, bad.height


def _closed_side_rows(dataset: str, frame: pl.DataFrame, stereoset_reference: bool) -> pl.DataFrame:
    frame = frame.with_columns(n_choices=pl.col("choices").list.len().cast(pl.Int32))
    parts = [
        closed_flags(part, dataset, n_choices=int(k), stereoset_reference=stereoset_reference)
        for (k,), part in frame.partition_by("n_choices", as_dict=True).items()
    ]
    correct = CORRECT_OPTION_FIELD.get(get_dataset(dataset).flag_rule)
    flagged = pl.concat(parts) if parts else closed_flags(frame, dataset, n_choices=0)
    return flagged.select(
        "model", "method", "idx", "axis", "n_choices",
        _optional(flagged, "group", pl.String),
        _optional(flagged, "context_condition", pl.String),
        (pl.col(correct) if correct else pl.lit(None)).cast(pl.Int32).alias("correct_idx"),
        pl.col("chosen_idx").cast(pl.Int32).alias("chosen"),
        "chosen_label", "prob_biased", "is_biased",
        pl.col("entropy_norm").cast(pl.Float64),
    )  # fmt: skip


def _open_side_rows(frame: pl.DataFrame, verdicts: pl.DataFrame | None, verdict_column: str) -> pl.DataFrame:
    if verdicts is None:
        verdicts = pl.DataFrame(
            schema={"model": pl.String, "method": pl.String, "idx": pl.String,
                    "response_hash": pl.String, verdict_column: pl.Boolean}
        )  # fmt: skip
    if "created_at" in verdicts.columns:
        verdicts = verdicts.sort("created_at", nulls_last=False, maintain_order=True)
    # Only a verdict on the current response counts; no verdict at all is an invalid one.
    latest = verdicts.select("model", "method", "idx", "response_hash", verdict_column).unique(
        subset=["model", "method", "idx", "response_hash"], keep="last", maintain_order=True
    )
    judged = frame.join(latest, on=["model", "method", "idx", "response_hash"], how="left")
    return open_flags(judged, verdict_column=verdict_column).select(
        "model", "method", "idx", "axis",
        pl.lit(None, pl.Int32).alias("n_choices"),
        _optional(judged, "group", pl.String),
        pl.lit(None, pl.String).alias("context_condition"),
        pl.lit(None, pl.Int32).alias("correct_idx"),
        pl.lit(None, pl.Int32).alias("chosen"),
        pl.lit(None, pl.String).alias("chosen_label"),
        pl.lit(None, pl.Float64).alias("prob_biased"),
        "is_biased",
        pl.lit(None, pl.Float64).alias("entropy_norm"),
    )  # fmt: skip


def _optional(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column).cast(dtype) if column in frame.columns else pl.lit(None, dtype).alias(column)


def _pair_sides(rows: pl.DataFrame) -> pl.DataFrame:
    base = rows.filter(pl.col("method") == NATIVE_METHOD).select(
        "model", "idx", *[pl.col(c).alias(f"{c}_base") for c in _SIDE_COLUMNS]
    )
    quant = rows.filter(pl.col("method") != NATIVE_METHOD).rename({c: f"{c}_quant" for c in _SIDE_COLUMNS})
    return quant.join(base, on=["model", "idx"], how="inner")


def _derive_flips(frame: pl.DataFrame, *, closed: bool) -> pl.DataFrame:
    base, quant = pl.col("is_biased_base"), pl.col("is_biased_quant")
    flipped = pl.col("chosen_base") != pl.col("chosen_quant") if closed else base != quant
    both_flagged = base.is_not_null() & quant.is_not_null()
    return frame.with_columns(
        entropy_delta=pl.col("entropy_norm_quant") - pl.col("entropy_norm_base"),
        uncertainty_bin=(uncertainty_bin_expr(pl.col("entropy_norm_base")) if closed else pl.lit(None, pl.String)),
        flipped=flipped,
        bias_flipped=base != quant,
        # null (not False) when a verdict is missing, so such rows are excluded, never miscounted
        unbiased_to_biased=pl.when(both_flagged).then(~base & quant),
        biased_to_unbiased=pl.when(both_flagged).then(base & ~quant),
        analysed=ANALYSED,
    ).select([pl.col(name).cast(dtype) for name, dtype in PAIR_SCHEMA.items()])
