"""The benchmarks' method lists derive from the method catalog."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analysis_scale_uses_the_backfill_methods() -> None:
    methods = bench_module("analysis_scale").METHODS
    assert methods == ("none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16")


def test_replication_takes_smoothquant_at_w8a8() -> None:
    methods = bench_module("replicate").METHODS
    assert methods == ("none", "rtn-w8a16", "rtn-w4a16", "gptq-w4a16", "awq-w4a16", "sq-rtn-w8a8")
