"""Pure parts of the quantization recipes."""

import pytest

from quantbias_assets.quantize import fitting_group_size


@pytest.mark.parametrize(
    ("widths", "requested", "expected"),
    [
        ({896, 4864}, 128, 128),  # Qwen2.5-0.5B: the paper's group size fits
        ({576, 1536}, 128, 64),  # SmolLM2-135M: 576 = 4.5 x 128
        ({96}, 128, 32),
        ({100}, 128, 4),
        (set(), 128, 128),
    ],
)
def test_fitting_group_size_is_the_largest_power_of_two_that_divides_every_width(widths, requested, expected):
    assert fitting_group_size(widths, requested) == expected
