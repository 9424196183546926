"""Automation on the real definitions: the model registry sensor, declarative automation,
code-version staleness and the gpu pool of the embedded instance.

Nothing here runs a worker: state is set up with runless materialization / observation reports
on ephemeral instances (only the staleness test materializes a small question table for real),
and the tests check what Dagster would request or show.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleCauseCategory,
    StaleStatus,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test, freeze_time
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

from quantbias_assets.assets.datasets import dataset_file_assets, question_assets
from quantbias_assets.automation import automation_sensor
from quantbias_assets.catalog.datasets import closed_datasets, open_datasets
from quantbias_assets.catalog.models import add_model, load_registry
from quantbias_assets.instance import ensure_dagster_home
from resources.dataset_files import DatasetFilesResource
from resources.lake import LakeResource

# Written out from the paper (spec §6) and the design's method table, not from the code under test.
PAPER_NICKNAMES = {
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "qwen2.5-14b-instruct", "qwen2-7b-instruct", "llama3.2-1b-instruct", "llama3.2-3b-instruct",
    "llama3.1-8b-instruct", "ministral-8b-instruct",
}  # fmt: skip
BACKFILL_METHODS = {"none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16"}
CLOSED_DATASETS = {spec.name for spec in closed_datasets()}
OPEN_DATASETS = {spec.name for spec in open_datasets()}
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
    # setenv first so that teardown also undoes the DAGSTER_HOME that ensure_dagster_home exports
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("DAGSTER_HOME")
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


@pytest.fixture
def instance(quantbias_home) -> Iterator[dg.DagsterInstance]:
    """The embedded instance (ensure_dagster_home) in a temp QUANTBIAS_HOME. Unlike an
    ephemeral one it has an instance ref, which the daemon's resolution of partitioned run
    requests needs."""
    with dg.DagsterInstance.from_config(str(ensure_dagster_home())) as embedded:
        yield embedded


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> SensorExecutionData:
    """One tick as the sensor daemon runs it: evaluate, then resolve and validate the run
    requests against the repository (partition keys, targets, partition tags)."""
    sensor = defs.resolve_sensor_def("model_registry_sensor")
    return sensor.evaluate_tick(dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs))


def apply_partition_requests(instance: dg.DagsterInstance, result: SensorExecutionData) -> None:
    """What the sensor daemon does with the tick's dynamic partition requests."""
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_fresh_deployment_adds_no_partition_for_the_built_in_paper_models(defs, instance):
    # The 10 paper models are in the registry (`quantbias models list`) but nobody asked for them:
    # no `model` partition, so the UI shows no "84 of 88 missing" for data nobody wants.
    assert set(load_registry()) >= PAPER_NICKNAMES
    result = tick(defs, instance)
    assert result.skip_message == "no new model in the registry"
    assert result.dynamic_partitions_requests == [] and result.run_requests == []
    assert instance.get_dynamic_partitions("model") == []


def test_new_model_gets_partition_and_backfill_of_every_method(defs, instance, local_model):
    instance.add_dynamic_partitions("model", sorted(PAPER_NICKNAMES))
    add_model(str(local_model), "tiny-a")

    result = tick(defs, instance)
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert (request.partitions_def_name, list(request.partition_keys)) == ("model", ["tiny-a"])
    assert len(result.run_requests) == 6
    methods = [run.partition_key.keys_by_dimension["method"] for run in result.run_requests]
    assert set(methods) == BACKFILL_METHODS and len(set(methods)) == 6
    for run, method in zip(result.run_requests, methods):
        assert run.partition_key.keys_by_dimension["model"] == "tiny-a"
        assert run.run_key == f"new-model:tiny-a:{method}"  # a second tick could not launch it again
        assert run.tags["quantbias/model"] == "tiny-a" and run.tags["quantbias/method"] == method
        # resolved by the daemon against the partition added in the same tick
        assert (run.tags["dagster/partition/model"], run.tags["dagster/partition/method"]) == ("tiny-a", method)
        assert len(run.asset_selection) == 1 + 17 + 7
        assert set(run.asset_selection) == WORKER_KEYS


def test_unchanged_registry_requests_nothing(defs, instance, local_model):
    add_model(str(local_model), "tiny-a")
    first = tick(defs, instance)
    # A fresh deployment with one registered model: its partition only, and its backfill.
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["tiny-a"]
    assert len(first.run_requests) == 6
    apply_partition_requests(instance, first)

    result = tick(defs, instance)
    assert result.skip_message == "no new model in the registry"
    assert result.run_requests == [] and result.dynamic_partitions_requests == []


def test_removed_model_keeps_its_partition(defs, instance, local_model, quantbias_home):
    add_model(str(local_model), "tiny-a")
    apply_partition_requests(instance, tick(defs, instance))

    (quantbias_home / "models.yaml").write_text(yaml.safe_dump({"models": []}))
    result = tick(defs, instance)
    assert result.run_requests == [] and result.dynamic_partitions_requests == []
    assert instance.get_dynamic_partitions("model") == ["tiny-a"]


def test_models_add_from_the_shell_is_picked_up_by_the_sensor_once(defs, instance, local_model, capsys):
    from quantbias_assets.cli import main

    instance.add_dynamic_partitions("model", sorted(PAPER_NICKNAMES))
    assert main(["models", "add", str(local_model), "--nickname", "tiny-a"]) == 0
    assert "model_registry_sensor adds partition model=tiny-a and requests its runs" in capsys.readouterr().out
    # the shell writes the registry only: the sensor is the one path to the partition and its runs
    assert "tiny-a" not in instance.get_dynamic_partitions("model") and instance.get_backfills() == []
    result = tick(defs, instance)
    [request] = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["tiny-a"]
    # the 6 backfill methods of tiny-a, each run with the checkpoint + 17 response + 7 verdict tables
    assert sorted(str(run.partition_key) for run in result.run_requests) == sorted(
        f"{method}|tiny-a" for method in BACKFILL_METHODS
    )  # method|model
    assert all(set(run.asset_selection) == WORKER_KEYS for run in result.run_requests)
    apply_partition_requests(instance, result)
    # the registry sensor then sees nothing new: no second request
    result = tick(defs, instance)
    assert result.run_requests == [] and result.dynamic_partitions_requests == []


def test_broken_registry_fails_the_tick_naming_file_record_and_field(defs, instance, quantbias_home):
    registry = quantbias_home / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [{"nickname": "Bad Name", "source": "a/b"}]}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(registry))}: record 0: nickname:"):
        tick(defs, instance)
    assert instance.get_dynamic_partitions("model") == []


# --- declarative automation ---------------------------------------------------------------

MODELS = ("tiny-a", "tiny-b")
ANALYSIS_KEYS = {dg.AssetKey(["analysis", name]) for name in ("paired_responses", "bias_tests", "model_rankings")}
TEXT_PATTERNS_KEY = dg.AssetKey(["analysis", "text_patterns"])  # reads the open datasets' responses only
PAIRED_RESPONSES_KEY = dg.AssetKey(["analysis", "paired_responses"])  # partitioned by model
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

    def materialized(self, key: dg.AssetKey, partitions: Iterable = (None,), data_version: str | None = None) -> None:
        """Every asset reports its content as its data version: new content unless `data_version`
        repeats what it had."""
        for partition in partitions:
            version = data_version or uuid.uuid4().hex
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    key, partition=None if partition is None else str(partition), tags={DATA_VERSION_TAG: version}
                )
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

    def settle(self, ticks: int = 6) -> None:
        """Tick and run what is requested until a tick requests nothing."""
        for _ in range(ticks):
            requested = self.tick()
            if not requested:
                return
            self.run(requested)
        raise AssertionError(f"still requesting after {ticks} ticks")


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
    asset_graph = defs.resolve_asset_graph()
    for key in asset_graph.materializable_asset_keys:
        if key.path[0] in ("analysis", "marts", "reports"):
            d.materialized(key, MODELS if asset_graph.get(key).is_partitioned else (None,))
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
    assert requested == {responses("BBQ"): {pk("tiny-a", "none"), pk("tiny-a", "rtn-w4a16"), pk("tiny-b", "none")}}
    d.run(requested)

    # First each model's pairs, then (once they are in) everything over all models.
    requested = d.tick()
    assert requested == {PAIRED_RESPONSES_KEY: set(MODELS)}
    d.run(requested)
    requested = d.tick()
    assert set(requested) >= ANALYSIS_KEYS - {PAIRED_RESPONSES_KEY} and TEXT_PATTERNS_KEY not in requested
    assert dg.AssetKey(["reports", "paper_figures"]) in requested
    assert not any(key.path[0] in ("checkpoint", "responses", "verdicts", "questions") for key in requested)
    assert SEED_KEY not in requested
    assert all(partitions == {None} for partitions in requested.values())  # one run, not one per model
    d.run(requested)
    assert d.tick() == {}


def test_rebuilt_identical_inputs_refresh_nothing(deployment):
    d = deployment
    d.materialized(questions("BBQ"), data_version="same-questions")
    d.settle()
    # the table is rebuilt with the same content (same data version): nothing downstream moves
    d.materialized(questions("BBQ"), data_version="same-questions")
    assert d.tick() == {}
    # a refresh run that found nothing pending reports the same keys: no analysis re-run
    d.materialized(responses("BBQ"), [pk("tiny-a", "none")], data_version="same-keys")
    d.settle()
    d.materialized(responses("BBQ"), [pk("tiny-a", "none")], data_version="same-keys")
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
    assert requested == {PAIRED_RESPONSES_KEY: {"tiny-b"}, TEXT_PATTERNS_KEY: {"tiny-b"}}  # that model's only
    d.run(requested)
    requested = d.tick()
    assert ANALYSIS_KEYS - {PAIRED_RESPONSES_KEY} <= set(requested)
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


# --- staleness: code versions and data versions --------------------------------------------


def stale_status(instance: dg.DagsterInstance, assets: list, key: dg.AssetKey) -> tuple[StaleStatus, list]:
    """What the UI shows for `key` (the webserver uses the same resolver)."""
    resolver = CachingStaleStatusResolver(
        instance,
        dg.Definitions(
            assets=assets, resources={"lake": LakeResource(), "dataset_files": DatasetFilesResource()}
        ).resolve_asset_graph(),
        LoadingContextForTest(instance),
    )
    return resolver.get_status(key), list(resolver.get_stale_causes(key))


def test_code_version_and_dataset_changes_show_as_staleness(data_dir, tmp_path, defs):
    """questions/FMT10K-IM-T (255 rows) materialized for real; then its code version is bumped,
    and separately one of its files is edited and observed by the schedule's job."""
    dataset = "FMT10K-IM-T"
    files = tmp_path / "data" / "open_datasets" / dataset
    shutil.copytree(data_dir / "open_datasets" / dataset, files)
    [observable] = [a for a in dataset_file_assets if a.key.path[-1] == dataset]
    [built] = [a for a in question_assets if a.key.path[-1] == dataset]
    key = built.key
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "dataset_files": DatasetFilesResource(folder=str(tmp_path / "data")),
    }
    observe_files = defs.resolve_job_def("observe_dataset_files")

    assert observe_files.execute_in_process(instance=instance, resources=resources).success
    assert dg.materialize([built, observable], selection=[key], instance=instance, resources=resources).success
    assert stale_status(instance, [observable, built], key) == (StaleStatus.FRESH, [])

    bumped = dg.map_asset_specs(lambda spec: spec.replace_attributes(code_version="questions-v2"), [built])
    status, causes = stale_status(instance, [observable, *bumped], key)
    assert status == StaleStatus.STALE
    assert [(cause.category, cause.reason) for cause in causes] == [(StaleCauseCategory.CODE, "has a new code version")]

    edited = files / "gender.json"
    edited.write_text(edited.read_text().replace("a", "b", 1))
    assert observe_files.execute_in_process(instance=instance, resources=resources).success
    status, causes = stale_status(instance, [observable, built], key)
    assert status == StaleStatus.STALE
    assert [(cause.category, cause.reason, cause.dependency) for cause in causes] == [
        (StaleCauseCategory.DATA, "has a new dependency data version", AssetKeyPartitionKey(observable.key))
    ]


# --- the gpu pool of the embedded instance -------------------------------------------------


def test_worker_assets_are_in_the_gpu_pool(defs):
    asset_graph = defs.resolve_asset_graph()
    for key in WORKER_KEYS:
        assert asset_graph.get(key).pools == {"gpu"}
    others = asset_graph.materializable_asset_keys - WORKER_KEYS
    assert len(others) == 17 + 4 + 14 + 1 and all(not asset_graph.get(key).pools for key in others)


def test_embedded_instance_lets_one_model_worker_run_at_a_time(quantbias_home):
    home = ensure_dagster_home()
    assert home == quantbias_home / "dagster"
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.global_op_concurrency_default_limit == 1
    storage = instance.event_log_storage
    info = storage.get_concurrency_info("gpu")
    assert (info.limit, info.slot_count, info.using_default_limit) == (1, 1, True)

    # What a run does before a gpu step starts, with two runs competing for the machine.
    assert storage.claim_concurrency_slot("gpu", "run-1", "responses").slot_status.value == "CLAIMED"
    assert storage.claim_concurrency_slot("gpu", "run-2", "checkpoint").slot_status.value == "BLOCKED"
    storage.free_concurrency_slot_for_step("run-1", "responses")
    assert storage.claim_concurrency_slot("gpu", "run-2", "checkpoint").slot_status.value == "CLAIMED"


def test_a_gpu_step_waits_while_another_run_holds_the_slot(quantbias_home):
    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home()))
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot("gpu", "other-run", "responses").slot_status.value == "CLAIMED"
    started: list[float] = []

    @dg.asset(pool="gpu")
    def model_step() -> None:
        started.append(time.monotonic())

    outcome: list[bool] = []
    run = threading.Thread(target=lambda: outcome.append(dg.materialize([model_step], instance=instance).success))
    run.start()
    run.join(timeout=5)
    assert started == [] and run.is_alive()  # waiting for the slot, not failed
    released = time.monotonic()
    storage.free_concurrency_slot_for_step("other-run", "responses")
    # The step starts within seconds of the release; the run's own teardown (events, captured
    # logs) once took over 60 s on a loaded CI machine, so the run gets longer to finish.
    run.join(timeout=300)
    assert started and started[0] > released, "the step never started, or started before the release"
    assert outcome == [True], f"run not finished {time.monotonic() - released:.0f} s after the release"


def test_a_dead_runs_gpu_slot_is_freed_once_the_run_is_marked_finished(quantbias_home):
    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home()))
    run = create_run_for_test(instance, job_name="responses", status=DagsterRunStatus.STARTED)
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot("gpu", run.run_id, "responses").slot_status.value == "CLAIMED"

    def monitoring_tick() -> None:
        """One pass of the daemon's slot monitoring (it only needs the instance)."""
        list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger("test")))

    monitoring_tick()  # the run is still STARTED: its slot is in use
    assert storage.get_concurrency_info("gpu").claimed_slots != []
    instance.report_run_failed(run)  # what Terminate does for a run whose process is gone
    with freeze_time(time.time() + 31):
        monitoring_tick()
    assert storage.get_concurrency_info("gpu").claimed_slots == []


GPU_STEP_DEFINITIONS = """
import os, pathlib, time
import dagster as dg

@dg.asset(pool="gpu")
def model_step() -> None:
    pathlib.Path(os.environ["STEP_STARTED"]).write_text(str(os.getpid()))
    time.sleep(600)

defs = dg.Definitions(assets=[model_step])
"""


def test_a_killed_run_process_is_failed_by_run_monitoring_and_its_gpu_slot_freed(quantbias_home, tmp_path):
    """`kill -9` of a real `dagster asset materialize` holding the gpu slot; then what the
    daemon does by itself: run monitoring fails the run, slot monitoring frees the slot."""
    home = ensure_dagster_home()
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_launcher).__name__ == "LocalRunLauncher"
    code = tmp_path / "gpu_step.py"
    code.write_text(GPU_STEP_DEFINITIONS)
    started = tmp_path / "step-started"
    env = {**os.environ, "DAGSTER_HOME": str(home), "STEP_STARTED": str(started)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-f", str(code),
         "--select", "model_step"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not started.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert started.exists(), "the gpu step never started"
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED
        storage = instance.event_log_storage
        assert [slot.run_id for slot in storage.get_concurrency_info("gpu").claimed_slots] == [run.run_id]

        def monitoring_iteration() -> None:
            """One pass of the daemon's run monitoring (it needs the instance only)."""
            context = SimpleNamespace(instance=instance, create_request_context=lambda: None)
            errors = [error for error in execute_run_monitoring_iteration(context, logging.getLogger("test")) if error]
            assert errors == []

        monitoring_iteration()  # alive: left alone
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

        os.kill(process.pid, signal.SIGKILL)  # the run process; its step process may live on
        process.wait(timeout=30)
        monitoring_iteration()
        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == DagsterRunStatus.FAILURE
        [message] = [event.message for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
        assert f"the run's process {process.pid} is gone" in message

        list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger("test")))
        assert storage.get_concurrency_info("gpu").claimed_slots != []  # freed 30 s after the run's end
        with freeze_time(time.time() + 31):
            list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger("test")))
        assert storage.get_concurrency_info("gpu").claimed_slots == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the orphaned step process


def test_ensure_dagster_home_is_idempotent_and_keeps_user_settings(quantbias_home, monkeypatch):
    config_file = ensure_dagster_home() / "dagster.yaml"
    written = config_file.read_text()
    assert yaml.safe_load(written) == {
        "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}, "runs": {"max_concurrent_runs": 4}},
        "run_launcher": {"module": "quantbias_assets.instance", "class": "LocalRunLauncher"},
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 15,
            "max_resume_run_attempts": 0,
            "free_slots_after_run_end_seconds": 30,
        },
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }
    assert ensure_dagster_home() / "dagster.yaml" == config_file and config_file.read_text() == written

    # A machine with two accelerators: the user's limit stays, missing settings are added.
    config_file.write_text(yaml.safe_dump({"concurrency": {"pools": {"default_limit": 2}}}))
    ensure_dagster_home()
    assert yaml.safe_load(config_file.read_text()) == {
        "concurrency": {"pools": {"default_limit": 2, "granularity": "op"}, "runs": {"max_concurrent_runs": 4}},
        "run_launcher": {"module": "quantbias_assets.instance", "class": "LocalRunLauncher"},
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 15,
            "max_resume_run_attempts": 0,
            "free_slots_after_run_end_seconds": 30,
        },
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }
    instance = dg.DagsterInstance.from_config(str(config_file.parent))
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2

    # A limit set on the instance (`dagster instance concurrency set gpu 3`) is left alone.
    instance.event_log_storage.set_concurrency_slots("gpu", 3)
    ensure_dagster_home()
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 3

    # An explicit DAGSTER_HOME wins over $QUANTBIAS_HOME/dagster, and is exported to children.
    explicit = quantbias_home / "elsewhere"
    monkeypatch.setenv("DAGSTER_HOME", str(explicit))
    assert ensure_dagster_home() == explicit and (explicit / "dagster.yaml").is_file()


@pytest.mark.parametrize(
    ("own_settings", "expected_concurrency", "gpu_slots"),
    [
        # the deprecated spelling of the pools' default limit: no `pools` added next to it
        (
            {"concurrency": {"default_op_concurrency_limit": 2}},
            {"default_op_concurrency_limit": 2, "runs": {"max_concurrent_runs": 4}},
            2,
        ),
        # a run queue configured on the run coordinator: only the older spelling is allowed
        (
            {"run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                 "config": {"max_concurrent_runs": 2}}},
            {"default_op_concurrency_limit": 1},
            1,
        ),
    ],
)  # fmt: skip
def test_ensure_dagster_home_adds_nothing_dagster_would_refuse(
    quantbias_home, own_settings, expected_concurrency, gpu_slots
):
    config_file = quantbias_home / "dagster" / "dagster.yaml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text(yaml.safe_dump(own_settings))
    ensure_dagster_home()  # opens the instance: Dagster validates the whole file
    assert yaml.safe_load(config_file.read_text())["concurrency"] == expected_concurrency
    instance = dg.DagsterInstance.from_config(str(config_file.parent))
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == gpu_slots


def test_unreadable_dagster_yaml_names_the_file(quantbias_home):
    config_file = quantbias_home / "dagster" / "dagster.yaml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text("concurrency: [unclosed")
    with pytest.raises(ValueError, match=rf"{re.escape(str(config_file))}: not valid YAML"):
        ensure_dagster_home()
    assert config_file.read_text() == "concurrency: [unclosed"


def test_automation_sensor_runs_from_the_start_and_covers_every_condition(defs):
    wired = dg.Definitions(assets=list(defs.assets), sensors=[automation_sensor()], resources=defs.resources)
    sensors = {sensor.name: sensor for sensor in wired.get_repository_def().sensor_defs}
    assert "default_automation_condition_sensor" not in sensors  # Dagster's default starts STOPPED
    sensor = sensors["quantbias_automation"]
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.emit_backfills
    asset_graph = wired.resolve_asset_graph()
    with_condition = {key for key in asset_graph.materializable_asset_keys if asset_graph.get(key).automation_condition}
    assert len(with_condition) == 17 + 17 + 7 + 4 + 14 + 1  # all but checkpoint
    assert with_condition <= sensor.asset_selection.resolve(asset_graph)


# --- the demo leaves a quiet instance ------------------------------------------------------

DEMO_CLOSED, DEMO_OPEN = "CEB-Recognition-S", "CEB-Continuation-T"


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].asset_materialization


@pytest.mark.slow
def test_demo_leaves_a_quiet_instance_and_an_edited_question_refreshes_only_its_partition(
    quantbias_home, tmp_path, monkeypatch, tiny_model_dir, data_dir
):
    """`quantbias demo` (tiny model, one method, 1 question per axis); then what
    the daemon does: the observe schedule, the registry sensor, automation ticks: nothing. One
    edited question: its question table, then the one partition that answered it."""
    from quantbias_assets.demo import DemoOptions, run_demo

    files = tmp_path / "data"  # a copy, to edit one question
    shutil.copytree(data_dir, files, ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setenv("QUANTBIAS_DATA_DIR", str(files))
    assert run_demo(DemoOptions(model=str(tiny_model_dir), nickname="tiny-demo", methods=("none",), sample=1,
                                max_new_tokens=4, torch_threads=1)) == 0  # fmt: skip

    # Re-imported: an earlier test may have imported it under another QUANTBIAS_HOME, and its
    # resources (lake, model store) are built from the environment at import, as `dagster dev` does.
    definitions = importlib.reload(importlib.import_module("definitions"))
    defs = definitions.defs
    instance = dg.DagsterInstance.get()
    partition = str(pk("tiny-demo", "none"))
    rows_before = latest_materialization(instance, responses(DEMO_CLOSED), partition).metadata["rows"].value
    assert rows_before > 0
    observe = defs.resolve_job_def("observe_dataset_files")
    deployment = Deployment.__new__(Deployment)  # the demo's instance, evaluated as the daemon does
    deployment.defs, deployment.instance, deployment.cursor = defs, instance, None

    assert deployment.tick() == {}  # the automation sensor's first tick after `dagster dev` starts
    assert observe.execute_in_process(instance=instance).success  # the schedule, 15 minutes later
    assert deployment.tick() == {}
    assert tick(defs, instance).skip_message == "no new model in the registry"
    observation = instance.fetch_observations(dg.AssetKey(["dataset_files", DEMO_CLOSED]), limit=1).records[0]
    assert observation.asset_observation.metadata["files_hashed"].value == 0  # size + mtime unchanged

    # One question of the sample edited (the first record of an axis file).
    [edited] = sorted((files / "closed_datasets" / DEMO_CLOSED).glob("*.json"))[:1]
    records = json.loads(edited.read_text())
    records[0]["prompt"] = records[0]["prompt"] + " Please answer."
    edited.write_text(json.dumps(records))
    assert observe.execute_in_process(instance=instance).success
    observation = instance.fetch_observations(dg.AssetKey(["dataset_files", DEMO_CLOSED]), limit=1).records[0]
    assert observation.asset_observation.metadata["files_hashed"].value == 1
    assert deployment.tick() == {questions(DEMO_CLOSED): {None}}
    resources = defs.resources
    assert dg.materialize(
        list(defs.assets), selection=[questions(DEMO_CLOSED)], instance=instance, resources=resources
    ).success
    assert deployment.tick() == {responses(DEMO_CLOSED): {pk("tiny-demo", "none")}}

    # The refresh, as automation runs it (its backfill's tags), with the definitions' own settings
    # (full datasets): the demo's sample is kept, and only the edited question is re-scored.
    automation_tags = {"dagster/from_automation_condition": "true", "dagster/auto_materialize": "true"}

    def refresh(dataset: str) -> dict:
        assert dg.materialize(
            list(defs.assets), selection=[responses(dataset)], partition_key=partition, instance=instance,
            resources=resources, tags=automation_tags,
        ).success  # fmt: skip
        return latest_materialization(instance, responses(dataset), partition).metadata

    closed = refresh(DEMO_CLOSED)
    assert closed["rows"].value == rows_before and closed["new_rows"].value == 1
    assert closed["worker_settings"].value["sample_per_axis"] == 1
    assert deployment.tick() != {}  # the analysis follows the changed responses
    # nothing pending (the open dataset is unchanged): the worker never loads the model
    opened = refresh(DEMO_OPEN)
    assert opened["new_rows"].value == 0
    assert opened["versions"].value == {"engine": "hf", "model": "not loaded: nothing was pending"}
