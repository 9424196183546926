"""Environment-keyed resource sets: `local` (laptop, CI) and `cluster` (Kubernetes), chosen by QUANTBIAS_ENV.

Every environment provides the same resource keys, so assets never know where they run:
`lake`, `workers`, and, once their modules exist, `inference`, `model_store` and `guard`.

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

import importlib
import json
import os
from importlib.metadata import version
from typing import Any

import dagster as dg

from resources.k8s import CREDENTIAL_NAME, K8sWorkerLauncher, default_worker_pods
from resources.lake import LakeResource
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
    resources: dict[str, Any] = {"lake": LakeResource(), "workers": LocalWorkerLauncher()}
    for key, resource_class in _later_resources().items():
        resources[key] = resource_class()
    return resources


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
    resources: dict[str, Any] = {
        "lake": LakeResource(root=lake_root, storage_options=storage_options),
        "workers": K8sWorkerLauncher(
            namespace=os.environ.get("QUANTBIAS_WORKER_NAMESPACE", "quantbias"), **pods
        ),
    }
    later = _later_resources()
    if "inference" in later:
        resources["inference"] = later["inference"](backend="vllm", dtype="bfloat16")
    if "model_store" in later:
        resources["model_store"] = later["model_store"](
            root=model_store_root, storage_options=storage_options
        )
    if "guard" in later:
        resources["guard"] = later["guard"](backend="vllm", dtype="bfloat16")
    return resources


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
        if CREDENTIAL_NAME.search(key):
            # Storage options travel to workers in the Pipes context, i.e. in clear text.
            raise ValueError(
                f"QUANTBIAS_STORAGE_OPTIONS: {key}: credentials belong in a Kubernetes secret "
                "exposed as an environment variable, not in storage options"
            )
    return options


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{name}: required when QUANTBIAS_ENV=cluster (see k8s/README.md)")
    return value


# Resources whose modules other parts of the project add; a missing module leaves the key out.
_LATER_RESOURCES = {
    "inference": ("resources.inference", "InferenceResource"),
    "model_store": ("resources.model_store", "ModelStoreResource"),
    "guard": ("resources.guard", "GuardResource"),
}


def _later_resources() -> dict[str, type[dg.ConfigurableResource]]:
    found: dict[str, type[dg.ConfigurableResource]] = {}
    for key, (module_name, class_name) in _LATER_RESOURCES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        found[key] = getattr(module, class_name)
    return found
