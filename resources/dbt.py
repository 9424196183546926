"""The dbt project (dbt_analysis/) and the dbt CLI resource that builds it over the lake."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from quantbias_assets import settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_analysis"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_executable() -> str:
    """The `dbt` next to this interpreter, so the venv's dbt is used even when not on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_env(lake_root: str, duckdb_path: str) -> dict[str, str]:
    return {
        "QUANTBIAS_LAKE": lake_root,
        "QUANTBIAS_DBT_DUCKDB": duckdb_path,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a dbt subprocess started inside the block, then restore them
    and the working directory.

    DbtCliResource hands its process a copy of os.environ and takes no env of its own. dbt's
    in-process adapter (row counts, column types) chdirs into the project, which would re-anchor
    every relative path of the rest of the process (e.g. QUANTBIAS_DATA_DIR=../shared/datasets).
    """
    saved = {key: os.environ.get(key) for key in values}
    working_directory = os.getcwd()
    os.environ.update(values)
    try:
        yield
    finally:
        os.chdir(working_directory)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Parse the project when its manifest is missing or older than any model, seed or macro.

    dagster-dbt builds the asset graph from target/manifest.json; parsing takes a few seconds
    and needs no database, so a fresh clone gets its manifest on first import. It parses against
    a database file named like the warehouse (`warehouse.duckdb`, in a scratch folder): dbt-duckdb
    names the database after the file, and the marts' table names (`warehouse.main.<model>`) come
    from the manifest. A change to this file re-parses too.
    """
    manifest = Path(project.manifest_path)
    sources = [
        p for p in DBT_PROJECT_DIR.rglob("*") if p.suffix in {".sql", ".yml", ".csv"} and "target" not in p.parts
    ]
    newest = max(p.stat().st_mtime for p in [*sources, Path(__file__)])
    if manifest.exists() and manifest.stat().st_mtime >= newest:
        return manifest
    with tempfile.TemporaryDirectory(prefix="quantbias-dbt-parse-") as scratch:
        database = str(Path(scratch) / settings.analysis_duckdb_path().name)
        env = {**os.environ, **dbt_env(os.environ.get("QUANTBIAS_LAKE", "lake"), database)}
        result = subprocess.run(
            [dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed for {DBT_PROJECT_DIR}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return manifest


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
