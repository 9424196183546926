"""The blocking checks of the worker tables, as plain functions over small hand-made frames."""

from __future__ import annotations

import polars as pl

from quantbias_assets.assets.checks import (
    NO_BAD_ROWS,
    NO_FAILED_QUESTIONS,
    NO_FAILED_ROWS,
    ONE_ROW_PER_KEY,
    PROBABILITIES_SUM_TO_ONE,
    response_check_outcomes,
    verdict_check_outcomes,
)


def closed(rows: list[dict]) -> pl.DataFrame:
    base = dict(
        choice_sum_logprob=[-1.0, -2.0],
        choice_n_tokens=[1, 2],
        choice_n_chars=[3, 4],
        probs=[0.6, 0.4],
        chosen_idx=0,
        entropy_norm=0.97,
        question_hash="q",
        config_hash="c",
    )
    return pl.DataFrame([{**base, **row} for row in rows])


def outcomes_by_name(outcomes) -> dict[str, tuple[bool, dict]]:
    return {o.name: (o.passed, o.metadata) for o in outcomes}


def test_clean_closed_partition_passes_every_check() -> None:
    frame = closed([{"idx": "a", "question_hash": "q1"}, {"idx": "b", "question_hash": "q2"}])
    result = outcomes_by_name(response_check_outcomes(frame, style="closed", failed_questions=0))
    assert list(result) == [NO_FAILED_QUESTIONS, ONE_ROW_PER_KEY, NO_BAD_ROWS, PROBABILITIES_SUM_TO_ONE]
    assert all(passed for passed, _ in result.values())


def test_each_closed_rule_names_its_offending_rows() -> None:
    frame = closed(
        [
            {"idx": "dup-1", "question_hash": "q1"},
            {"idx": "dup-2", "question_hash": "q1"},  # same (question_hash, config_hash) as dup-1
            {"idx": "sum", "question_hash": "q3", "probs": [0.6, 0.5]},  # sums to 1.1
            {"idx": "short", "question_hash": "q4", "probs": [1.0]},  # one probability for two choices
            {"idx": "chosen", "question_hash": "q5", "chosen_idx": 2},  # no third choice
            {"idx": "entropy", "question_hash": "q6", "entropy_norm": float("nan")},
            {"idx": "logprob", "question_hash": "q7", "choice_sum_logprob": [0.5, -1.0]},  # log-prob > 0
        ]
    )
    result = outcomes_by_name(response_check_outcomes(frame, style="closed", failed_questions=3))
    assert result[NO_FAILED_QUESTIONS] == (False, {"failed_questions": 3})
    assert result[ONE_ROW_PER_KEY][1]["offending_idx_sample"] == "dup-1, dup-2"
    assert result[NO_BAD_ROWS][1]["offending_idx_sample"] == "short, chosen, entropy, logprob"
    assert result[NO_BAD_ROWS][1]["offending_rows"] == 4
    # [1.0] sums to 1: a short row is a bad row, not a probability-sum failure
    assert result[PROBABILITIES_SUM_TO_ONE][1]["offending_idx_sample"] == "sum"
    assert result[PROBABILITIES_SUM_TO_ONE][1]["rows"] == 7


def test_open_rows_need_a_reply_per_turn_and_the_last_one_as_response() -> None:
    frame = pl.DataFrame(
        {
            "idx": ["ok", "empty", "mismatch", "null"],
            "question_hash": ["1", "2", "3", "4"],
            "config_hash": ["c"] * 4,
            "turns_out": [["a", "b"], [], ["a", "b"], None],
            "response": ["b", None, "a", "x"],
        },
        schema_overrides={"turns_out": pl.List(pl.String)},
    )
    result = outcomes_by_name(response_check_outcomes(frame, style="open", failed_questions=0))
    assert list(result) == [NO_FAILED_QUESTIONS, ONE_ROW_PER_KEY, NO_BAD_ROWS]
    assert result[NO_BAD_ROWS] == (
        False,
        {"rows": 4, "offending_rows": 3, "offending_idx_sample": "empty, mismatch, null"},
    )


def test_verdict_rows_valid_says_safe_or_unsafe_invalid_says_neither() -> None:
    frame = pl.DataFrame(
        {
            "idx": ["safe", "unsafe", "invalid", "valid-no-answer", "invalid-with-answer", "dup"],
            "conversation_hash": ["1", "2", "3", "4", "5", "1"],
            "guard_config_hash": ["g"] * 6,
            "verdict_raw": ["safe", "unsafe\nS1", "???", "safe", "???", "safe"],
            "valid": [True, True, False, True, False, True],
            "is_safe": [True, False, None, None, True, True],
        }
    )
    result = outcomes_by_name(verdict_check_outcomes(frame, failed_rows=2, responses_without_question=1))
    assert result[NO_FAILED_ROWS] == (False, {"failed_rows": 2, "responses_without_question": 1})
    # an orphan response (its question edited away) is only counted, not a failure of the verdicts
    clean = outcomes_by_name(verdict_check_outcomes(frame.head(3), failed_rows=0, responses_without_question=1))
    assert clean[NO_FAILED_ROWS][0] and clean[NO_BAD_ROWS][0] and clean[ONE_ROW_PER_KEY][0]
    assert result[ONE_ROW_PER_KEY][1]["offending_idx_sample"] == "safe, dup"
    assert result[NO_BAD_ROWS][1]["offending_idx_sample"] == "valid-no-answer, invalid-with-answer"
