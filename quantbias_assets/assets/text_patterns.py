"""`analysis/text_patterns`: how open-ended answers change in form after quantization.

Words, repeated n-grams, non-English share, ROUGE-Lsum and the common word prefix of every
quantized answer against its native answer (the paper's supplementary text figures), computed
in the orchestrator from the response tables: no model involved. Partitioned by model, like
`analysis/paired_responses`, so its status never reads every partition of every model.
"""

import dagster as dg
import polars as pl

from quantbias_assets import tables
from quantbias_assets.analysis.text_patterns import summarize, text_pattern_pairs
from quantbias_assets.assets.analysis import GROUP_NAME, OPEN_DATASETS
from quantbias_assets.assets.common import location_metadata
from quantbias_assets.lake import equality_predicate
from quantbias_assets.markdown import markdown_table
from quantbias_assets.partitions import PER_MODEL, model_partitions
from resources.lake import LakeResource

TEXT_PATTERNS_KEY = dg.AssetKey(tables.TEXT_PATTERNS)


@dg.asset(
    key=TEXT_PATTERNS_KEY,
    deps=[dg.AssetDep(dg.AssetKey(tables.responses(name)), partition_mapping=PER_MODEL) for name in OPEN_DATASETS],
    partitions_def=model_partitions,
    group_name=GROUP_NAME,
    code_version="text-patterns-v2",
    kinds={"delta", "polars"},
    description="Per open-ended answer pair: word count, n-gram repetition and non-English share "
    "of both answers and their change, ROUGE-Lsum and the longest common word prefix.",
)
def text_patterns(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    model = context.partition_key
    frames, missing = [], []
    for dataset in OPEN_DATASETS:
        uri = lake.uri(*tables.responses(dataset))
        if not lake.exists(uri):
            missing.append(dataset)
            continue
        responses = lake.read(
            uri, filters={"model": model}, columns=["model", "method", "axis", "idx", "response", "created_at"]
        )
        frames.append(text_pattern_pairs(dataset, responses.sort("created_at")))
        context.log.info(f"{dataset}: {frames[-1].height} answer pairs measured")
    pairs = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    uri = lake.uri(*TEXT_PATTERNS_KEY.path)
    if not pairs.is_empty():
        lake.replace_rows(pairs, uri, {"model": model})  # the other models' rows stay
    elif lake.exists(uri):
        lake.delete_where(uri, equality_predicate({"model": model}))
    per_dataset = summarize(pairs, by=("dataset_group", "method"))
    return dg.MaterializeResult(
        metadata={
            **location_metadata(uri, pairs.height),
            "datasets_without_responses": dg.MetadataValue.json(missing),
            "changes_by_dataset_and_method": dg.MetadataValue.md(
                markdown_table(per_dataset, 3) if not per_dataset.is_empty() else "no pairs yet"
            ),
        }
    )
