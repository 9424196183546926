"""The respond worker through real Dagster runs: tiny model, real question files, Delta lake on tmp.

Each test materializes `responses` with LakeResource on a temp folder and LocalWorkerLauncher
(the worker is a real subprocess under Dagster Pipes). Expected counts and values come from the
raw JSON files and an independent transformers computation, never from the worker's own code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.responses import response_key, responses
from quantbias_assets.catalog.datasets import DATASETS, canonical_json, load_dataset, question_hash
from quantbias_assets.checkpoint_manifest import CheckpointManifest, weights_digest, write_manifest
from quantbias_assets.partitions import partition_key
from resources.inference import EngineConfig, InferenceResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

pytestmark = pytest.mark.slow

PER_AXIS = 2
TEST_INFERENCE = {
    "engine": EngineConfig(torch_threads=1),
    "max_new_tokens": 6,
    "fmt_max_new_tokens_per_turn": 3,
    "chunk_rows": 4,
    "sample_per_axis": PER_AXIS,
}
WORKER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------- setup helpers


def write_questions(lake_root: Path, data_dir: Path, datasets: Sequence[str]) -> None:
    for name in datasets:
        load = load_dataset(DATASETS[name], data_dir)
        assert load.ok, load.errors
        lake.write_table(load.frame, lake.table_uri(str(lake_root), "questions", name))


def write_checkpoint(store_root: Path, model: str, model_dir: Path, *, trust_remote_code: bool = False) -> None:
    write_manifest(
        store_root,
        CheckpointManifest(
            model=model,
            method="none",
            source="base",
            path=str(model_dir),
            digest=weights_digest(model_dir),
            trust_remote_code=trust_remote_code,
        ),
    )


def run_responses(
    tmp: Path,
    datasets: Sequence[str],
    *,
    model: str = "tiny",
    instance: dg.DagsterInstance | None = None,
    **inference: object,
) -> dg.ExecuteInProcessResult:
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", [model])
    return dg.materialize(
        [responses],
        selection=[response_key(name) for name in datasets],
        partition_key=partition_key(model, "none"),
        instance=instance,
        resources={
            "lake": LakeResource(root=str(tmp / "lake")),
            "workers": LocalWorkerLauncher(env=WORKER_ENV),
            "inference": InferenceResource(**{**TEST_INFERENCE, **inference}),
            "model_store": ModelStoreResource(root=str(tmp / "models")),
        },
        raise_on_error=False,
    )


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Metadata of each reported materialization, by dataset."""
    return {
        m.asset_key.path[-1]: {key: value.value for key, value in m.metadata.items()}
        for m in result.asset_materializations_for_node("responses")
    }


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Every message of the run: the worker's Pipes log lines and the errors it raised."""
    lines = []
    for entry in instance.all_logs(result.run_id):
        lines.append(entry.user_message)
        error = getattr(entry.dagster_event and entry.dagster_event.event_specific_data, "error", None)
        if error is not None:
            lines.append(error.message)
    return "\n".join(lines)


def response_table(tmp: Path, dataset: str, model: str = "tiny") -> pl.DataFrame:
    uri = lake.table_uri(str(tmp / "lake"), "responses", dataset)
    return lake.read(uri, filters={"model": model, "method": "none"}).sort("idx")


def first_records_per_axis(data_dir: Path, dataset: str, n: int) -> list[dict]:
    """The first n records of each axis file, read straight from the JSON files."""
    spec = DATASETS[dataset]
    records: list[dict] = []
    for axis in spec.axes:
        path = data_dir / spec.relative_path(axis)
        if path.is_file():
            records += json.loads(path.read_text())[:n]
    return records


# ---------------------------------------------------------------- independent computations


def reference_probs(model, tokenizer, prompt: str, choices: Sequence[str]) -> list[float]:
    """Spec §3.1 done the reference's way: one forward per choice, choice tokens found by decoding backwards."""
    import torch

    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    sep = "" if templated[-1].isspace() else " "
    scores = []
    for choice in choices:
        ids = tokenizer(templated + sep + choice, add_special_tokens=False)["input_ids"]
        text, start = "", len(ids)
        while text.strip() != choice.strip():
            start -= 1
            text = tokenizer.decode([ids[start]]) + text
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        picked = [logprobs[position - 1, ids[position]].item() for position in range(start, len(ids))]
        scores.append(math.exp(sum(picked) / len(picked)))
    return [score / sum(scores) for score in scores]


# ---------------------------------------------------------------- tests


CLOSED = ("CEB-Adult", "StereoSet-Intersentence")
OPEN = ("CEB-Continuation-S", "FMT10K-IM-S")


def test_materialize_answers_closed_and_open_datasets_and_reuses_them(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    write_questions(tmp_path / "lake", data_dir, CLOSED + OPEN)
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)

    result = run_responses(tmp_path, CLOSED + OPEN)
    assert result.success
    reported = materializations(result)
    assert set(reported) == set(CLOSED + OPEN)
    for dataset in CLOSED + OPEN:
        expected_idx = sorted(r["idx"] for r in first_records_per_axis(data_dir, dataset, PER_AXIS))
        table = response_table(tmp_path, dataset)
        assert table["idx"].to_list() == expected_idx
        meta = reported[dataset]
        assert (meta["rows"], meta["new_rows"], meta["reused_rows"], meta["deleted_stale_rows"]) == (
            len(expected_idx),
            len(expected_idx),
            0,
            0,
        )
        assert meta["failed_questions"] == 0 and meta["engine"] == "hf"
        assert table["config_hash"].n_unique() == 1 and table["config_hash"][0] == meta["config_hash"]
    assert len(response_table(tmp_path, "CEB-Adult")) == 2 * PER_AXIS  # gender, race
    assert len(response_table(tmp_path, "FMT10K-IM-S")) == 6 * PER_AXIS

    # closed values against an independent one-forward-per-choice computation
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()
    for dataset in CLOSED:
        records = {r["idx"]: r for r in first_records_per_axis(data_dir, dataset, PER_AXIS)}
        for row in response_table(tmp_path, dataset).iter_rows(named=True):
            source = records[row["idx"]]
            expected = reference_probs(model, tokenizer, source["prompt"], source["choices"])
            assert row["probs"] == pytest.approx(expected, abs=1e-5)
            assert row["chosen_idx"] == expected.index(max(expected))
            assert row["chosen_text"] == source["choices"][row["chosen_idx"]]
            assert row["probs_rounded"] == [round(p, 8) for p in row["probs"]]
            assert row["choice_n_chars"] == [len(c) for c in source["choices"]]

    # open rows: single-turn has one reply, FMT10K five; the hash keys the judged turn
    records = {r["idx"]: r for r in first_records_per_axis(data_dir, "FMT10K-IM-S", PER_AXIS)}
    fmt = response_table(tmp_path, "FMT10K-IM-S")
    for row in fmt.iter_rows(named=True):
        assert len(row["turns_out"]) == 5 and row["response"] == row["turns_out"][-1]
        judged = json.dumps(
            [records[row["idx"]]["4-turn Conv"], row["response"]], ensure_ascii=False, separators=(",", ":")
        )
        assert row["response_hash"] == hashlib.sha256(judged.encode()).hexdigest()
        assert row["finish_reason"] in ("stop", "length") and 0 < row["n_new_tokens"] <= 5 * 3
    single = response_table(tmp_path, "CEB-Continuation-S")
    assert single["turns_out"].list.len().to_list() == [1] * single.height
    assert (single["n_new_tokens"] <= 6).all()

    # a second run reuses every row and changes nothing
    before = {d: response_table(tmp_path, d) for d in CLOSED + OPEN}
    again = run_responses(tmp_path, CLOSED + OPEN)
    assert again.success
    for dataset, meta in materializations(again).items():
        assert (meta["new_rows"], meta["reused_rows"], meta["deleted_stale_rows"]) == (0, meta["rows"], 0)
        assert response_table(tmp_path, dataset).equals(before[dataset])


def test_fmt_turns_feed_the_models_own_replies_back(tmp_path: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    """Turn k is generated from [user 0, reply 0, ..., user k] (spec §4.2), checked turn by turn."""
    from quantbias_assets.engines import GenerationSettings, load_engine

    write_questions(tmp_path / "lake", data_dir, ["FMT10K-IM-T"])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    # one question per chunk, so each generation runs unbatched like the check below
    assert run_responses(tmp_path, ["FMT10K-IM-T"], sample_per_axis=1, chunk_rows=1).success
    table = response_table(tmp_path, "FMT10K-IM-T")
    assert table.height == 4  # disable, gender, race, religion

    engine = load_engine("hf", tiny_model_dir, torch_threads=1)
    records = {r["idx"]: r for r in first_records_per_axis(data_dir, "FMT10K-IM-T", 1)}
    row = table.row(0, named=True)
    conversation: list[dict[str, str]] = []
    for turn in range(5):
        conversation.append({"role": "user", "content": records[row["idx"]][f"{turn}-turn Conv"]})
        reply = engine.generate([conversation], GenerationSettings(max_new_tokens=3, temperature=0.0))[0]
        assert reply.text == row["turns_out"][turn]
        conversation.append({"role": "assistant", "content": reply.text})
    engine.close()


def edit_questions(lake_root: Path, dataset: str, idxs: Sequence[str]) -> None:
    """Change the prompt (and so the source record and question_hash) of some questions."""
    uri = lake.table_uri(str(lake_root), "questions", dataset)
    frame = lake.read(uri)
    edited = []
    for row in frame.iter_rows(named=True):
        if row["idx"] in idxs:
            source = json.loads(row["source_json"])
            source["prompt"] = row["prompt"] = row["prompt"] + " Answer carefully."
            row["source_json"] = canonical_json(source)
            row["question_hash"] = question_hash(dataset, row["source_json"])
        edited.append(row)
    lake.write_table(pl.DataFrame(edited, schema=frame.schema), uri)


def test_editing_three_questions_rescores_exactly_those(tmp_path: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    write_questions(tmp_path / "lake", data_dir, ["CEB-Adult"])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    assert run_responses(tmp_path, ["CEB-Adult"], sample_per_axis=5).success
    before = response_table(tmp_path, "CEB-Adult")
    assert before.height == 10

    edited = ["CEB-Adult/gender/1", "CEB-Adult/race/0", "CEB-Adult/race/4"]
    edit_questions(tmp_path / "lake", "CEB-Adult", edited)
    result = run_responses(tmp_path, ["CEB-Adult"], sample_per_axis=5)
    meta = materializations(result)["CEB-Adult"]
    assert (meta["rows"], meta["new_rows"], meta["reused_rows"], meta["deleted_stale_rows"]) == (10, 3, 7, 3)

    after = response_table(tmp_path, "CEB-Adult")
    assert after.height == 10 and after["idx"].to_list() == before["idx"].to_list()
    changed = after.join(before, on="idx", suffix="_before").filter(
        pl.col("question_hash") != pl.col("question_hash_before")
    )
    assert sorted(changed["idx"].to_list()) == edited
    unchanged = after.filter(~pl.col("idx").is_in(edited))
    assert unchanged.equals(before.filter(~pl.col("idx").is_in(edited)))


def worker_pids() -> list[int]:
    """Respond workers started by this test process (Pipes subprocesses are its children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and "quantbias_assets.workers.respond" in cmdline:
            pids.append(int(entry.name))
    return pids


def commits(table_dir: Path) -> int:
    return len(list((table_dir / "_delta_log").glob("*.json"))) if (table_dir / "_delta_log").is_dir() else 0


KILL_DATASETS = ("BBQ", "CEB-Continuation-S")
KILL_SETTINGS = {"sample_per_axis": 5, "chunk_rows": 3, "max_new_tokens": 12}


def test_killed_worker_then_rerun_equals_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    for run in ("killed", "clean"):
        write_questions(tmp_path / run / "lake", data_dir, KILL_DATASETS)
        write_checkpoint(tmp_path / run / "models", "tiny", tiny_model_dir)

    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("run", run_responses(tmp_path / "killed", KILL_DATASETS, **KILL_SETTINGS))
    )
    thread.start()
    bbq_dir = tmp_path / "killed" / "lake" / "responses" / "BBQ"
    deadline = time.monotonic() + 300
    while commits(bbq_dir) == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert commits(bbq_dir) >= 1, "the worker never committed a chunk"
    pids = worker_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=120)
    assert not outcome["run"].success

    expected_rows = {"BBQ": 6 * 5, "CEB-Continuation-S": 4 * 5}
    written = sum(
        len(lake.read(lake.table_uri(str(tmp_path / "killed" / "lake"), "responses", d)))
        for d in KILL_DATASETS
        if lake.table_exists(lake.table_uri(str(tmp_path / "killed" / "lake"), "responses", d))
    )
    assert 0 < written < sum(expected_rows.values()), "the kill must land mid-run"

    resumed = run_responses(tmp_path / "killed", KILL_DATASETS, **KILL_SETTINGS)
    assert resumed.success
    meta = materializations(resumed)
    assert meta["BBQ"]["new_rows"] + meta["BBQ"]["reused_rows"] == expected_rows["BBQ"]
    assert meta["BBQ"]["reused_rows"] > 0
    assert run_responses(tmp_path / "clean", KILL_DATASETS, **KILL_SETTINGS).success
    for dataset, rows in expected_rows.items():
        killed = response_table(tmp_path / "killed", dataset).drop("created_at")
        clean = response_table(tmp_path / "clean", dataset).drop("created_at")
        assert killed.height == rows
        assert killed.equals(clean)


def test_two_partitions_write_the_same_tables_at_the_same_time(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    datasets = ("CEB-Credit", "CEB-Recognition-T")
    write_questions(tmp_path / "lake", data_dir, datasets)
    for model in ("tiny-a", "tiny-b"):
        write_checkpoint(tmp_path / "models", model, tiny_model_dir)
    results: dict[str, dg.ExecuteInProcessResult] = {}
    threads = [
        threading.Thread(
            target=lambda m=model: results.setdefault(m, run_responses(tmp_path, datasets, model=m, chunk_rows=1))
        )
        for model in ("tiny-a", "tiny-b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results["tiny-a"].success and results["tiny-b"].success
    for dataset, axes in (("CEB-Credit", 2), ("CEB-Recognition-T", 4)):
        table = lake.read(lake.table_uri(str(tmp_path / "lake"), "responses", dataset))
        counts = dict(table.group_by("model").len().iter_rows())
        assert counts == {"tiny-a": axes * PER_AXIS, "tiny-b": axes * PER_AXIS}
        # same weights, same questions: both partitions hold the same answers
        a, b = (table.filter(pl.col("model") == m).sort("idx") for m in ("tiny-a", "tiny-b"))
        assert a["probs"].to_list() == b["probs"].to_list()


def test_bad_inputs_fail_clearly_and_keep_what_was_committed(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    # no question table for CEB-Credit; a whitespace-only choice and a missing FMT turn
    write_questions(tmp_path / "lake", data_dir, ["CEB-Adult", "FMT10K-IM-T"])
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    uri = lake.table_uri(str(tmp_path / "lake"), "questions", "CEB-Adult")
    broken = lake.read(uri).with_columns(
        pl.when(pl.col("idx") == "CEB-Adult/race/0")
        .then(pl.concat_list(pl.col("choices").list.first(), pl.lit("   ")))
        .otherwise(pl.col("choices"))
        .alias("choices")
    )
    lake.write_table(broken, uri)
    fmt_uri = lake.table_uri(str(tmp_path / "lake"), "questions", "FMT10K-IM-T")
    fmt = lake.read(fmt_uri)
    lake.write_table(
        fmt.with_columns(
            pl.when(pl.col("idx") == "FMT10K-IM-T/race/0")
            .then(pl.col("turns").list.head(4).list.concat(pl.lit(None, dtype=pl.String)))
            .otherwise(pl.col("turns"))
            .alias("turns")
        ),
        fmt_uri,
    )

    instance = dg.DagsterInstance.ephemeral()
    result = run_responses(
        tmp_path,
        ["CEB-Adult", "CEB-Credit", "FMT10K-IM-T"],
        instance=instance,
        sample_per_axis=1,
        chunk_rows=2,
        fmt_max_new_tokens_per_turn=2,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "responses/CEB-Credit" in str(failure) and "questions/CEB-Credit" in str(failure)
    meta = materializations(result)
    assert set(meta) == {"CEB-Adult", "FMT10K-IM-T"}
    assert (meta["CEB-Adult"]["rows"], meta["CEB-Adult"]["failed_questions"]) == (1, 1)
    assert (meta["FMT10K-IM-T"]["rows"], meta["FMT10K-IM-T"]["failed_questions"]) == (3, 1)
    assert meta["CEB-Adult"]["failed_idx_sample"] == "CEB-Adult/race/0"
    log = run_log(instance, result)
    assert "questions/CEB-Adult: record CEB-Adult/race/0: choices: choice 1:" in log
    assert "questions/FMT10K-IM-T: record FMT10K-IM-T/race/0: turns: missing" in log
    table = response_table(tmp_path, "CEB-Adult")
    assert table["idx"].to_list() == ["CEB-Adult/gender/0"]
    assert "FMT10K-IM-T/race/0" not in response_table(tmp_path, "FMT10K-IM-T")["idx"].to_list()

    # a checkpoint whose folder is gone: the run fails naming it, and the table is untouched
    write_checkpoint(tmp_path / "models", "tiny", tiny_model_dir)
    manifest_file = tmp_path / "models" / "tiny" / "none" / "checkpoint.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["path"] = str(tmp_path / "no-such-model")
    manifest_file.write_text(json.dumps(manifest))
    instance = dg.DagsterInstance.ephemeral()
    missing = run_responses(tmp_path, ["CEB-Adult"], instance=instance, sample_per_axis=1)
    assert not missing.success
    assert f"{tmp_path / 'no-such-model'}: model folder not found" in run_log(instance, missing)
    assert response_table(tmp_path, "CEB-Adult").equals(table)


def test_unknown_dataset_and_remote_code_switch(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """In-process: a dataset outside the catalog is named; custom model code runs only when the manifest allows it."""
    import shutil

    from quantbias_assets.contracts import RespondRequest
    from quantbias_assets.workers.respond import load_checkpoint_engine, respond_dataset

    model_dir = tmp_path / "remote-code-model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "marked_llama.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['QUANTBIAS_TEST_MARKER']).write_text('imported')\n"
        "from transformers import LlamaForCausalLM\n\n\n"
        "class MarkedLlamaForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "marked_llama.MarkedLlamaForCausalLM"}
    (model_dir / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "marker"
    monkeypatch.setenv("QUANTBIAS_TEST_MARKER", str(marker))

    extras = {
        "lake_root": str(tmp_path / "lake"),
        "model": "tiny",
        "method": "none",
        "model_store_root": str(tmp_path / "models"),
        "datasets": ["NoSuchDataset"],
        "backend": "hf",
        "engine_config": {"torch_threads": 1},
        "chunk_rows": 4,
        "generation": InferenceResource().generation_config(),
    }
    request = RespondRequest.from_extras(extras)

    write_checkpoint(tmp_path / "models", "tiny", model_dir, trust_remote_code=False)
    engine, manifest = load_checkpoint_engine(request)
    engine.load()  # workers load the model on first use (workers/lazy_engine.py)
    assert not marker.exists()
    with pytest.raises(KeyError, match="unknown dataset 'NoSuchDataset'"):
        respond_dataset(engine, manifest.identity, request, "NoSuchDataset", log_info=print, log_error=print)
    engine.close()

    write_checkpoint(tmp_path / "models", "tiny", model_dir, trust_remote_code=True)
    engine, _ = load_checkpoint_engine(request)
    engine.load()
    assert marker.read_text() == "imported"
    engine.close()


def test_a_chunk_where_every_question_fails_gives_typed_empty_rows(tiny_model_dir: Path) -> None:
    """In-process: nothing answerable in a chunk -> zero rows of the table's schema, failures counted."""
    from quantbias_assets.engines import GenerationSettings, load_engine
    from quantbias_assets.responding import (
        CLOSED_SCHEMA,
        OPEN_SCHEMA,
        ChunkStats,
        DatasetRun,
        closed_rows,
        open_rows,
    )

    engine = load_engine("hf", tiny_model_dir, torch_threads=1)
    run = DatasetRun("tiny", "none", "X", "c0", engine.name)
    chunk = pl.DataFrame(
        {
            "idx": ["X/a/0", "X/a/1"],
            "axis": ["a", "a"],
            "prompt": ["Hello?", "Hi?"],
            "turns": [None, None],
            "choices": [["  "], []],
            "question_hash": ["q0", "q1"],
        },
        schema_overrides={"turns": pl.List(pl.String)},
    )
    errors: list[str] = []
    stats = ChunkStats()
    closed = closed_rows(chunk, engine, run, add_special_tokens=False, stats=stats, log_error=errors.append)
    assert closed.height == 0 and closed.schema == CLOSED_SCHEMA
    assert stats.failed_questions == ["X/a/0", "X/a/1"]
    assert errors[1] == "questions/X: record X/a/1: choices: empty choice list"

    stats = ChunkStats()
    opened = open_rows(
        chunk.with_columns(prompt=pl.lit(None, dtype=pl.String)),
        engine,
        run,
        settings=GenerationSettings(max_new_tokens=2),
        multi_turn=False,
        stats=stats,
        log_error=errors.append,
    )
    assert opened.height == 0 and opened.schema == OPEN_SCHEMA
    assert errors[-2:] == ["questions/X: record X/a/0: prompt: missing", "questions/X: record X/a/1: prompt: missing"]
    engine.close()
