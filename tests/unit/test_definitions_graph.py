"""Snapshot of the asset graph of `definitions.defs` (as in dagster-open-platform).

The expected graph is written out here by hand from docs/schemas.md and the design's asset
table: a change to keys, groups, partitions, dependencies, pools, code versions or automation
shows up as a failing test, to be reviewed and copied here on purpose.
"""

from __future__ import annotations

import re

import dagster as dg
import pytest

CLOSED = (
    "BBQ", "BiasLens-Choices", "CEB-Adult", "CEB-Credit", "CEB-Jigsaw", "CEB-Recognition-S",
    "CEB-Recognition-T", "IAT", "SocialStigmaQA", "StereoSet-Intersentence",
)  # fmt: skip
OPEN = (
    "BiasLens-GenWhy", "CEB-Continuation-S", "CEB-Continuation-T", "CEB-Conversation-S",
    "CEB-Conversation-T", "FMT10K-IM-S", "FMT10K-IM-T",
)  # fmt: skip
DATASETS = CLOSED + OPEN
MARTS = (
    "bits_and_size_summary", "fig3a_significance_by_dataset", "fig3c_flips_by_significance",
    "fig4a_significance_by_method", "fig4b_significance_by_model", "fig4c_model_rankings",
    "fig5a_flips_per_question", "fig5b_bbq_group_asymmetry", "group_asymmetry_by_dataset",
    "quantization_methods", "stg_bias_tests", "stg_paired_responses", "table1_uncertainty_bins",
    "uncertainty_flip_ratio",
)  # fmt: skip
METHODS = ("none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16", "rtn-w8a8", "sq-rtn-w8a8")
MODEL_X_METHOD = f"model(dynamic 'model') x method{METHODS}"
PER_MODEL = "model(dynamic 'model')"
DBT_CODE_VERSION = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # dagster-dbt: sha1 of the SQL, sha256 of a seed


def row(group, partitions=None, code_version=None, automation=None, pools=(), backfill=None) -> dict:
    return {
        "group": group,
        "partitions": partitions,
        "code_version": code_version,
        "automation": automation,
        "pools": set(pools),
        "backfill": backfill,
    }


ONE_PARTITION_PER_RUN = "multi_run(max_partitions_per_run=1)"
EXPECTED: dict[str, dict] = {
    **{f"dataset_files/{name}": row("datasets") for name in DATASETS},
    **{f"questions/{name}": row("datasets", None, "questions-v1", "eager") for name in DATASETS},
    "checkpoint": row("checkpoints", MODEL_X_METHOD, "1", None, ["gpu"], ONE_PARTITION_PER_RUN),
    **{
        f"responses/{name}": row(
            "responses", MODEL_X_METHOD, "1", "refresh_existing_partitions", ["gpu"], ONE_PARTITION_PER_RUN
        )
        for name in DATASETS
    },
    **{
        f"verdicts/{name}": row(
            "verdicts", MODEL_X_METHOD, "1", "refresh_existing_partitions", ["gpu"], ONE_PARTITION_PER_RUN
        )
        for name in OPEN
    },
    "analysis/paired_responses": row("analysis", PER_MODEL, "paired-responses-v2", "refresh_over_existing_partitions"),
    "analysis/bias_tests": row("analysis", None, "bias-tests-v1", "refresh_over_existing_partitions"),
    "analysis/model_rankings": row("analysis", None, "model-rankings-v1", "refresh_over_existing_partitions"),
    "analysis/text_patterns": row("analysis", PER_MODEL, "text-patterns-v2", "refresh_over_existing_partitions"),
    **{f"marts/{name}": row("analysis", None, "<dbt>", "eager") for name in MARTS},
    "reports/paper_figures": row("analysis", None, "2", "eager"),  # 2: figures embedded in metadata
}
EXPECTED["marts/quantization_methods"]["automation"] = "build_once_when_missing"


def partitions_label(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"model(dynamic '{partitions_def.name}')"
    assert isinstance(partitions_def, dg.MultiPartitionsDefinition), partitions_def
    dims = {dim.name: dim.partitions_def for dim in partitions_def.partitions_defs}
    assert set(dims) == {"model", "method"}
    model, method = dims["model"], dims["method"]
    assert isinstance(model, dg.DynamicPartitionsDefinition) and isinstance(method, dg.StaticPartitionsDefinition)
    return f"model(dynamic '{model.name}') x method{tuple(method.get_partition_keys())}"


def backfill_label(policy: dg.BackfillPolicy | None) -> str | None:
    if policy is None:
        return None
    return f"{policy.policy_type.value.lower()}(max_partitions_per_run={policy.max_partitions_per_run})"


def snapshot(defs: dg.Definitions) -> dict[str, dict]:
    asset_graph = defs.resolve_asset_graph()
    result = {}
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        code_version = node.code_version
        if key.path[0] == "marts" and code_version and DBT_CODE_VERSION.match(code_version):
            code_version = "<dbt>"
        result[key.to_user_string()] = row(
            node.group_name,
            partitions_label(node.partitions_def),
            code_version,
            node.automation_condition.get_label() if node.automation_condition else None,
            node.pools or (),
            backfill_label(node.backfill_policy),
        )
    return result


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    import definitions

    return definitions.defs


def test_asset_keys(defs):
    keys = set(snapshot(defs))
    assert len(EXPECTED) == 17 + 17 + 1 + 17 + 7 + 4 + 14 + 1
    assert sorted(keys - set(EXPECTED)) == [] and sorted(set(EXPECTED) - keys) == []


def test_every_asset_matches_the_snapshot(defs):
    actual = snapshot(defs)
    differences = {key: (actual[key], expected) for key, expected in EXPECTED.items() if actual.get(key) != expected}
    assert differences == {}


def test_every_computed_asset_has_a_code_version(defs):
    asset_graph = defs.resolve_asset_graph()
    missing = [key for key in asset_graph.materializable_asset_keys if not asset_graph.get(key).code_version]
    assert missing == []
    observable = {key.path[0] for key in asset_graph.get_all_asset_keys() if asset_graph.get(key).is_observable}
    assert observable == {"dataset_files"}


def test_dependencies_of_worker_and_analysis_assets(defs):
    asset_graph = defs.resolve_asset_graph()
    key = dg.AssetKey.from_user_string

    def parents(name: str) -> set[str]:
        return {parent.to_user_string() for parent in asset_graph.get(key(name)).parent_keys}

    assert parents("checkpoint") == set()
    for name in DATASETS:
        assert parents(f"questions/{name}") == {f"dataset_files/{name}"}
        assert parents(f"responses/{name}") == {f"questions/{name}", "checkpoint"}
        # the same (model, method) checkpoint; every response partition reads the whole question table
        assert isinstance(
            asset_graph.get_partition_mapping(key(f"responses/{name}"), key("checkpoint")),
            dg.IdentityPartitionMapping,
        )
    for name in OPEN:
        assert parents(f"verdicts/{name}") == {f"responses/{name}"}
        assert isinstance(
            asset_graph.get_partition_mapping(key(f"verdicts/{name}"), key(f"responses/{name}")),
            dg.IdentityPartitionMapping,
        )
    assert parents("analysis/paired_responses") == (
        {f"questions/{name}" for name in DATASETS}
        | {f"responses/{name}" for name in DATASETS}
        | {f"verdicts/{name}" for name in OPEN}
    )
    # one model's analysis reads every method partition of that model
    for table in ("responses/BBQ", "verdicts/FMT10K-IM-S"):
        mapping = asset_graph.get_partition_mapping(key("analysis/paired_responses"), key(table))
        assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
        assert mapping.partition_dimension_name == "model"
    assert isinstance(
        asset_graph.get_partition_mapping(key("analysis/bias_tests"), key("analysis/paired_responses")),
        dg.AllPartitionMapping,
    )
    assert parents("analysis/bias_tests") == {"analysis/paired_responses"}
    assert parents("analysis/model_rankings") == {"analysis/paired_responses"}
    assert parents("analysis/text_patterns") == {f"responses/{name}" for name in OPEN}
    assert parents("marts/stg_paired_responses") == {"analysis/paired_responses", "marts/quantization_methods"}
    assert parents("marts/stg_bias_tests") == {"analysis/bias_tests", "marts/quantization_methods"}
    assert parents("marts/fig4c_model_rankings") == {"analysis/model_rankings"}
    assert parents("reports/paper_figures") == {
        f"marts/{name}"
        for name in (
            "fig3a_significance_by_dataset",
            "fig3c_flips_by_significance",
            "fig4a_significance_by_method",
            "fig4b_significance_by_model",
            "fig4c_model_rankings",
            "fig5a_flips_per_question",
            "fig5b_bbq_group_asymmetry",
            "table1_uncertainty_bins",
            "uncertainty_flip_ratio",
            "stg_bias_tests",
            "stg_paired_responses",
        )
    }


def test_schedule_sensor_and_job(defs):
    schedule = defs.resolve_schedule_def("observe_dataset_files_schedule")
    assert (schedule.cron_schedule, schedule.default_status, schedule.job_name) == (
        "*/15 * * * *",
        dg.DefaultScheduleStatus.RUNNING,
        "observe_dataset_files",
    )
    [job] = [job for job in defs.jobs if job.name == "observe_dataset_files"]
    observed = job.selection.resolve(defs.resolve_asset_graph())
    assert {key.to_user_string() for key in observed} == {f"dataset_files/{name}" for name in DATASETS}
    sensor = defs.resolve_sensor_def("model_registry_sensor")
    assert (sensor.default_status, sensor.minimum_interval_seconds) == (dg.DefaultSensorStatus.RUNNING, 30)


def test_steps_run_in_their_run_process(defs):
    # a process per step costs an import of the code location; model work runs in Pipes workers
    assert defs.executor.name == "in_process"
    assert defs.resolve_job_def("observe_dataset_files").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"
