"""Automation on the real definitions: the model registry sensor, declarative automation,
code-version staleness and the gpu pool of the embedded instance.

Nothing here runs a worker: state is set up with runless materialization / observation reports
on an ephemeral instance, and the tests check what Dagster would request.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleCauseCategory,
    StaleStatus,
)

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


# --- declarative automation ---------------------------------------------------------------

MODELS = ("tiny-a", "tiny-b")
ANALYSIS_KEYS = {
    dg.AssetKey(["analysis", name]) for name in ("paired_responses", "bias_tests", "model_rankings")
}
SEED_KEY = dg.AssetKey(["marts", "quantization_methods"])


def pk(model: str, method: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "method": method})


class Deployment:
    """An instance whose state is set with runless reports (what finished runs would record)."""

    def __init__(self, defs: dg.Definitions) -> None:
        self.defs = defs
        self.instance = dg.DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions("model", list(MODELS))
        self.cursor = None

    def observe_files(self, dataset: str, data_version: str) -> None:
        self.instance.report_runless_asset_event(
            dg.AssetObservation(["dataset_files", dataset], tags={DATA_VERSION_TAG: data_version})
        )

    def materialized(self, key: dg.AssetKey, partitions: Iterable = (None,)) -> None:
        for partition in partitions:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(key, partition=None if partition is None else str(partition))
            )

    def tick(self) -> dict[dg.AssetKey, set]:
        """One automation evaluation, cursor carried over; what it requests, per asset."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        asset_graph = self.defs.resolve_asset_graph()
        return {
            key: set(result.get_requested_partitions(key))
            for key in asset_graph.materializable_asset_keys
            if result.get_num_requested(key)
        }

    def run(self, requested: dict[dg.AssetKey, set]) -> None:
        """The runs of a tick's requests succeed."""
        for key, partitions in requested.items():
            self.materialized(key, partitions)


def questions(name: str) -> dg.AssetKey:
    return dg.AssetKey(["questions", name])


def responses(name: str) -> dg.AssetKey:
    return dg.AssetKey(["responses", name])


def verdicts(name: str) -> dg.AssetKey:
    return dg.AssetKey(["verdicts", name])


@pytest.fixture
def deployment(quantbias_home, defs) -> Deployment:
    """BBQ (closed) and FMT10K-IM-S (open) observed and loaded; tiny-a and tiny-b answered some
    of them; everything downstream built once; then the first (initial) evaluation."""
    d = Deployment(defs)
    for dataset in ("BBQ", "FMT10K-IM-S"):
        d.observe_files(dataset, "files-v1")
        d.materialized(questions(dataset))
    bbq_partitions = [pk("tiny-a", "none"), pk("tiny-a", "rtn-w4a16"), pk("tiny-b", "none")]
    d.materialized(dg.AssetKey("checkpoint"), bbq_partitions)
    d.materialized(responses("BBQ"), bbq_partitions)
    d.materialized(responses("FMT10K-IM-S"), [pk("tiny-a", "none")])
    d.materialized(verdicts("FMT10K-IM-S"), [pk("tiny-a", "none")])
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        if key.path[0] in ("analysis", "marts", "reports"):
            d.materialized(key)
    assert d.tick() == {}  # the initial evaluation requests nothing
    return d


def test_data_version_change_refreshes_questions_then_existing_partitions_then_analysis(deployment):
    d = deployment
    d.observe_files("BBQ", "files-v1")  # observed again, unchanged
    assert d.tick() == {}

    d.observe_files("BBQ", "files-v2")
    requested = d.tick()
    assert requested == {questions("BBQ"): {None}}
    d.run(requested)

    # Only the partitions that exist; not tiny-b|rtn-w4a16 nor any other method; not FMT10K-IM-S.
    requested = d.tick()
    assert requested == {
        responses("BBQ"): {pk("tiny-a", "none"), pk("tiny-a", "rtn-w4a16"), pk("tiny-b", "none")}
    }
    d.run(requested)

    requested = d.tick()
    assert ANALYSIS_KEYS <= set(requested)
    assert dg.AssetKey(["reports", "paper_figures"]) in requested
    assert not any(key.path[0] in ("checkpoint", "responses", "verdicts", "questions") for key in requested)
    assert SEED_KEY not in requested
    d.run(requested)
    assert d.tick() == {}


def test_open_dataset_refresh_requests_its_responses_and_verdicts_together(deployment):
    d = deployment
    d.materialized(questions("FMT10K-IM-S"))  # e.g. materialized by hand in the UI
    requested = d.tick()
    assert requested == {
        responses("FMT10K-IM-S"): {pk("tiny-a", "none")},
        verdicts("FMT10K-IM-S"): {pk("tiny-a", "none")},
    }


def test_new_checkpoint_refreshes_its_partition_only(deployment):
    d = deployment
    d.materialized(dg.AssetKey("checkpoint"), [pk("tiny-b", "none")])  # re-quantized by hand
    # tiny-b|none has no FMT10K-IM-S responses: nothing else is requested.
    assert d.tick() == {responses("BBQ"): {pk("tiny-b", "none")}}


def test_backfilled_partition_refreshes_analysis_not_responses(deployment):
    d = deployment
    # A new model's backfill run: checkpoint, responses and verdicts of one partition.
    new = pk("tiny-b", "rtn-w4a16")
    for key in (dg.AssetKey("checkpoint"), responses("BBQ"), responses("FMT10K-IM-S"), verdicts("FMT10K-IM-S")):
        d.materialized(key, [new])
    requested = d.tick()
    assert ANALYSIS_KEYS <= set(requested)
    assert not any(key.path[0] in ("checkpoint", "responses", "verdicts", "questions") for key in requested)


def test_checkpoints_are_never_requested(deployment):
    d = deployment
    d.instance.add_dynamic_partitions("model", ["tiny-c"])  # new, missing partitions everywhere
    d.observe_files("FMT10K-IM-S", "files-v2")
    seen: set[dg.AssetKey] = set()
    for _ in range(4):
        requested = d.tick()
        seen |= set(requested)
        d.run(requested)
    assert questions("FMT10K-IM-S") in seen and responses("FMT10K-IM-S") in seen
    assert dg.AssetKey("checkpoint") not in seen


def test_fresh_deployment_builds_the_dbt_seed_once(quantbias_home, defs):
    d = Deployment(defs)
    assert d.tick() == {SEED_KEY: {None}}
    assert d.tick() == {}  # requested once: a failed seed build is not retried in a loop
