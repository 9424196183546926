"""GGUF as a model source, on the real SmolLM2-135M-Instruct Q4_1 file: the import (identity by
sha256, reuse, dequantized values, tokenizer), the `checkpoint` and `responses` assets built from
it through Dagster with the provenance they record, and every bad-input error with real broken files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from smollm2 import first_import_status, imported_smollm2, session_store, smollm2_gguf

from quantbias_assets import lake
from quantbias_assets.assets.checkpoints import checkpoint
from quantbias_assets.assets.responses import response_key, responses
from quantbias_assets.catalog.datasets import DATASETS, load_dataset
from quantbias_assets.catalog.models import load_registry
from quantbias_assets.checkpoint_manifest import read_manifest, weights_digest
from quantbias_assets.cli import main
from quantbias_assets.gguf_import import GGUFImportError, check_gguf_file, import_gguf
from quantbias_assets.partitions import partition_key
from resources.inference import EngineConfig, InferenceResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

pytestmark = pytest.mark.slow

WORKER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return imported_smollm2(tmp_path_factory)


def test_import_is_named_by_the_files_sha256_and_reused(smollm2, tmp_path_factory):
    gguf_file = smollm2_gguf()
    sha256 = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    store = session_store(tmp_path_factory)
    assert first_import_status == ["imported"]
    assert smollm2.folder == store / ".gguf" / sha256
    assert (smollm2.info.sha256, smollm2.info.architecture, smollm2.info.quant_type) == (sha256, "llama", "Q4_1")
    assert smollm2.info.tensor_types == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert smollm2.weights_digest == weights_digest(smollm2.folder)

    again = import_gguf(gguf_file, store)
    assert (again.status, again.folder, again.weights_digest) == ("reused", smollm2.folder, smollm2.weights_digest)
    assert [p.name for p in (store / ".gguf").iterdir()] == [sha256]  # no staging folder left

    config = json.loads((smollm2.folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (49152, 576, 30)
    assert config["tie_word_embeddings"] is True and config["dtype"] == "float32"
    record = json.loads((smollm2.folder / "gguf_import.json").read_text())
    assert (record["sha256"], record["quant_type"], record["weights_digest"]) == (
        sha256,
        "Q4_1",
        smollm2.weights_digest,
    )


def test_imported_weights_are_the_gguf_values_dequantized(smollm2):
    """Independent of transformers: the gguf package's own dequantization of two tensors."""
    import gguf
    from safetensors import safe_open

    reader = gguf.GGUFReader(smollm2_gguf())
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    with safe_open(smollm2.folder / "model.safetensors", "np") as saved:
        for gguf_name, hf_name in (
            ("token_embd.weight", "model.embed_tokens.weight"),  # Q8_0, tied with lm_head
            ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),  # Q4_1
            ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),  # F32
        ):
            tensor = tensors[gguf_name]
            expected = gguf.dequantize(tensor.data, tensor.tensor_type).reshape(saved.get_tensor(hf_name).shape)
            np.testing.assert_array_equal(saved.get_tensor(hf_name), expected.astype(np.float32), err_msg=gguf_name)


def test_imported_tokenizer_has_the_gguf_special_tokens_and_chat_template(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2.folder)
    # transformers' GGUF conversion alone would make <|im_start|> the EOS token
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert tokenizer.model_max_length == 8192
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def materialize(assets, selection, model: str, method: str, home: Path, store: Path, instance=None, **resources):
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", [model])
    return dg.materialize(
        assets,
        selection=selection,
        partition_key=partition_key(model, method),
        instance=instance,
        resources={
            "workers": LocalWorkerLauncher(env=WORKER_ENV),
            "model_store": ModelStoreResource(root=str(store)),
            "lake": LakeResource(root=str(home / "lake")),
            **resources,
        },
        raise_on_error=False,
    )


def test_checkpoints_and_responses_from_a_registered_gguf_record_its_format(
    smollm2, tmp_path, monkeypatch, tmp_path_factory, data_dir
):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    gguf_file = smollm2_gguf()
    store = session_store(tmp_path_factory)
    assert main(["models", "add", str(gguf_file), "--nickname", "smollm2"]) == 0
    entry = load_registry()["smollm2"]
    assert (entry.source, entry.family) == (str(gguf_file), "llama")

    native = materialize([checkpoint], None, "smollm2", "none", tmp_path, store)
    assert native.success
    (event,) = native.asset_materializations_for_node("checkpoint")
    manifest = read_manifest(store, "smollm2", "none")
    assert event.metadata["status"].value == "reused"  # this session's import of the same file
    assert event.metadata["source_format"].value == manifest.source_format == "gguf"
    assert event.metadata["source_quant_type"].value == manifest.source_quant_type == "Q4_1"
    assert event.metadata["source_sha256"].value == smollm2.info.sha256
    assert manifest.path == event.metadata["path"].value == str(smollm2.folder)
    assert manifest.digest == smollm2.weights_digest
    assert manifest.identity == {"digest": smollm2.weights_digest, "source_format": "gguf", "source_quant_type": "Q4_1"}

    loaded = load_dataset(DATASETS["BBQ"], data_dir)
    lake.write_table(loaded.frame, lake.table_uri(str(tmp_path / "lake"), "questions", "BBQ"))
    quantized = materialize(
        [checkpoint, responses],
        [dg.AssetKey("checkpoint"), response_key("BBQ")],
        "smollm2",
        "rtn-w8a16",
        tmp_path,
        store,
        inference=InferenceResource(engine=EngineConfig(torch_threads=1), sample_per_axis=1),
    )
    assert quantized.success
    (event,) = quantized.asset_materializations_for_node("checkpoint")
    manifest = read_manifest(store, "smollm2", "rtn-w8a16")
    assert (event.metadata["status"].value, event.metadata["gguf_import"].value) == ("quantized", "reused")
    assert manifest.base_digest == smollm2.weights_digest
    assert (manifest.source_format, manifest.source_quant_type) == ("gguf", "Q4_1")
    # tied embeddings: lm_head is the (unquantized) embedding matrix, left out of the recipe
    assert manifest.quantization_config["ignore"] == ["lm_head"]
    config = json.loads((Path(manifest.path) / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    from safetensors import safe_open

    with safe_open(Path(manifest.path) / "model.safetensors", "pt") as saved:
        # safetensors handles are not mappings: keys() is their only listing
        assert not [key for key in saved.keys() if key.startswith("lm_head.")]  # noqa: SIM118
        assert "model.layers.0.mlp.down_proj.weight_scale" in saved.keys()  # noqa: SIM118

    (answers,) = [
        m for m in quantized.asset_materializations_for_node("responses") if m.asset_key == response_key("BBQ")
    ]
    metadata = answers.metadata
    assert (metadata["source_format"].value, metadata["source_quant_type"].value) == ("gguf", "Q4_1")
    table = lake.read(
        lake.table_uri(str(tmp_path / "lake"), "responses", "BBQ"), filters={"model": "smollm2", "method": "rtn-w8a16"}
    )
    assert table.height == len(loaded.axes_present) and set(table["config_hash"]) == {metadata["config_hash"].value}


# ---------------------------------------------------------------- bad input


def write_gguf(path: Path, architecture: str) -> Path:
    """A well-formed GGUF file with one tensor (the gguf package's own writer)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("broken_gguf")
    data = smollm2_gguf().read_bytes()
    truncated = folder / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = folder / "garbage.gguf"
    garbage.write_bytes(bytes(range(256)) * 64)
    return {
        "truncated": truncated,
        "garbage": garbage,
        "unsupported": write_gguf(folder / "bert.gguf", "bert"),
        "unloadable": write_gguf(folder / "llama-one-tensor.gguf", "llama"),
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", r"not a readable GGUF file, corrupt or truncated \(ValueError: cannot reshape"),
        ("garbage", r"not a readable GGUF file, corrupt or truncated \(ValueError: GGUF magic invalid\)"),
        ("unsupported", r"general.architecture: 'bert' is not supported by transformers' GGUF loader"),
        ("unloadable", r"cannot import this llama GGUF file as a causal LM \(.*hidden size \(8\)"),
    ],
)
def test_bad_gguf_fails_naming_the_file_and_leaves_nothing(broken_files, case, message, tmp_path):
    path = broken_files[case]
    store = tmp_path / "store"
    with pytest.raises(GGUFImportError, match=f"^{path}: {message}"):
        import_gguf(path, store)
    # the unloadable file fails after its staging folder was made: it must be gone
    assert not (store / ".gguf").exists() or list((store / ".gguf").iterdir()) == []


@pytest.mark.parametrize("case", ["truncated", "garbage", "unsupported"])
def test_models_add_refuses_a_bad_gguf(broken_files, case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    path = broken_files[case]
    assert main(["models", "add", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path}: ") and "\n" not in error
    assert not (tmp_path / "models.yaml").exists()
    with pytest.raises(GGUFImportError, match="not supported" if case == "unsupported" else "corrupt or truncated"):
        check_gguf_file(path)


def test_registered_gguf_that_breaks_later_fails_its_checkpoint_run(broken_files, tmp_path, monkeypatch):
    """The models.yaml entry (not `models add`) is checked by the worker: the run fails naming
    the file and no checkpoint or import folder is written."""
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    entry = {"nickname": "broken", "source": str(broken_files["truncated"])}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    store = tmp_path / "models"
    instance = dg.DagsterInstance.ephemeral()
    result = materialize([checkpoint], None, "broken", "none", tmp_path, store, instance=instance)
    assert not result.success
    assert [event.step_key for event in result.all_events if event.is_step_failure] == ["checkpoint"]
    # the worker's own exception, as Pipes logs it when the worker closes
    events = [entry.dagster_event for entry in instance.all_logs(result.run_id) if entry.dagster_event]
    errors = [getattr(event.event_specific_data, "error", None) for event in events]
    assert any(f"{broken_files['truncated']}: not a readable GGUF file" in error.message for error in errors if error)
    assert not store.exists() or [p for p in store.rglob("*") if p.is_file()] == []


def test_relative_gguf_path_in_models_yaml_is_refused(tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [{"nickname": "x", "source": "models/x.gguf"}]}))
    with pytest.raises(
        ValueError, match=f"^{registry}: record 0: source: a GGUF file must be given as an absolute path"
    ):
        load_registry(registry)


def test_missing_gguf_package_is_named(tmp_path):
    """A real interpreter where `import gguf` fails (as without the package)."""
    script = (
        "import sys; sys.modules['gguf'] = None\n"
        "from quantbias_assets.cli import main\n"
        f"sys.exit(main(['models', 'add', {str(smollm2_gguf())!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"QUANTBIAS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: {smollm2_gguf()}: reading a GGUF file needs the `gguf` package, which is not installed "
        "(pip install gguf==0.19.0; scripts/setup.sh installs it)"
    )
    assert not (tmp_path / "models.yaml").exists()


def test_the_tensor_name_map_is_built_once_during_an_import_and_restored_after():
    import gguf

    from quantbias_assets.gguf_import import _tensor_name_map_built_once

    original = gguf.get_tensor_name_map
    with _tensor_name_map_built_once():
        first = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is first
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is not first
        assert first.get_name("model.layers.29.self_attn.q_proj") == "blk.29.attn_q"
    assert gguf.get_tensor_name_map is original
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is not first
