"""The real `checkpoint` asset with K8sWorkerLauncher: the pod it creates runs the real quantize worker.

Only the Kubernetes API is replaced (tests/kubernetes_fake.py). The fake kubelet runs the created
pod's own command (`python -m quantbias_assets.workers.quantize`) with exactly the pod's
environment, secrets resolved from their secretKeyRefs; the pod's volumes are local folders
mounted at the paths the pod config names. What the worker prints is served as the pod log.
"""

import json
from pathlib import Path

import dagster as dg
import pytest
from kubernetes_fake import FakeKubernetesApi, command_locally

from quantbias_assets.assets.checkpoints import checkpoint
from quantbias_assets.catalog.models import add_model
from quantbias_assets.partitions import partition_key
from resources.k8s import K8sWorkerLauncher, SecretEnv, WorkerPodConfig
from resources.model_store import ModelStoreResource

pytestmark = pytest.mark.slow


def test_checkpoint_partition_through_a_worker_pod(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path / "home"))
    add_model(str(tiny_model_dir), nickname="tiny")
    store = tmp_path / "model-store"
    quantize_pod = WorkerPodConfig(
        image="registry.example.com/quantbias/quantbias-quantizer-worker:1.2.3",
        gpu=1,
        model_cache_claim="quantbias-model-cache",
        model_cache_path=str(tmp_path / "hf-cache"),
        model_store_claim="quantbias-model-store",
        model_store_path=str(store),
        secret_env=[SecretEnv(name="HF_TOKEN", secret_name="quantbias-hub-token", secret_key="HF_TOKEN")],
        env={"OMP_NUM_THREADS": "1"},
    )
    unused = WorkerPodConfig(image="registry.example.com/quantbias/quantbias-vllm-worker:1.2.3", gpu=1)
    api = FakeKubernetesApi(run_container=command_locally({"quantbias-hub-token": {"HF_TOKEN": "hf_test"}}))
    api.install(monkeypatch)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny"])

    result = dg.materialize(
        [checkpoint],
        resources={
            "workers": K8sWorkerLauncher(
                quantize=quantize_pod, respond=unused, judge=unused, namespace="quantbias", poll_interval_seconds=0.0
            ),
            "model_store": ModelStoreResource(root=str(store)),
        },
        partition_key=partition_key("tiny", "none"),
        instance=instance,
    )

    assert api.exit_code == 0, api.log
    assert result.success
    [(namespace, pod)] = api.created
    assert namespace == "quantbias"
    container = pod.spec.containers[0]
    assert container.command == ["python", "-m", "quantbias_assets.workers.quantize"]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert api.deleted == [("quantbias", pod.metadata.name)]

    # Written by the worker process in the "pod", onto the model-store volume.
    manifest = json.loads((store / "tiny" / "none" / "checkpoint.json").read_text())
    assert (manifest["model"], manifest["method"], manifest["source"]) == ("tiny", "none", "base")
    assert manifest["path"] == str(tiny_model_dir.absolute())
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert event.materialization.partition == "none|tiny"
    assert metadata["status"].value == "base"
    assert metadata["path"].value == manifest["path"]
    assert event.materialization.tags["dagster/data_version"] == manifest["digest"]
