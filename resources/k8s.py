"""Kubernetes worker launcher: runs the quantize / respond / judge workers as pods under Dagster Pipes.

Same interface as `LocalWorkerLauncher`: `run(context, worker, extras)` returns the completed
Pipes invocation. The pod for each worker kind comes from resource config (`WorkerPodConfig`);
`worker_pod(...)` turns that config into the `image`, `command`, `base_pod_meta` and
`base_pod_spec` that `dagster_k8s.PipesK8sClient.run` takes, as plain data so tests can build
the exact pod with dagster-k8s's own `build_pod_body` and validate it offline.

Secrets only ever reach a pod as `secretKeyRef`s. Plain env is an allow-list (the project's own
`QUANTBIAS_*` settings and named non-secret runtime knobs, plus `plain_env_names` from config),
and a name that looks like a credential is refused even there; storage options that travel in
the Pipes context are checked the same way. A token never sits in clear text in a pod spec,
which anyone who may read pods sees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from resources.workers import WORKER_KINDS, worker_command

GPU_RESOURCE = "nvidia.com/gpu"

# Plain env a worker may get without a secret: prefixes of non-secret settings of the project and
# of the libraries in the worker images, and single names (regions, endpoints, locale).
PLAIN_ENV_PREFIXES = (
    "QUANTBIAS_",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "VLLM_",
    "TORCH_",
    "PYTORCH_",
    "CUDA_",
    "NCCL_",
    "OMP_",
    "MKL_",
)
PLAIN_ENV_NAMES = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "GOOGLE_CLOUD_PROJECT",
        "TZ",
        "LANG",
        "LC_ALL",
        "PYTHONUNBUFFERED",
        "PYTHONHASHSEED",
    }
)
# A name "looks like a credential" by its words (split at `_`, `-`, `.`): a word ending in one of
# these (HF_TOKEN, WANDB_API_KEY, PGPASS, master_key), containing one of the next ones
# (AZURE_CLIENT_SECRET, PGPASSWORD, GOOGLE_APPLICATION_CREDENTIALS), or being one of the last.
_CREDENTIAL_WORD_ENDINGS = ("TOKEN", "KEY", "PASS", "PASSWD", "PWD", "SECRET")
_CREDENTIAL_WORD_PARTS = ("SECRET", "PASSWORD", "CREDENTIAL", "PRIVATE", "COOKIE", "APIKEY")
_CREDENTIAL_WORDS = frozenset({"SAS", "PAT", "AUTH", "JWT", "SIG"})
# Connection strings carry an account key inside (Azure's AccountKey=...).
_CREDENTIAL_PHRASES = ("CONNECTION_STRING", "CONN_STR")


def looks_like_credential(name: str) -> bool:
    upper = name.upper()
    words = [word for word in re.split(r"[^A-Z0-9]+", upper) if word]
    return (
        any(word.endswith(_CREDENTIAL_WORD_ENDINGS) for word in words)
        or any(part in word for word in words for part in _CREDENTIAL_WORD_PARTS)
        or any(word in _CREDENTIAL_WORDS for word in words)
        or any(phrase in upper for phrase in _CREDENTIAL_PHRASES)
    )


def plain_env_problem(name: str, extra_names: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Why `name` may not be plain env in a pod (None when it may)."""
    if looks_like_credential(name):
        return "looks like a credential; pass it through secret_env (a Kubernetes secretKeyRef), not as a plain value"
    if name in PLAIN_ENV_NAMES or name in extra_names or name.startswith(PLAIN_ENV_PREFIXES):
        return None
    return (
        "not in the allow-list of plain env names (QUANTBIAS_* and non-secret settings); pass it "
        "through secret_env, or name it in plain_env_names when it is not a secret"
    )


def storage_options_problem(options: Mapping[str, Any]) -> str | None:
    """`<key>: <problem>` for the first storage option that carries a credential in clear text."""
    for key, value in options.items():
        if looks_like_credential(str(key)) and value not in (None, ""):
            return (
                f"{key}: credentials belong in a Kubernetes secret exposed to the pods as an "
                "environment variable (deltalake reads it there), not in storage options"
            )
    return None


class SecretEnv(dg.Config):
    """One environment variable read from a key of a Kubernetes Secret."""

    name: str
    secret_name: str
    secret_key: str
    # optional: the pod still starts when the key is absent (e.g. workload identity instead of keys).
    optional: bool = False


class Toleration(dg.Config):
    key: str
    operator: str = "Exists"  # Equal | Exists
    value: str | None = None
    effect: str | None = None  # NoSchedule | PreferNoSchedule | NoExecute


class WorkerPodConfig(dg.Config):
    """Everything that differs between worker kinds' pods."""

    image: str
    image_pull_policy: str = "IfNotPresent"  # Always | IfNotPresent | Never
    gpu: int = 0
    cpu_request: str = "2"
    cpu_limit: str = "4"
    memory_request: str = "8Gi"
    memory_limit: str = "16Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    runtime_class: str | None = None
    service_account: str | None = None
    # A PersistentVolumeClaim shared by workers so hub downloads happen once; HF_HOME points at it.
    model_cache_claim: str | None = None
    model_cache_path: str = "/models-cache"
    # The checkpoint store when it is a shared filesystem (RWX claim, or a bucket through a CSI
    # driver), mounted at the same path as on the run pods so ModelStoreResource.root agrees.
    model_store_claim: str | None = None
    model_store_path: str = "/model-store"
    # vLLM and torch need a larger /dev/shm than the container runtime's 64 MiB default.
    shm_size: str | None = None
    secret_env: list[SecretEnv] = []
    env: dict[str, str] = {}
    # Further plain env names that are not secrets (still refused when they look like one).
    plain_env_names: list[str] = []
    run_as_user: int = 1000
    run_as_group: int = 1000
    active_deadline_seconds: int | None = None
    labels: dict[str, str] = {}


@dataclass(frozen=True)
class WorkerPod:
    """The arguments `PipesK8sClient.run` (and `build_pod_body`) take for one worker pod."""

    image: str
    command: list[str]
    base_pod_meta: dict[str, Any]
    base_pod_spec: dict[str, Any]


def worker_pod(
    config: WorkerPodConfig,
    worker: str,
    python: str = "python",
    annotations: Mapping[str, str] | None = None,
) -> WorkerPod:
    """Pure: the pod for one worker kind from its config. Raises ValueError on unsafe config."""
    command = worker_command(python, worker)
    problem = _config_problem(config)
    if problem:
        raise ValueError(f"{worker} worker pod: {problem}")
    return WorkerPod(
        image=config.image,
        command=command,
        base_pod_meta={
            "labels": {
                "app.kubernetes.io/name": "quantbias-worker",
                "app.kubernetes.io/component": worker,
                **config.labels,
            },
            "annotations": dict(annotations or {}),
        },
        base_pod_spec=_pod_spec(config, worker),
    )


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _config_problem(config: WorkerPodConfig) -> str | None:
    """`<field>: <problem>` for the first setting Kubernetes would reject or that would leak a secret."""
    for name in config.plain_env_names:
        if looks_like_credential(name):
            return f"plain_env_names: {name}: looks like a credential; pass it through secret_env"
    for name in config.env:
        problem = plain_env_problem(name, set(config.plain_env_names))
        if problem:
            return f"env: {name}: {problem}"
    if config.image_pull_policy not in _PULL_POLICIES:
        return f"image_pull_policy: {config.image_pull_policy!r}: expected one of {', '.join(_PULL_POLICIES)}"
    if config.gpu < 0:
        return f"gpu: {config.gpu}: expected 0 or more"
    if config.run_as_user <= 0:
        return f"run_as_user: {config.run_as_user}: workers run as non-root, expected a uid above 0"
    for index, toleration in enumerate(config.tolerations):
        if toleration.operator not in _TOLERATION_OPERATORS:
            return f"tolerations[{index}]: operator: {toleration.operator!r}: expected Equal or Exists"
        if toleration.effect is not None and toleration.effect not in _TAINT_EFFECTS:
            return f"tolerations[{index}]: effect: {toleration.effect!r}: expected one of {', '.join(_TAINT_EFFECTS)}"
    return None


def _pod_spec(config: WorkerPodConfig, worker: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in config.env.items()]
    if config.model_cache_claim:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": config.model_cache_claim}})
        mounts.append({"name": "model-cache", "mountPath": config.model_cache_path})
        env.append({"name": "HF_HOME", "value": config.model_cache_path})
    if config.model_store_claim:
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": config.model_store_claim}})
        mounts.append({"name": "model-store", "mountPath": config.model_store_path})
    if config.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    env.extend(
        {
            "name": secret.name,
            "valueFrom": {
                "secretKeyRef": {
                    "name": secret.secret_name,
                    "key": secret.secret_key,
                    "optional": secret.optional,
                }
            },
        }
        for secret in config.secret_env
    )

    limits = {"cpu": config.cpu_limit, "memory": config.memory_limit}
    if config.gpu > 0:
        limits[GPU_RESOURCE] = str(config.gpu)
    container: dict[str, Any] = {
        "name": f"{worker}-worker",
        "imagePullPolicy": config.image_pull_policy,
        "env": env,
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": limits,
        },
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Never",
        # Workers never call the Kubernetes API; do not hand them a token.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            # Makes the model-cache volume writable by the non-root user.
            "fsGroup": config.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": volumes,
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [
            {k: v for k, v in toleration.model_dump().items() if v is not None} for toleration in config.tolerations
        ]
    if config.runtime_class:
        spec["runtimeClassName"] = config.runtime_class
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    if config.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    return spec


class K8sWorkerLauncher(dg.ConfigurableResource):
    """Runs workers as pods through `dagster_k8s.PipesK8sClient` (production on Kubernetes).

    Context goes in through env vars; the worker's Pipes messages come back through the pod log.
    """

    quantize: WorkerPodConfig
    respond: WorkerPodConfig
    judge: WorkerPodConfig
    namespace: str = "quantbias"
    python_executable: str = "python"
    # None: in-cluster config when KUBERNETES_SERVICE_HOST is set, else the default kubeconfig.
    load_incluster_config: bool | None = None
    kubeconfig_file: str | None = None
    poll_interval_seconds: float = 10.0
    pod_wait_timeout_seconds: float = 24 * 3600.0
    delete_pod_on_completion: bool = True

    def pod_config(self, worker: str) -> WorkerPodConfig:
        if worker not in WORKER_KINDS:
            raise ValueError(f"unknown worker {worker!r}; expected one of {', '.join(WORKER_KINDS)}")
        return getattr(self, worker)

    def run(
        self,
        context: dg.AssetExecutionContext,
        worker: str,
        extras: Mapping[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        problem = extras_problem(extras)
        if problem:
            raise ValueError(f"{worker} worker extras: {problem}")
        annotations = {"quantbias/run-id": context.run.run_id}
        if context.has_partition_key:
            # Multi-partition keys contain "|", which label values forbid; annotations allow it.
            annotations["quantbias/partition-key"] = str(context.partition_key)
        pod = worker_pod(self.pod_config(worker), worker, self.python_executable, annotations)
        client = PipesK8sClient(
            load_incluster_config=self.load_incluster_config,
            kubeconfig_file=self.kubeconfig_file,
            poll_interval=self.poll_interval_seconds,
        )
        return client.run(
            context=context,
            extras=dict(extras),
            image=pod.image,
            command=pod.command,
            namespace=self.namespace,
            base_pod_meta=pod.base_pod_meta,
            base_pod_spec=pod.base_pod_spec,
            pod_wait_timeout=self.pod_wait_timeout_seconds,
            delete_pod_on_completion=self.delete_pod_on_completion,
        )


def extras_problem(extras: Mapping[str, Any]) -> str | None:
    """Extras reach the pod inside DAGSTER_PIPES_CONTEXT, a plain env var of its spec: any
    `storage_options` among them (the lake's, the model store's) must hold no credential."""
    pending: list[tuple[str, Any]] = [("", extras)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, Mapping):
            for key, inner in value.items():
                where = f"{path}{key}"
                if key == "storage_options" and isinstance(inner, Mapping):
                    problem = storage_options_problem(inner)
                    if problem:
                        return f"{where}.{problem}"
                pending.append((f"{where}.", inner))
    return None


def default_worker_pods(
    registry: str,
    tag: str,
    *,
    env: Mapping[str, str] | None = None,
    model_cache_claim: str | None = "quantbias-model-cache",
    model_store_claim: str | None = "quantbias-model-store",
    model_store_path: str = "/model-store",
    hub_token_secret: str = "quantbias-hub-token",
    object_store_secret: str = "quantbias-object-store",
) -> dict[str, WorkerPodConfig]:
    """The production pod per worker kind: one GPU each on the tainted GPU pool (k8s/gpu-nodepool.yaml).

    quantize runs the llmcompressor image; respond and judge (Llama Guard) run the vLLM image.
    """
    secrets = [
        SecretEnv(name="HF_TOKEN", secret_name=hub_token_secret, secret_key="HF_TOKEN"),
        *(
            SecretEnv(name=key, secret_name=object_store_secret, secret_key=key, optional=True)
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_ACCOUNT_KEY")
        ),
    ]
    gpu_pool = {
        "node_selector": {"quantbias/pool": "gpu"},
        "tolerations": [Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
        "service_account": "quantbias-worker",
        "model_cache_claim": model_cache_claim,
        "model_store_claim": model_store_claim,
        "model_store_path": model_store_path,
        "secret_env": secrets,
        "env": dict(env or {}),
        "gpu": 1,
        "shm_size": "16Gi",
    }
    # respond and judge run the same vLLM image with the same sizing.
    vllm_worker = WorkerPodConfig(
        image=f"{registry}/quantbias-vllm-worker:{tag}",
        cpu_request="4",
        cpu_limit="8",
        memory_request="32Gi",
        memory_limit="48Gi",
        **gpu_pool,
    )
    return {
        "quantize": WorkerPodConfig(
            image=f"{registry}/quantbias-quantizer-worker:{tag}",
            cpu_request="8",
            cpu_limit="16",
            memory_request="64Gi",
            memory_limit="96Gi",
            **gpu_pool,
        ),
        "respond": vllm_worker,
        "judge": vllm_worker,
    }
