"""Text statistics: hand-computed values."""

from __future__ import annotations

import polars as pl
import pytest

from quantbias_assets.textstats import (
    STOP_WORDS,
    common_word_prefix,
    content_tokens,
    max_ngram_repetition,
    pair_stats,
    prop_non_english,
    response_stats,
    rouge_lsum,
    word_count,
)


def test_word_count() -> None:
    assert word_count("  The cat  sat.\nOn the mat ") == 6
    assert word_count("") == 0
    assert word_count(None) == 0


def test_stop_word_list_is_nltk_classic() -> None:
    assert len(STOP_WORDS) == 179
    assert {"the", "on", "don't", "wouldn't", "ma", "y"} <= STOP_WORDS


def test_content_tokens_drop_punctuation_and_stop_words() -> None:
    assert content_tokens("Hello, world! Don’t STOP; the cat-dog 42 café.") == [
        "hello",
        "world",
        "stop",
        "cat",
        "dog",
        "42",
        "café",
    ]


SENTENCE = "The cat sat on the mat. The cat sat again!"  # -> cat sat mat cat sat again


@pytest.mark.parametrize(("n", "expected"), [(1, 2), (2, 2), (3, 0), (4, 0), (5, 0)])
def test_max_ngram_repetition(n: int, expected: int) -> None:
    assert max_ngram_repetition(SENTENCE, n) == expected


@pytest.mark.parametrize(("n", "expected"), [(1, 3), (2, 2), (3, 0), (4, 0)])
def test_max_ngram_repetition_of_one_repeated_word(n: int, expected: int) -> None:
    assert max_ngram_repetition("cat, cat. CAT!", n) == expected


def test_max_ngram_repetition_empty_is_none() -> None:
    assert max_ngram_repetition("  \n", 1) is None
    assert max_ngram_repetition("the and of", 1) == 0  # only stop words: fewer than n tokens


def test_prop_non_english() -> None:
    # hello: English; 世界: code >= 256; café (é = 233, with ASCII letters): English; ©®: neither
    assert prop_non_english("hello 世界 café ©®") == pytest.approx(1 / 3)
    assert prop_non_english("naïve日本 ok") == pytest.approx(1 / 2)
    assert prop_non_english("©®") is None
    assert prop_non_english("") is None


def test_common_word_prefix() -> None:
    prefix = common_word_prefix("the cat sat on the mat", "the cat lay on the mat")
    assert prefix == (2, pytest.approx(2 / 6))
    assert common_word_prefix("a b", "a b c") == (2, 1.0)
    assert common_word_prefix("a b c d", "a b") == (2, 0.5)
    assert common_word_prefix("", "a") == (0, None)


def test_rouge_lsum_by_hand() -> None:
    # LCS "the cat on the mat" = 5 of 6 words on both sides
    lcs_five = rouge_lsum("the cat sat on the mat", "the cat lay on the mat")
    assert lcs_five == pytest.approx((5 / 6,) * 3)
    # Porter stems: cats -> cat, running -> run; LCS 2, P = 2/2, R = 2/3, F = 2PR/(P+R) = 0.8
    assert rouge_lsum("cats running fast", "cat run") == pytest.approx((1.0, 2 / 3, 0.8))
    # summary-level: each base sentence is matched against every quantized sentence (union LCS),
    # so swapped sentences score 1.0 where plain ROUGE-L would give 3/6
    swapped = rouge_lsum("the cat sat\nthe dog ran", "the dog ran\nthe cat sat")
    assert swapped == pytest.approx((1.0, 1.0, 1.0))
    assert rouge_lsum("", "anything") == (0, 0, 0)


def test_response_stats_frame() -> None:
    frame = pl.DataFrame({"response": [SENTENCE, "", None, "世界 hi"]})
    stats = response_stats(frame)
    assert stats["num_words"].to_list() == [10, 0, 0, 2]
    assert stats["max_1gram_rep"].to_list() == [2, None, None, 0]
    assert stats["max_2gram_rep"].to_list() == [2, None, None, 0]
    assert stats["max_5gram_rep"].to_list() == [0, None, None, 0]
    assert stats["prop_non_english"].to_list() == [0.0, None, None, 0.5]
    assert stats.schema["max_3gram_rep"] == pl.Int32


def test_pair_stats_frame() -> None:
    frame = pl.DataFrame(
        {
            "response_base": ["the cat sat on the mat", "", "x y"],
            "response_quant": ["the cat lay on the mat", "a", None],
        }
    )
    stats = pair_stats(frame)
    assert stats["rougeLsum_f1"].to_list() == pytest.approx([5 / 6, 0.0, 0.0])
    assert stats["common_prefix_words"].to_list() == [2, 0, 0]
    assert stats["common_prefix_frac"].to_list() == [pytest.approx(1 / 3), None, 0.0]
