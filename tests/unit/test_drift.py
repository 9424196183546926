import math

import numpy as np
import pytest

from quantbias_assets.analysis.drift import drift_frame, held_out_texts, kl_per_position, summarize_drift


def test_kl_of_known_distributions():
    # p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(4/3)
    kl = kl_per_position(np.array([[0.0, 0.0]]), np.array([[math.log(3.0), 0.0]]))
    assert kl.shape == (1,)
    assert kl[0] == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)


def test_kl_is_zero_for_equal_distributions_and_ignores_a_logit_shift():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    assert kl_per_position(logits, logits + 7.5).tolist() == [0.0, 0.0]


def test_kl_is_not_symmetric_and_grows_with_distance():
    native = np.array([[0.0, 0.0, 0.0]])
    near, far = np.array([[0.1, 0.0, 0.0]]), np.array([[3.0, 0.0, 0.0]])
    assert kl_per_position(native, near)[0] < kl_per_position(native, far)[0]
    # KL(u || q) vs KL(q || u) for q = softmax(3, 0, 0)
    assert kl_per_position(native, far)[0] == pytest.approx(0.99631, abs=1e-5)
    assert kl_per_position(far, native)[0] == pytest.approx(0.73202, abs=1e-5)


def test_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"native shape \(1, 3\) != quantized shape \(1, 2\)"):
        kl_per_position(np.zeros((1, 3)), np.zeros((1, 2)))


def test_summary_over_positions():
    row = summarize_drift("rtn-w4a16", np.array([0.0, 0.1, 0.2, 0.3]), np.array([True, True, False, True]))
    assert (row.method, row.tokens) == ("rtn-w4a16", 4)
    assert row.mean_kl == pytest.approx(0.15)
    assert row.median_kl == pytest.approx(0.15)
    assert row.p95_kl == pytest.approx(0.285)
    assert row.top1_agreement == 0.75
    frame = drift_frame([row])
    assert frame.columns == ["method", "tokens", "mean_kl", "median_kl", "p95_kl", "top1_agreement"]
    assert frame.row(0) == ("rtn-w4a16", 4, pytest.approx(0.15), pytest.approx(0.15), pytest.approx(0.285), 0.75)


def test_summary_of_nothing_names_the_method():
    with pytest.raises(ValueError, match="drift: gptq-w4a16: no token positions"):
        summarize_drift("gptq-w4a16", np.array([]), np.array([]))


def test_held_out_texts_exclude_calibration_and_are_seeded():
    candidates = ["a", "b", "c", "d", " e ", "a", ""]
    picked = held_out_texts(candidates, excluded=["b", "d "], count=3, seed=1)
    assert sorted(picked) == ["a", "c", "e"]
    assert held_out_texts(candidates, excluded=["b", "d"], count=3, seed=1) == picked


def test_held_out_texts_fail_when_too_few():
    with pytest.raises(ValueError, match="only 1 texts outside the calibration set, 2 requested"):
        held_out_texts(["x", "y"], excluded=["y"], count=2)
