"""The `checkpoint` asset: Dagster materializes a partition through the real quantize worker."""

import json
from pathlib import Path

import dagster as dg
import pytest

from quantbias_assets.assets.checkpoints import checkpoint
from quantbias_assets.catalog.models import add_model
from quantbias_assets.checkpoint_manifest import read_manifest, weights_digest
from quantbias_assets.partitions import partition_key
from quantbias_assets.tiny_model import generated_corpus
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    add_model(str(tiny_model_dir), "tiny")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text("{}")
    add_model(str(weightless), "weightless")
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": t}) + "\n" for t in generated_corpus(seed=2, n_sentences=64)))
    return tmp_path


def materialize(home: Path, instance: dg.DagsterInstance, model: str, method: str) -> dg.ExecuteInProcessResult:
    config = {
        "calibration_source": str(home / "calibration.jsonl"),
        "calibration_samples": 16,
        "calibration_max_seq_length": 48,
        "calibration_seed": 5,
    }
    return dg.materialize(
        [checkpoint],
        instance=instance,
        partition_key=partition_key(model, method),
        resources={
            "workers": LocalWorkerLauncher(env={"OMP_NUM_THREADS": "1"}),
            "model_store": ModelStoreResource(root=str(home / "models")),
        },
        run_config={"ops": {"checkpoint": {"config": config}}},
        raise_on_error=False,
    )


def test_materialize_checkpoint_partitions(home, tiny_model_dir):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny", "weightless"])
    store = home / "models"

    first = materialize(home, instance, "tiny", "gptq-w4a16")
    assert first.success
    (event,) = first.asset_materializations_for_node("checkpoint")
    manifest = read_manifest(store, "tiny", "gptq-w4a16")
    assert event.metadata["status"].value == "quantized"
    assert event.metadata["digest"].value == manifest.digest == weights_digest(store / "tiny" / "gptq-w4a16")
    assert event.metadata["base_digest"].value == weights_digest(tiny_model_dir)
    assert event.metadata["calibration"].value == {
        "source": str(home / "calibration.jsonl"),
        "num_samples": 16,
        "max_seq_length": 48,
        "seed": 5,
        "source_digest": manifest.calibration["source_digest"],
    }
    assert event.metadata["quantization_config"].value["format"] == "pack-quantized"
    assert "GPTQModifier" in event.metadata["recipe"].value
    assert {"seconds", "peak_memory_bytes", "size_bytes", "compression_ratio", "versions"} <= set(event.metadata)
    assert event.tags["dagster/data_version"] == manifest.digest

    again = materialize(home, instance, "tiny", "gptq-w4a16")
    (event,) = again.asset_materializations_for_node("checkpoint")
    assert event.metadata["status"].value == "reused"
    assert read_manifest(store, "tiny", "gptq-w4a16") == manifest

    base = materialize(home, instance, "tiny", "none")
    (event,) = base.asset_materializations_for_node("checkpoint")
    assert (event.metadata["status"].value, event.metadata["path"].value) == ("base", str(tiny_model_dir))

    broken = materialize(home, instance, "weightless", "rtn-w4a16")
    assert not broken.success
    # The worker's exception reaches the run's event log through Pipes.
    errors = [
        record.dagster_event.engine_event_data.error.message
        for record in instance.all_logs(broken.run_id)
        if record.dagster_event
        and record.dagster_event.is_engine_event
        and record.dagster_event.engine_event_data.error
    ]
    assert errors == [
        f"FileNotFoundError: {home / 'weightless'}: base model folder has no weight files (*.safetensors, *.bin)\n"
    ]
    assert not (store / "weightless").exists() or list((store / "weightless").iterdir()) == []
