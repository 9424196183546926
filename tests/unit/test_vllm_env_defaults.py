"""The CPU environment defaults of the vLLM engine (pure; importing the module needs no vLLM)."""

from __future__ import annotations

from quantbias_assets.engines.vllm import apply_cpu_env_defaults


def test_sets_only_the_variables_not_already_set() -> None:
    environ = {"VLLM_CPU_KVCACHE_SPACE": "4", "PATH": "/bin"}

    applied = apply_cpu_env_defaults(environ)

    assert applied == {"TORCH_COMPILE_DISABLE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert environ == {
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "PATH": "/bin",
        "TORCH_COMPILE_DISABLE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def test_a_second_call_changes_nothing() -> None:
    environ: dict[str, str] = {}
    apply_cpu_env_defaults(environ)
    assert apply_cpu_env_defaults(environ) == {}
    assert environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
