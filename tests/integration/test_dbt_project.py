"""The dbt manifest, prepared by dagster-dbt on a copy of dbt_analysis/: when missing, when stale,
at every load under `dagster dev`, with `dbt` off PATH; and the `--vars` of a build."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from resources.dbt import DBT_PROJECT_DIR, analysis_project, dbt_vars, prepare_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """dbt_analysis/ without its target/, and a PATH that holds no dbt (an unactivated venv)."""
    copy = tmp_path / "dbt_analysis"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
    return copy


def read_manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_missing_manifest_is_parsed_with_the_warehouse_database_name(project_copy: Path) -> None:
    project = analysis_project(project_copy)
    assert not project.manifest_path.exists()
    working_directory = Path.cwd()

    assert prepare_manifest(project) == project_copy / "target" / "manifest.json"
    nodes = read_manifest(project.manifest_path)["nodes"]
    assert nodes["model.quantbias.table1_uncertainty_bins"]["relation_name"] == (
        '"warehouse"."main"."table1_uncertainty_bins"'
    )
    assert nodes["seed.quantbias.quantization_methods"]["relation_name"] == '"warehouse"."main"."quantization_methods"'
    # the parse touched no database and left PATH and the working directory as they were
    assert sorted(p.name for p in project_copy.rglob("*.duckdb")) == []
    assert os.environ["PATH"] == "/usr/bin:/bin"
    assert Path.cwd() == working_directory


def test_a_fresh_manifest_is_kept_and_a_stale_one_parsed_again(project_copy: Path) -> None:
    project = analysis_project(project_copy)
    prepare_manifest(project)
    parsed = project.manifest_path.stat().st_mtime_ns

    prepare_manifest(project)
    assert project.manifest_path.stat().st_mtime_ns == parsed  # nothing changed: no parse

    time.sleep(0.05)  # a model edited after the parse
    model = project_copy / "models" / "marts" / "uncertainty_flip_ratio.sql"
    model.write_text(model.read_text() + "\n-- edited\n")
    prepare_manifest(project)
    assert project.manifest_path.stat().st_mtime_ns > parsed


def test_dagster_dev_does_not_parse_an_unchanged_project_again(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process `dagster dev` starts loads the code (code server, each run): ~20 s each."""
    project = analysis_project(project_copy)
    prepare_manifest(project)
    parsed = project.manifest_path.stat().st_mtime_ns

    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")  # set by `dagster dev` for its processes
    time.sleep(0.05)
    prepare_manifest(project)
    assert project.manifest_path.stat().st_mtime_ns == parsed
    model = next((project_copy / "models").rglob("*.sql"))
    model.write_text(model.read_text() + "\n-- edited under dagster dev\n")
    prepare_manifest(project)
    assert project.manifest_path.stat().st_mtime_ns > parsed


def test_a_process_that_waits_for_another_parse_does_not_parse_again(project_copy: Path) -> None:
    """While one process prepares the manifest (holding the lock), another waits; the first
    finishes a fresh manifest, so the second returns it without parsing."""
    project = analysis_project(project_copy)
    target = project_copy / "target"
    target.mkdir()
    with (target / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is parsing
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(prepare_manifest, project)
        time.sleep(1)
        assert not waiting.done()
        project.manifest_path.write_text('{"written by": "the other process"}')
    assert waiting.result(timeout=120) == project.manifest_path
    assert read_manifest(project.manifest_path) == {"written by": "the other process"}


def test_build_vars_name_the_lake_and_an_absolute_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert json.loads(dbt_vars("s3://bucket/lake", Path("home/warehouse.duckdb"))) == {
        "lake_root": "s3://bucket/lake",
        "warehouse_path": str(tmp_path / "home" / "warehouse.duckdb"),
    }
