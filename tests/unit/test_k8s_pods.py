"""Worker pods built with dagster-k8s's own `build_pod_body`, validated offline against the Kubernetes schema."""

import json
from typing import Any

import kubernetes_validate
import pytest
from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient
from kubernetes_validate.utils import latest_version, major_minor

from resources.k8s import (
    K8sWorkerLauncher,
    SecretEnv,
    Toleration,
    WorkerPodConfig,
    default_worker_pods,
    extras_problem,
    looks_like_credential,
    plain_env_problem,
    worker_pod,
)

KUBERNETES_VERSIONS = ("1.32", major_minor(latest_version()))
CREDENTIAL_ENV = {"HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_ACCOUNT_KEY"}


def cpu_judge() -> WorkerPodConfig:
    """A CPU-only worker kind: what a small guard model on a CPU pool looks like."""
    return WorkerPodConfig(image="registry.example.com/quantbias/quantbias-vllm-worker:1.2.3", gpu=0)


def launcher() -> K8sWorkerLauncher:
    pods = default_worker_pods("registry.example.com/quantbias", "1.2.3", env={"QUANTBIAS_LAKE": "s3://b/lake"})
    return K8sWorkerLauncher(quantize=pods["quantize"], respond=pods["respond"], judge=cpu_judge())


def pod_manifest(worker: str) -> dict[str, Any]:
    """The exact pod PipesK8sClient.run would create, serialized as the API server receives it."""
    pod = worker_pod(launcher().pod_config(worker), worker, annotations={"quantbias/partition-key": "none|m"})
    body = build_pod_body(
        pod_name=f"dagster-0123456789abcdef01-{worker}-0000000000",
        image=pod.image,
        command=pod.command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "eJzLSM3JyQcABiwCFQ==", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=pod.base_pod_meta,
        base_pod_spec=pod.base_pod_spec,
    )
    return {"apiVersion": "v1", "kind": "Pod", **ApiClient().sanitize_for_serialization(body)}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("worker", ["quantize", "respond", "judge"])
def test_worker_pod_validates_strictly(worker: str, version: str) -> None:
    assert kubernetes_validate.validate(pod_manifest(worker), version, strict=True) == version


def test_strict_validation_rejects_a_misspelled_field() -> None:
    manifest = pod_manifest("respond")
    container = manifest["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate(manifest, "1.32", strict=True)


@pytest.mark.parametrize(("worker", "gpus"), [("quantize", "1"), ("respond", "1"), ("judge", None)])
def test_gpu_limits_only_on_gpu_workers(worker: str, gpus: str | None) -> None:
    spec = pod_manifest(worker)["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"].get("nvidia.com/gpu") == gpus
    assert "nvidia.com/gpu" not in resources["requests"]
    if gpus:
        assert spec["nodeSelector"] == {"quantbias/pool": "gpu"}
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert "nodeSelector" not in spec and "tolerations" not in spec


@pytest.mark.parametrize(
    ("worker", "requests", "limits"),
    [
        ("quantize", {"cpu": "8", "memory": "64Gi"}, {"cpu": "16", "memory": "96Gi"}),
        ("respond", {"cpu": "4", "memory": "32Gi"}, {"cpu": "8", "memory": "48Gi"}),
        ("judge", {"cpu": "2", "memory": "8Gi"}, {"cpu": "4", "memory": "16Gi"}),
    ],
)
def test_cpu_and_memory_requests_and_limits_are_set(worker: str, requests: dict, limits: dict) -> None:
    resources = pod_manifest(worker)["spec"]["containers"][0]["resources"]
    assert resources["requests"] == requests
    assert {k: v for k, v in resources["limits"].items() if k != "nvidia.com/gpu"} == limits


@pytest.mark.parametrize("worker", ["quantize", "respond"])
def test_credentials_only_through_secret_key_refs(worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A token in the orchestrator's own environment must not leak into the pod.
    monkeypatch.setenv("HF_TOKEN", "hf_orchestrator_sentinel")
    manifest = pod_manifest(worker)
    assert "hf_orchestrator_sentinel" not in json.dumps(manifest)
    env = {var["name"]: var for var in manifest["spec"]["containers"][0]["env"]}
    for name in CREDENTIAL_ENV:
        assert "value" not in env[name]
        assert set(env[name]["valueFrom"]) == {"secretKeyRef"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "quantbias-hub-token",
        "key": "HF_TOKEN",
        "optional": False,
    }
    assert env["HF_HOME"] == {"name": "HF_HOME", "value": "/models-cache"}


def test_judge_without_secrets_or_cache_has_no_volumes() -> None:
    spec = pod_manifest("judge")["spec"]
    assert spec["volumes"] == []
    assert [var["name"] for var in spec["containers"][0]["env"]] == ["DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"]


@pytest.mark.parametrize("worker", ["quantize", "respond", "judge"])
def test_pods_run_as_non_root_without_privileges(worker: str) -> None:
    spec = pod_manifest(worker)["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container_security = spec["containers"][0]["securityContext"]
    assert container_security["runAsNonRoot"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["privileged"] is False
    assert container_security["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False


def test_model_cache_model_store_and_shared_memory_on_gpu_workers() -> None:
    spec = pod_manifest("respond")["spec"]
    assert spec["volumes"] == [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": "quantbias-model-cache"}},
        {"name": "model-store", "persistentVolumeClaim": {"claimName": "quantbias-model-store"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "model-cache", "mountPath": "/models-cache"},
        {"name": "model-store", "mountPath": "/model-store"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert spec["serviceAccountName"] == "quantbias-worker"


def test_worker_images_and_commands() -> None:
    expected = {
        "quantize": "registry.example.com/quantbias/quantbias-quantizer-worker:1.2.3",
        "respond": "registry.example.com/quantbias/quantbias-vllm-worker:1.2.3",
        "judge": "registry.example.com/quantbias/quantbias-vllm-worker:1.2.3",
    }
    for worker, image in expected.items():
        container = pod_manifest(worker)["spec"]["containers"][0]
        assert container["image"] == image
        assert container["command"] == ["python", "-m", f"quantbias_assets.workers.{worker}"]
        assert container["name"] == f"{worker}-worker"


def test_runtime_class_and_deadline_from_config() -> None:
    config = WorkerPodConfig(image="img:1", gpu=2, runtime_class="nvidia", active_deadline_seconds=7200)
    spec = worker_pod(config, "respond").base_pod_spec
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"env": {"HF_TOKEN": "hf_abc"}}, "env: HF_TOKEN: looks like a credential"),
        ({"env": {"aws_secret_access_key": "x"}}, "env: aws_secret_access_key: looks like a credential"),
        ({"run_as_user": 0}, "run_as_user: 0: workers run as non-root"),
        ({"gpu": -1}, "gpu: -1: expected 0 or more"),
        ({"image_pull_policy": "always"}, "image_pull_policy: 'always': expected one of Always, IfNotPresent, Never"),
        (
            {"tolerations": [Toleration(key="a", operator="In")]},
            r"tolerations\[0\]: operator: 'In': expected Equal or Exists",
        ),
        (
            {"tolerations": [Toleration(key="a"), Toleration(key="b", effect="NoRun")]},
            r"tolerations\[1\]: effect: 'NoRun'",
        ),
    ],
)
def test_bad_pod_config_is_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^respond worker pod: {message}"):
        worker_pod(WorkerPodConfig(image="img:1", **fields), "respond")


CREDENTIAL_NAMES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "OPENAI_API_KEY",
    "PGPASS",
    "PGPASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "azure_storage_master_key",
    "master_key",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GITHUB_PAT",
    "QUANTBIAS_API_KEY",
    "VLLM_API_KEY",
    "HF_HUB_TOKEN",
)


@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_credential_names_never_reach_a_pod_as_plain_env(name: str) -> None:
    """Before the allow-list, WANDB_API_KEY, OPENAI_API_KEY and PGPASS passed as plain values."""
    with pytest.raises(
        ValueError, match=rf"^respond worker pod: env: {name}: looks like a credential; pass it through secret_env"
    ):
        worker_pod(WorkerPodConfig(image="img:1", env={name: "sentinel-secret"}), "respond")
    # naming it as a non-secret does not help
    with pytest.raises(ValueError, match=rf"^respond worker pod: plain_env_names: {name}: looks like a credential"):
        worker_pod(WorkerPodConfig(image="img:1", plain_env_names=[name], env={name: "x"}), "respond")


def test_plain_env_outside_the_allow_list_is_refused_unless_named() -> None:
    with pytest.raises(
        ValueError, match=r"^respond worker pod: env: MY_FEATURE_FLAG: not in the allow-list of plain env names"
    ):
        worker_pod(WorkerPodConfig(image="img:1", env={"MY_FEATURE_FLAG": "on"}), "respond")
    spec = worker_pod(
        WorkerPodConfig(image="img:1", plain_env_names=["MY_FEATURE_FLAG"], env={"MY_FEATURE_FLAG": "on"}), "respond"
    ).base_pod_spec
    assert spec["containers"][0]["env"] == [{"name": "MY_FEATURE_FLAG", "value": "on"}]


def test_allowed_plain_env_and_secrets_in_the_built_pod() -> None:
    plain = {
        "QUANTBIAS_LAKE": "s3://b/lake",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "AWS_REGION": "eu-west-1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": "4",
    }
    secrets = [
        SecretEnv(name="WANDB_API_KEY", secret_name="tracking", secret_key="api-key"),
        SecretEnv(name="PGPASS", secret_name="db", secret_key="password"),
    ]
    pod = worker_pod(WorkerPodConfig(image="img:1", env=plain, secret_env=secrets), "respond")
    body = build_pod_body(
        pod_name="dagster-0123456789abcdef01-respond-0000000000",
        image=pod.image,
        command=pod.command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=pod.base_pod_meta,
        base_pod_spec=pod.base_pod_spec,
    )
    env = ApiClient().sanitize_for_serialization(body)["spec"]["containers"][0]["env"]
    assert {var["name"]: var["value"] for var in env if "value" in var} == {
        **plain,
        "DAGSTER_PIPES_CONTEXT": "e30=",
        "DAGSTER_PIPES_MESSAGES": "e30=",
    }
    assert {var["name"]: var["valueFrom"]["secretKeyRef"] for var in env if "valueFrom" in var} == {
        "WANDB_API_KEY": {"name": "tracking", "key": "api-key", "optional": False},
        "PGPASS": {"name": "db", "key": "password", "optional": False},
    }


@pytest.mark.parametrize("worker", ["quantize", "respond", "judge"])
def test_every_plain_env_of_the_default_pods_is_allowed_and_no_credential_is_plain(worker: str) -> None:
    env = pod_manifest(worker)["spec"]["containers"][0]["env"]
    plain = [var["name"] for var in env if "value" in var]
    assert all(plain_env_problem(name) is None for name in plain if not name.startswith("DAGSTER_PIPES_"))
    assert not any(looks_like_credential(name) for name in plain)


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("TOKENIZERS_PARALLELISM", False),
        ("HF_HOME", False),
        ("max_new_tokens", False),
        ("aws_skip_signature", False),
        ("AWS_REGION", False),
        ("endpoint", False),
        ("HF_TOKEN", True),
        ("sas_token", True),
        ("account_key", True),
        ("access_key", True),
        ("secret_key", True),
        ("google_service_account_key", True),
        ("bearer_token", True),
    ],
)
def test_credential_names_by_their_words(name: str, credential: bool) -> None:
    assert looks_like_credential(name) is credential


def test_storage_options_in_worker_extras_must_hold_no_credential() -> None:
    assert extras_problem({"storage_options": {"AWS_REGION": "eu-west-1"}, "datasets": ["BBQ"]}) is None
    assert extras_problem({"target": {"storage_options": {"azure_storage_master_key": "k=="}}}) == (
        "target.storage_options.azure_storage_master_key: credentials belong in a Kubernetes secret "
        "exposed to the pods as an environment variable (deltalake reads it there), not in storage options"
    )
    assert extras_problem({"storage_options": {"master_key": "k=="}}).startswith("storage_options.master_key: ")


def test_unknown_worker_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown worker 'train'"):
        launcher().pod_config("train")
