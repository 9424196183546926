"""K8sWorkerLauncher through the real PipesK8sClient.run, up to the Kubernetes API boundary.

Only the Kubernetes API calls (CoreV1Api methods) and kubeconfig loading are replaced: a fake
API server records the pod it is asked to create and serves its log. The log is what a worker
in that pod would print: the test runs real dagster-pipes message writing against the pod's own
environment (the context Dagster injected) into a buffer, so the materialization and its
metadata reach Dagster through PipesK8sPodLogsMessageReader exactly as from a real pod.
"""

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import kubernetes
import pytest
from dagster_pipes import (
    PipesContext,
    PipesDefaultContextLoader,
    PipesDefaultMessageWriter,
    PipesMappingParamsLoader,
)
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodList,
    V1PodStatus,
)

from quantbias_assets.partitions import model_method_partitions, partition_key
from resources.k8s import K8sWorkerLauncher, default_worker_pods

REGISTRY = "registry.example.com/quantbias"
TAG = "1.2.3"


def fake_worker(pipes: PipesContext) -> None:
    """What the respond worker does on the Pipes side: read extras, log, report a materialization."""
    print("loading model (plain worker output, forwarded to stdout)")
    pipes.log.info(f"answering {pipes.extras['datasets']}")
    pipes.report_asset_materialization(
        metadata={
            "rows": pipes.extras["rows"],
            "partition_seen_by_worker": pipes.partition_key,
        },
        data_version="v1",
    )


class _LogResponse:
    """What `read_namespaced_pod_log(..., _preload_content=False)` returns: an iterable body."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data.splitlines(keepends=True))


@dataclass
class FakeKubernetesApi:
    """The API server and kubelet for one pod: create, status, log, delete."""

    worker: Callable[[PipesContext], None]
    exit_code: int = 0
    created: list[tuple[str, V1Pod]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    kubeconfig_loads: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setattr(kubernetes.config, "load_kube_config", self.load_kube_config)
        core = kubernetes.client.CoreV1Api
        monkeypatch.setattr(core, "create_namespaced_pod", self.create_namespaced_pod)
        monkeypatch.setattr(core, "list_namespaced_pod", self.list_namespaced_pod)
        monkeypatch.setattr(core, "read_namespaced_pod_log", self.read_namespaced_pod_log)
        monkeypatch.setattr(core, "delete_namespaced_pod", self.delete_namespaced_pod)

    def load_kube_config(self, **kwargs: Any) -> None:
        self.kubeconfig_loads.append(kwargs)

    # Already bound to this fake, so set on CoreV1Api they take no api instance.
    def create_namespaced_pod(self, namespace: str, body: V1Pod, **_: Any) -> V1Pod:
        self.created.append((namespace, body))
        return body

    def list_namespaced_pod(self, namespace: str, **_: Any) -> V1PodList:
        _, pod = self.created[-1]
        name = pod.spec.containers[0].name
        if self.finished:
            state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=self.exit_code))
        else:
            state = V1ContainerState(running=V1ContainerStateRunning())
        status = V1ContainerStatus(
            name=name, image=pod.spec.containers[0].image, image_id="", ready=True,
            restart_count=0, state=state,
        )
        return V1PodList(
            items=[V1Pod(metadata=V1ObjectMeta(name=pod.metadata.name), status=V1PodStatus(container_statuses=[status]))]
        )

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: Any) -> _LogResponse:
        _, pod = self.created[-1]
        assert name == pod.metadata.name
        self.finished = True
        return _LogResponse(timestamped(self.run_worker(pod)))

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append((namespace, name))

    def run_worker(self, pod: V1Pod) -> str:
        """Run the worker's Pipes side against the pod's env; return what it wrote to stdout+stderr."""
        env = {var.name: var.value for var in pod.spec.containers[0].env if var.value is not None}
        output = io.StringIO()
        with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
            with PipesContext(
                params_loader=PipesMappingParamsLoader(env),
                context_loader=PipesDefaultContextLoader(),
                message_writer=PipesDefaultMessageWriter(),
            ) as pipes:
                self.worker(pipes)
        return output.getvalue()


def timestamped(text: str) -> bytes:
    """Lines as `kubectl logs --timestamps` serves them."""
    lines = [f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}000Z {line}" for i, line in enumerate(text.splitlines())]
    return ("\n".join(lines) + "\n").encode()


@dg.asset(partitions_def=model_method_partitions, required_resource_keys={"workers"})
def tiny_responses(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    extras = {"datasets": ["bbq"], "rows": 42}
    return context.resources.workers.run(context, "respond", extras).get_materialize_result()


def launcher() -> K8sWorkerLauncher:
    return K8sWorkerLauncher(
        namespace="quantbias-test",
        load_incluster_config=False,
        poll_interval_seconds=0.0,
        **default_worker_pods(REGISTRY, TAG, env={"QUANTBIAS_LAKE": "s3://bucket/lake"}),
    )


def materialize_partition(instance: dg.DagsterInstance, **kwargs: Any) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("model", ["tiny-llama"])
    return dg.materialize(
        [tiny_responses],
        resources={"workers": launcher()},
        partition_key=partition_key("tiny-llama", "gptq-w4a16"),
        instance=instance,
        **kwargs,
    )


def test_materialization_runs_the_worker_pod_and_reads_its_pipes_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeKubernetesApi(worker=fake_worker)
    api.install(monkeypatch)

    instance = dg.DagsterInstance.ephemeral()
    result = materialize_partition(instance)

    assert result.success
    worker_logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "answering ['bbq']" in worker_logs
    [event] = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.asset_key == dg.AssetKey("tiny_responses")
    assert materialization.partition == "gptq-w4a16|tiny-llama"
    assert materialization.metadata["rows"].value == 42
    assert materialization.metadata["partition_seen_by_worker"].value == "gptq-w4a16|tiny-llama"
    assert materialization.tags["dagster/data_version"] == "v1"

    assert api.kubeconfig_loads == [{"config_file": None, "context": None}]
    [(namespace, pod)] = api.created
    assert namespace == "quantbias-test"
    assert api.deleted == [("quantbias-test", pod.metadata.name)]
    assert pod.metadata.name.startswith(f"dagster-{result.run_id[:18]}-tiny-responses-")
    assert pod.metadata.annotations == {
        "quantbias/run-id": result.run_id,
        "quantbias/partition-key": "gptq-w4a16|tiny-llama",
    }
    assert pod.metadata.labels["app.kubernetes.io/component"] == "respond"

    [container] = pod.spec.containers
    assert container.image == "registry.example.com/quantbias/quantbias-vllm-worker:1.2.3"
    assert container.command == ["python", "-m", "quantbias_assets.workers.respond"]
    assert container.resources.limits == {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"}
    assert container.resources.requests == {"cpu": "4", "memory": "32Gi"}

    plain = {var.name: var.value for var in container.env if var.value_from is None}
    assert set(plain) == {"QUANTBIAS_LAKE", "HF_HOME", "DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert plain["HF_HOME"] == "/models-cache"
    from_secrets = {
        var.name: (var.value_from.secret_key_ref.name, var.value_from.secret_key_ref.key)
        for var in container.env
        if var.value_from is not None
    }
    assert from_secrets == {
        "HF_TOKEN": ("quantbias-hub-token", "HF_TOKEN"),
        "AWS_ACCESS_KEY_ID": ("quantbias-object-store", "AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": ("quantbias-object-store", "AWS_SECRET_ACCESS_KEY"),
        "AZURE_STORAGE_ACCOUNT_KEY": ("quantbias-object-store", "AZURE_STORAGE_ACCOUNT_KEY"),
    }

    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.spec.node_selector == {"quantbias/pool": "gpu"}
    assert pod.spec.restart_policy == "Never"


def test_a_failing_worker_pod_fails_the_step_and_is_still_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeKubernetesApi(worker=fake_worker, exit_code=1)
    api.install(monkeypatch)

    result = materialize_partition(dg.DagsterInstance.ephemeral(), raise_on_error=False)

    assert not result.success
    assert result.get_asset_materialization_events() == []
    [(_, pod)] = api.created
    assert api.deleted == [("quantbias-test", pod.metadata.name)]
