"""The tiny test model rejects sizes that group-128 quantization or vLLM cannot take."""

from __future__ import annotations

import pytest

from quantbias_assets.tiny_model import build_tiny_model


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"hidden": 96}, "hidden=96 must be a multiple of 128"),
        ({"intermediate": 200}, "intermediate=200 must be a multiple of 128"),
        ({"heads": 2, "head_dim": 16}, "heads\\*head_dim=32 must be a multiple of 128"),
        ({"heads": 8, "head_dim": 16}, "head_dim=16 must be >= 32"),
    ],
)
def test_bad_sizes_are_rejected(tmp_path, sizes, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_model(tmp_path / "model", **sizes)
    assert not (tmp_path / "model").exists()
