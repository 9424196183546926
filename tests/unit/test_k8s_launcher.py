"""K8sWorkerLauncher through the real PipesK8sClient.run, up to the Kubernetes API boundary.

Only the Kubernetes API calls (CoreV1Api methods) and kubeconfig loading are replaced
(tests/kubernetes_fake.py): the fake API server records the pod it is asked to create and serves
its log. The log is what a worker in that pod would print: real dagster-pipes message writing,
run against the pod's own environment (the context Dagster injected), into a buffer, so the
materialization and its metadata reach Dagster through PipesK8sPodLogsMessageReader exactly as
from a real pod.
"""

from typing import Any

import dagster as dg
import pytest
from dagster_pipes import PipesContext
from kubernetes_fake import FakeKubernetesApi, pipes_in_process

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
    api = FakeKubernetesApi(run_container=pipes_in_process(fake_worker))
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
    api = FakeKubernetesApi(run_container=pipes_in_process(fake_worker, exit_code=1))
    api.install(monkeypatch)

    result = materialize_partition(dg.DagsterInstance.ephemeral(), raise_on_error=False)

    assert not result.success
    assert result.get_asset_materialization_events() == []
    [(_, pod)] = api.created
    assert api.deleted == [("quantbias-test", pod.metadata.name)]


@dg.asset(partitions_def=model_method_partitions, required_resource_keys={"workers"})
def leaky_responses(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    # what a LakeResource configured with an account key would hand the respond worker
    extras = {"datasets": ["bbq"], "storage_options": {"azure_storage_master_key": "c2VjcmV0"}}
    return context.resources.workers.run(context, "respond", extras).get_materialize_result()


def test_storage_option_credentials_never_reach_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeKubernetesApi(run_container=pipes_in_process(fake_worker))
    api.install(monkeypatch)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny-llama"])
    result = dg.materialize(
        [leaky_responses],
        resources={"workers": launcher()},
        instance=instance,
        partition_key=partition_key("tiny-llama", "gptq-w4a16"),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error = failure.step_failure_data.error.cause  # dagster wraps the asset's own error
    assert (error.cls_name, error.message.split(" in a Kubernetes")[0]) == (
        "ValueError",
        "ValueError: respond worker extras: storage_options.azure_storage_master_key: credentials belong",
    )
    assert "c2VjcmV0" not in error.message
    assert api.created == []
