"""Automation on the real definitions: the model registry sensor, declarative automation,
code-version staleness and the gpu pool of the embedded instance.

Nothing here runs a worker: state is set up with runless materialization / observation reports
on an ephemeral instance, and the tests check what Dagster would request.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCauseCategory, StaleStatus

from quantbias_assets.catalog.models import add_model
from quantbias_assets.instance import ensure_dagster_home

# Written out from the paper (spec §6) and the design's method table, not from the code under test.
PAPER_NICKNAMES = {
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "qwen2.5-14b-instruct", "qwen2-7b-instruct", "llama3.2-1b-instruct", "llama3.2-3b-instruct",
    "llama3.1-8b-instruct", "ministral-8b-instruct",
}  # fmt: skip
BACKFILL_METHODS = {"none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16"}
CLOSED_DATASETS = {
    "BBQ", "BiasLens-Choices", "CEB-Adult", "CEB-Credit", "CEB-Jigsaw", "CEB-Recognition-S",
    "CEB-Recognition-T", "IAT", "SocialStigmaQA", "StereoSet-Intersentence",
}  # fmt: skip
OPEN_DATASETS = {
    "BiasLens-GenWhy", "CEB-Continuation-S", "CEB-Continuation-T", "CEB-Conversation-S",
    "CEB-Conversation-T", "FMT10K-IM-S", "FMT10K-IM-T",
}  # fmt: skip
WORKER_KEYS = {
    dg.AssetKey("checkpoint"),
    *(dg.AssetKey(["responses", name]) for name in CLOSED_DATASETS | OPEN_DATASETS),
    *(dg.AssetKey(["verdicts", name]) for name in OPEN_DATASETS),
}


@pytest.fixture
def quantbias_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("QUANTBIAS_HOME", str(home))
    monkeypatch.setenv("QUANTBIAS_LAKE", str(home / "lake"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return home


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    import definitions

    return definitions.defs


@pytest.fixture
def local_model(tmp_path: Path) -> Path:
    """A folder the registry accepts as a local source (the sensor never loads it)."""
    folder = tmp_path / "tiny-a"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("model_registry_sensor")
    return sensor(dg.build_sensor_context(instance=instance, definitions=defs))


def apply_partition_requests(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with the result's dynamic partition requests."""
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_fresh_deployment_adds_paper_models_as_partitions_without_runs(quantbias_home, defs):
    instance = dg.DagsterInstance.ephemeral()
    result = tick(defs, instance)
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert request.partitions_def_name == "model"
    assert len(request.partition_keys) == 10
    assert set(request.partition_keys) == PAPER_NICKNAMES
    assert result.run_requests == []

    apply_partition_requests(instance, result)
    again = tick(defs, instance)
    assert again.skip_reason is not None
    assert again.dynamic_partitions_requests == [] and again.run_requests == []


def test_new_model_gets_partition_and_backfill_of_every_method(quantbias_home, defs, local_model):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", sorted(PAPER_NICKNAMES))
    add_model(str(local_model), "tiny-a")

    result = tick(defs, instance)
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert (request.partitions_def_name, list(request.partition_keys)) == ("model", ["tiny-a"])
    assert len(result.run_requests) == 6
    methods = [run.partition_key.keys_by_dimension["method"] for run in result.run_requests]
    assert set(methods) == BACKFILL_METHODS and len(set(methods)) == 6
    for run in result.run_requests:
        assert run.partition_key.keys_by_dimension["model"] == "tiny-a"
        assert len(run.asset_selection) == 1 + 17 + 7
        assert set(run.asset_selection) == WORKER_KEYS

    # Once the partition exists every requested key is a valid partition of every worker asset.
    apply_partition_requests(instance, result)
    asset_graph = defs.resolve_asset_graph()
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        for run in result.run_requests:
            for key in run.asset_selection:
                assert asset_graph.get(key).partitions_def.has_partition_key(run.partition_key)
        assert not asset_graph.get(dg.AssetKey("checkpoint")).partitions_def.has_partition_key(
            dg.MultiPartitionKey({"model": "tiny-b", "method": "none"})
        )


def test_unchanged_registry_requests_nothing(quantbias_home, defs, local_model):
    instance = dg.DagsterInstance.ephemeral()
    add_model(str(local_model), "tiny-a")
    first = tick(defs, instance)
    # A fresh deployment with one registered model: 10 + 1 partitions, a backfill of the one.
    assert set(first.dynamic_partitions_requests[0].partition_keys) == PAPER_NICKNAMES | {"tiny-a"}
    assert len(first.run_requests) == 6
    apply_partition_requests(instance, first)

    result = tick(defs, instance)
    assert result.skip_reason.skip_message == "no new model in the registry"
    assert result.run_requests == [] and result.dynamic_partitions_requests == []


def test_removed_model_keeps_its_partition(quantbias_home, defs, local_model):
    instance = dg.DagsterInstance.ephemeral()
    add_model(str(local_model), "tiny-a")
    apply_partition_requests(instance, tick(defs, instance))

    (quantbias_home / "models.yaml").write_text(yaml.safe_dump({"models": []}))
    result = tick(defs, instance)
    assert result.run_requests == [] and result.dynamic_partitions_requests == []
    assert "tiny-a" in instance.get_dynamic_partitions("model")
    assert len(instance.get_dynamic_partitions("model")) == 11


def test_broken_registry_fails_the_tick_naming_file_record_and_field(quantbias_home, defs):
    instance = dg.DagsterInstance.ephemeral()
    quantbias_home.mkdir(parents=True)
    registry = quantbias_home / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [{"nickname": "Bad Name", "source": "a/b"}]}))
    with pytest.raises(Exception, match=rf"{registry}: record 0: nickname:"):
        tick(defs, instance)
    assert instance.get_dynamic_partitions("model") == []
