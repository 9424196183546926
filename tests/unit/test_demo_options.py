"""`quantbias demo`'s defaults: per model kind, and torch threads = the cores it may use."""

from __future__ import annotations

import os

from quantbias_assets.cli import build_parser
from quantbias_assets.demo import DemoOptions


def test_the_real_model_defaults_use_every_core_this_process_may_use() -> None:
    options = DemoOptions().with_defaults()
    assert (options.methods, options.sample, options.open_sample, options.max_new_tokens) == (
        ("none", "rtn-w4a16"),
        6,
        1,
        12,
    )
    assert options.torch_threads == len(os.sched_getaffinity(0))


def test_the_tiny_model_defaults_and_explicit_settings_are_kept() -> None:
    tiny = DemoOptions(model="tiny", torch_threads=1).with_defaults()
    assert (tiny.methods, tiny.sample, tiny.open_sample, tiny.max_new_tokens, tiny.torch_threads) == (
        ("none", "gptq-w4a16"),
        12,
        6,
        24,
        1,
    )
    chosen = DemoOptions(methods=["none", "awq-w4a16"], sample=3, torch_threads=3).with_defaults()
    assert (chosen.methods, chosen.sample, chosen.open_sample, chosen.torch_threads) == (("none", "awq-w4a16"), 3, 1, 3)


def test_the_command_line_leaves_threads_to_the_demo_unless_given() -> None:
    assert build_parser().parse_args(["demo"]).torch_threads is None
    assert build_parser().parse_args(["demo", "--torch-threads", "1"]).torch_threads == 1
