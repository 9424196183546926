"""Every YAML file in k8s/ parses; Kubernetes manifests validate strictly; the Helm values fit the chart.

The Helm values are checked against the part of the Dagster chart's values schema they use,
encoded below from the chart's pydantic schema (helm/dagster/schema/schema/charts/...) at chart
version 1.13.27, the version that goes with the pinned dagster 1.13.27. Objects the chart
declares `extra = forbid` are closed here too, so a misspelled key fails.
"""

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from resources.k8s import default_worker_pods

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
YAML_FILES = sorted(K8S.rglob("*.yaml"))
CORE_MANIFESTS = ["namespace.yaml", "rbac.yaml", "secrets.example.yaml", "storage.yaml"]
CHART_VERSION = "1.13.27"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def by_kind(name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents(name) if doc["kind"] == kind}


def test_k8s_folder_has_the_expected_yaml() -> None:
    assert [path.relative_to(K8S).as_posix() for path in YAML_FILES] == [
        "gpu-nodepool.yaml",
        "helm/values.yaml",
        "namespace.yaml",
        "rbac.yaml",
        "secrets.example.yaml",
        "storage.yaml",
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(K8S).as_posix())
def test_every_yaml_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs and all(isinstance(doc, dict) for doc in docs)


@pytest.mark.parametrize("name", CORE_MANIFESTS)
def test_core_manifests_validate_strictly(name: str) -> None:
    for doc in documents(name):
        assert kubernetes_validate.validate(doc, "1.32", strict=True) == "1.32"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "quantbias"


def test_secret_templates_hold_no_values() -> None:
    secrets = by_kind("secrets.example.yaml", "Secret")
    assert set(secrets) == {"quantbias-hub-token", "quantbias-object-store", "dagster-postgresql-secret"}
    for secret in secrets.values():
        assert "data" not in secret
        assert secret["stringData"] and all(value == "" for value in secret["stringData"].values())


def test_worker_pod_secrets_and_claims_exist_in_the_templates() -> None:
    secrets = by_kind("secrets.example.yaml", "Secret")
    claims = by_kind("storage.yaml", "PersistentVolumeClaim")
    for pod in default_worker_pods("r", "t").values():
        for ref in pod.secret_env:
            assert ref.secret_key in secrets[ref.secret_name]["stringData"]
        assert {pod.model_cache_claim, pod.model_store_claim} <= set(claims)
        assert claims[pod.model_store_claim]["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pod.service_account in by_kind("rbac.yaml", "ServiceAccount")


def test_run_pods_may_manage_worker_pods_and_nothing_else() -> None:
    [role] = by_kind("rbac.yaml", "Role").values()
    rules = {(tuple(rule["apiGroups"]), tuple(rule["resources"])): set(rule["verbs"]) for rule in role["rules"]}
    assert rules == {
        (("",), ("pods",)): {"create", "get", "list", "watch", "delete"},
        (("",), ("pods/log",)): {"get", "list", "watch"},
        (("",), ("events",)): {"list"},
    }
    [binding] = by_kind("rbac.yaml", "RoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "quantbias-run", "namespace": "quantbias"}]
    assert by_kind("rbac.yaml", "ServiceAccount")["quantbias-worker"]["automountServiceAccountToken"] is False


def test_gpu_nodepool_matches_the_worker_pods_scheduling() -> None:
    [pool] = documents("gpu-nodepool.yaml")
    assert (pool["apiVersion"], pool["kind"]) == ("karpenter.sh/v1", "NodePool")
    template = pool["spec"]["template"]
    pod = default_worker_pods("r", "t")["respond"]
    assert pod.node_selector.items() <= template["metadata"]["labels"].items()
    [taint] = template["spec"]["taints"]
    [toleration] = pod.tolerations
    assert (taint["key"], taint["effect"]) == (toleration.key, toleration.effect)
    assert toleration.operator == "Exists"


# --- Helm values ---------------------------------------------------------------------------------


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False, "required": list(required)}


def open_object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
OBJECT = {"type": "object"}
PULL_POLICY = {"enum": ["Always", "IfNotPresent", "Never"]}
IMAGE = closed(
    {"repository": STRING, "tag": {"type": ["string", "integer"]}, "pullPolicy": PULL_POLICY},
    ("repository", "tag", "pullPolicy"),
)
ENV_VAR = open_object({"name": STRING, "value": STRING}, ("name",))
NAME_REF = open_object({"name": STRING}, ("name",))
RESOURCES = open_object({"requests": OBJECT, "limits": OBJECT})

CHART_VALUES_SUBSET = closed(
    {
        "global": open_object({"postgresqlSecretName": STRING}),
        "generatePostgresqlPasswordSecret": BOOLEAN,
        "postgresql": open_object(
            {"enabled": BOOLEAN, "postgresqlUsername": STRING, "postgresqlDatabase": STRING, "postgresqlHost": STRING}
        ),
        "dagsterWebserver": open_object({"replicaCount": INTEGER, "resources": RESOURCES}),
        "dagster-user-deployments": open_object(
            {
                "enabled": BOOLEAN,
                "enableSubchart": BOOLEAN,
                "deployments": {
                    "type": "array",
                    "minItems": 1,
                    "items": open_object(
                        {
                            "name": STRING,
                            "image": IMAGE,
                            "dagsterApiGrpcArgs": {"type": "array", "items": STRING},
                            "port": INTEGER,
                            "includeConfigInLaunchedRuns": closed({"enabled": BOOLEAN}, ("enabled",)),
                            "env": {"type": "array", "items": ENV_VAR},
                            "envSecrets": {"type": "array", "items": NAME_REF},
                            "volumes": {"type": "array", "items": NAME_REF},
                            "volumeMounts": {
                                "type": "array",
                                "items": open_object({"name": STRING, "mountPath": STRING}, ("name", "mountPath")),
                            },
                            "podSecurityContext": OBJECT,
                            "securityContext": OBJECT,
                            "resources": RESOURCES,
                        },
                        ("name", "image", "port"),
                    ),
                },
            }
        ),
        "runLauncher": closed(
            {
                "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
                "config": open_object(
                    {
                        "k8sRunLauncher": closed(
                            {
                                "imagePullPolicy": PULL_POLICY,
                                "loadInclusterConfig": BOOLEAN,
                                "jobNamespace": {"type": ["string", "null"]},
                                "envSecrets": {"type": "array", "items": NAME_REF},
                                "envVars": {"type": "array", "items": STRING},
                                "runK8sConfig": closed(
                                    {
                                        "containerConfig": OBJECT,
                                        "podSpecConfig": OBJECT,
                                        "podTemplateSpecMetadata": OBJECT,
                                        "jobSpecConfig": OBJECT,
                                        "jobMetadata": OBJECT,
                                    }
                                ),
                            }
                        )
                    }
                ),
            },
            ("type", "config"),
        ),
        "concurrency": closed(
            {
                "enabled": BOOLEAN,
                "pools": closed(
                    {"defaultLimit": INTEGER, "granularity": {"enum": ["run", "op"]}, "opGranularityRunBuffer": INTEGER}
                ),
                "runs": closed({"maxConcurrentRuns": INTEGER, "tagConcurrencyLimits": {"type": "array"}}),
            }
        ),
    }
)


def helm_values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "helm" / "values.yaml").read_text())


def test_helm_values_fit_the_chart_schema() -> None:
    jsonschema.Draft202012Validator(CHART_VALUES_SUBSET).validate(helm_values())
    assert CHART_VERSION in (K8S / "helm" / "values.yaml").read_text()


@pytest.mark.parametrize(
    ("path", "bad_value"),
    [
        (("runLauncher", "config", "k8sRunLauncher", "runK8sConfig", "podSpec"), {}),
        (("runLauncher", "type"), "K8sJobLauncher"),
        (("concurrency", "pools", "defaultLimit"), "eight"),
        (("dagster-user-deployments", "deployments", 0, "includeConfigInLaunchedRuns", "enabled"), "yes"),
    ],
)
def test_the_schema_subset_rejects_misspelled_keys_and_wrong_types(path: tuple, bad_value: object) -> None:
    values = helm_values()
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad_value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(CHART_VALUES_SUBSET).validate(values)


def test_helm_values_wire_the_cluster_environment() -> None:
    values = helm_values()
    [deployment] = values["dagster-user-deployments"]["deployments"]
    env = {var["name"]: var["value"] for var in deployment["env"]}
    assert env["QUANTBIAS_ENV"] == "cluster"
    assert env["QUANTBIAS_LAKE"].startswith("s3://")
    assert env["QUANTBIAS_MODEL_STORE"] == deployment["volumeMounts"][0]["mountPath"] == "/model-store"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "definitions"]
    assert deployment["image"]["repository"].endswith("/quantbias-orchestrator")
    assert deployment["image"]["tag"] == env["QUANTBIAS_IMAGE_TAG"]
    secrets = by_kind("secrets.example.yaml", "Secret")
    assert all(ref["name"] in secrets for ref in deployment["envSecrets"])
    assert values["global"]["postgresqlSecretName"] in secrets
    run_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert run_config["podSpecConfig"]["serviceAccountName"] in by_kind("rbac.yaml", "ServiceAccount")


# --- Images ---------------------------------------------------------------------------------------


def load_select_requirements():
    spec = importlib.util.spec_from_file_location("select_requirements", K8S / "images" / "select_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("image", "present", "absent"),
    [
        (
            "orchestrator",
            {"dagster", "dagster-k8s", "dagster-postgres", "dbt-duckdb", "polars"},
            {"torch", "transformers", "llmcompressor"},
        ),
        (
            "quantizer-worker",
            {"dagster-pipes", "torch", "llmcompressor", "compressed-tensors", "deltalake"},
            {"dagster", "dbt-core", "kubernetes"},
        ),
        (
            "vllm-worker",
            {"dagster-pipes", "polars", "deltalake"},
            {"dagster", "torch", "transformers", "llmcompressor"},
        ),
    ],
)
def test_image_requirements(image: str, present: set[str], absent: set[str]) -> None:
    module = load_select_requirements()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {module.requirement_name(r) for r in module.select_requirements(pyproject, image)}
    assert present <= names
    assert not absent & names


def test_the_base_dependencies_hold_no_orchestration_and_no_model_library() -> None:
    module = load_select_requirements()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    base = {module.requirement_name(r) for r in pyproject["project"]["dependencies"]}
    assert {"dagster-pipes", "polars", "deltalake"} <= base
    assert not base & {"dagster", "dagster-dbt", "dbt-core", "torch", "transformers", "accelerate", "llmcompressor"}
    # each image: the base plus its extras, nothing else
    extras = pyproject["project"]["optional-dependencies"]
    quantizer = module.select_requirements(pyproject, "quantizer-worker")
    assert quantizer == [*pyproject["project"]["dependencies"], *extras["hf"], *extras["quant"]]


@pytest.mark.parametrize("dockerfile", sorted((K8S / "images").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_pin_their_base_and_run_as_non_root(dockerfile: Path) -> None:
    lines = [line.strip() for line in dockerfile.read_text().splitlines() if line.strip() and not line.startswith("#")]
    [base] = [line.split()[1] for line in lines if line.startswith("FROM ")]
    tag = base.partition(":")[2]
    assert tag and tag != "latest" and any(ch.isdigit() for ch in tag), base
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "1000:1000"
    installs = [line for line in lines if "pip install" in line and "vllm" in line]
    assert all("vllm==" in line for line in installs)
