import polars as pl
import pytest

from quantbias_assets.analysis.text_patterns import text_pattern_pairs


def responses(rows):
    return pl.DataFrame(rows, schema=["model", "method", "axis", "idx", "response"], orient="row")


def test_pairs_statistics_differences_and_overlap_by_hand():
    frame = responses(
        [
            ("m", "none", "age", "q1", "the cat sat on the mat"),
            ("m", "rtn-w4a16", "age", "q1", "the cat sat"),
            ("m", "none", "age", "q2", "hello hello hello"),
            ("m", "rtn-w4a16", "age", "q2", ""),
            ("m", "rtn-w4a16", "age", "q3", "no native answer: not paired"),
        ]
    )
    out = text_pattern_pairs("FMT10K-IM-S", frame).sort("idx")
    assert out["idx"].to_list() == ["q1", "q2"]
    assert out["dataset_group"].to_list() == ["FMT10K", "FMT10K"]
    q1, q2 = out.to_dicts()
    # q1: 6 words -> 3 words; LCS 3 of 3 predicted and 6 reference tokens; prefix "the cat sat"
    assert (q1["num_words_base"], q1["num_words_quant"], q1["num_words_diff"]) == (6, 3, -3)
    assert q1["rougeLsum_precision"] == pytest.approx(1.0)
    assert q1["rougeLsum_recall"] == pytest.approx(0.5)
    assert q1["rougeLsum_f1"] == pytest.approx(2 / 3)
    assert (q1["common_prefix_words"], q1["common_prefix_frac"]) == (3, 0.5)
    # stop words removed: cat, sat, mat each once -> a count of 1 is reported as 0
    assert q1["max_1gram_rep_base"] == 0
    # q2: "hello" x3 (2-gram "hello hello" x2); an empty answer has no statistics
    assert (q2["max_1gram_rep_base"], q2["max_2gram_rep_base"], q2["max_3gram_rep_base"]) == (3, 2, 0)
    assert q2["num_words_quant"] == 0 and q2["num_words_diff"] == -3
    assert q2["max_1gram_rep_quant"] is None and q2["max_1gram_rep_diff"] is None
    assert q2["common_prefix_words"] == 0


def test_each_distinct_answer_counted_once_per_pair_and_latest_row_wins():
    frame = responses(
        [
            ("m", "none", "age", "q1", "old answer"),
            ("m", "none", "age", "q1", "a b c"),  # the later row of the same key replaces the earlier
            ("m", "rtn-w4a16", "age", "q1", "a b c"),
            ("m", "rtn-w8a16", "age", "q1", "a b"),
        ]
    )
    out = text_pattern_pairs("CEB-Continuation-S", frame).sort("method")
    assert out["method"].to_list() == ["rtn-w4a16", "rtn-w8a16"]
    assert out["num_words_diff"].to_list() == [0, -1]
    assert out["common_prefix_words"].to_list() == [3, 2]


def test_summarize_per_dataset_group_and_method():
    from quantbias_assets.analysis.text_patterns import summarize

    frame = responses(
        [
            ("m", "none", "age", "q1", "the cat sat on the mat"),
            ("m", "rtn-w4a16", "age", "q1", "the cat sat"),
            ("m", "none", "age", "q2", "hello there"),
            ("m", "rtn-w4a16", "age", "q2", "hello there"),
        ]
    )
    summary = summarize(text_pattern_pairs("FMT10K-IM-S", frame), by=("dataset_group", "method"))
    row = summary.row(0, named=True)
    assert (summary.height, row["dataset_group"], row["method"], row["pairs"]) == (1, "FMT10K", "rtn-w4a16", 2)
    assert (row["words_native"], row["words_quantized"], row["words_change"]) == (4.0, 2.5, -1.5)
    assert row["identical"] == 50.0  # q2 is the same answer
    assert row["common_prefix_frac"] == pytest.approx((0.5 + 1.0) / 2)
    assert summarize(pl.DataFrame(), by=("method",)).is_empty()
