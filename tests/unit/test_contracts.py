"""The typed worker requests: their extras, and which settings enter the config hashes."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from quantbias_assets.batches import with_fallback
from quantbias_assets.catalog.models import ModelEntry
from quantbias_assets.contracts import (
    EngineSettings,
    ExtrasError,
    JudgeRequest,
    JudgeSettings,
    PartitionTarget,
    QuantizeRequest,
    RespondRequest,
    RespondSettings,
)
from quantbias_assets.engines.base import GenerationSettings
from quantbias_assets.guard import guard_config_hash
from quantbias_assets.quantize import CalibrationSettings
from resources.guard import GuardEngineConfig, GuardResource
from resources.inference import EngineConfig, InferenceResource

TARGET = PartitionTarget("/lake", {"region": "eu"}, "m", "none")
IDENTITY = {"digest": "abc"}
# Computed before the requests were typed: responses and verdicts already in a lake must stay
# current, so these values may never change for the same settings.
PINNED_RESPONSE_HASHES = {
    "local": {
        "closed": "e20492ceafa9c794d58be60bc82ef635ce95f9cb643306ea3da8cfc5c19e2c42",
        "single_turn": "ba059be80f43b2356e37649c736885685daa8e97602278f1e35e84659508f2cd",
        "multi_turn": "475b24778fb8ecf485468edae15fdfd42f17b783b170bd7ba594c83ea77a9bc0",
    },
    "cluster": {
        "closed": "468ffaefeaf90b385cb49dcf17f38326ae60d7696133ef1fbaef025702dd361b",
        "single_turn": "748dee348c7ac63323b7b099e288ee10bbf9c5703925f048354a8730ce524ca3",
        "multi_turn": "05f576deb49b122a6ae7fcfe78867f52aadc71015ab0db9c559fd7628e284ce5",
    },
    "reference": {
        "closed": "2c54c73e84b44d6795dbb338e63c41d1e949e469acada2e995ca2765690fe524",
        "single_turn": "69da6bcf48cf2e36e243d563f418d2e7396b52f150073c268e7d28e65f46752d",
        "multi_turn": "0917cfdad06eb8bc48996fabc7d4bc7a4911a834bdbca123604f82f60d96934b",
    },
}
PINNED_GUARD_HASHES = {
    "local": "d089093c3353487e6cbc9387d38030b521d29354a2a252e5137a4cac821986f1",
    "cluster": "e6c8c9cba461f930a2c021a3d1ffd9c6e672bdb870bac8a5e1fa60bd50c7d76b",
}
INFERENCE = {
    "local": InferenceResource(),
    "cluster": InferenceResource(engine=EngineConfig(backend="vllm", dtype="bfloat16")),
    "reference": InferenceResource(reference_sampling=True, add_special_tokens_reference=True),
}
GUARD = {"local": GuardResource(), "cluster": GuardResource(engine=GuardEngineConfig(backend="vllm"))}


def delivered(extras: dict) -> dict:
    """The extras as the worker receives them (JSON through Pipes)."""
    return json.loads(json.dumps(extras))


def response_hashes(settings: RespondSettings, questions_alone: bool = False) -> dict[str, str]:
    styles = {"closed": None, "single_turn": False, "multi_turn": True}
    return {
        style: settings.config_hash(
            checkpoint_identity=IDENTITY,
            template_hash="t1",
            generation=None if multi_turn is None else settings.generation_settings(multi_turn),
            questions_alone=questions_alone,
        )
        for style, multi_turn in styles.items()
    }


@pytest.mark.parametrize("name", sorted(INFERENCE))
def test_response_config_hashes_of_the_resource_settings_are_pinned(name: str) -> None:
    request = RespondRequest(TARGET, ("BBQ",), "/models", INFERENCE[name].settings())
    received = RespondRequest.from_extras(delivered(request.to_extras()))
    assert response_hashes(received.settings) == PINNED_RESPONSE_HASHES[name]


@pytest.mark.parametrize("name", sorted(GUARD))
def test_guard_config_hashes_of_the_resource_settings_are_pinned(name: str) -> None:
    request = JudgeRequest(TARGET, ("CEB-Adult",), GUARD[name].settings())
    received = JudgeRequest.from_extras(delivered(request.to_extras()))
    config = received.settings.guard_config(model_identity="meta-llama/Llama-Guard-3-8B@main", chat_template_hash="t1")
    assert guard_config_hash(config) == PINNED_GUARD_HASHES[name]


def test_respond_extras_keep_their_keys_and_order() -> None:
    extras = RespondRequest(TARGET, ("BBQ", "FMT10K-IM-T"), "/models", InferenceResource().settings()).to_extras()
    assert extras == {
        "lake_root": "/lake",
        "storage_options": {"region": "eu"},
        "model": "m",
        "method": "none",
        "model_store_root": "/models",
        "datasets": ["BBQ", "FMT10K-IM-T"],
        "backend": "hf",
        "engine_config": {"device": "cpu", "dtype": "float32"},
        "generation": {
            "single_turn": {"max_new_tokens": 512, "temperature": 0.0, "top_p": 1.0, "seed": 1},
            "multi_turn": {"max_new_tokens": 150, "temperature": 0.0, "top_p": 1.0, "seed": 1},
        },
        "add_special_tokens_reference": False,
        "template_date": "26 Jul 2024",
        "chunk_rows": 256,
        "sample_per_axis": None,
        "max_context_tokens": None,
    }
    # the resource's part comes last, as automation records and restores it (worker_settings)
    assert list(extras)[-8:] == list(InferenceResource().to_extras())


def test_judge_extras_carry_the_guard_context_beside_the_engine_config() -> None:
    settings = GuardResource(engine=GuardEngineConfig(torch_threads=2, max_model_len=64), max_new_tokens=8).settings()
    extras = JudgeRequest(TARGET, ("CEB-Adult",), settings).to_extras()
    assert extras == {
        "lake_root": "/lake",
        "storage_options": {"region": "eu"},
        "model": "m",
        "method": "none",
        "datasets": ["CEB-Adult"],
        "guard_model": "meta-llama/Llama-Guard-3-8B",
        "guard_revision": None,
        "backend": "hf",
        "engine_config": {"device": "cpu", "dtype": "bfloat16", "torch_threads": 2},
        "max_model_len": 64,
        "max_new_tokens": 8,
        "judge_full_conversation": False,
        "chunk_rows": 256,
    }
    received = JudgeRequest.from_extras(delivered(extras))
    assert received == JudgeRequest(TARGET, ("CEB-Adult",), settings)
    assert (received.settings.prompt_budget, received.settings.generation.max_new_tokens) == (56, 8)
    with pytest.raises(ValueError, match="max_new_tokens: 64 leaves no room"):
        replace(settings, max_new_tokens=64)


def test_quantize_request_round_trips_and_fills_defaults() -> None:
    entry = ModelEntry(nickname="tiny", source="/models/tiny")
    request = QuantizeRequest(
        model_entry=entry,
        method="gptq-w4a16",
        model_store_root="/store",
        group_size=64,
        calibration=CalibrationSettings(source="cal.txt", num_samples=8, max_seq_length=32, seed=3),
        prefer_published=False,
    )
    extras = request.to_extras()
    assert extras["calibration"] == {"source": "cal.txt", "num_samples": 8, "max_seq_length": 32, "seed": 3}
    assert list(extras) == [
        "model_entry",
        "method",
        "model_store_root",
        "group_size",
        "calibration",
        "prefer_published",
    ]
    assert QuantizeRequest.from_extras(delivered(extras)) == request
    minimal = {"model_entry": entry.to_dict(), "method": "none", "model_store_root": "/store"}
    assert QuantizeRequest.from_extras(minimal) == QuantizeRequest(entry, "none", "/store")
    with pytest.raises(ExtrasError, match="worker extras: method: missing"):
        QuantizeRequest.from_extras({"model_entry": entry.to_dict(), "model_store_root": "/store"})


def test_engine_settings_load_kwargs_per_backend_and_unknown_fields() -> None:
    hf = EngineSettings(dtype="bfloat16", device="cuda", torch_threads=4, max_batch_tokens=2048)
    assert hf.load_kwargs() == {"device": "cuda", "dtype": "bfloat16", "torch_threads": 4, "max_batch_tokens": 2048}
    mkl = EngineSettings(prepacked_linears=False)
    assert mkl.load_kwargs() == {"device": "cpu", "dtype": "float32", "prepacked_linears": False}
    assert EngineSettings.from_extras(delivered(mkl.to_extras())) == mkl
    vllm = EngineSettings(backend="vllm", dtype="bfloat16", max_model_len=2048, torch_threads=4)
    assert vllm.load_kwargs() == {
        "dtype": "bfloat16",
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.85,
        "tensor_parallel_size": 1,
        "enforce_eager": False,
    }
    assert EngineSettings.from_extras(delivered(hf.to_extras())) == hf
    assert EngineSettings.from_extras(delivered(vllm.to_extras())) == replace(vllm, torch_threads=None)
    with pytest.raises(ExtrasError, match="engine_config: unknown field"):
        EngineSettings.from_extras({"backend": "hf", "engine_config": {"threads": 1}})


def test_only_backend_and_dtype_of_an_engine_enter_a_hash() -> None:
    base = RespondSettings()
    reference = response_hashes(base)
    speed_changes = {
        "device": "cuda",
        "torch_threads": 3,
        "max_batch_tokens": 64,
        "prepacked_linears": False,
        "max_model_len": 1024,
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
        "enforce_eager": True,
    }
    assert set(speed_changes) == EngineSettings.SPEED_ONLY
    for name, value in speed_changes.items():
        assert response_hashes(replace(base, engine=replace(base.engine, **{name: value}))) == reference, name
    assert {item.name for item in fields(EngineSettings)} - EngineSettings.SPEED_ONLY == {"backend", "dtype"}
    for name, value in {"backend": "vllm", "dtype": "bfloat16"}.items():
        changed = response_hashes(replace(base, engine=replace(base.engine, **{name: value})))
        assert all(changed[style] != reference[style] for style in reference), name


def test_respond_settings_enter_the_hash_unless_declared_unhashed() -> None:
    base = RespondSettings()
    reference = response_hashes(base)
    unhashed = {"chunk_rows": 3, "sample_per_axis": 2, "max_context_tokens": 100}
    assert set(unhashed) == RespondSettings.UNHASHED
    for name, value in unhashed.items():
        assert response_hashes(replace(base, **{name: value})) == reference, name
    hashed = {
        "engine": EngineSettings(dtype="float16"),
        "generation": {**base.generation, "multi_turn": {**base.generation["multi_turn"], "seed": 2}},
        "add_special_tokens_reference": True,
        "template_date": "01 Jan 2025",
    }
    assert set(hashed) | RespondSettings.UNHASHED == {item.name for item in fields(RespondSettings)}
    for name, value in hashed.items():
        assert response_hashes(replace(base, **{name: value})) != reference, name
    # the double-BOS switch changes scored prompts only
    assert response_hashes(replace(base, add_special_tokens_reference=True))["single_turn"] == reference["single_turn"]


def test_an_engine_that_scores_questions_alone_gets_its_own_hashes_and_no_other_hash_moves() -> None:
    settings = RespondSettings()
    reference = response_hashes(settings)
    assert response_hashes(settings, questions_alone=False) == reference == PINNED_RESPONSE_HASHES["local"]
    alone = response_hashes(settings, questions_alone=True)
    assert all(alone[style] != reference[style] for style in reference)  # scored and generated rows
    assert len(set(alone.values())) == 3


def test_judge_settings_enter_the_hash_unless_declared_unhashed() -> None:
    def digest(settings: JudgeSettings) -> str:
        return guard_config_hash(settings.guard_config(model_identity="guard@main", chat_template_hash="t1"))

    base = JudgeSettings(engine=EngineSettings(dtype="bfloat16"))
    unhashed = {"chunk_rows": 3, "guard_model": "/elsewhere", "guard_revision": "abc"}
    assert set(unhashed) == JudgeSettings.UNHASHED
    for name, value in unhashed.items():
        assert digest(replace(base, **{name: value})) == digest(base), name
    hashed = {
        "engine": replace(base.engine, max_model_len=2048),
        "max_new_tokens": 10,
        "judge_full_conversation": True,
    }
    assert set(hashed) | JudgeSettings.UNHASHED == {item.name for item in fields(JudgeSettings)}
    for name, value in hashed.items():
        assert digest(replace(base, **{name: value})) != digest(base), name
    assert digest(replace(base, engine=replace(base.engine, torch_threads=2, device="cuda"))) == digest(base)


def test_template_date_none_is_resolved_by_the_worker_only() -> None:
    settings = InferenceResource(template_date=None).settings()
    assert RespondSettings.from_extras(delivered(settings.to_extras())).template_date is None
    with pytest.raises(ValueError, match="template_date: not resolved"):
        settings.generation_settings(multi_turn=False)
    received = RespondRequest.from_extras(delivered(RespondRequest(TARGET, ("BBQ",), "/m", settings).to_extras()))
    assert received.settings.generation_settings(multi_turn=False).template_date == received.settings.template_date


def test_engine_config_is_the_engine_settings_as_dagster_config() -> None:
    for config_class, dtype in ((EngineConfig, "float32"), (GuardEngineConfig, "bfloat16")):
        defaults = {name: info.default for name, info in config_class.model_fields.items()}
        assert defaults == {
            **{item.name: item.default for item in fields(EngineSettings)},
            "dtype": dtype,
        }
    assert GuardResource().settings().engine == EngineSettings(dtype="bfloat16")
    assert InferenceResource().settings() == RespondSettings()


def test_with_fallback_runs_the_batch_once_and_then_each_item_alone() -> None:
    calls: list[list[int]] = []

    def double(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        if 3 in batch:
            raise ValueError("three")
        return [2 * item for item in batch]

    errors: list[tuple[int, str]] = []
    assert with_fallback([1, 2], double, lambda position, error: errors.append((position, str(error)))) == [2, 4]
    assert calls == [[1, 2]]
    assert with_fallback([1, 3, 2], double, lambda position, error: errors.append((position, str(error)))) == [
        2,
        None,
        4,
    ]
    assert calls[1:] == [[1, 3, 2], [1], [3], [2]]
    assert errors == [(1, "three")]


def test_generation_settings_reject_unknown_fields() -> None:
    with pytest.raises(TypeError, match="temprature"):
        RespondSettings(generation={"single_turn": {"temprature": 0.0}, "multi_turn": {}})
    assert RespondSettings().generation_settings(multi_turn=True) == GenerationSettings(max_new_tokens=150)
