"""A quantized checkpoint flows into the respond worker: materialize `checkpoint` then
`responses/BBQ` for one (tiny, rtn-w4a16) partition through Dagster, and check the answers
against an independent computation with the quantized model loaded by transformers."""

import json
import math
from pathlib import Path

import dagster as dg
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.checkpoints import checkpoint
from quantbias_assets.assets.responses import response_key, responses
from quantbias_assets.catalog.datasets import DATASETS, load_dataset
from quantbias_assets.catalog.models import add_model
from quantbias_assets.checkpoint_manifest import read_manifest
from quantbias_assets.partitions import partition_key
from resources.inference import EngineConfig, InferenceResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

pytestmark = pytest.mark.slow

PER_AXIS = 1


def choice_probs(model, tokenizer, prompt: str, choices: list[str]) -> list[float]:
    """Spec §3.1 computed plainly: one forward per choice, geometric-mean choice probability."""
    import torch

    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    sep = "" if templated[-1].isspace() else " "
    prompt_len = len(tokenizer(templated + sep, add_special_tokens=False)["input_ids"])
    scores = []
    for choice in choices:
        ids = tokenizer(templated + sep + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        picked = [logprobs[i - 1, ids[i]].item() for i in range(prompt_len, len(ids))]
        scores.append(math.exp(sum(picked) / len(picked)))
    return [s / sum(scores) for s in scores]


def test_quantized_checkpoint_answers_bbq(tmp_path: Path, monkeypatch, tiny_model_dir: Path, data_dir: Path):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    add_model(str(tiny_model_dir), "tiny")
    loaded = load_dataset(DATASETS["BBQ"], data_dir)
    assert loaded.ok, loaded.errors
    lake.write_table(loaded.frame, lake.table_uri(str(tmp_path / "lake"), "questions", "BBQ"))

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny"])
    result = dg.materialize(
        [checkpoint, responses],
        selection=[dg.AssetKey("checkpoint"), response_key("BBQ")],
        partition_key=partition_key("tiny", "rtn-w4a16"),
        instance=instance,
        resources={
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "workers": LocalWorkerLauncher(env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}),
            "inference": InferenceResource(engine=EngineConfig(torch_threads=1), sample_per_axis=PER_AXIS),
            "model_store": ModelStoreResource(root=str(tmp_path / "models")),
        },
    )
    assert result.success
    manifest = read_manifest(tmp_path / "models", "tiny", "rtn-w4a16")
    assert manifest.source == "quantized"

    table = lake.read(
        lake.table_uri(str(tmp_path / "lake"), "responses", "BBQ"), filters={"model": "tiny", "method": "rtn-w4a16"}
    )
    axes_present = [a for a in DATASETS["BBQ"].axes if (data_dir / DATASETS["BBQ"].relative_path(a)).is_file()]
    assert len(table) == PER_AXIS * len(axes_present)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(manifest.path)
    model = AutoModelForCausalLM.from_pretrained(manifest.path).eval()
    questions = {row["idx"]: row for row in loaded.frame.iter_rows(named=True)}
    for row in table.iter_rows(named=True):
        question = questions[row["idx"]]
        expected = choice_probs(model, tokenizer, question["prompt"], list(question["choices"]))
        assert row["probs"] == pytest.approx(expected, abs=1e-4)
        assert row["chosen_idx"] == expected.index(max(expected))
    assert json.loads(json.dumps(manifest.identity)) == {"digest": manifest.digest}
