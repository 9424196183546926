"""Shared fixtures: the deterministic tiny model and the real benchmark files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama model (hidden 128, 2 layers, ~2k-token BPE, ChatML template), built once per session."""
    import torch

    from quantbias_assets.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model", seed=0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark files: $QUANTBIAS_DATA_DIR, else ../shared/datasets next to the repo."""
    explicit = os.environ.get("QUANTBIAS_DATA_DIR")
    path = Path(explicit) if explicit else REPO_ROOT.parent / "shared" / "datasets"
    if not (path / "closed_datasets").is_dir():
        pytest.fail(f"{path}: benchmark data not found (set QUANTBIAS_DATA_DIR)")
    return path.resolve()
