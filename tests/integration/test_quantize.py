"""Every method on the tiny model with real llmcompressor 0.14 and transformers.

Each method is quantized once (module fixture); the expected quantization_config values are
written out by hand from the recipes in docs/models.md.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from quantbias_assets.checkpoint_manifest import read_manifest, weight_files, weights_digest
from quantbias_assets.partitions import METHODS
from quantbias_assets.quantize import BuildRequest, CalibrationSettings, build_checkpoint
from quantbias_assets.tiny_model import generated_corpus

pytestmark = pytest.mark.slow

QUANTIZED = [m for m in METHODS if m != "none"]
CALIBRATION = CalibrationSettings(num_samples=32, max_seq_length=64, seed=0)
W4_SYM = {"num_bits": 4, "strategy": "group", "group_size": 128, "symmetric": True}
W8_CHANNEL = {"num_bits": 8, "strategy": "channel", "group_size": None, "symmetric": True}
A8_TOKEN = {"num_bits": 8, "strategy": "token", "dynamic": True, "symmetric": True, "type": "int"}
EXPECTED = {  # method -> (format, weights, input activations)
    "rtn-w8a16": ("pack-quantized", W8_CHANNEL, None),
    "rtn-w4a16": ("pack-quantized", W4_SYM, None),
    "sq-rtn-w4a16": ("pack-quantized", W4_SYM, None),
    "gptq-w4a16": ("pack-quantized", {**W4_SYM, "actorder": "weight"}, None),
    "awq-w4a16": ("pack-quantized", {**W4_SYM, "symmetric": False}, None),
    "rtn-w8a8": ("int-quantized", W8_CHANNEL, A8_TOKEN),
    "sq-rtn-w8a8": ("int-quantized", W8_CHANNEL, A8_TOKEN),
}


def calibration_texts() -> list[str]:
    return generated_corpus(seed=1, n_sentences=200)


def request(store: Path, base: Path, method: str, **overrides) -> BuildRequest:
    fields = dict(
        model="tiny", method=method, base_source=str(base), target=store / "tiny" / method, calibration=CALIBRATION
    )
    return BuildRequest(**{**fields, **overrides})


@pytest.fixture(scope="module")
def store(tiny_model_dir, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("model_store")
    statuses = {}
    for method in METHODS:
        _, statuses[method] = build_checkpoint(request(root, tiny_model_dir, method), calibration_texts())
    assert statuses == {"none": "base", **{m: "quantized" for m in QUANTIZED}}
    return root


@pytest.fixture(scope="module")
def probe_logits(tiny_model_dir, store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(
        ["The old neighbour asked who should be hired.", "Nobody knew the answer!"], return_tensors="pt", padding=True
    )
    logits = {}
    for method in METHODS:
        folder = Path(read_manifest(store, "tiny", method).path)
        model = AutoModelForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            logits[method] = model(**ids).logits
    return logits


@pytest.mark.parametrize("method", QUANTIZED)
def test_quantization_config_per_method(store, method):
    expected_format, weights, activations = EXPECTED[method]
    config = json.loads((store / "tiny" / method / "config.json").read_text())["quantization_config"]
    manifest = read_manifest(store, "tiny", method)
    assert manifest.quantization_config == config
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == expected_format
    assert config["ignore"] == ["lm_head"]
    (group,) = config["config_groups"].values()
    assert group["targets"] == ["Linear"]
    assert {k: group["weights"][k] for k in weights} == weights
    if activations is None:
        assert group["input_activations"] is None
    else:
        assert {k: group["input_activations"][k] for k in activations} == activations


@pytest.mark.parametrize("method", QUANTIZED)
def test_manifest_records_the_build(store, tiny_model_dir, method):
    manifest = read_manifest(store, "tiny", method)
    folder = store / "tiny" / method
    base_weight_bytes = sum(p.stat().st_size for p in weight_files(tiny_model_dir))
    ckpt_weight_bytes = sum(p.stat().st_size for p in weight_files(folder))
    assert manifest.source == "quantized"
    assert manifest.path == str(folder)
    assert manifest.digest == weights_digest(folder)
    assert manifest.base_digest == weights_digest(tiny_model_dir)
    assert manifest.compression_ratio == pytest.approx(base_weight_bytes / ckpt_weight_bytes)
    assert manifest.compression_ratio > 1.0
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != "checkpoint.json"]
    assert manifest.size_bytes == sum(p.stat().st_size for p in files)
    assert manifest.seconds > 0 and manifest.peak_memory_bytes > 0
    assert manifest.versions["llmcompressor"] == "0.14.0.1"
    assert "ignore: [lm_head]" in manifest.recipe
    if method.startswith("sq-"):
        assert "smoothing_strength: 0.8" in manifest.recipe
    if method in ("sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16", "sq-rtn-w8a8"):
        assert {k: manifest.calibration[k] for k in ("num_samples", "max_seq_length", "seed")} == {
            "num_samples": 32,
            "max_seq_length": 64,
            "seed": 0,
        }
    else:
        assert manifest.calibration == {}
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(METHODS)  # no temp folders left


def test_four_bit_checkpoints_compress_more_than_eight_bit(store):
    ratio = {m: read_manifest(store, "tiny", m).compression_ratio for m in QUANTIZED}
    # embeddings and lm_head stay float32, so the tiny model compresses far less than 8x / 4x
    assert min(ratio[m] for m in QUANTIZED if "w4" in m) > max(ratio[m] for m in QUANTIZED if "w8" in m)


def test_none_records_the_base_model(store, tiny_model_dir):
    manifest = read_manifest(store, "tiny", "none")
    assert (manifest.source, manifest.path, manifest.recipe) == ("base", str(tiny_model_dir), None)
    assert manifest.digest == manifest.base_digest == weights_digest(tiny_model_dir)
    assert [p.name for p in (store / "tiny" / "none").iterdir()] == ["checkpoint.json"]


def test_reloaded_logits_differ_and_8bit_is_closest(probe_logits):
    diffs = {m: (probe_logits[m] - probe_logits["none"]).abs().max().item() for m in QUANTIZED}
    assert all(d > 1e-4 for d in diffs.values()), diffs
    four_bit = [diffs[m] for m in ("rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16")]
    assert diffs["rtn-w8a16"] < min(four_bit), diffs


def test_unchanged_inputs_are_reused_and_a_new_seed_rebuilds(store, tiny_model_dir):
    folder = store / "tiny" / "gptq-w4a16"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    manifest, status = build_checkpoint(request(store, tiny_model_dir, "gptq-w4a16"), calibration_texts())
    assert status == "reused"
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    reseeded = CalibrationSettings(num_samples=32, max_seq_length=64, seed=1)
    rebuilt, status = build_checkpoint(
        request(store, tiny_model_dir, "gptq-w4a16", target=store / "reseeded" / "gptq-w4a16", calibration=reseeded),
        calibration_texts(),
    )
    assert status == "quantized"
    assert rebuilt.calibration["seed"] == 1
    assert rebuilt.digest != manifest.digest


def test_group_size_is_configurable(store, tiny_model_dir):
    manifest, _ = build_checkpoint(
        request(store, tiny_model_dir, "rtn-w4a16", target=store / "g64" / "rtn-w4a16", group_size=64)
    )
    (group,) = manifest.quantization_config["config_groups"].values()
    assert group["weights"]["group_size"] == 64
    assert "group_size: 64" in manifest.recipe


def test_a_group_that_does_not_divide_the_layers_falls_back_to_one_that_does(store, tiny_model_dir):
    # The tiny model's layers take 128 or 256 inputs: 256-wide groups cannot split the 128-wide
    # ones (as 128 cannot split SmolLM2's 576), so the build uses 128 and records it.
    manifest, status = build_checkpoint(
        request(store, tiny_model_dir, "rtn-w4a16", target=store / "g256" / "rtn-w4a16", group_size=256)
    )
    assert status == "quantized"
    (group,) = manifest.quantization_config["config_groups"].values()
    assert group["weights"]["group_size"] == 128
    assert "group_size: 128" in manifest.recipe


def test_published_checkpoint_is_recorded_not_built(tmp_path, tiny_model_dir):
    manifest, status = build_checkpoint(
        request(tmp_path, tiny_model_dir, "gptq-w4a16", published="Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4")
    )
    assert (status, manifest.source, manifest.path) == (
        "published",
        "published",
        "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4",
    )
    assert manifest.identity == {"path": "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4", "revision": None}
    assert os.listdir(tmp_path / "tiny" / "gptq-w4a16") == ["checkpoint.json"]


def test_bad_inputs_fail_clearly_and_leave_no_folder(tmp_path, tiny_model_dir):
    store = tmp_path / "store"
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    cases = [
        (request(store, tiny_model_dir, "rtn-w5a16"), ValueError, "method: unknown method 'rtn-w5a16'"),
        (
            request(store, tmp_path / "missing", "rtn-w4a16"),
            FileNotFoundError,
            "missing: base model folder does not exist",
        ),
        (request(store, empty, "rtn-w4a16"), FileNotFoundError, "no_weights: base model folder has no weight files"),
        (request(store, empty, "none"), FileNotFoundError, "no_weights: base model folder has no weight files"),
        (
            request(
                store, tiny_model_dir, "gptq-w4a16", calibration=CalibrationSettings(num_samples=500, max_seq_length=64)
            ),
            ValueError,
            "calibration texts: calibration set has 200 samples, fewer than the 500 requested",
        ),
    ]
    for req, error, message in cases:
        with pytest.raises(error, match=message):
            build_checkpoint(req, calibration_texts())
    assert not store.exists() or list(store.rglob("*")) == [store / "tiny"]
