"""Text statistics of open-ended responses for the paper's supplement (no model needed).

Per response: word count, max repeated n-gram count (n = 1..5), share of non-English words.
Per base vs quantized pair: ROUGE-Lsum (stemmed) precision/recall/F1 of Q against B and the
longest common word prefix. Pure functions over strings and polars frames.

Tokenisation for n-grams: the reference uses NLTK's `word_tokenize` and NLTK's English stop-word
list, whose data files cannot be downloaded here. We use the regex `WORD_PATTERN` (runs of
letters/digits, apostrophes inside a word kept: "don't" is one token, where NLTK gives "do" +
"n't") on lower-cased text, which drops punctuation by construction, and `STOP_WORDS`, NLTK's
classic 179-word English list written out below.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

import polars as pl

NGRAM_SIZES = (1, 2, 3, 4, 5)
WORD_PATTERN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# NLTK's English stop words (nltk_data corpora/stopwords/english, the classic 179 entries).
STOP_WORDS = frozenset(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them their
    theirs themselves what which who whom this that that'll these those am is are was were be
    been being have has had having do does did doing a an the and but if or because as until
    while of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there when where why
    how all any both each few more most other some such no nor not only own same so than too
    very s t can will just don don't should should've now d ll m o re ve y ain aren aren't
    couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
    mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren
    weren't won won't wouldn wouldn't
    """.split()
)


def _is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


def word_count(text: str | None) -> int:
    """Whitespace-separated words (0 for an empty response)."""
    return 0 if text is None else len(text.split())


def content_tokens(text: str) -> list[str]:
    """Lower-cased word tokens with punctuation and English stop-words removed."""
    # Curly apostrophes are folded so "don’t" meets the stop-word "don't".
    words = WORD_PATTERN.findall(text.lower().replace("’", "'"))
    return [word for word in words if word not in STOP_WORDS]


def max_ngram_repetition(text: str | None, n: int) -> int | None:
    """Count of the most repeated n-gram of content tokens; 0 when none repeats or fewer than n
    tokens; None for an empty or whitespace-only response (spec: no text metric for it)."""
    if _is_blank(text):
        return None
    tokens = content_tokens(text)  # type: ignore[arg-type]
    if len(tokens) < n:
        return 0
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    top = max(counts.values())
    return top if top > 1 else 0


def prop_non_english(text: str | None) -> float | None:
    """Share of whitespace words containing a character with code >= 256 among those words plus
    the words containing an ASCII character (words of only codes 128..255 count in neither).
    A word with both kinds of characters counts once, as non-English. None when no word counts."""
    if _is_blank(text):
        return None
    non_english = english = 0
    for word in text.split():  # type: ignore[union-attr]
        if any(ord(char) >= 256 for char in word):
            non_english += 1
        elif any(ord(char) < 128 for char in word):
            english += 1
    total = non_english + english
    return non_english / total if total else None


def common_word_prefix(base: str, quantized: str) -> tuple[int, float | None]:
    """Length of the longest common prefix of whitespace words, and that length as a fraction of
    the base response's words (None when the base response has no words)."""
    base_words, quantized_words = base.split(), quantized.split()
    length = 0
    for base_word, quantized_word in zip(base_words, quantized_words):
        if base_word != quantized_word:
            break
        length += 1
    return length, (length / len(base_words) if base_words else None)


def rouge_lsum(base: str, quantized: str) -> tuple[float, float, float]:
    """ROUGE-Lsum (Porter-stemmed) precision, recall, F1 of the quantized response against the
    base response as the reference, with the `rouge-score` package (newlines split sentences)."""
    score = _rouge_scorer().score(target=base, prediction=quantized)["rougeLsum"]
    return score.precision, score.recall, score.fmeasure


@functools.cache
def _rouge_scorer():  # type: ignore[no-untyped-def]
    from rouge_score import rouge_scorer  # imported on first use: it pulls in nltk

    return rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)


def response_stats(frame: pl.DataFrame, column: str = "response") -> pl.DataFrame:
    """Add num_words, max_{n}gram_rep (n = 1..5) and prop_non_english for a text column."""
    texts: Sequence[str | None] = frame[column].to_list()
    columns = [pl.Series("num_words", [word_count(t) for t in texts], dtype=pl.Int32)]
    columns += [
        pl.Series(f"max_{n}gram_rep", [max_ngram_repetition(t, n) for t in texts], dtype=pl.Int32) for n in NGRAM_SIZES
    ]
    columns.append(pl.Series("prop_non_english", [prop_non_english(t) for t in texts], dtype=pl.Float64))
    return frame.with_columns(columns)


def pair_stats(
    frame: pl.DataFrame, base_column: str = "response_base", quant_column: str = "response_quant"
) -> pl.DataFrame:
    """Add rougeLsum_{precision,recall,f1} and common_prefix_{words,frac} for base vs quantized
    text columns (a null text is treated as empty)."""
    pairs = list(zip(frame[base_column].fill_null("").to_list(), frame[quant_column].fill_null("").to_list()))
    rouge = [rouge_lsum(base, quant) for base, quant in pairs]
    prefix = [common_word_prefix(base, quant) for base, quant in pairs]
    return frame.with_columns(
        pl.Series("rougeLsum_precision", [r[0] for r in rouge], dtype=pl.Float64),
        pl.Series("rougeLsum_recall", [r[1] for r in rouge], dtype=pl.Float64),
        pl.Series("rougeLsum_f1", [r[2] for r in rouge], dtype=pl.Float64),
        pl.Series("common_prefix_words", [p[0] for p in prefix], dtype=pl.Int32),
        pl.Series("common_prefix_frac", [p[1] for p in prefix], dtype=pl.Float64),
    )
