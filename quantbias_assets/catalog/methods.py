"""The quantization methods of the study: partition key, paper label, bits, calibration need.

Plain data, no torch: the recipes themselves live in quantbias_assets/quantize.py. The keys
and their order are those of partitions.METHODS (tests check they agree).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantMethod:
    key: str
    label: str  # as the paper writes it
    algorithm: str  # none | rtn | gptq | awq
    smoothquant: bool
    weight_bits: int
    activation_bits: int
    needs_calibration: bool

    @property
    def is_quantized(self) -> bool:
        return self.algorithm != "none"


METHOD_SPECS: dict[str, QuantMethod] = {
    m.key: m
    for m in (
        QuantMethod("none", "Native", "none", False, 16, 16, False),
        QuantMethod("rtn-w8a16", "RTN W8A16", "rtn", False, 8, 16, False),
        QuantMethod("rtn-w4a16", "RTN W4A16", "rtn", False, 4, 16, False),
        QuantMethod("sq-rtn-w4a16", "RTN W4A16 + SQ", "rtn", True, 4, 16, True),
        QuantMethod("gptq-w4a16", "GPTQ W4A16", "gptq", False, 4, 16, True),
        QuantMethod("awq-w4a16", "AWQ W4A16", "awq", False, 4, 16, True),
        QuantMethod("rtn-w8a8", "RTN W8A8", "rtn", False, 8, 8, False),
        QuantMethod("sq-rtn-w8a8", "RTN W8A8 + SQ", "rtn", True, 8, 8, True),
    )
}


def get_method(key: str) -> QuantMethod:
    try:
        return METHOD_SPECS[key]
    except KeyError:
        raise ValueError(
            f"method: unknown method {key!r}; expected one of {', '.join(METHOD_SPECS)}"
        ) from None
