"""The hf engine on the real SmolLM2-135M-Instruct (dequantized from its Q4_1 GGUF): choice
location and scoring with a real 49k-vocabulary byte-level BPE on real questions of every closed
dataset, against one full forward per choice; and a greedy answer whose content is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from smollm2 import imported_smollm2

from quantbias_assets.catalog.datasets import closed_datasets, load_dataset
from quantbias_assets.engines.base import GenerationSettings
from quantbias_assets.engines.hf import HFEngine
from quantbias_assets.prompts import build_choice_sequences, choice_separator, render_user_prompt
from quantbias_assets.scoring import choice_probabilities, chosen_index

pytestmark = pytest.mark.slow

QUESTIONS_PER_DATASET = 3


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = HFEngine(imported_smollm2(tmp_path_factory).folder, dtype="float32", torch_threads=1)
    yield engine
    engine.close()


def one_forward_per_choice(model, token_ids: tuple[int, ...], score_start: int) -> list[float]:
    """Independent reference: the whole sequence in one forward, log-softmax at every position."""
    with torch.inference_mode():
        logprobs = model(torch.tensor([token_ids])).logits[0].double().log_softmax(-1)
    return [logprobs[k - 1, token_ids[k]].item() for k in range(score_start, len(token_ids))]


def test_scoring_real_questions_of_every_closed_dataset_equals_one_forward_per_choice(engine, data_dir):
    tokenizer = engine.tokenizer
    assert len(tokenizer) == 49152
    scored_datasets = []
    for spec in closed_datasets():
        frame = load_dataset(spec, data_dir).frame
        if frame.is_empty():  # SocialStigmaQA has no file in the shared copy
            continue
        rows = frame.gather_every(max(1, frame.height // QUESTIONS_PER_DATASET)).head(QUESTIONS_PER_DATASET)
        prompts = [render_user_prompt(tokenizer, prompt) for prompt in rows["prompt"]]
        questions = [build_choice_sequences(tokenizer, p, c) for p, c in zip(prompts, rows["choices"])]
        scores = engine.score(questions, return_token_logprobs=True)
        for idx, prompt, choices, question, question_scores in zip(
            rows["idx"], prompts, rows["choices"], questions, scores
        ):
            sep = choice_separator(prompt)
            references = []
            for choice, sequence, score in zip(choices, question, question_scores):
                # the located choice tokens are the choice (the separator may ride on its first token)
                scored_text = tokenizer.decode(sequence.token_ids[sequence.score_start :])
                assert scored_text in (choice, sep + choice), (idx, scored_text, choice)
                assert (
                    tokenizer.decode(sequence.token_ids[: sequence.score_start]) + scored_text == prompt + sep + choice
                )
                reference = one_forward_per_choice(engine.model, sequence.token_ids, sequence.score_start)
                assert score.n_tokens == len(reference)
                np.testing.assert_allclose(score.token_logprobs, reference, atol=1e-4, err_msg=idx)
                references.append(reference)
            ours = choice_probabilities([s.sum_logprob for s in question_scores], [s.n_tokens for s in question_scores])
            theirs = choice_probabilities([sum(r) for r in references], [len(r) for r in references])
            np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=idx)
            assert chosen_index(ours) == chosen_index(theirs), idx
        scored_datasets.append(spec.name)
    assert len(scored_datasets) == len(closed_datasets()) - 1


def test_greedy_answer_names_paris_and_stops_at_im_end(engine):
    conversation = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    (answer,) = engine.generate([conversation], GenerationSettings(max_new_tokens=24, temperature=0.0))
    assert "Paris" in answer.text
    assert answer.finish_reason == "stop" and answer.n_new_tokens < 24  # <|im_end|> ends the reply
    assert "<|im_end|>" not in answer.text and "<|im_start|>" not in answer.text
