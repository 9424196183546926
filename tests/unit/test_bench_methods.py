"""The benchmarks' method lists derive from the method catalog."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_analysis_scale_uses_the_backfill_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = bench_module("analysis_scale", monkeypatch).METHODS
    assert methods == ("none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16")


def test_replication_takes_smoothquant_at_w8a8(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = bench_module("replicate", monkeypatch).METHODS
    assert methods == ("none", "rtn-w8a16", "rtn-w4a16", "gptq-w4a16", "awq-w4a16", "sq-rtn-w8a8")
