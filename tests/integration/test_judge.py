"""The judge worker end to end through Dagster: the tiny model as the guard over open responses.

Questions come from the real benchmark files; the open responses tables are written with the lake
API following docs/schemas.md, so each test controls exactly which responses exist. The tiny model
answers garbage, never a verdict: every row must be counted as invalid.
"""

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.verdicts import verdict_key, verdicts
from quantbias_assets.catalog.datasets import get_dataset, load_dataset
from quantbias_assets.engines import GenerationSettings, load_engine
from quantbias_assets.guard import VERDICT_SCHEMA, fit_conversation
from quantbias_assets.partitions import partition_key
from resources.guard import GuardEngineConfig, GuardResource
from resources.lake import LakeResource
from resources.workers import LocalWorkerLauncher

pytestmark = pytest.mark.slow

MODEL, METHOD = "tiny", "none"
SINGLE, MULTI = "CEB-Continuation-S", "FMT10K-IM-S"
MAX_MODEL_LEN, MAX_NEW_TOKENS = 400, 8  # the chosen prompts fit (<= 320 tokens), whole FMT10K conversations do not
LONG_REPLY = " ".join(["word"] * 3000)  # far beyond the guard context


def canonical_sha256(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_questions(root: str, data_dir: Path, dataset: str, rows: int) -> pl.DataFrame:
    questions = load_dataset(get_dataset(dataset), data_dir).frame.head(rows)
    lake.write_table(questions, lake.table_uri(root, "questions", dataset))
    return questions


def open_responses(questions: pl.DataFrame, replies: dict[str, str]) -> pl.DataFrame:
    """Rows of the open responses schema; FMT10K gets five replies, the last one judged."""
    rows = []
    for question in questions.filter(pl.col("idx").is_in(list(replies))).iter_rows(named=True):
        reply = replies[question["idx"]]
        turns = question["turns"]
        turns_out = [f"earlier reply {k}" for k in range(4)] + [reply] if turns else [reply]
        judged_turn = turns[-1] if turns else question["prompt"]
        rows.append(
            {
                "model": MODEL,
                "method": METHOD,
                "dataset": question["dataset"],
                "idx": question["idx"],
                "axis": question["axis"],
                "question_hash": question["question_hash"],
                "config_hash": "c" * 64,
                "turns_out": turns_out,
                "response": reply,
                "response_hash": canonical_sha256([judged_turn, reply]),
                "n_new_tokens": len(reply.split()),
                "finish_reason": "stop",
                "engine": "hf",
                "created_at": datetime.now(UTC),
            }
        )
    schema = {"turns_out": pl.List(pl.String), "n_new_tokens": pl.Int32, "created_at": pl.Datetime("us", "UTC")}
    return pl.DataFrame(rows, schema_overrides=schema)


def write_responses(root: str, dataset: str, responses: pl.DataFrame) -> None:
    lake.replace_partition(responses, lake.table_uri(root, "responses", dataset), model=MODEL, method=METHOD)


def judge(root: str, guard_model: Path, datasets: list[str], **guard_config: object) -> dg.ExecuteInProcessResult:
    guard = GuardResource(
        model=str(guard_model),
        engine=GuardEngineConfig(dtype="float32", torch_threads=1, max_model_len=MAX_MODEL_LEN),
        max_new_tokens=MAX_NEW_TOKENS,
        **{"chunk_rows": 4, **guard_config},
    )
    # disposed in the calling thread: its sqlite storage refuses other threads
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("model", [MODEL])
        return dg.materialize(
            [verdicts],
            selection=[verdict_key(name) for name in datasets],
            partition_key=partition_key(MODEL, METHOD),
            instance=instance,
            resources={"lake": LakeResource(root=root), "workers": LocalWorkerLauncher(), "guard": guard},
            raise_on_error=False,
        )


def metadata_of(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.asset_key.path[-1]: {name: value.value for name, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def read_verdicts(root: str, dataset: str) -> pl.DataFrame:
    return lake.read(lake.table_uri(root, "verdicts", dataset)).sort("idx")


@pytest.fixture
def lake_with_responses(tmp_path: Path, data_dir: Path) -> tuple[str, dict[str, pl.DataFrame]]:
    """6 single-turn responses (one empty, one far longer than the guard's context, one without a
    question) and 4 FMT10K conversations."""
    root = str(tmp_path / "lake")
    single_q = write_questions(root, data_dir, SINGLE, 6)
    multi_q = write_questions(root, data_dir, MULTI, 4)
    single_ids, multi_ids = single_q["idx"].to_list(), multi_q["idx"].to_list()
    single_replies = {idx: f"A reply number {i} about people." for i, idx in enumerate(single_ids)}
    single_replies[single_ids[1]] = ""
    single_replies[single_ids[2]] = LONG_REPLY
    single = open_responses(single_q, single_replies)
    orphan = single.head(1).with_columns(idx=pl.lit(f"{SINGLE}/age/999999"))
    write_responses(root, SINGLE, pl.concat([single, orphan]))
    write_responses(root, MULTI, open_responses(multi_q, {idx: f"Final reply {idx}." for idx in multi_ids}))
    return root, {SINGLE: single_q, MULTI: multi_q}


def test_tiny_guard_verdicts_are_counted_invalid_and_match_the_engine(
    lake_with_responses: tuple[str, dict[str, pl.DataFrame]], tiny_model_dir: Path
) -> None:
    root, questions = lake_with_responses
    result = judge(root, tiny_model_dir, [SINGLE, MULTI])
    assert result.success
    metadata = metadata_of(result)
    assert set(metadata) == {SINGLE, MULTI}
    single, multi = metadata[SINGLE], metadata[MULTI]
    assert (single["rows"], single["new_rows"], single["reused_rows"]) == (6, 6, 0)
    assert (single["safe"], single["unsafe"], single["invalid"], single["truncated"]) == (0, 0, 6, 1)
    assert single["responses_without_question"] == 1
    assert (multi["rows"], multi["new_rows"], multi["safe"], multi["unsafe"], multi["invalid"]) == (4, 4, 0, 0, 4)
    assert multi["truncated"] == 0
    assert single["guard_config_hash"] == multi["guard_config_hash"]

    table = read_verdicts(root, SINGLE)
    assert table.schema == VERDICT_SCHEMA
    assert table["idx"].to_list() == sorted(questions[SINGLE]["idx"].to_list())
    assert table["valid"].to_list() == [False] * 6
    assert table["is_safe"].null_count() == 6
    assert table["categories"].to_list() == [[]] * 6
    long_idx = questions[SINGLE]["idx"][2]
    assert table.filter(pl.col("truncated"))["idx"].to_list() == [long_idx]
    assert read_verdicts(root, MULTI)["valid"].to_list() == [False] * 4

    # Re-judge three rows in this process with the engine directly: the empty reply, the long
    # reply (cut to fit) and an FMT10K last turn; the worker's raw verdicts must be the same.
    single_q, multi_q = questions[SINGLE], questions[MULTI]
    conversations = {
        single_q["idx"][1]: [{"role": "user", "content": single_q["prompt"][1]}, {"role": "assistant", "content": ""}],
        single_q["idx"][2]: [
            {"role": "user", "content": single_q["prompt"][2]},
            {"role": "assistant", "content": LONG_REPLY},
        ],
        multi_q["idx"][0]: [
            {"role": "user", "content": multi_q["turns"][0][4]},
            {"role": "assistant", "content": f"Final reply {multi_q['idx'][0]}."},
        ],
    }
    engine = load_engine("hf", tiny_model_dir, dtype="float32", torch_threads=1)
    budget = MAX_MODEL_LEN - MAX_NEW_TOKENS
    fitted = {idx: fit_conversation(engine.tokenizer, c, budget)[0] for idx, c in conversations.items()}
    assert fitted[single_q["idx"][2]][1]["content"] != LONG_REPLY
    assert LONG_REPLY.startswith(fitted[single_q["idx"][2]][1]["content"])
    answers = engine.generate(list(fitted.values()), GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))
    engine.close()
    verdicts_by_idx = dict(
        pl.concat([read_verdicts(root, SINGLE), read_verdicts(root, MULTI)]).select("idx", "verdict_raw").iter_rows()
    )
    assert {idx: verdicts_by_idx[idx] for idx in fitted} == {idx: answer.text for idx, answer in zip(fitted, answers)}


def test_incremental_rejudges_exactly_the_changed_responses(
    lake_with_responses: tuple[str, dict[str, pl.DataFrame]], tiny_model_dir: Path, data_dir: Path
) -> None:
    root, _ = lake_with_responses
    assert judge(root, tiny_model_dir, [SINGLE]).success
    before = read_verdicts(root, SINGLE)

    # edit 2 replies, drop 1 response, add a 7th question with its response
    single_q = write_questions(root, data_dir, SINGLE, 7)
    ids = single_q["idx"].to_list()
    current = lake.read(lake.table_uri(root, "responses", SINGLE)).filter(pl.col("idx").is_in(ids))
    replies = dict(current.select("idx", "response").iter_rows())
    replies |= {ids[3]: "An edited reply.", ids[4]: "Another edited reply.", ids[6]: "A new reply."}
    del replies[ids[5]]
    write_responses(root, SINGLE, open_responses(single_q, replies))

    second = judge(root, tiny_model_dir, [SINGLE])
    assert second.success
    md = metadata_of(second)[SINGLE]
    assert (md["rows"], md["new_rows"], md["reused_rows"], md["deleted_stale_rows"]) == (6, 3, 3, 3)
    after = read_verdicts(root, SINGLE)
    assert after["idx"].to_list() == sorted([*ids[:5], ids[6]])
    unchanged = ids[:3]
    keep = ["idx", "conversation_hash", "verdict_raw", "created_at"]
    assert (
        after.filter(pl.col("idx").is_in(unchanged))
        .select(keep)
        .equals(before.filter(pl.col("idx").is_in(unchanged)).select(keep))
    )

    third = metadata_of(judge(root, tiny_model_dir, [SINGLE]))[SINGLE]
    assert (third["rows"], third["new_rows"], third["reused_rows"], third["deleted_stale_rows"]) == (6, 0, 6, 0)


def test_guard_setting_change_rejudges_everything(
    lake_with_responses: tuple[str, dict[str, pl.DataFrame]], tiny_model_dir: Path
) -> None:
    root, _ = lake_with_responses
    first = metadata_of(judge(root, tiny_model_dir, [MULTI]))[MULTI]
    full = metadata_of(judge(root, tiny_model_dir, [MULTI], judge_full_conversation=True))[MULTI]
    assert full["guard_config_hash"] != first["guard_config_hash"]
    assert (full["rows"], full["new_rows"], full["reused_rows"], full["deleted_stale_rows"]) == (4, 4, 0, 4)
    table = read_verdicts(root, MULTI)
    assert table["guard_config_hash"].unique().to_list() == [full["guard_config_hash"]]
    # the whole 5-turn conversation (10 messages) no longer fits: every row is cut
    assert full["truncated"] == 4


def test_missing_responses_table_fails_only_that_dataset(
    lake_with_responses: tuple[str, dict[str, pl.DataFrame]], tiny_model_dir: Path, data_dir: Path
) -> None:
    root, _ = lake_with_responses
    write_questions(root, data_dir, "CEB-Conversation-T", 3)
    result = judge(root, tiny_model_dir, [SINGLE, "CEB-Conversation-T"])
    assert not result.success
    assert set(metadata_of(result)) == {SINGLE}
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "verdicts/CEB-Conversation-T" in message
    assert str(Path(root) / "responses" / "CEB-Conversation-T") in message
    assert read_verdicts(root, SINGLE).height == 6


def judge_worker_pids() -> list[int]:
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "quantbias_assets.workers.judge" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # exited meanwhile
            continue
    return pids


def test_killed_judge_resumes_to_the_same_table(tiny_model_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    root = str(tmp_path / "lake")
    conversations = 30  # one Delta commit each: the kill lands long before the last one
    questions = write_questions(root, data_dir, MULTI, conversations)
    write_responses(root, MULTI, open_responses(questions, {idx: f"Reply {idx}." for idx in questions["idx"]}))
    uri = lake.table_uri(root, "verdicts", MULTI)
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    run = threading.Thread(target=lambda: outcome.update(killed=judge(root, tiny_model_dir, [MULTI], chunk_rows=1)))
    run.start()
    killed = False
    deadline = time.monotonic() + 300
    while not killed and time.monotonic() < deadline:
        if lake.table_exists(uri):  # the first chunk is committed
            for pid in judge_worker_pids():
                psutil.Process(pid).kill()
                killed = True
        time.sleep(0.01)
    run.join(timeout=300)
    assert killed
    assert not outcome["killed"].success
    committed = lake.read(uri).height
    assert 1 <= committed < conversations

    resumed = metadata_of(judge(root, tiny_model_dir, [MULTI], chunk_rows=8))[MULTI]
    assert (resumed["rows"], resumed["new_rows"], resumed["reused_rows"]) == (
        conversations,
        conversations - committed,
        committed,
    )

    # an uninterrupted run over a copy of the inputs gives the same table
    fresh_root = str(tmp_path / "fresh")
    lake.write_table(questions, lake.table_uri(fresh_root, "questions", MULTI))
    write_responses(fresh_root, MULTI, lake.read(lake.table_uri(root, "responses", MULTI)))
    assert judge(fresh_root, tiny_model_dir, [MULTI], chunk_rows=8).success
    assert read_verdicts(root, MULTI).drop("created_at").equals(read_verdicts(fresh_root, MULTI).drop("created_at"))


def test_missing_guard_folder_is_a_clear_error(
    lake_with_responses: tuple[str, dict[str, pl.DataFrame]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root, _ = lake_with_responses
    result = judge(root, tmp_path / "no-guard-here", [SINGLE])
    assert not result.success
    # the worker's error reaches the step's captured output (the run's compute logs)
    assert f"guard model: {tmp_path / 'no-guard-here'}: no such folder" in capfd.readouterr().err
    assert not lake.table_exists(lake.table_uri(root, "verdicts", SINGLE))
