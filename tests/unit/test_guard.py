"""Llama Guard conversations, context fitting, verdict parsing, config hash."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import polars as pl
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from quantbias_assets.guard import (
    JUDGE_INPUT_COLUMNS,
    VERDICT_SCHEMA,
    GuardConfig,
    Verdict,
    fit_conversation,
    guard_config_hash,
    guard_conversation,
    is_safe_reference,
    judge_inputs,
    parse_verdict,
    rendered_length,
    verdict_counts,
    verdict_rows,
)

INVALID = Verdict(is_safe=None, categories=(), valid=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\nsafe", Verdict(True, (), True)),
        ("\n\nunsafe\nS10", Verdict(False, ("S10",), True)),
        ("unsafe\nS1,S10", Verdict(False, ("S1", "S10"), True)),
        ("unsafe\n S3 , s14 ", Verdict(False, ("S3", "S14"), True)),
        ("unsafe", Verdict(False, (), True)),
        ("Safe\n", Verdict(True, (), True)),
        ("", INVALID),
        ("   \n\n", INVALID),
        ("garbage <|im_end|> tokens", INVALID),
        ("the reply is unsafe", INVALID),
        ("safe\nS1", INVALID),
        ("unsafe\nS15", INVALID),
        ("unsafe\nS1,violence", INVALID),
        ("unsafe\nS1\nextra", INVALID),
    ],
)
def test_parse_verdict(text: str, expected: Verdict) -> None:
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\nsafe", True),
        ("\n\nunsafe\nS10", False),
        ("unsafe\nS1,S10", False),
        ("", True),
        ("garbage", True),
        ("safe, not unsafe", False),
    ],
)
def test_is_safe_reference(text: str, expected: bool) -> None:
    assert is_safe_reference(text) is expected


def test_single_turn_conversation() -> None:
    conversation = guard_conversation(
        dataset="CEB-Continuation-S", prompt="Q?", turns=None, turns_out=["A."], response="A."
    )
    assert conversation == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]


def test_empty_response_is_an_empty_assistant_turn() -> None:
    conversation = guard_conversation(dataset="BiasLens-GenWhy", prompt="Why?", turns=None, turns_out=[""], response="")
    assert conversation[1] == {"role": "assistant", "content": ""}


FMT_TURNS = [f"u{k}" for k in range(5)]
FMT_REPLIES = [f"r{k}" for k in range(5)]


def test_fmt_judges_only_the_last_turn_by_default() -> None:
    conversation = guard_conversation(
        dataset="FMT10K-IM-S", prompt=None, turns=FMT_TURNS, turns_out=FMT_REPLIES, response="r4"
    )
    assert conversation == [
        {"role": "user", "content": "u4"},
        {"role": "assistant", "content": "r4"},
    ]


def test_fmt_full_conversation() -> None:
    conversation = guard_conversation(
        dataset="FMT10K-IM-T",
        prompt=None,
        turns=FMT_TURNS,
        turns_out=FMT_REPLIES,
        response="r4",
        judge_full_conversation=True,
    )
    assert [m["role"] for m in conversation] == ["user", "assistant"] * 5
    assert [m["content"] for m in conversation] == ["u0", "r0", "u1", "r1", "u2", "r2", "u3", "r3", "u4", "r4"]


def test_conversation_errors_name_dataset_and_field() -> None:
    with pytest.raises(ValueError, match="CEB-Conversation-T: prompt"):
        guard_conversation(dataset="CEB-Conversation-T", prompt=None, turns=None, turns_out=["x"], response="x")
    with pytest.raises(ValueError, match="FMT10K-IM-S: turns: 5 user turns but 4 replies"):
        guard_conversation(
            dataset="FMT10K-IM-S",
            prompt=None,
            turns=FMT_TURNS,
            turns_out=FMT_REPLIES[:4],
            response="r3",
        )


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """A real fast tokenizer with one token per whitespace word, so lengths are countable by hand:
    a message renders as `[role] <words> [end]` and the generation prompt as `[assistant]`."""
    words = "[user] [assistant] [end] a b c d e f g h i j w".split()
    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(words)}}
    model = models.WordLevel(vocab=vocab, unk_token="[UNK]")
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end] {% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    return tokenizer


def _user_reply(reply_words: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "a b c"},
        {"role": "assistant", "content": " ".join(["w"] * reply_words)},
    ]


def test_rendered_length_counts_template_tokens(word_tokenizer: PreTrainedTokenizerFast) -> None:
    # (1 + 3 + 1) + (1 + 40 + 1) + 1
    assert rendered_length(word_tokenizer, _user_reply(40)) == 48


def test_fitting_conversation_is_untouched(word_tokenizer: PreTrainedTokenizerFast) -> None:
    fitted, truncated = fit_conversation(word_tokenizer, _user_reply(12), 20)
    assert fitted == _user_reply(12)
    assert truncated is False


def test_long_reply_is_cut_to_the_longest_fitting_prefix(
    word_tokenizer: PreTrainedTokenizerFast,
) -> None:
    # 8 template/prompt tokens + 12 reply words = 20
    fitted, truncated = fit_conversation(word_tokenizer, _user_reply(500), 20)
    assert truncated is True
    assert fitted == _user_reply(12)


def test_earlier_messages_are_cut_oldest_first(word_tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = [
        {"role": "user", "content": "a b c"},
        {"role": "assistant", "content": "d e"},
        {"role": "user", "content": "f g"},
        {"role": "assistant", "content": "h i j"},
    ]
    # 5 + 4 + 4 + 5 + 1 = 19 tokens; to reach 12: the last reply goes (16), then the first user
    # turn (13), then one word of the second message (12).
    fitted, truncated = fit_conversation(word_tokenizer, conversation, 12)
    assert truncated is True
    assert [m["content"] for m in fitted] == ["", "d", "f g", ""]


def test_template_alone_too_long_is_an_error(word_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="raise max_model_len"):
        fit_conversation(word_tokenizer, _user_reply(3), 4)  # needs 5 with both messages empty


def test_guard_config_hash_is_sha256_of_canonical_json() -> None:
    config = GuardConfig(
        model_identity="meta-llama/Llama-Guard-3-8B@main",
        chat_template_hash="abc",
        backend="vllm",
        dtype="bfloat16",
    )
    by_hand = {
        "backend": "vllm",
        "chat_template_hash": "abc",
        "dtype": "bfloat16",
        "judge_full_conversation": False,
        "max_model_len": 4096,
        "max_new_tokens": 100,
        "model_identity": "meta-llama/Llama-Guard-3-8B@main",
        "parse_rule_version": 1,
    }
    canonical = json.dumps(by_hand, sort_keys=True, separators=(",", ":"))
    assert guard_config_hash(config) == hashlib.sha256(canonical.encode()).hexdigest()
    full = GuardConfig(**{**by_hand, "judge_full_conversation": True})
    assert guard_config_hash(full) != guard_config_hash(config)


def _canonical_sha256(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _responses(rows: list[tuple[str, str | None, int]]) -> pl.DataFrame:
    """(idx, response, created_at second) rows of one partition of an open responses table."""
    return pl.DataFrame(
        {
            "model": ["tiny"] * len(rows),
            "method": ["none"] * len(rows),
            "idx": [idx for idx, _, _ in rows],
            "axis": ["age"] * len(rows),
            "response": [response for _, response, _ in rows],
            "turns_out": [[response] for _, response, _ in rows],
            "response_hash": [f"h-{idx}-{response}" for idx, response, _ in rows],
            "created_at": [datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC) for *_, second in rows],
        }
    )


def test_judge_inputs_single_turn() -> None:
    questions = pl.DataFrame({"idx": ["q1", "q2", "q3", "q4"], "prompt": ["same?", "other?", "same?", "empty?"]})
    # q2 has an old and a new row (killed respond run): the newest is judged; q9 has no question
    responses = _responses(
        [("q2", "old", 1), ("q1", "yes", 0), ("q2", "new", 2), ("q3", "yes", 0), ("q9", "x", 0), ("q4", None, 0)]
    )
    inputs, errors = judge_inputs(questions, responses, dataset="CEB-Continuation-S")
    assert errors == ["responses/CEB-Continuation-S: record q9: idx: no such question in questions/CEB-Continuation-S"]
    assert inputs.columns == list(JUDGE_INPUT_COLUMNS)
    assert inputs["idx"].to_list() == ["q1", "q2", "q3", "q4"]
    assert inputs["response_hash"].to_list() == ["h-q1-yes", "h-q2-new", "h-q3-yes", "h-q4-None"]
    conversations = [
        [{"role": "user", "content": "same?"}, {"role": "assistant", "content": "yes"}],
        [{"role": "user", "content": "other?"}, {"role": "assistant", "content": "new"}],
        [{"role": "user", "content": "same?"}, {"role": "assistant", "content": "yes"}],
        [{"role": "user", "content": "empty?"}, {"role": "assistant", "content": ""}],
    ]
    assert [json.loads(c) for c in inputs["conversation"]] == conversations
    expected_hashes = [_canonical_sha256([idx, c]) for idx, c in zip(["q1", "q2", "q3", "q4"], conversations)]
    assert inputs["conversation_hash"].to_list() == expected_hashes
    # the same prompt and reply under two idx keep two distinct keys
    assert expected_hashes[0] != expected_hashes[2]


def test_judge_inputs_fmt_last_turn_and_full() -> None:
    questions = pl.DataFrame(
        {"idx": ["f1"], "prompt": [None], "turns": [FMT_TURNS]}, schema_overrides={"prompt": pl.String}
    )
    responses = _responses([("f1", "r4", 0)]).with_columns(turns_out=pl.Series([FMT_REPLIES]))
    last, _ = judge_inputs(questions, responses, dataset="FMT10K-IM-S")
    assert json.loads(last["conversation"][0]) == [
        {"role": "user", "content": "u4"},
        {"role": "assistant", "content": "r4"},
    ]
    full, _ = judge_inputs(questions, responses, dataset="FMT10K-IM-S", judge_full_conversation=True)
    assert len(json.loads(full["conversation"][0])) == 10
    assert full["conversation_hash"][0] != last["conversation_hash"][0]


def test_verdict_rows_and_counts() -> None:
    inputs = pl.DataFrame({column: [f"{column}{i}" for i in range(4)] for column in JUDGE_INPUT_COLUMNS})
    created = datetime(2026, 1, 2, tzinfo=UTC)
    rows = verdict_rows(
        inputs,
        ["\n\nsafe", "\n\nunsafe\nS10", "unsafe\nS1,S10", "<|im_start|> the"],
        [False, True, False, True],
        guard_config_hash="g",
        engine="hf",
        created_at=created,
    )
    assert rows.schema == VERDICT_SCHEMA
    assert rows["idx"].to_list() == ["idx0", "idx1", "idx2", "idx3"]
    assert rows["valid"].to_list() == [True, True, True, False]
    assert rows["is_safe"].to_list() == [True, False, False, None]
    assert rows["is_safe_reference"].to_list() == [True, False, False, True]
    assert rows["categories"].to_list() == [[], ["S10"], ["S1", "S10"], []]
    assert rows["guard_config_hash"].unique().to_list() == ["g"]
    assert rows["created_at"].unique().to_list() == [created]
    assert verdict_counts(rows) == {"safe": 1, "unsafe": 2, "invalid": 1, "truncated": 2}


def test_guard_resource_extras() -> None:
    from resources.guard import GuardEngineConfig, GuardResource

    hf = GuardResource(model="/models/guard", engine=GuardEngineConfig(torch_threads=1)).to_extras()
    assert hf == {
        "guard_model": "/models/guard",
        "guard_revision": None,
        "backend": "hf",
        "engine_config": {"device": "cpu", "dtype": "bfloat16", "torch_threads": 1},
        "max_model_len": 4096,
        "max_new_tokens": 100,
        "judge_full_conversation": False,
        "chunk_rows": 256,
    }
    vllm = GuardResource(engine=GuardEngineConfig(backend="vllm", max_model_len=8192)).to_extras()
    assert vllm["guard_model"] == "meta-llama/Llama-Guard-3-8B"
    assert vllm["engine_config"] == {
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "gpu_memory_utilization": 0.85,
        "tensor_parallel_size": 1,
        "enforce_eager": False,
    }
