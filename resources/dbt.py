"""The dbt project (dbt_analysis/), its manifest, and the dbt CLI resource that builds it over the lake.

dbt takes its settings as `--vars` (`dbt_vars`): `lake_root`, which sources.yml reads the Delta
tables under, and `warehouse_path`, the DuckDB file profiles.yml builds into.

The manifest (dbt_analysis/target/manifest.json) is what dagster-dbt builds the asset graph from.
`prepare_manifest` runs dagster-dbt's own preparation (`dbt parse`, DbtProject's preparer) when the
manifest is missing or older than a file of the project, under `dagster dev` as everywhere else.
Not `DbtProject.prepare_if_dev()`: under `dagster dev` it parses in every process that loads the
code, the code server and each run's process, ~20 s each on 2 cores for an unchanged project.
The orchestrator image prepares it at build time:
`dagster-dbt project prepare-and-package --file resources/dbt.py`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_analysis"
# Parsing opens no database, but dbt-duckdb names the database after the file's stem, and the
# marts' table names in the manifest (`warehouse.main.<model>`) come from the parse.
PARSE_VARS = {"lake_root": "lake", "warehouse_path": "warehouse.duckdb"}


def analysis_project(project_dir: Path = DBT_PROJECT_DIR) -> DbtProject:
    """The dbt project in `project_dir` (profiles.yml inside it), parsed with PARSE_VARS."""
    return DbtProject(
        project_dir=project_dir,
        profiles_dir=project_dir,
        prepare_project_cli_args=["parse", "--quiet", "--vars", json.dumps(PARSE_VARS)],
    )


dbt_project = analysis_project()


def dbt_executable() -> str:
    """The `dbt` next to this interpreter, so the venv's dbt is used even when not on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_vars(lake_root: str, warehouse_path: Path) -> str:
    """The `--vars` of a dbt invocation. dbt runs in the project folder: the warehouse path is absolute."""
    return json.dumps({"lake_root": lake_root, "warehouse_path": str(warehouse_path.absolute())})


@contextmanager
def restored_working_directory() -> Iterator[None]:
    """dbt's in-process adapter (row counts, column types) chdirs into the project, which would
    re-anchor every relative path of the rest of the process (e.g. QUANTBIAS_DATA_DIR=../shared/datasets)."""
    working_directory = os.getcwd()
    try:
        yield
    finally:
        os.chdir(working_directory)


@contextmanager
def dbt_on_path() -> Iterator[None]:
    """dagster-dbt's preparer runs `dbt` from PATH; a venv used without activating it
    (`.venv/bin/dagster dev`, `.venv/bin/quantbias demo`) has it only next to this interpreter."""
    saved = os.environ.get("PATH")
    executable = Path(dbt_executable())
    if executable.is_absolute():
        os.environ["PATH"] = os.pathsep.join(filter(None, [str(executable.parent), saved]))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def manifest_is_stale(project: DbtProject) -> bool:
    """No manifest, or one older than a model, seed, macro, test or config file of the project, or
    than this module (which holds the parse settings)."""
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    target = project.project_dir / project.target_path
    sources = [
        path
        for path in project.project_dir.rglob("*")
        if path.suffix in {".sql", ".yml", ".csv"} and not path.is_relative_to(target)
    ]
    built = manifest.stat().st_mtime
    return any(path.stat().st_mtime > built for path in [*sources, Path(__file__)])


def prepare_manifest(project: DbtProject = dbt_project) -> Path:
    """The project's manifest, prepared by dagster-dbt when it is missing or stale; returns its path.

    Processes that load the code at once (a code server and its runs, parallel test workers)
    parse one at a time: the others wait on a lock, then find the manifest fresh."""
    if not manifest_is_stale(project):
        return project.manifest_path
    target = project.project_dir / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if manifest_is_stale(project):
            # the preparer initializes dbt's adapter in this process (it chdirs into the project)
            with dbt_on_path(), restored_working_directory():
                project.preparer.prepare(project)
    return project.manifest_path


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
