"""The quantization methods of the study: every per-method fact, in one place.

Plain data, no torch (partitions.py imports it): the llmcompressor recipes are built from these
fields in quantbias_assets/quantize.py. Everything else derives from METHOD_SPECS: the `method`
partitions (in this order), the backfill of a new model, the figures' method order and the dbt
seed dbt_analysis/seeds/quantization_methods.csv (`python -m quantbias_assets.catalog.methods`
writes it; a unit test checks the committed file equals it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
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
    backfill: bool  # requested for every new model; the W8A8 variants are supplementary
    plot_order: int  # position in the figures' method axis

    @property
    def is_quantized(self) -> bool:
        return self.algorithm != "none"

    @property
    def family(self) -> str:
        """The seed's `family` column: the algorithm, `native` for the unquantized model."""
        return self.algorithm if self.is_quantized else "native"


METHOD_SPECS: dict[str, QuantMethod] = {
    m.key: m
    for m in (
        QuantMethod("none", "Native", "none", False, 16, 16, False, backfill=True, plot_order=0),
        QuantMethod("rtn-w8a16", "RTN W8A16", "rtn", False, 8, 16, False, backfill=True, plot_order=1),
        QuantMethod("rtn-w4a16", "RTN W4A16", "rtn", False, 4, 16, False, backfill=True, plot_order=2),
        QuantMethod("sq-rtn-w4a16", "RTN W4A16 + SQ", "rtn", True, 4, 16, True, backfill=True, plot_order=3),
        QuantMethod("gptq-w4a16", "GPTQ W4A16", "gptq", False, 4, 16, True, backfill=True, plot_order=4),
        QuantMethod("awq-w4a16", "AWQ W4A16", "awq", False, 4, 16, True, backfill=True, plot_order=5),
        QuantMethod("rtn-w8a8", "RTN W8A8", "rtn", False, 8, 8, False, backfill=False, plot_order=6),
        QuantMethod("sq-rtn-w8a8", "RTN W8A8 + SQ", "rtn", True, 8, 8, True, backfill=False, plot_order=7),
    )
}

METHOD_KEYS: tuple[str, ...] = tuple(METHOD_SPECS)  # the `method` partitions, in this order
BACKFILL_METHODS: tuple[str, ...] = tuple(k for k, m in METHOD_SPECS.items() if m.backfill)
SEED_COLUMNS = ("method", "label", "w_bits", "a_bits", "family")  # as the dbt staging models read them


def get_method(key: str) -> QuantMethod:
    try:
        return METHOD_SPECS[key]
    except KeyError:
        raise ValueError(f"method: unknown method {key!r}; expected one of {', '.join(METHOD_SPECS)}") from None


def validate_methods(keys: Sequence[str], where: str) -> tuple[str, ...]:
    """The keys unchanged, or a ValueError naming `where` and the first unknown key."""
    for key in keys:
        if key not in METHOD_SPECS:
            raise ValueError(f"{where}: unknown method {key!r}; expected one of {', '.join(METHOD_SPECS)}")
    return tuple(keys)


def quantized_label_order() -> tuple[str, ...]:
    """Labels of the quantized methods in plot order (the native model is the baseline, not a column)."""
    quantized = sorted((m for m in METHOD_SPECS.values() if m.is_quantized), key=lambda m: m.plot_order)
    return tuple(m.label for m in quantized)


def quantization_methods_csv() -> str:
    """The dbt seed dbt_analysis/seeds/quantization_methods.csv, generated from METHOD_SPECS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SEED_COLUMNS)
    for m in METHOD_SPECS.values():
        writer.writerow((m.key, m.label, m.weight_bits, m.activation_bits, m.family))
    return out.getvalue()


if __name__ == "__main__":
    print(quantization_methods_csv(), end="")
