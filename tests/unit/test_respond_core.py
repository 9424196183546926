"""Pure pieces of the respond worker: hashes, sampling, extras, inference settings."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from quantbias_assets.contracts import EngineSettings, ExtrasError, RespondRequest, config_hash
from quantbias_assets.engines.base import GenerationSettings
from quantbias_assets.responding import response_hash, sample_per_axis
from quantbias_assets.workers.pipes_io import keys_data_version
from resources.inference import EngineConfig, InferenceResource

HASH_ARGS = {
    "checkpoint_identity": {"digest": "abc"},
    "engine": EngineSettings(backend="hf", dtype="float32"),
    "template_hash": "t1",
    "prompt_rule_version": "reference-v1",
    "add_special_tokens": False,
    "generation": None,
    "questions_alone": False,
}


def test_config_hash_is_sha256_of_the_documented_payload() -> None:
    payload = (
        '{"chat_template":"t1","checkpoint":{"digest":"abc"},'
        '"engine":{"add_special_tokens":false,"backend":"hf","dtype":"float32"},'
        '"generation":null,"prompt_rule":"reference-v1"}'
    )
    assert config_hash(**HASH_ARGS) == hashlib.sha256(payload.encode()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"checkpoint_identity": {"digest": "abd"}},
        {"engine": EngineSettings(backend="hf", dtype="bfloat16")},
        {"engine": EngineSettings(backend="vllm", dtype="float32")},
        {"template_hash": "t2"},
        {"add_special_tokens": True},
        {"generation": GenerationSettings(max_new_tokens=512, temperature=0.0, top_p=1.0, seed=1)},
        {"questions_alone": True},
    ],
)
def test_config_hash_changes_with_every_numeric_setting(change: dict) -> None:
    assert config_hash(**{**HASH_ARGS, **change}) != config_hash(**HASH_ARGS)


def test_response_hash_keys_turn_and_reply_without_concatenation_ambiguity() -> None:
    expected = hashlib.sha256(b'["Why?","Because."]').hexdigest()
    assert response_hash("Why?", "Because.") == expected
    assert response_hash("ab", "c") != response_hash("a", "bc")


def test_sample_per_axis_takes_the_first_rows_of_each_axis_in_file_order() -> None:
    questions = pl.DataFrame(
        {
            "idx": ["D/a/10", "D/a/2", "D/b/0", "D/a/1", "D/b/1"],
            "axis": ["a", "a", "b", "a", "b"],
        }
    )
    sampled = sample_per_axis(questions, 2)
    assert sorted(sampled["idx"].to_list()) == ["D/a/1", "D/a/2", "D/b/0", "D/b/1"]
    assert sample_per_axis(questions, None).equals(questions)
    with pytest.raises(ValueError, match="sample_per_axis"):
        sample_per_axis(questions, 0)


def test_keys_data_version_depends_on_the_set_of_keys_only() -> None:
    keys = pl.DataFrame({"question_hash": ["q1", "q2"], "config_hash": ["c", "c"]})
    assert keys_data_version(keys) == keys_data_version(keys.reverse())
    assert keys_data_version(keys) != keys_data_version(keys.head(1))


def test_inference_defaults_are_greedy_and_reference_sampling_is_what_the_code_ran() -> None:
    greedy = InferenceResource().generation_config()
    assert greedy == {
        "single_turn": {"max_new_tokens": 512, "temperature": 0.0, "top_p": 1.0, "seed": 1},
        "multi_turn": {"max_new_tokens": 150, "temperature": 0.0, "top_p": 1.0, "seed": 1},
    }
    reference = InferenceResource(reference_sampling=True).generation_config()
    assert (reference["single_turn"]["temperature"], reference["multi_turn"]["temperature"]) == (1.0, 0.7)
    assert InferenceResource(engine=EngineConfig(backend="vllm", enforce_eager=True)).to_extras()["engine_config"] == {
        "dtype": "float32",
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.85,
        "tensor_parallel_size": 1,
        "enforce_eager": True,
    }
    assert InferenceResource(engine=EngineConfig(torch_threads=1)).to_extras()["engine_config"] == {
        "device": "cpu",
        "dtype": "float32",
        "torch_threads": 1,
    }


def test_request_from_extras_round_trips_the_resource_and_names_missing_keys() -> None:
    extras = {
        "lake_root": "/lake",
        "model": "m",
        "method": "none",
        "model_store_root": "/models",
        "datasets": ["BBQ"],
        **InferenceResource(chunk_rows=8, sample_per_axis=3).to_extras(),
    }
    request = RespondRequest.from_extras(json.loads(json.dumps(extras)))  # as Pipes delivers them
    assert (request.settings.chunk_rows, request.settings.sample_per_axis, request.datasets) == (8, 3, ("BBQ",))
    assert request.target.uri("responses", "BBQ") == "/lake/responses/BBQ"
    with pytest.raises(ExtrasError, match="worker extras: model_store_root: missing"):
        RespondRequest.from_extras({key: value for key, value in extras.items() if key != "model_store_root"})


def test_template_date_is_pinned_by_default_and_the_run_date_for_the_reference() -> None:
    import time

    base = {"lake_root": "/lake", "model": "m", "method": "none", "model_store_root": "/models", "datasets": ["BBQ"]}
    pinned = RespondRequest.from_extras({**base, **InferenceResource().to_extras()})
    assert pinned.settings.template_date == "26 Jul 2024"
    assert {pinned.settings.generation_settings(multi_turn).template_date for multi_turn in (False, True)} == {
        "26 Jul 2024"
    }
    reference = RespondRequest.from_extras({**base, **InferenceResource(template_date=None).to_extras()})
    # resolved once, explicitly: the run's date, in the day-month-year form of Llama-3.2's template
    assert reference.settings.template_date == time.strftime("%d %b %Y")
    assert reference.settings.generation_settings(multi_turn=True).template_date == reference.settings.template_date
