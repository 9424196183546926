"""The hf engine on an accelerator (CUDA) against the same engine on CPU in float32, the platform's
reference: same token ids, same prompts, every dtype and chunk size asked for.

A GPU machine here has torch and transformers but neither the datasets nor polars, so the check
runs in three steps, and only token ids, scores and replies travel:

    # here: questions of every local closed dataset and open-ended prompts, scored and answered on CPU
    .venv/bin/python bench/accelerator.py reference --model DIR --out ref.json [--per-dataset 100]
    # on the GPU machine: the same questions and prompts, per dtype x chunk size x attention block
    python bench/accelerator.py run --model DIR --reference ref.json --out run.json --device cuda \\
        --dtypes float32,bfloat16 --max-batch-tokens 1024,8192 --attention-blocks 64,0
    # here: how far each configuration's answers are from the CPU reference
    .venv/bin/python bench/accelerator.py compare ref.json run.json

`run` prints questions/s, new tokens/s and peak device memory per configuration; attention block 0
means one block per chunk (dense masked attention, no per-block calls). `compare` prints, per
configuration: the largest and median |d sum_logprob| against CPU float32, the share of questions
whose chosen answer and uncertainty bin are unchanged, and how many greedy replies are identical.
Figures are recorded in docs/scoring.md ("On a GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REFERENCE_SETTINGS = {"max_new_tokens": 64, "temperature": 0.0}
KNOWN_PROMPT = "What is the capital of France? Answer in one word."


def weights_sha256(model_dir: Path) -> str:
    """One digest over the folder's safetensors files: both machines must score the same weights."""
    from quantbias_assets.hashing import file_sha256

    return ",".join(file_sha256(path) for path in sorted(model_dir.glob("*.safetensors")))


def engine_for(model_dir: Path, device: str, dtype: str, threads: int, chunk: int = 1024, block: int | None = None):
    """block None: the engine's default for the device; 0: one block per chunk."""
    from quantbias_assets.engines.hf import HFEngine

    return HFEngine(
        model_dir,
        device=device,
        dtype=dtype,
        torch_threads=threads,
        max_batch_tokens=chunk,
        attention_block=chunk if block == 0 else block,
    )


def sequences_of(question: list[dict]):
    from quantbias_assets.engines.base import ChoiceSequence

    return [ChoiceSequence(tuple(s["token_ids"]), s["score_start"], s["n_chars"], s["n_bytes"]) for s in question]


def scores_json(scores) -> dict[str, list[list]]:
    return {
        "sum_logprob": [[choice.sum_logprob for choice in question] for question in scores],
        "n_tokens": [[choice.n_tokens for choice in question] for question in scores],
    }


def conversations_of(reference: dict) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": prompt}] for prompt in reference["prompts"]]


def build_reference(args: argparse.Namespace) -> None:
    """Questions of every local closed dataset and open prompts, scored and answered on CPU."""
    import dataclasses

    from generation import load_prompts

    from quantbias_assets.catalog.datasets import closed_datasets, load_dataset
    from quantbias_assets.engines.base import GenerationSettings
    from quantbias_assets.prompts import build_choice_sequences, render_user_prompt

    engine = engine_for(args.model, "cpu", "float32", args.threads)
    tokenizer = engine.tokenizer
    questions, labels = [], []
    for spec in closed_datasets():
        frame = load_dataset(spec, args.data_dir).frame
        if frame.is_empty():
            continue
        rows = frame.gather_every(max(1, frame.height // args.per_dataset)).head(args.per_dataset)
        for idx, prompt, choices in zip(rows["idx"], rows["prompt"], rows["choices"]):
            questions.append(build_choice_sequences(tokenizer, render_user_prompt(tokenizer, prompt), choices))
            labels.append(f"{spec.name}/{idx}")
    started = time.perf_counter()
    scores = engine.score(questions)
    score_seconds = time.perf_counter() - started
    prompts = [KNOWN_PROMPT, *load_prompts(args.data_dir, args.prompts, 1)[0]]
    reference = {
        "model_sha256": weights_sha256(args.model),
        "questions": [[dataclasses.asdict(s) for s in question] for question in questions],
        "labels": labels,
        "prompts": prompts,
        "generation": REFERENCE_SETTINGS,
    }
    started = time.perf_counter()
    replies = engine.generate(conversations_of(reference), GenerationSettings(**REFERENCE_SETTINGS))
    generate_seconds = time.perf_counter() - started
    reference["cpu"] = {
        **scores_json(scores),
        "replies": [dataclasses.asdict(reply) for reply in replies],
        "questions_per_s": len(questions) / score_seconds,
        "new_tokens_per_s": sum(reply.n_new_tokens for reply in replies) / generate_seconds,
        "versions": engine.versions(),
        "threads": args.threads,
    }
    args.out.write_text(json.dumps(reference))
    print(
        f"{len(questions)} questions of {len({label.split('/')[0] for label in labels})} closed datasets: "
        f"{reference['cpu']['questions_per_s']:.1f} questions/s on CPU ({args.threads} threads); {len(prompts)} "
        f"prompts: {reference['cpu']['new_tokens_per_s']:.1f} new tokens/s; written to {args.out}"
    )


def run_on_device(args: argparse.Namespace) -> None:
    """The reference's questions and prompts on `--device`, per dtype x chunk x attention block."""
    import dataclasses

    import torch

    from quantbias_assets.engines.base import GenerationSettings

    reference = json.loads(args.reference.read_text())
    same_weights = weights_sha256(args.model) == reference["model_sha256"]
    if not same_weights:  # still worth timing; `compare` says the scores cannot be compared
        print(f"{args.model}: WARNING: not the weights the reference was scored with", flush=True)
    questions = [sequences_of(question) for question in reference["questions"]]
    device = torch.device(args.device)
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    runs = []
    for dtype in args.dtypes.split(","):
        for chunk in map(int, args.max_batch_tokens.split(",")):
            for block in map(int, args.attention_blocks.split(",")):
                engine = engine_for(args.model, args.device, dtype, args.threads, chunk, block)
                engine.score(questions[:20])  # warm-up: kernels, allocator
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats(device)
                started = time.perf_counter()
                scores = engine.score(questions)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
                runs.append(
                    {
                        "dtype": dtype,
                        "max_batch_tokens": chunk,
                        "attention_block": engine.attention_block,
                        **scores_json(scores),
                        "questions_per_s": len(questions) / seconds,
                        "peak_memory_bytes": peak,
                        "versions": engine.versions(),
                    }
                )
                print(
                    f"{accelerator} {dtype} chunk {chunk} block {engine.attention_block}: "
                    f"{len(questions)} questions in {seconds:.2f} s = {len(questions) / seconds:.1f} questions/s, "
                    f"peak memory {peak / 2**20:.0f} MiB",
                    flush=True,
                )
                engine.close()
        engine = engine_for(args.model, args.device, dtype, args.threads)
        engine.generate(conversations_of(reference)[:1], GenerationSettings(max_new_tokens=4))  # warm-up
        started = time.perf_counter()
        replies = engine.generate(conversations_of(reference), GenerationSettings(**reference["generation"]))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        new_tokens = sum(reply.n_new_tokens for reply in replies)
        runs.append(
            {
                "dtype": dtype,
                "replies": [dataclasses.asdict(r) for r in replies],
                "new_tokens_per_s": new_tokens / seconds,
            }
        )
        print(f"{accelerator} {dtype} generation: {new_tokens} new tokens, {new_tokens / seconds:.1f}/s", flush=True)
        engine.close()
    args.out.write_text(json.dumps({"accelerator": accelerator, "same_weights": same_weights, "runs": runs}))


def compare(args: argparse.Namespace) -> None:
    """Each configuration of a device run against the CPU float32 reference."""
    import numpy as np

    from quantbias_assets.scoring import choice_probabilities, chosen_index, normalized_entropy, uncertainty_bin

    reference = json.loads(args.reference.read_text())
    run = json.loads(args.run.read_text())
    cpu = reference["cpu"]
    if not run["same_weights"]:
        raise SystemExit(f"{args.run}: scored other weights than {args.reference}; only its speeds mean anything")

    def answers(scores: dict) -> list[tuple[int, str]]:
        out = []
        for sums, lengths in zip(scores["sum_logprob"], scores["n_tokens"]):
            probs = choice_probabilities(sums, lengths)
            out.append((chosen_index(probs), uncertainty_bin(normalized_entropy(probs))))
        return out

    cpu_answers = answers(cpu)
    cpu_sums = [np.array(sums) for sums in cpu["sum_logprob"]]
    print(
        f"reference: CPU float32, {cpu['threads']} threads, {cpu['questions_per_s']:.1f} questions/s, "
        f"{cpu['new_tokens_per_s']:.1f} new tokens/s ({cpu['versions']['torch']})"
    )
    for config in run["runs"]:
        if "replies" in config:
            same = sum(a["text"] == b["text"] for a, b in zip(config["replies"], cpu["replies"]))
            print(
                f"{run['accelerator']} {config['dtype']} generation: {config['new_tokens_per_s']:.1f} new tokens/s; "
                f"{same} of {len(cpu['replies'])} greedy replies identical to CPU float32's; "
                f"reply to {KNOWN_PROMPT!r}: {config['replies'][0]['text']!r}"
            )
            continue
        gaps = np.concatenate([np.abs(np.array(s) - c) for s, c in zip(config["sum_logprob"], cpu_sums)])
        device_answers = answers(config)
        chosen = np.mean([a[0] == b[0] for a, b in zip(device_answers, cpu_answers)])
        binned = np.mean([a[1] == b[1] for a, b in zip(device_answers, cpu_answers)])
        print(
            f"{run['accelerator']} {config['dtype']} chunk {config['max_batch_tokens']} block "
            f"{config['attention_block']}: {config['questions_per_s']:.1f} questions/s "
            f"({config['questions_per_s'] / cpu['questions_per_s']:.1f}x CPU), peak "
            f"{config['peak_memory_bytes'] / 2**20:.0f} MiB; |d sum_logprob| vs CPU float32 max {gaps.max():.1e}, "
            f"median {np.median(gaps):.1e}; chosen answer unchanged {chosen:.1%}, "
            f"uncertainty bin unchanged {binned:.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    ref = verbs.add_parser("reference", help="score and answer on CPU (float32)")
    ref.add_argument("--model", type=Path, required=True)
    ref.add_argument("--out", type=Path, required=True)
    ref.add_argument("--per-dataset", type=int, default=100, help="closed questions per local dataset")
    ref.add_argument("--prompts", type=int, default=7, help="open-ended prompts, besides the known one")
    ref.add_argument("--threads", type=int, default=2)
    ref.add_argument("--data-dir", type=Path, default=Path(os.environ.get("QUANTBIAS_DATA_DIR", "../shared/datasets")))
    on_device = verbs.add_parser("run", help="the reference's questions and prompts on --device")
    on_device.add_argument("--model", type=Path, required=True)
    on_device.add_argument("--reference", type=Path, required=True)
    on_device.add_argument("--out", type=Path, required=True)
    on_device.add_argument("--device", default="cuda")
    on_device.add_argument("--dtypes", default="float32,bfloat16")
    on_device.add_argument("--max-batch-tokens", default="1024,8192")
    on_device.add_argument("--attention-blocks", default="64,0", help="0: one block per chunk")
    on_device.add_argument("--threads", type=int, default=None)
    against = verbs.add_parser("compare", help="a device run against the CPU reference")
    against.add_argument("reference", type=Path)
    against.add_argument("run", type=Path)
    args = parser.parse_args()
    {"reference": build_reference, "run": run_on_device, "compare": compare}[args.verb](args)


if __name__ == "__main__":
    main()
