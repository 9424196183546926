"""resources_for: the local and cluster resource sets, chosen by QUANTBIAS_ENV."""

import pytest
from dagster_dbt import DbtCliResource

from resources.dataset_files import DatasetFilesResource
from resources.environments import resources_for, storage_options_from_env
from resources.guard import GuardResource
from resources.inference import InferenceResource
from resources.k8s import K8sWorkerLauncher
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.warehouse import WarehouseResource
from resources.workers import LocalWorkerLauncher

RESOURCE_TYPES = {
    "lake": LakeResource,
    "inference": InferenceResource,
    "model_store": ModelStoreResource,
    "guard": GuardResource,
    "dataset_files": DatasetFilesResource,
    "warehouse": WarehouseResource,
    "dbt": DbtCliResource,
}

CLUSTER_ENV = {
    "QUANTBIAS_LAKE": "s3://quantbias-bucket/lake",
    "QUANTBIAS_MODEL_STORE": "/model-store",
    "QUANTBIAS_IMAGE_REGISTRY": "ghcr.io/acme",
    "QUANTBIAS_IMAGE_TAG": "2.0.1",
    "QUANTBIAS_STORAGE_OPTIONS": '{"AWS_REGION": "eu-west-1"}',
}


@pytest.fixture
def cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTBIAS_ENV", "cluster")
    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)


def test_local_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("QUANTBIAS_ENV", raising=False)
    monkeypatch.delenv("QUANTBIAS_DATA_DIR", raising=False)
    monkeypatch.delenv("QUANTBIAS_DBT_DUCKDB", raising=False)
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    resources = resources_for()
    assert set(resources) == {"workers", *RESOURCE_TYPES}
    assert isinstance(resources["workers"], LocalWorkerLauncher)
    assert all(isinstance(resources[key], kind) for key, kind in RESOURCE_TYPES.items())
    assert resources["lake"].root == str(tmp_path / "lake")
    assert resources["model_store"].root == str(tmp_path / "models")
    assert resources["dataset_files"].path == tmp_path / "datasets"
    warehouse = resources["warehouse"]
    assert (warehouse.database_file, warehouse.figures_folder) == (
        tmp_path / "warehouse.duckdb",
        tmp_path / "reports" / "figures",
    )
    assert (resources["inference"].engine.backend, resources["guard"].engine.backend) == ("hf", "hf")


def test_cluster_set_from_environment(cluster_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # the dataset files and the warehouse are files under QUANTBIAS_HOME, on the model-store volume
    monkeypatch.setenv("QUANTBIAS_HOME", "/model-store/.quantbias")
    monkeypatch.setenv("QUANTBIAS_DATA_DIR", "/data/benchmark")
    monkeypatch.delenv("QUANTBIAS_DBT_DUCKDB", raising=False)
    resources = resources_for()
    assert all(isinstance(resources[key], kind) for key, kind in RESOURCE_TYPES.items())
    assert resources["dataset_files"].folder == "/data/benchmark"
    assert resources["warehouse"].path == "/model-store/.quantbias/warehouse.duckdb"
    lake = resources["lake"]
    assert (lake.root, lake.storage_options) == ("s3://quantbias-bucket/lake", {"AWS_REGION": "eu-west-1"})
    model_store = resources["model_store"]
    assert (model_store.root, model_store.storage_options) == ("/model-store", {"AWS_REGION": "eu-west-1"})
    assert (resources["inference"].engine.backend, resources["guard"].engine.backend) == ("vllm", "vllm")
    workers = resources["workers"]
    assert isinstance(workers, K8sWorkerLauncher)
    assert workers.namespace == "quantbias"
    assert workers.quantize.image == "ghcr.io/acme/quantbias-quantizer-worker:2.0.1"
    assert workers.respond.image == workers.judge.image == "ghcr.io/acme/quantbias-vllm-worker:2.0.1"
    assert workers.respond.env == {
        "QUANTBIAS_LAKE": "s3://quantbias-bucket/lake",
        "QUANTBIAS_MODEL_STORE": "/model-store",
    }
    assert (workers.respond.model_store_claim, workers.respond.model_store_path) == (
        "quantbias-model-store",
        "/model-store",
    )


def test_both_sets_provide_the_same_keys(cluster_env: None) -> None:
    assert set(resources_for("local")) == set(resources_for("cluster"))


def test_model_store_must_be_a_mounted_folder(cluster_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTBIAS_MODEL_STORE", "gs://bucket/models")
    with pytest.raises(ValueError, match="QUANTBIAS_MODEL_STORE: 'gs://bucket/models': checkpoints are folders"):
        resources_for()


def test_cluster_needs_the_lake_uri(cluster_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTBIAS_LAKE")
    with pytest.raises(ValueError, match="QUANTBIAS_LAKE: required when QUANTBIAS_ENV=cluster"):
        resources_for()


def test_unknown_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTBIAS_ENV", "staging")
    with pytest.raises(ValueError, match="QUANTBIAS_ENV: 'staging': expected one of local, cluster"):
        resources_for()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"aws_secret_access_key": "x"}', "aws_secret_access_key: credentials belong in a Kubernetes secret"),
        ('{"AZURE_STORAGE_SAS_KEY": "x"}', "AZURE_STORAGE_SAS_KEY: credentials belong"),
        # passed in the clear before the fix
        ('{"azure_storage_master_key": "x"}', "azure_storage_master_key: credentials belong"),
        ('{"master_key": "x"}', "master_key: credentials belong"),
        ('{"azure_storage_account_key": "x"}', "azure_storage_account_key: credentials belong"),
        ('{"google_service_account_key": "{}"}', "google_service_account_key: credentials belong"),
        ('{"azure_storage_connection_string": "AccountKey=x"}', "azure_storage_connection_string: credentials belong"),
        ('{"AWS_REGION": 3}', "AWS_REGION: expected a string, got 3"),
        ('["AWS_REGION"]', "expected a JSON object of strings"),
        ("{region", "not JSON"),
    ],
)
def test_storage_options_refuse_credentials_and_bad_json(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"QUANTBIAS_STORAGE_OPTIONS: .*{message}"):
        storage_options_from_env(raw)


def test_empty_storage_options() -> None:
    assert storage_options_from_env("") == {}
    assert storage_options_from_env('{"endpoint": "http://minio:9000"}') == {"endpoint": "http://minio:9000"}
    public = '{"aws_skip_signature": "true", "allow_http": "true", "azure_storage_account_name": "acct"}'
    assert storage_options_from_env(public) == {
        "aws_skip_signature": "true",
        "allow_http": "true",
        "azure_storage_account_name": "acct",
    }
