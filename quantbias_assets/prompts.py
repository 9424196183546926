"""The reference prompt rule and the exact choice tokens (spec reference_inference.md §2.1, §3.1).

A closed-ended question is rendered as one user message through the tokenizer's chat template
(no system prompt, generation prompt added); each choice is appended after a space unless the
rendered text already ends in whitespace. The FULL `prompt + sep + choice` string is tokenized,
and the choice's scored tokens are located with the tokenizer's character offsets by the
reference's rule: walking back from the last token, the first token from which the remaining
text equals the choice (both stripped, a final " ." read as ".") starts the choice. So
whitespace merged into the first choice token is scored, a separate whitespace-only token
before it is not, and trailing spaces inside the choice are scored.

The reference decodes single tokens instead of slicing the text; the two agree except where a
byte-level token holds only part of a multi-byte character (decoding it gives U+FFFD). Here
such a character is scored whole (all its tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from quantbias_assets.engines.base import PINNED_TEMPLATE_DATE, ChoiceSequence

FALLBACK_TEMPLATE = "User: {prompt}\n\nAssistant: "


def prompt_rule_version(date_string: str = PINNED_TEMPLATE_DATE) -> str:
    """Enters config_hash. Bump `v1` when the rule that turns (prompt, choice) into scored
    tokens changes; the template date changes Llama-3.2 prompts, so it is part of it."""
    return f"reference-v1;date_string={date_string}"


PROMPT_RULE_VERSION = prompt_rule_version()


class ChoiceNotFound(ValueError):
    """The choice text cannot be matched to whole tokens at the end of prompt + sep + choice."""


def render_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, date_string: str | None = PINNED_TEMPLATE_DATE
) -> str:
    """Chat messages through the tokenizer's chat template, with the generation prompt."""
    extra = {} if date_string is None else {"date_string": date_string}
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True, **extra)


def render_user_prompt(
    tokenizer: Any, prompt: str, *, chat_template: bool = True, date_string: str | None = PINNED_TEMPLATE_DATE
) -> str:
    """The text the model continues: the chat template over one user turn, or the raw prompt.

    chat_template=False gives the raw prompt (the reference's open-ended era-1 runs). A tokenizer
    without a template gets the reference's fallback "User: ...\\n\\nAssistant: ".
    """
    if not chat_template:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        return FALLBACK_TEMPLATE.format(prompt=prompt)
    return render_conversation(tokenizer, [{"role": "user", "content": prompt}], date_string=date_string)


def choice_separator(text: str) -> str:
    """ " " between the rendered prompt and the choice, unless the prompt ends in whitespace."""
    return "" if text[-1:].isspace() else " "


def normalize_choice_text(text: str) -> str:
    """The reference's comparison key: stripped, and a final " ." (malformed StereoSet) as "."."""
    text = text.strip()
    return text[:-2] + "." if text.endswith(" .") else text


def _token_starts(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Character start of each token, including whitespace a tokenizer may trim from its offsets."""
    starts = []
    previous_end = 0
    for start, end in offsets:
        if previous_end < start and text[previous_end:start].isspace():
            start = previous_end
        starts.append(start)
        previous_end = max(previous_end, end)
    return starts


def locate_choice(text: str, offsets: Sequence[tuple[int, int]], choice: str) -> int:
    """Index of the first scored token of `choice` at the end of `text` (the reference rule).

    offsets are the tokenizer's (start, end) character spans; added special tokens have empty
    spans and are never part of a choice.
    """
    target = normalize_choice_text(choice)
    if not target:
        raise ChoiceNotFound(f"choice {choice!r}: empty after stripping whitespace")
    if len(offsets) > 1 and tuple(offsets[-1]) == (0, 0):
        # An added special token (e.g. EOS) after the choice would be scored as part of it.
        raise ChoiceNotFound(f"choice {choice!r}: the tokenizer adds a special token after it")
    starts = _token_starts(text, offsets)
    for index in range(len(offsets) - 1, -1, -1):
        start, end = offsets[index]
        if end <= start:
            continue
        tail = text[starts[index] :]
        if normalize_choice_text(tail) == target:
            # Tokens holding the other bytes of the same (multi-byte) character belong to it too.
            while index > 0 and starts[index - 1] == starts[index] and offsets[index - 1][1] > offsets[index - 1][0]:
                index -= 1
            return index
        if len(tail.strip()) > len(target) + 1:  # the tail only grows: no later match possible
            break
    raise ChoiceNotFound(f"choice {choice!r}: no token boundary where the text equals the choice")


def build_choice_sequences(
    tokenizer: Any, templated_prompt: str, choices: Sequence[str], *, add_special_tokens: bool = False
) -> list[ChoiceSequence]:
    """One ChoiceSequence per choice, in order; raises ChoiceNotFound naming the choice.

    add_special_tokens=True tokenizes as vLLM 0.8.3 did (a BOS added in front of a template that
    already starts with one: the reference's double BOS).
    """
    sep = choice_separator(templated_prompt)
    texts = [templated_prompt + sep + choice for choice in choices]
    encoded = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    sequences = []
    for position, (choice, text) in enumerate(zip(choices, texts)):
        try:
            score_start = locate_choice(text, encoded["offset_mapping"][position], choice)
        except ChoiceNotFound as error:
            raise ChoiceNotFound(f"choice {position}: {error}") from None
        sequences.append(
            ChoiceSequence(
                token_ids=tuple(encoded["input_ids"][position]),
                score_start=score_start,
                n_chars=len(choice),
                n_bytes=len(choice.encode("utf-8")),
            )
        )
    return sequences


def template_hash(tokenizer: Any) -> str:
    """sha256 of what shapes the rendered prompt: the chat template (or the fallback) and BOS/EOS."""
    template = getattr(tokenizer, "chat_template", None) or f"fallback:{FALLBACK_TEMPLATE}"
    if isinstance(template, dict):  # several named templates
        template = repr(sorted(template.items()))
    specials = f"bos={getattr(tokenizer, 'bos_token', None)}|eos={getattr(tokenizer, 'eos_token', None)}"
    return hashlib.sha256(f"{template}\n{specials}".encode()).hexdigest()
