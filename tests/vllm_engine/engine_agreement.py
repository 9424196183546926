"""The check both vLLM test files make: vLLM and the hf engine score every choice alike."""

from __future__ import annotations

import numpy as np

from quantbias_assets.scoring import choice_probabilities, chosen_index

TOLERANCE = 1e-4


def assert_engines_agree(rows: list[dict], vllm_scores: list, hf_scores: list) -> set[str]:
    """Per choice: token counts and per-token log-probs; per question: probabilities and the
    chosen option. Returns the datasets seen."""
    datasets_seen = set()
    for row, vllm_question, hf_question in zip(rows, vllm_scores, hf_scores, strict=True):
        datasets_seen.add(row["dataset"])
        for vllm_choice, hf_choice in zip(vllm_question, hf_question, strict=True):
            assert vllm_choice.n_tokens == hf_choice.n_tokens
            np.testing.assert_allclose(
                vllm_choice.token_logprobs, hf_choice.token_logprobs, atol=TOLERANCE, err_msg=row["idx"]
            )
        vllm_probs = choice_probabilities([c.sum_logprob for c in vllm_question], [c.n_tokens for c in vllm_question])
        hf_probs = choice_probabilities([c.sum_logprob for c in hf_question], [c.n_tokens for c in hf_question])
        np.testing.assert_allclose(vllm_probs, hf_probs, atol=TOLERANCE, err_msg=row["idx"])
        assert chosen_index(vllm_probs) == chosen_index(hf_probs), row["idx"]
    return datasets_seen
