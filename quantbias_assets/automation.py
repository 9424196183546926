"""Automation, decided in one place: which assets refresh by themselves, and when.

- Dataset files are observed on a schedule; a new data version (content hash) makes the
  question table stale, and `eager` re-materializes it.
- Responses and verdicts re-run only the partitions that already exist, when an input (the
  question table, the checkpoint, the responses) changed. Thanks to content-addressed rows the
  workers then re-score only the changed questions. New partitions are never started by
  automation: a new model is a backfill, requested by `model_registry_sensor`.
- Only models the user registered (`quantbias models add`, the registry file) become `model`
  partitions, and they are backfilled at once. The paper's built-in models (up to 14B
  parameters, 60 runs) get a partition only when asked for, so the UI counts missing
  partitions of models someone wants, not of ten that nobody started.
- Analysis assets refresh after the response / verdict partitions they scan are updated, and
  read whichever partitions exist (missing ones do not hold them). dbt models and figures are
  eager; the dbt seed, which has no inputs, is built once when first seen missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import dagster as dg
from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG

from quantbias_assets import tables
from quantbias_assets.catalog.methods import BACKFILL_METHODS
from quantbias_assets.catalog.models import is_valid_nickname
from quantbias_assets.partitions import model_partitions, partition_key

# What a new model gets without anyone asking (the catalog's `backfill` field): the native
# model and the paper's 5 variants. BACKFILL_METHODS is imported from the catalog.

# The model worker assets: a backfill runs one partition per run, so each worker loads its
# model exactly once.
ONE_MODEL_LOAD_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def any_deps_changed() -> dg.AutomationCondition:
    """`any_deps_updated`, counting only updates that changed a data version.

    Every table reports its content as its data version (questions: the table's hash; responses
    and verdicts: their content-hash keys; checkpoints: their digest), so rebuilding the same
    questions, or a worker run that found nothing pending, refreshes nothing downstream.
    """
    return dg.AutomationCondition.any_deps_match(
        (
            dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target()
        ).with_label("data_version_changed_without_root")
        | dg.AutomationCondition.will_be_requested()
    ).with_label("any_deps_changed")


def refresh_existing_partitions() -> dg.AutomationCondition:
    """Re-run a partition that exists when the data of one of its inputs changed."""
    return (
        any_deps_changed().since_last_handled()
        & ~dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("refresh_existing_partitions")


# Partitioned tables that the assets below them scan across all their partitions, skipping what
# is absent: the model x method worker tables and the per-model analysis tables.
PER_MODEL_ANALYSIS = dg.AssetSelection.keys(list(tables.PAIRED_RESPONSES), list(tables.TEXT_PATTERNS))
SCANNED_LAKE_TABLES = (
    dg.AssetSelection.key_prefixes(tables.QUESTIONS, tables.RESPONSES, tables.VERDICTS) | PER_MODEL_ANALYSIS
)
QUESTION_TABLES = dg.AssetSelection.key_prefixes(tables.QUESTIONS)


def analysis_runs(model: str) -> tuple[tuple[str, dg.AssetSelection, str | None], ...]:
    """A model's analysis as (label, selection, partition key) runs, in order: its per-model
    tables run in its `model` partition, then everything that spans all models (bias tests,
    rankings, dbt marts, figures) runs unpartitioned; one run cannot hold both."""
    return (
        (f"{model}: paired responses, text patterns", PER_MODEL_ANALYSIS, model),
        (
            "bias tests, rankings, dbt marts, figures",
            dg.AssetSelection.groups(tables.ANALYSIS) - PER_MODEL_ANALYSIS,
            None,
        ),
    )


def refresh_over_existing_partitions() -> dg.AutomationCondition:
    """Eager for assets that scan every partition of the response tables, with two changes.

    - Absent tables and partitions do not block: an unpartitioned asset over partitioned ones
      counts as missing an input while ANY partition is missing, and most `model` x `method`
      partitions (the paper's models, the W8A8 methods) never exist on a given deployment.
    - A question table update alone does not trigger it: the response partitions it changes
      re-run first, and their updates trigger the analysis once, not twice.
    """
    return (
        any_deps_changed().ignore(QUESTION_TABLES).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().ignore(SCANNED_LAKE_TABLES)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("refresh_over_existing_partitions")


def build_once_when_missing() -> dg.AutomationCondition:
    """For an asset without inputs (a dbt seed): `eager` never builds it, and every asset
    below it would wait for it forever; build it once when first seen missing."""
    return (dg.AutomationCondition.missing().newly_true() & ~dg.AutomationCondition.in_progress()).with_label(
        "build_once_when_missing"
    )


def condition_for(key: dg.AssetKey, has_deps: bool = True) -> dg.AutomationCondition | None:
    top = key.path[0]
    if top == tables.CHECKPOINT:
        return None  # quantizing is explicit: a backfill or a click, never a side effect
    if top in (tables.RESPONSES, tables.VERDICTS):
        return refresh_existing_partitions()
    if top == tables.ANALYSIS:
        return refresh_over_existing_partitions()
    if not has_deps:
        return build_once_when_missing()
    return eager_over_existing_partitions()


def eager_over_existing_partitions() -> dg.AutomationCondition:
    """`eager`, except that an absent partition of a scanned table does not block: a mart over
    `analysis/paired_responses` would otherwise wait for every registered model's analysis."""
    return dg.AutomationCondition.eager().replace(
        "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(SCANNED_LAKE_TABLES)
    )


def with_automation(assets: Iterable[dg.AssetsDefinition | dg.AssetSpec]) -> Sequence:
    """Attach the automation condition of every asset, here and nowhere else."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = condition_for(spec.key, has_deps=bool(spec.deps))
        return spec if condition is None else spec.replace_attributes(automation_condition=condition)

    return dg.map_asset_specs(attach, list(assets))


WORKER_SETTINGS = "worker_settings"  # materialization metadata: the settings a worker ran with


def requested_by_automation(context: dg.AssetExecutionContext) -> bool:
    # runs of a backfill the automation sensor submitted carry the sensor's tags
    return context.run.tags.get(AUTOMATION_CONDITION_TAG) == "true"


def recorded_settings(context: dg.AssetExecutionContext) -> dict | None:
    """The settings the run's partition was last materialized with (any selected table)."""
    for key in sorted(context.selected_asset_keys, key=lambda key: key.to_user_string()):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
        ).records
        event = records[0].asset_materialization if records else None
        value = getattr(event.metadata.get(WORKER_SETTINGS), "value", None) if event else None
        if isinstance(value, dict):
            return value
    return None


def worker_settings(context: dg.AssetExecutionContext, configured: dict) -> dict:
    """What a model worker runs with, recorded on each materialization.

    A refresh requested by automation re-runs the partition with the settings it was built with
    (a sampled demo partition stays sampled, with its token budget and guard); any other run
    uses the resources as configured. Settings added since the recording take their configured
    value.
    """
    settings = dict(configured)
    if requested_by_automation(context):
        recorded = recorded_settings(context)
        if recorded is not None:
            settings.update(recorded)
            context.log.info("automation refresh: re-using the settings this partition was materialized with")
    for key in context.selected_asset_keys:
        context.add_asset_metadata({WORKER_SETTINGS: dg.MetadataValue.json(settings)}, asset_key=key)
    return settings


def automation_sensor(minimum_interval_seconds: int = 30) -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's condition, running from the start.

    Without it Dagster adds `default_automation_condition_sensor`, which starts STOPPED: nothing
    would refresh until someone turns it on in the UI. A tick's requests are submitted as one
    backfill, which runs them under each asset's backfill policy (one partition per worker run).
    """
    return dg.AutomationConditionSensorDefinition(
        "quantbias_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Refreshes question tables, existing response/verdict partitions, analysis and marts.",
    )


def observe_dataset_files_schedule(
    job: dg.UnresolvedAssetJobDefinition, cron: str = "*/15 * * * *"
) -> dg.ScheduleDefinition:
    """Observe the dataset files on a schedule (running by default: hashing files is cheap)."""
    return dg.ScheduleDefinition(
        name="observe_dataset_files_schedule",
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hash the benchmark's JSON files; a changed file refreshes its dataset.",
    )


def new_model_run_requests(
    models: Sequence[str], asset_keys: Sequence[dg.AssetKey], methods: Sequence[str] = BACKFILL_METHODS
) -> list[dg.RunRequest]:
    """One run per (model, method): checkpoint, then every response and verdict table."""
    return [
        dg.RunRequest(
            run_key=f"new-model:{model}:{method}",
            partition_key=partition_key(model, method),
            asset_selection=list(asset_keys),
            tags={"quantbias/model": model, "quantbias/method": method},
        )
        for model in models
        for method in methods
    ]


def build_model_registry_sensor(
    registered_models: Callable[[], Iterable[str]], asset_keys: Sequence[dg.AssetKey]
) -> dg.SensorDefinition:
    """A sensor on the model registry: a new nickname becomes a `model` partition and a backfill.

    `registered_models()` returns the nicknames the user registered (not the built-in paper
    models). Removing a model from the registry deletes nothing: its partitions and tables stay.
    """

    @dg.sensor(
        name="model_registry_sensor",
        # without a target the daemon rejects every run request the sensor returns
        target=dg.AssetSelection.assets(*asset_keys),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a `model` partition for each new registry entry and backfills it.",
    )
    def model_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        known = set(context.instance.get_dynamic_partitions(model_partitions.name))
        registered = set(registered_models())
        unsafe = sorted(name for name in registered - known if not is_valid_nickname(name))
        if unsafe:
            context.log.warning(f"not adding model partitions with invalid nicknames: {', '.join(map(repr, unsafe))}")
        new = sorted(registered - known - set(unsafe))
        if not new:
            return dg.SensorResult(skip_reason="no new model in the registry")
        context.log.info(f"new models in the registry: {', '.join(new)}")
        return dg.SensorResult(
            dynamic_partitions_requests=[model_partitions.build_add_request(new)],
            run_requests=new_model_run_requests(new, asset_keys),
        )

    return model_registry_sensor
