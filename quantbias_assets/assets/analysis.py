"""Analysis assets: `analysis/paired_responses` (native vs quantized rows with flips, flags and
uncertainty bins) and `analysis/bias_tests` (per-unit aggregate metrics and tests of change).

`analysis/paired_responses` is partitioned by model: a partition pairs every method of one model
with that model's native answers, reading the model's rows of the response and verdict tables
with lazy Delta scans (the IO manager cannot load several multi-partitions at once). A model
partition depends on the 8 method partitions of each of its 24 tables, so Dagster's staleness
check reads ~200 partition versions for one model's page and none for the asset as a whole
(unpartitioned, it read every partition of every model: 1,920 with 10 models). `analysis/bias_tests`
is one unpartitioned table over all models (its Benjamini–Hochberg family is every unit).
The computation lives in `quantbias_assets.analysis`. Aggregates over these tables (Table 1, the
method and model-size summaries) are dbt marts (assets/marts.py).
"""

from collections.abc import Callable
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from quantbias_assets import tables
from quantbias_assets.analysis.pairs import PAIR_SCHEMA, build_pairs
from quantbias_assets.analysis.stats import BiasTestSettings, bias_tests
from quantbias_assets.assets.common import location_metadata
from quantbias_assets.catalog.datasets import DATASETS, dataset_style, open_datasets
from quantbias_assets.catalog.models import PAPER_MODELS, load_registry
from quantbias_assets.markdown import markdown_table
from quantbias_assets.partitions import PER_MODEL, model_partitions
from resources.lake import LakeResource

GROUP_NAME = "analysis"
PAIRED_RESPONSES_KEY = dg.AssetKey(tables.PAIRED_RESPONSES)
BIAS_TESTS_KEY = dg.AssetKey(tables.BIAS_TESTS)
ANALYSED_DATASETS = tuple(DATASETS)  # closed, then open
OPEN_DATASETS = tuple(spec.name for spec in open_datasets())

CLOSED_RESPONSE_COLUMNS = ("model", "method", "idx", "axis", "question_hash", "probs_rounded", "chosen_idx",
                           "entropy_norm", "created_at")  # fmt: skip
OPEN_RESPONSE_COLUMNS = ("model", "method", "idx", "axis", "question_hash", "response_hash", "created_at")
VERDICT_COLUMNS = ("model", "method", "idx", "response_hash", "is_safe", "is_safe_reference", "created_at")
QUESTION_COLUMNS = ("idx", "question_hash", "group", "context_condition", "choices", "choice_labels", "target",
                    "answer_label", "unknown_label")  # fmt: skip


class PairsConfig(dg.Config):
    verdict_column: Literal["is_safe", "is_safe_reference"] = Field(
        default="is_safe",
        description="guard flag of open datasets: the parsed verdict (null when invalid) or the "
        "reference's substring rule",
    )
    stereoset_reference: bool = Field(
        default=False, description="StereoSet prob_biased as the reference's 1 − p[stereotype]"
    )


class BiasTestConfig(dg.Config):
    seed: int = Field(default=0, description="seeds every unit's generator (with the unit's key)")
    iterations: int = Field(default=1000, ge=1, description="permutation-test iterations")
    bootstrap_resamples: int = Field(default=1000, ge=1, description="resamples for the CI of M_Q − M_B")
    effect_size_resamples: int = Field(default=200, ge=1, description="resamples behind each effect size")
    min_rows: int = Field(default=10, ge=1, description="units with fewer valid rows are not tested")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Benjamini–Hochberg false discovery rate")

    def settings(self) -> BiasTestSettings:
        return BiasTestSettings(
            iterations=self.iterations,
            bootstrap_resamples=self.bootstrap_resamples,
            effect_size_resamples=self.effect_size_resamples,
            min_rows=self.min_rows,
            alpha=self.alpha,
            seed=self.seed,
        )


def _read(lake: LakeResource, key: tuple[str, ...], wanted: tuple[str, ...], model: str | None = None) -> pl.DataFrame:
    scan = lake.scan(lake.uri(*key), filters=None if model is None else {"model": model})
    present = [column for column in wanted if column in scan.collect_schema().names()]
    return scan.select(present).collect()


def _param_sizes(log: Callable[[str], None]) -> dict[str, float | None]:
    """Model nickname -> parameters (billions) from the registry; a broken registry file leaves
    user models without a size instead of stopping the analysis."""
    try:
        entries = load_registry().values()
    except ValueError as error:
        log(f"model sizes of the paper models only: {error}")
        entries = PAPER_MODELS
    return {entry.nickname: entry.size_b for entry in entries}


def _dataset_pairs(
    lake: LakeResource, dataset: str, model: str, config: PairsConfig, param_sizes: dict[str, float | None]
) -> tuple[pl.DataFrame | None, list[str], int, int]:
    """(pairs or None when the dataset has no tables yet, error lines, bad rows, stale rows)."""
    closed = dataset_style(dataset) == "closed"
    keys = [tables.questions(dataset), tables.responses(dataset)] + ([] if closed else [tables.verdicts(dataset)])
    if not all(lake.exists(lake.uri(*key)) for key in keys[:2]):
        return None, [], 0, 0
    questions = _read(lake, tables.questions(dataset), QUESTION_COLUMNS)
    responses = _read(
        lake, tables.responses(dataset), CLOSED_RESPONSE_COLUMNS if closed else OPEN_RESPONSE_COLUMNS, model
    )
    verdicts = None
    if not closed and lake.exists(lake.uri(*tables.verdicts(dataset))):
        verdicts = _read(lake, tables.verdicts(dataset), VERDICT_COLUMNS, model)
    result = build_pairs(
        dataset,
        responses,
        questions,
        verdicts,
        verdict_column=config.verdict_column,
        stereoset_reference=config.stereoset_reference,
        param_sizes=param_sizes,
    )
    return result.frame, result.errors, result.n_errors, result.n_stale


@dg.asset(
    key=PAIRED_RESPONSES_KEY,
    deps=[dg.AssetKey(tables.questions(name)) for name in ANALYSED_DATASETS]
    + [dg.AssetDep(dg.AssetKey(tables.responses(name)), partition_mapping=PER_MODEL) for name in ANALYSED_DATASETS]
    + [dg.AssetDep(dg.AssetKey(tables.verdicts(name)), partition_mapping=PER_MODEL) for name in OPEN_DATASETS],
    partitions_def=model_partitions,
    group_name=GROUP_NAME,
    code_version="paired-responses-v2",
    kinds={"delta", "polars"},
    description="Every quantized answer of one model paired with the model's native answer: flips, "
    "bias flags, uncertainty bins (docs/schemas.md, docs/analysis.md).",
)
def paired_responses(
    context: dg.AssetExecutionContext, config: PairsConfig, lake: LakeResource
) -> dg.MaterializeResult:
    model = context.partition_key
    frames, errors, missing, per_dataset = [], [], [], []
    n_bad = n_stale = 0
    param_sizes = _param_sizes(context.log.warning)
    for dataset in ANALYSED_DATASETS:
        try:
            frame, dataset_errors, dataset_bad, dataset_stale = _dataset_pairs(
                lake, dataset, model, config, param_sizes
            )
        except (pl.exceptions.PolarsError, ValueError, KeyError) as error:
            # one unreadable table must not stop the other datasets
            errors.append(f"responses/{dataset}: {type(error).__name__}: {error}")
            continue
        if frame is None:
            missing.append(dataset)
            continue
        frames.append(frame)
        errors += dataset_errors
        n_bad += dataset_bad
        n_stale += dataset_stale
        per_dataset.append((dataset, frame.height, dataset_bad, dataset_stale))
    pairs = pl.concat(frames) if frames else pl.DataFrame(schema=PAIR_SCHEMA)
    uri = lake.uri(*PAIRED_RESPONSES_KEY.path)
    lake.replace_rows(pairs, uri, {"model": model})  # the other models' rows stay
    for line in errors:
        context.log.warning(line)
    if missing:
        context.log.info(f"{model}: no responses yet for: {', '.join(missing)}")
    rows_table = pl.DataFrame(per_dataset, schema=["dataset", "paired_rows", "bad_rows", "stale_rows"], orient="row")
    invalid = pairs.filter(pl.col("is_biased_base").is_null() | pl.col("is_biased_quant").is_null()).height
    return dg.MaterializeResult(
        metadata={
            **location_metadata(uri, pairs.height),
            "rows": dg.MetadataValue.int(pairs.height),
            "rows_per_dataset": dg.MetadataValue.md(markdown_table(rows_table)),
            "datasets_without_responses": dg.MetadataValue.json(missing),
            "bad_rows": dg.MetadataValue.int(n_bad),
            "stale_rows": dg.MetadataValue.int(n_stale),
            "rows_with_invalid_verdicts": dg.MetadataValue.int(invalid),
            "errors": dg.MetadataValue.md("\n".join(f"- {line}" for line in errors) or "none"),
        }
    )


@dg.asset(
    key=BIAS_TESTS_KEY,
    deps=[PAIRED_RESPONSES_KEY],
    group_name=GROUP_NAME,
    code_version="bias-tests-v1",
    kinds={"delta", "polars"},
    description="Per (dataset, model, method, axis): aggregate bias natively and quantized, seeded "
    "permutation test, BH q value over all units, direction, effect sizes, CI, McNemar.",
)
def bias_tests_table(
    context: dg.AssetExecutionContext, config: BiasTestConfig, lake: LakeResource
) -> dg.MaterializeResult:
    pairs = lake.scan(lake.uri(*PAIRED_RESPONSES_KEY.path)).collect()
    tests = bias_tests(pairs, config.settings())
    uri = lake.uri(*BIAS_TESTS_KEY.path)
    lake.write_table(tests, uri)
    tested = tests.filter(pl.col("p_value").is_not_null())
    context.log.info(
        f"{tested.height} of {tests.height} units tested, {int(tested['is_significant'].sum())} significant"
    )
    return dg.MaterializeResult(
        metadata={
            **location_metadata(uri, tests.height),
            "rows": dg.MetadataValue.int(tests.height),
            "units_tested": dg.MetadataValue.int(tested.height),
            "units_significant": dg.MetadataValue.int(int(tested["is_significant"].sum())),
            "seed": dg.MetadataValue.int(config.seed),
            "iterations": dg.MetadataValue.int(config.iterations),
        }
    )


analysis_assets: list[dg.AssetsDefinition] = [paired_responses, bias_tests_table]
