"""Every table's name, in one place. A table's asset key path is its lake path
(`<lake root>/<path>`): the assets build their `AssetKey`s from these paths, the workers (which
import no Dagster) their lake URIs, the automation its selections; dbt's `models/sources.yml`
names the analysis tables with the same paths (tests/unit/test_tables.py checks it).
"""

from __future__ import annotations

DATASET_FILES = "dataset_files"  # observed source files, not a lake table
QUESTIONS = "questions"
CHECKPOINT = "checkpoint"  # a folder per partition in the model store, not a lake table
RESPONSES = "responses"
VERDICTS = "verdicts"
ANALYSIS = "analysis"

PAIRED_RESPONSES = (ANALYSIS, "paired_responses")
BIAS_TESTS = (ANALYSIS, "bias_tests")
MODEL_RANKINGS = (ANALYSIS, "model_rankings")
TEXT_PATTERNS = (ANALYSIS, "text_patterns")
ANALYSIS_TABLES = (PAIRED_RESPONSES, BIAS_TESTS, MODEL_RANKINGS, TEXT_PATTERNS)


def dataset_files(dataset: str) -> tuple[str, str]:
    return (DATASET_FILES, dataset)


def questions(dataset: str) -> tuple[str, str]:
    return (QUESTIONS, dataset)


def responses(dataset: str) -> tuple[str, str]:
    return (RESPONSES, dataset)


def verdicts(dataset: str) -> tuple[str, str]:
    return (VERDICTS, dataset)
