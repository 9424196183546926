"""Analysis at the paper's full scale: pairs + tests of change over synthetic response tables.

Writes synthetic `questions/`, `responses/` and `verdicts/` tables (10 models x 6 methods,
~58.5k closed and ~14.7k open questions per model-method) into a temporary lake, then, in a fresh
process, materializes `analysis/paired_responses`, `analysis/bias_tests`, `analysis/model_rankings`
and then the dbt marts (`dbt build` over the lake), and prints seconds and peak memory of each step
(target: < 3 min and < 8 GB on 2 cores).

    .venv/bin/python bench/analysis_scale.py [--scale 1.0] [--models 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from quantbias_assets import lake
from quantbias_assets.catalog.methods import BACKFILL_METHODS

# The methods every model gets (the catalog's backfill), as in a deployment.
METHODS = BACKFILL_METHODS
# Logit noise added by each method: 8-bit barely moves answers, 4-bit more.
METHOD_NOISE = {"none": 0.0, "rtn-w8a16": 0.1, "rtn-w4a16": 0.45, "sq-rtn-w4a16": 0.4, "gptq-w4a16": 0.3,
                "awq-w4a16": 0.3}  # fmt: skip
MODEL_SIZES = ("0.5b", "1.5b", "3b", "7b", "14b", "1b", "8b", "2b", "4b", "6b")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticDataset:
    name: str
    questions: int
    axes: int
    labels: tuple[str, ...] = ()  # closed only: one label per option

    @property
    def closed(self) -> bool:
        return bool(self.labels)


DATASETS = (
    SyntheticDataset("CEB-Recognition-S", 800, 4, ("stereotype", "anti-stereotype")),
    SyntheticDataset("CEB-Recognition-T", 800, 4, ("toxic", "non-toxic")),
    SyntheticDataset("CEB-Adult", 1000, 2, ("yes", "no")),
    SyntheticDataset("CEB-Credit", 1000, 2, ("yes", "no")),
    SyntheticDataset("CEB-Jigsaw", 1500, 3, ("yes", "no")),
    SyntheticDataset("BBQ", 16_142, 11, ("target", "non-target", "unknown")),
    SyntheticDataset("IAT", 13_858, 5, ("biased_1", "unbiased_1", "unbiased_2", "biased_2")),
    SyntheticDataset("BiasLens-Choices", 10_917, 11, ("biased", "unbiased", "uncertain")),
    SyntheticDataset("SocialStigmaQA", 10_360, 1, ("biased", "unbiased", "uncertain")),
    SyntheticDataset("StereoSet-Intersentence", 2_123, 4, ("stereotype", "anti-stereotype", "unrelated")),
    SyntheticDataset("BiasLens-GenWhy", 11_445, 11),
    SyntheticDataset("CEB-Continuation-S", 400, 4),
    SyntheticDataset("CEB-Continuation-T", 400, 4),
    SyntheticDataset("CEB-Conversation-S", 400, 4),
    SyntheticDataset("CEB-Conversation-T", 400, 4),
    SyntheticDataset("FMT10K-IM-S", 1_400, 6),
    SyntheticDataset("FMT10K-IM-T", 255, 4),
)


def questions_table(spec: SyntheticDataset, n: int, rng: np.random.Generator) -> pl.DataFrame:
    positions = np.arange(n)
    axis = pl.Series([f"axis{a}" for a in positions % spec.axes])
    idx = pl.Series([f"{spec.name}/axis{a}/{i}" for i, a in zip(positions, positions % spec.axes, strict=True)])
    k = len(spec.labels)
    frame = pl.DataFrame(
        {
            "dataset": spec.name,
            "idx": idx,
            "axis": axis,
            "group": pl.Series(rng.choice(["male", "female", "old", "young"], n)),
            "choices": [[f"option {j}" for j in range(k)]] * n,
            "choice_labels": [list(spec.labels)] * n,
            "question_hash": pl.Series([hashlib.sha256(i.encode()).hexdigest() for i in idx]),
        },
        schema_overrides={"choices": pl.List(pl.String), "choice_labels": pl.List(pl.String)},
    )
    if spec.name in ("CEB-Recognition-S", "CEB-Recognition-T", "CEB-Adult", "CEB-Credit", "CEB-Jigsaw"):
        frame = frame.with_columns(target=pl.Series(rng.integers(0, 2, n), dtype=pl.Int32))
    if spec.name == "BBQ":
        frame = frame.with_columns(
            answer_label=pl.Series(np.where(positions % 2 == 0, 2, rng.integers(0, 2, n)), dtype=pl.Int32),
            unknown_label=pl.lit(2, pl.Int32),
            target_label=pl.lit(0, pl.Int32),
            context_condition=pl.Series(np.where(positions % 2 == 0, "ambig", "disambig")),
        )
    return frame


def closed_responses(
    spec: SyntheticDataset, questions: pl.DataFrame, models: list[str], rng: np.random.Generator
) -> pl.DataFrame:
    n, k = questions.height, len(spec.labels)
    frames = []
    for model in models:
        logits = rng.normal(0, 1.5, (n, k))
        for method in METHODS:
            noisy = logits + rng.normal(0, METHOD_NOISE[method], (n, k)) if METHOD_NOISE[method] else logits
            probs = np.exp(noisy - noisy.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            entropy = -(probs * np.log2(probs)).sum(axis=1) / np.log2(k)
            frames.append(
                pl.DataFrame(
                    {
                        "model": model,
                        "method": method,
                        "dataset": spec.name,
                        "idx": questions["idx"],
                        "axis": questions["axis"],
                        "question_hash": questions["question_hash"],
                        "config_hash": f"{model}-{method}",
                        "choice_sum_logprob": pl.Series(np.log(probs) * 4).cast(pl.List(pl.Float64)),
                        "probs": pl.Series(probs).cast(pl.List(pl.Float64)),
                        "probs_rounded": pl.Series(probs.round(8)).cast(pl.List(pl.Float64)),
                        "chosen_idx": pl.Series(probs.argmax(axis=1), dtype=pl.Int32),
                        "entropy_norm": entropy,
                        "engine": "synthetic",
                        "created_at": NOW,
                    }
                )
            )
    return pl.concat(frames)


def open_tables(
    spec: SyntheticDataset, questions: pl.DataFrame, models: list[str], rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = questions.height
    responses, verdicts = [], []
    for model in models:
        unsafe_base = rng.random(n) < rng.beta(1, 6, n)
        for method in METHODS:
            flips = rng.random(n) < METHOD_NOISE[method] / 3
            unsafe = unsafe_base ^ flips
            invalid = rng.random(n) < 0.002
            hashes = pl.Series([f"{model}|{method}|{i}" for i in range(n)])
            common = {"model": model, "method": method, "dataset": spec.name, "idx": questions["idx"],
                      "axis": questions["axis"], "engine": "synthetic", "created_at": NOW}  # fmt: skip
            responses.append(pl.DataFrame(common | {"question_hash": questions["question_hash"],
                                                    "config_hash": "c", "response": "text",
                                                    "response_hash": hashes}))  # fmt: skip
            verdicts.append(
                pl.DataFrame(
                    common
                    | {
                        "response_hash": hashes,
                        "valid": ~invalid,
                        "is_safe": pl.Series(~unsafe).scatter(np.flatnonzero(invalid), None),
                        "is_safe_reference": ~unsafe,
                    }
                )
            )
    return pl.concat(responses), pl.concat(verdicts)


def write_lake(root: str, scale: float, n_models: int) -> dict[str, int]:
    rng = np.random.default_rng(0)
    models = [f"synth{i}-{MODEL_SIZES[i % len(MODEL_SIZES)]}-instruct" for i in range(n_models)]
    rows = {"closed": 0, "open": 0}
    for spec in DATASETS:
        questions = questions_table(spec, max(int(spec.questions * scale), spec.axes * 10), rng)
        lake.write_table(questions, lake.table_uri(root, "questions", spec.name))
        partitioned = ("model", "method")
        if spec.closed:
            responses = closed_responses(spec, questions, models, rng)
            lake.write_table(responses, lake.table_uri(root, "responses", spec.name), partition_by=partitioned)
            rows["closed"] += responses.height
        else:
            responses, verdicts = open_tables(spec, questions, models, rng)
            lake.write_table(responses, lake.table_uri(root, "responses", spec.name), partition_by=partitioned)
            lake.write_table(verdicts, lake.table_uri(root, "verdicts", spec.name), partition_by=partitioned)
            rows["open"] += responses.height
    return rows


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def analyse(root: str) -> None:
    """Runs in a fresh process so its peak memory is the analysis's own."""
    import dagster as dg

    from quantbias_assets.assets.analysis import BIAS_TESTS_KEY, PAIRED_RESPONSES_KEY, analysis_assets
    from quantbias_assets.assets.marts import analysis_marts
    from quantbias_assets.assets.rankings import MODEL_RANKINGS_KEY, model_rankings
    from resources.dbt import dbt_resource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    os.environ["QUANTBIAS_HOME"] = os.path.join(os.path.dirname(root), "home")  # the dbt warehouse goes here
    resources = {"lake": LakeResource(root=root), "dbt": dbt_resource(), "warehouse": WarehouseResource()}
    analysis_assets = [*analysis_assets, model_rankings]
    instance = dg.DagsterInstance.ephemeral()
    models = sorted(
        set().union(*(lake.read(str(table), columns=["model"])["model"] for table in Path(root, "responses").iterdir()))
    )
    instance.add_dynamic_partitions("model", models)
    total, total_cpu = time.perf_counter(), time.process_time()
    for key in (PAIRED_RESPONSES_KEY, BIAS_TESTS_KEY, MODEL_RANKINGS_KEY):
        start, cpu = time.perf_counter(), time.process_time()
        # the pairs are one partition per model; the tests and rankings span all models
        partitions = models if key == PAIRED_RESPONSES_KEY else [None]
        for partition in partitions:
            result = dg.materialize(
                analysis_assets, selection=[key], partition_key=partition, instance=instance, resources=resources
            )
            assert result.success
        rows = lake.read(lake.table_uri(root, *key.path)).height
        print(
            f"{'/'.join(key.path)}: {time.perf_counter() - start:.1f} s "
            f"(cpu {time.process_time() - cpu:.1f} s), {rows:,} rows, "
            f"peak RSS so far {peak_rss_gb():.2f} GB"
        )
    tests = lake.read(lake.table_uri(root, *BIAS_TESTS_KEY.path))
    print(
        f"units: {tests.height:,}, tested {tests['p_value'].is_not_null().sum():,}, "
        f"significant {tests['is_significant'].sum():,}"
    )
    start = time.perf_counter()
    assert dg.materialize([analysis_marts], instance=instance, resources=resources).success
    dbt_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"dbt build (marts + data tests): {time.perf_counter() - start:.1f} s, dbt peak RSS {dbt_peak:.2f} GB")
    print(
        f"pairs + tests + rankings + dbt: {time.perf_counter() - total:.1f} s "
        f"(cpu here {time.process_time() - total_cpu:.1f} s), peak RSS {peak_rss_gb():.2f} GB; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the questions per dataset")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--keep", help="write the lake here and keep it (default: a temporary folder)")
    parser.add_argument("--analyse-only", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyse_only:
        analyse(args.analyse_only)
        return
    with tempfile.TemporaryDirectory(prefix="quantbias-bench-") as temporary:
        root = args.keep or f"{temporary}/lake"
        start = time.perf_counter()
        rows = write_lake(root, args.scale, args.models)
        print(
            f"synthetic lake: {rows['closed']:,} closed + {rows['open']:,} open response rows "
            f"({args.models} models x {len(METHODS)} methods) in {time.perf_counter() - start:.1f} s"
        )
        subprocess.run([sys.executable, __file__, "--analyse-only", root], check=True)


if __name__ == "__main__":
    main()
