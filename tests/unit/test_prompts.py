"""The reference prompt rule and exact choice tokens, on the tiny byte-level BPE tokenizer."""

from __future__ import annotations

import copy

import pytest
from tokenizers import processors

from quantbias_assets.prompts import (
    ChoiceNotFound,
    build_choice_sequences,
    choice_separator,
    locate_choice,
    normalize_choice_text,
    render_user_prompt,
    template_hash,
)
from quantbias_assets.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(seed=0)


def reference_choice_start(tokenizer, token_ids, choice: str) -> int:
    """The reference's rule, independently: decode tokens backwards until the text equals the choice."""

    def norm(text: str) -> str:
        text = text.strip()
        return text[:-2] + "." if text.endswith(" .") else text

    text = ""
    for index in range(len(token_ids) - 1, -1, -1):
        text = tokenizer.decode([token_ids[index]]) + text
        if norm(text) == norm(choice):
            return index
    raise RuntimeError(choice)


def scored_text(tokenizer, sequence) -> str:
    return tokenizer.decode(list(sequence.token_ids[sequence.score_start :]))


def test_render_user_prompt_applies_chatml_template(tokenizer):
    rendered = render_user_prompt(tokenizer, "Who was it?\n\n")
    assert rendered == "<|im_start|>user\nWho was it?\n\n<|im_end|>\n<|im_start|>assistant\n"


def test_render_user_prompt_fallback_and_raw(tokenizer):
    without_template = copy.deepcopy(tokenizer)
    without_template.chat_template = None
    assert render_user_prompt(without_template, "Q?") == "User: Q?\n\nAssistant: "
    assert render_user_prompt(tokenizer, "Q? ", chat_template=False) == "Q? "


def test_choice_separator():
    assert choice_separator("assistant\n") == ""
    assert choice_separator("Assistant: ") == ""
    assert choice_separator("[/INST]") == " "
    assert choice_separator("") == " "


def test_normalize_choice_text():
    assert normalize_choice_text("  She is tall .  ") == "She is tall."
    assert normalize_choice_text("A . B") == "A . B"


def test_choice_after_newline_scores_exactly_the_choice_tokens(tokenizer):
    prompt = render_user_prompt(tokenizer, "Who was not comfortable using the phone?")
    sequences = build_choice_sequences(tokenizer, prompt, ["The grandfather", "The grandson", "Can't be determined"])
    for sequence, choice in zip(sequences, ["The grandfather", "The grandson", "Can't be determined"]):
        assert scored_text(tokenizer, sequence) == choice
        assert tokenizer.decode(list(sequence.token_ids)) == prompt + choice
        assert sequence.n_chars == len(choice)
    # The prompt part is tokenized identically in front of every choice.
    assert sequences[0].token_ids[: sequences[0].score_start] == sequences[1].token_ids[: sequences[1].score_start]


def test_space_separator_is_merged_into_the_first_choice_token(tokenizer):
    sequences = build_choice_sequences(tokenizer, "Answer:", ["yes", "no"])
    assert [scored_text(tokenizer, s) for s in sequences] == [" yes", " no"]


def test_separate_whitespace_token_before_choice_is_not_scored(tokenizer):
    # "\n" is its own pre-token; the two-space choice start yields a whitespace-only token.
    prompt = "Pick one\n"
    sequence = build_choice_sequences(tokenizer, prompt, ["  maybe"])[0]
    pieces = [tokenizer.decode([t]) for t in sequence.token_ids]
    assert scored_text(tokenizer, sequence) == " maybe"
    assert pieces[sequence.score_start - 1] == " "  # left out, as the reference does
    assert sequence.score_start == reference_choice_start(tokenizer, sequence.token_ids, "  maybe")


def test_trailing_spaces_inside_the_choice_are_scored(tokenizer):
    sequence = build_choice_sequences(tokenizer, "Q\n", ["The grandson "])[0]
    assert scored_text(tokenizer, sequence) == "The grandson "
    assert sequence.n_chars == 13


def test_curly_quotes_and_multibyte_characters(tokenizer):
    choices = ["She\u2019s not a \u201cfriend\u201d", "caf\u00e9 \u2615"]
    sequences = build_choice_sequences(tokenizer, "Q\n", choices)
    assert [scored_text(tokenizer, s) for s in sequences] == choices
    assert sequences[0].score_start == reference_choice_start(tokenizer, sequences[0].token_ids, choices[0])
    assert sequences[1].n_bytes == len("caf\u00e9 \u2615".encode()) == 9
    # The emoji is split into byte tokens; every one of them is scored.
    assert len(sequences[1].token_ids) - sequences[1].score_start >= 4


def test_space_dot_ending_is_normalised(tokenizer):
    choice = "He is a target ."
    sequence = build_choice_sequences(tokenizer, "Continue:", [choice])[0]
    assert scored_text(tokenizer, sequence) == " " + choice
    assert sequence.score_start == reference_choice_start(tokenizer, sequence.token_ids, choice)


def test_choice_that_is_a_prefix_of_another(tokenizer):
    prompt = render_user_prompt(tokenizer, "Is it toxic?")
    short, long = build_choice_sequences(tokenizer, prompt, ["No", "No, it's not toxic"])
    assert scored_text(tokenizer, short) == "No"
    assert scored_text(tokenizer, long) == "No, it's not toxic"
    assert short.score_start == long.score_start


def test_empty_choice_is_rejected_with_its_position(tokenizer):
    with pytest.raises(ChoiceNotFound, match=r"choice 1: choice '  '"):
        build_choice_sequences(tokenizer, "Q\n", ["yes", "  "])


def test_locate_choice_not_on_a_token_boundary():
    # "abc|def" as two tokens: "ef" starts inside a token, so no boundary matches it.
    with pytest.raises(ChoiceNotFound, match="'ef'"):
        locate_choice("abcdef", [(0, 3), (3, 6)], "ef")
    assert locate_choice("abcdef", [(0, 3), (3, 6)], "def") == 1


def test_trimmed_offsets_give_the_same_tokens(tokenizer):
    trimming = copy.deepcopy(tokenizer)
    trimming.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    prompt = render_user_prompt(tokenizer, "Who?")
    choices = ["  The grandfather ", "Can't be determined", "caf\u00e9 \u2615"]
    assert build_choice_sequences(trimming, prompt, choices) == build_choice_sequences(tokenizer, prompt, choices)


def test_add_special_tokens_reproduces_the_double_bos(tokenizer):
    with_bos = copy.deepcopy(tokenizer)
    with_bos.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]),
        ]
    )
    prompt = "<|endoftext|>" + render_user_prompt(tokenizer, "Who?")  # a template that emits BOS itself
    plain = build_choice_sequences(with_bos, prompt, ["Yes"])[0]
    double = build_choice_sequences(with_bos, prompt, ["Yes"], add_special_tokens=True)[0]
    assert plain.token_ids[0] == 0 and plain.token_ids[1] != 0
    assert double.token_ids[:2] == (0, 0)
    assert double.token_ids[1:] == plain.token_ids
    assert double.score_start == plain.score_start + 1


def test_template_hash_changes_with_the_template(tokenizer):
    other = copy.deepcopy(tokenizer)
    other.chat_template = tokenizer.chat_template.replace("assistant", "bot")
    assert len(template_hash(tokenizer)) == 64
    assert template_hash(tokenizer) == template_hash(copy.deepcopy(tokenizer))
    assert template_hash(other) != template_hash(tokenizer)


def test_matches_the_reference_rule_on_benchmark_choices(tokenizer, data_dir):
    import json

    checked = 0
    for path in sorted((data_dir / "closed_datasets").glob("*/*.json")):
        for record in json.loads(path.read_text())[:25]:
            prompt = render_user_prompt(tokenizer, record["prompt"])
            for sequence, choice in zip(
                build_choice_sequences(tokenizer, prompt, record["choices"]), record["choices"]
            ):
                assert sequence.score_start == reference_choice_start(tokenizer, sequence.token_ids, choice), (
                    f"{path}: {record['idx']}: {choice!r}"
                )
                checked += 1
    assert checked > 500


def test_template_date_is_pinned_unless_reference(tokenizer):
    import datetime

    dated = copy.deepcopy(tokenizer)
    # Llama-3.2's pattern: today's date unless the caller passes date_string.
    dated.chat_template = (
        '{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}'
        "Today Date: {{ date_string }}\n{{ messages[0]['content'] }}"
    )
    assert render_user_prompt(dated, "Q") == "Today Date: 26 Jul 2024\nQ"
    today = datetime.datetime.now().strftime("%d %b %Y")
    assert render_user_prompt(dated, "Q", date_string=None) == f"Today Date: {today}\nQ"
    # Templates without a date ignore it.
    assert render_user_prompt(tokenizer, "Q", date_string=None) == render_user_prompt(tokenizer, "Q")


def test_special_token_appended_after_the_choice_is_rejected(tokenizer):
    with_eos = copy.deepcopy(tokenizer)
    with_eos.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="$A <|im_end|>", special_tokens=[("<|im_end|>", 2)]),
        ]
    )
    assert build_choice_sequences(with_eos, "Q\n", ["Yes"])[0].token_ids[-1] != 2
    with pytest.raises(ChoiceNotFound, match="choice 0: choice 'Yes': the tokenizer adds a special token after it"):
        build_choice_sequences(with_eos, "Q\n", ["Yes"], add_special_tokens=True)
