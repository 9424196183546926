"""Where things live on the embedded default, all derived from environment variables.

QUANTBIAS_HOME (default ./.quantbias) holds the lake, the model store, the model registry
file, dbt's duckdb file and DAGSTER_HOME. QUANTBIAS_DATA_DIR points at a local copy of the
benchmark's `data/` folder; without it, `quantbias datasets fetch` fills $QUANTBIAS_HOME/datasets.
"""

from __future__ import annotations

import os
from pathlib import Path


def quantbias_home() -> Path:
    return Path(os.environ.get("QUANTBIAS_HOME", ".quantbias")).absolute()


def data_dir() -> Path:
    explicit = os.environ.get("QUANTBIAS_DATA_DIR")
    return Path(explicit).absolute() if explicit else quantbias_home() / "datasets"


def lake_root() -> str:
    return os.environ.get("QUANTBIAS_LAKE", str(quantbias_home() / "lake"))


def model_store_root() -> str:
    return os.environ.get("QUANTBIAS_MODEL_STORE", str(quantbias_home() / "models"))


def registry_file() -> Path:
    return quantbias_home() / "models.yaml"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", str(quantbias_home() / "dagster"))).absolute()


def analysis_duckdb_path() -> Path:
    return Path(os.environ.get("QUANTBIAS_DBT_DUCKDB", str(quantbias_home() / "warehouse.duckdb"))).absolute()


def figures_dir() -> Path:
    return quantbias_home() / "reports" / "figures"
