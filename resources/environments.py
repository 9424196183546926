"""Environment-keyed resource sets: `local` (laptop, CI) and `cluster` (Kubernetes), chosen by QUANTBIAS_ENV.

Every environment provides the same resource keys, so assets never know where they run:
`lake`, `workers`, `inference`, `model_store`, `guard`, `dataset_files`, `warehouse` and `dbt`
(the same dbt CLI in both: it reads the lake through `lake.root` and builds into `warehouse.path`).
The dataset files and the warehouse are local files in both: $QUANTBIAS_DATA_DIR (else
$QUANTBIAS_HOME/datasets) and $QUANTBIAS_HOME/warehouse.duckdb, on the shared volume in a cluster.

`cluster` reads (set them on the code location and the run pods; k8s/helm/values.yaml does):
  QUANTBIAS_LAKE             lake root URI, e.g. s3://bucket/quantbias/lake
  QUANTBIAS_MODEL_STORE      checkpoint store: the mount path of the shared model-store volume
                             (default /model-store; an RWX filesystem or a bucket through a CSI
                             driver that supports rename); checkpoints are folders, not URIs
  QUANTBIAS_IMAGE_REGISTRY   registry holding the worker images, e.g. ghcr.io/acme
  QUANTBIAS_IMAGE_TAG        worker image tag (default: this package's version)
  QUANTBIAS_STORAGE_OPTIONS  optional JSON of non-secret deltalake storage options (region, endpoint)
  QUANTBIAS_WORKER_NAMESPACE namespace of the worker pods (default: quantbias)
Object-store credentials never go into storage options: the orchestrator and every worker pod
read them from Kubernetes secrets as environment variables, which deltalake picks up itself.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from typing import Any

from resources.dataset_files import DatasetFilesResource
from resources.dbt import dbt_resource
from resources.guard import GuardEngineConfig, GuardResource
from resources.inference import EngineConfig, InferenceResource
from resources.k8s import K8sWorkerLauncher, default_worker_pods, storage_options_problem
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.warehouse import WarehouseResource
from resources.workers import LocalWorkerLauncher

ENVIRONMENTS = ("local", "cluster")


def current_environment() -> str:
    return os.environ.get("QUANTBIAS_ENV", "local")


def resources_for(env: str | None = None) -> dict[str, Any]:
    """The resource set of `env` (default: $QUANTBIAS_ENV, else "local")."""
    env = env or current_environment()
    if env == "local":
        return _local_resources()
    if env == "cluster":
        return _cluster_resources()
    raise ValueError(f"QUANTBIAS_ENV: {env!r}: expected one of {', '.join(ENVIRONMENTS)}")


def _local_resources() -> dict[str, Any]:
    return {
        "lake": LakeResource(),
        "workers": LocalWorkerLauncher(),
        "inference": InferenceResource(),
        "model_store": ModelStoreResource(),
        "guard": GuardResource(),
        "dataset_files": DatasetFilesResource(),
        "warehouse": WarehouseResource(),
        "dbt": dbt_resource(),
    }


def _cluster_resources() -> dict[str, Any]:
    lake_root = _required_env("QUANTBIAS_LAKE")
    model_store_root = os.environ.get("QUANTBIAS_MODEL_STORE") or "/model-store"
    if "://" in model_store_root:
        raise ValueError(
            f"QUANTBIAS_MODEL_STORE: {model_store_root!r}: checkpoints are folders; give the mount "
            "path of the model-store volume (k8s/storage.yaml), not an object-store URI"
        )
    storage_options = storage_options_from_env(os.environ.get("QUANTBIAS_STORAGE_OPTIONS", ""))
    pod_env = {"QUANTBIAS_LAKE": lake_root, "QUANTBIAS_MODEL_STORE": model_store_root}
    pods = default_worker_pods(
        registry=_required_env("QUANTBIAS_IMAGE_REGISTRY"),
        tag=os.environ.get("QUANTBIAS_IMAGE_TAG") or version("quantbias"),
        env=pod_env,
        model_store_path=model_store_root,
    )
    return {
        "lake": LakeResource(root=lake_root, storage_options=storage_options),
        "workers": K8sWorkerLauncher(namespace=os.environ.get("QUANTBIAS_WORKER_NAMESPACE", "quantbias"), **pods),
        "inference": InferenceResource(engine=EngineConfig(backend="vllm", dtype="bfloat16")),
        "model_store": ModelStoreResource(root=model_store_root, storage_options=storage_options),
        "guard": GuardResource(engine=GuardEngineConfig(backend="vllm")),
        "dataset_files": DatasetFilesResource(),
        "warehouse": WarehouseResource(),
        "dbt": dbt_resource(),
    }


def storage_options_from_env(raw: str) -> dict[str, str]:
    """Parse QUANTBIAS_STORAGE_OPTIONS (a JSON object of strings); credentials are refused."""
    if not raw.strip():
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"QUANTBIAS_STORAGE_OPTIONS: not JSON: {error}") from error
    if not isinstance(options, dict):
        raise ValueError("QUANTBIAS_STORAGE_OPTIONS: expected a JSON object of strings")
    for key, value in options.items():
        if not isinstance(value, str):
            raise ValueError(f"QUANTBIAS_STORAGE_OPTIONS: {key}: expected a string, got {value!r}")
    # Storage options travel to workers in the Pipes context, i.e. in clear text.
    problem = storage_options_problem(options)
    if problem:
        raise ValueError(f"QUANTBIAS_STORAGE_OPTIONS: {problem}")
    return options


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{name}: required when QUANTBIAS_ENV=cluster (see k8s/README.md)")
    return value
