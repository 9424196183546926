"""The length guard: a question longer than the model's context fails alone.

A real oversized question (a 5 MB prompt in a valid benchmark file) and a long one (~9k tokens,
over the tiny model's 4096) go through `quantbias datasets check` (a warning, not an error) and
a real Dagster run of the respond worker: each fails alone with
`questions/<dataset>: record <idx>: prompt: N tokens exceed the model's context of M`, quickly,
and every other question of that dataset and of the other dataset is answered. In-process
tests pin the exact messages, the generation budget, the configurable cap, and that the engine
never ran a forward on an oversized question. Expected token counts come from the tokenizer
called directly, never from the worker's own code.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quantbias_assets import lake
from quantbias_assets.assets.responses import response_key, responses
from quantbias_assets.catalog.datasets import DATASETS, RECORD_SIZE_WARNING_CHARS, load_dataset
from quantbias_assets.checkpoint_manifest import CheckpointManifest, weights_digest, write_manifest
from quantbias_assets.cli import main
from quantbias_assets.engines.base import PINNED_TEMPLATE_DATE, LengthGuard, max_token_chars, model_context
from quantbias_assets.partitions import partition_key
from resources.inference import EngineConfig, InferenceResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.workers import LocalWorkerLauncher

HUGE_PROMPT = "word " * 1_000_000  # 5 MB: the size that stalled `quantbias score` for 100+ s
LONG_PROMPT = "the people said hello " * 1500  # ~9k tokens of the tiny model, under its character bound
TINY_CONTEXT = 4096  # max_position_embeddings of quantbias_assets.tiny_model
WORKER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def prompt_tokens(tokenizer, messages: list[dict[str, str]]) -> tuple[str, int]:
    """The rendered chat prompt and its token count, straight from the tokenizer."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, date_string=PINNED_TEMPLATE_DATE
    )
    return text, len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    from quantbias_assets.engines import load_engine

    loaded = load_engine("hf", tiny_model_dir, torch_threads=1)
    yield loaded
    loaded.close()


def closed_chunk(prompts: list[str]) -> pl.DataFrame:
    n = len(prompts)
    return pl.DataFrame(
        {
            "idx": [f"X/a/{i}" for i in range(n)],
            "axis": ["a"] * n,
            "prompt": prompts,
            "turns": [None] * n,
            "choices": [["yes", "no"]] * n,
            "question_hash": [f"q{i}" for i in range(n)],
        },
        schema_overrides={"turns": pl.List(pl.String)},
    )


# ---------------------------------------------------------------- the guard itself


def test_guard_messages_and_limits(engine, tokenizer) -> None:
    guard = LengthGuard(100, "the model's context of 100", chars_per_token=4)
    assert guard.characters_problem(400) is None
    assert (
        guard.characters_problem(401)
        == "at least 101 tokens (401 characters, at most 4 per token) exceed the model's context of 100"
    )
    assert guard.characters_problem(321, new_tokens=20) == (
        "at least 81 tokens (321 characters, at most 4 per token) + max_new_tokens 20 exceed the model's context of 100"
    )
    assert guard.tokens_problem(100) is None
    assert guard.tokens_problem(101) == "101 tokens exceed the model's context of 100"
    assert guard.tokens_problem(81, new_tokens=20) == "81 tokens + max_new_tokens 20 exceed the model's context of 100"

    def must_not_tokenize(text: str) -> int:
        raise AssertionError("a text that surely fits is not tokenized")

    assert guard.text_problem("x" * 50, must_not_tokenize) is None  # 2 * 50 bytes <= 100
    assert guard.text_problem("x" * 60, lambda text: 101) == "101 tokens exceed the model's context of 100"

    # the real tiny model: context from its config, characters per token from its vocabulary
    assert model_context(engine) == TINY_CONTEXT
    longest = max(len(token) for token in tokenizer.get_vocab())
    assert max_token_chars(engine.tokenizer) == longest
    assert LengthGuard.for_engine(engine) == LengthGuard(TINY_CONTEXT, "the model's context of 4096", longest)
    assert LengthGuard.for_engine(engine, 64) == LengthGuard(64, "the max_context_tokens cap of 64", longest)
    assert LengthGuard.for_engine(engine, 10_000).limit == TINY_CONTEXT  # a cap above the context changes nothing
    with pytest.raises(ValueError, match="max_context_tokens must be >= 1"):
        LengthGuard.for_engine(engine, 0)


def test_oversized_closed_questions_fail_alone_without_a_forward(engine, tokenizer) -> None:
    from quantbias_assets.responding import ChunkStats, DatasetRun, closed_rows

    run = DatasetRun("tiny", "none", "X", "c0", engine.name)
    errors: list[str] = []
    stats = ChunkStats()
    started = time.perf_counter()
    frame = closed_rows(
        closed_chunk(["Is the sky blue?", HUGE_PROMPT, LONG_PROMPT]),
        engine,
        run,
        add_special_tokens=False,
        stats=stats,
        log_error=errors.append,
    )
    seconds = time.perf_counter() - started
    huge_text, _ = prompt_tokens(tokenizer, [{"role": "user", "content": "x"}])
    huge_chars = len(huge_text) - 1 + len(HUGE_PROMPT)
    per_token = max(len(token) for token in tokenizer.get_vocab())
    _, long_tokens = prompt_tokens(tokenizer, [{"role": "user", "content": LONG_PROMPT}])
    assert long_tokens > TINY_CONTEXT
    assert errors == [
        f"questions/X: record X/a/1: prompt: at least {math.ceil(huge_chars / per_token)} tokens "
        f"({huge_chars} characters, at most {per_token} per token) exceed the model's context of 4096",
        f"questions/X: record X/a/2: prompt: {long_tokens} tokens exceed the model's context of 4096",
    ]
    assert stats.failed_questions == ["X/a/1", "X/a/2"] and stats.questions == 1
    assert seconds < 10  # the 5 MB prompt is never tokenized; before the guard it ran 100+ s
    # the engine's last forward covered only the short question's tokens
    _, short_tokens = prompt_tokens(tokenizer, [{"role": "user", "content": "Is the sky blue?"}])
    assert 0 < engine.tokens_run <= short_tokens + 4
    alone = closed_rows(
        closed_chunk(["Is the sky blue?"]),
        engine,
        run,
        add_special_tokens=False,
        stats=ChunkStats(),
        log_error=errors.append,
    )
    assert frame["idx"].to_list() == ["X/a/0"] and frame["probs"].to_list() == alone["probs"].to_list()


def test_the_cap_fails_questions_longer_than_it_and_scores_the_rest(engine, tokenizer) -> None:
    from quantbias_assets.responding import ChunkStats, DatasetRun, closed_rows

    short, longer = "Is the sky blue?", "Is the sky blue, or is it grey on a rainy day in the north?"
    # the scored sequence is prompt + sep + choice, sep = " " unless the prompt ends in whitespace
    texts = [prompt_tokens(tokenizer, [{"role": "user", "content": p}])[0] for p in (short, longer)]
    lengths = [
        max(
            len(tokenizer(text + ("" if text[-1].isspace() else " ") + c, add_special_tokens=False)["input_ids"])
            for c in ("yes", "no")
        )
        for text in texts
    ]
    _, prompt_lengths = zip(*(prompt_tokens(tokenizer, [{"role": "user", "content": p}]) for p in (short, longer)))

    def run(cap: int) -> tuple[list[str], list[str]]:
        errors: list[str] = []
        frame = closed_rows(
            closed_chunk([short, longer]),
            engine,
            DatasetRun("tiny", "none", "X", "c0", engine.name),
            add_special_tokens=False,
            stats=ChunkStats(),
            log_error=errors.append,
            guard=LengthGuard.for_engine(engine, cap),
        )
        return frame["idx"].to_list(), errors

    # a cap the short question reaches only with its choice; the longer prompt exceeds it alone
    cap = prompt_lengths[0]
    assert lengths[0] > cap and prompt_lengths[1] > cap
    assert run(cap) == (
        [],
        [
            f"questions/X: record X/a/0: prompt: {lengths[0]} tokens with its longest choice exceed "
            f"the max_context_tokens cap of {cap}",
            f"questions/X: record X/a/1: prompt: {prompt_lengths[1]} tokens exceed the max_context_tokens cap of {cap}",
        ],
    )
    cap = lengths[0]
    assert prompt_lengths[1] > cap
    assert run(cap) == (
        ["X/a/0"],
        [f"questions/X: record X/a/1: prompt: {prompt_lengths[1]} tokens exceed the max_context_tokens cap of {cap}"],
    )


def test_generation_counts_max_new_tokens_and_every_turn(engine, tokenizer) -> None:
    from quantbias_assets.engines import GenerationSettings
    from quantbias_assets.responding import ChunkStats, DatasetRun, open_rows

    run = DatasetRun("tiny", "none", "X", "c0", engine.name)
    # single turn: the prompt fits the cap alone, but not with the 8 new tokens
    _, tokens = prompt_tokens(tokenizer, [{"role": "user", "content": "Tell me about the sea."}])
    errors: list[str] = []
    stats = ChunkStats()
    frame = open_rows(
        closed_chunk(["Hi", "Tell me about the sea."]),
        engine,
        run,
        settings=GenerationSettings(max_new_tokens=8),
        multi_turn=False,
        stats=stats,
        log_error=errors.append,
        guard=LengthGuard.for_engine(engine, tokens + 7),
    )
    assert frame["idx"].to_list() == ["X/a/0"]
    assert errors == [
        f"questions/X: record X/a/1: prompt: {tokens} tokens + max_new_tokens 8 exceed "
        f"the max_context_tokens cap of {tokens + 7}"
    ]

    # multi-turn: the third turn is too long for the model's context; the other conversation finishes
    short_turns = ["Remember: the sky is blue.", "Remember: grass is green.", "What colour is the sky?"]
    turns = [short_turns, [*short_turns[:2], LONG_PROMPT]]
    chunk = pl.DataFrame(
        {
            "idx": ["X/a/0", "X/a/1"],
            "axis": ["a", "a"],
            "prompt": [None, None],
            "turns": turns,
            "choices": [[], []],
            "question_hash": ["q0", "q1"],
        },
        schema_overrides={"prompt": pl.String},
    )
    errors = []
    frame = open_rows(
        chunk,
        engine,
        run,
        settings=GenerationSettings(max_new_tokens=2),
        multi_turn=True,
        stats=ChunkStats(),
        log_error=errors.append,
    )
    assert frame["idx"].to_list() == ["X/a/0"] and frame["turns_out"].list.len().to_list() == [3]
    assert len(errors) == 1
    found = re.fullmatch(
        r"questions/X: record X/a/1: turns: turn 3: (\d+) tokens \+ max_new_tokens 2 exceed"
        r" the model's context of 4096",
        errors[0],
    )
    assert found, errors[0]
    _, long_tokens = prompt_tokens(tokenizer, [{"role": "user", "content": LONG_PROMPT}])
    assert int(found.group(1)) > long_tokens  # the history of turns 1-2 comes on top


# ---------------------------------------------------------------- datasets check and a real Dagster run


def oversized_data_dir(data_dir: Path, tmp: Path) -> Path:
    """CEB-Adult and FMT10K-IM-T copied, with a 5 MB prompt, a ~9k-token prompt and a ~9k-token turn."""
    out = tmp / "datasets"
    for name in ("CEB-Adult", "FMT10K-IM-T"):
        spec = DATASETS[name]
        (out / spec.folder / name).mkdir(parents=True)
        for axis in spec.axes:
            shutil.copy(data_dir / spec.relative_path(axis), out / spec.relative_path(axis))
    edits = [
        ("closed_datasets/CEB-Adult/gender.json", "prompt", HUGE_PROMPT),
        ("closed_datasets/CEB-Adult/race.json", "prompt", LONG_PROMPT),
        ("open_datasets/FMT10K-IM-T/race.json", "2-turn Conv", LONG_PROMPT),
    ]
    for relative, field_name, text in edits:
        records = json.loads((out / relative).read_text())
        records[0][field_name] = text
        (out / relative).write_text(json.dumps(records))
    return out


@pytest.mark.slow
def test_an_oversized_question_fails_alone_in_a_dagster_run(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = oversized_data_dir(data_dir, tmp_path)

    # datasets check: a warning for the 5 MB record only, and exit status 0
    assert main(["datasets", "check", "--data-dir", str(folder)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: closed_datasets/CEB-Adult/gender.json: record CEB-Adult/gender/0: size: ")
    assert f"(more than {RECORD_SIZE_WARNING_CHARS})" in warnings[0]

    for name in ("CEB-Adult", "FMT10K-IM-T"):
        load = load_dataset(DATASETS[name], folder)
        assert load.ok, load.errors
        lake.write_table(load.frame, lake.table_uri(str(tmp_path / "lake"), "questions", name))
    write_manifest(
        tmp_path / "models",
        CheckpointManifest(
            model="tiny", method="none", source="base", path=str(tiny_model_dir), digest=weights_digest(tiny_model_dir)
        ),
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("model", ["tiny"])
    result = dg.materialize(
        [responses],
        selection=[response_key("CEB-Adult"), response_key("FMT10K-IM-T")],
        partition_key=partition_key("tiny", "none"),
        instance=instance,
        resources={
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "workers": LocalWorkerLauncher(env=WORKER_ENV),
            "inference": InferenceResource(
                engine=EngineConfig(torch_threads=1), fmt_max_new_tokens_per_turn=2, chunk_rows=4, sample_per_axis=2
            ),
            "model_store": ModelStoreResource(root=str(tmp_path / "models")),
        },
        raise_on_error=False,
    )
    # the step reports both datasets, then fails only on the blocking `no_failed_questions` checks
    failed_checks = {(e.asset_key.path[-1], e.check_name) for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed_checks == {("CEB-Adult", "no_failed_questions"), ("FMT10K-IM-T", "no_failed_questions")}
    assert not result.success
    meta = {
        m.asset_key.path[-1]: {key: value.value for key, value in m.metadata.items()}
        for m in result.asset_materializations_for_node("responses")
    }
    # CEB-Adult: 2 axes x 2 questions, the two edited ones fail; FMT10K-IM-T: 4 axes x 2, one fails
    assert (meta["CEB-Adult"]["rows"], meta["CEB-Adult"]["failed_questions"]) == (2, 2)
    assert set(meta["CEB-Adult"]["failed_idx_sample"].split(", ")) == {"CEB-Adult/gender/0", "CEB-Adult/race/0"}
    assert meta["CEB-Adult"]["seconds"] < 30
    assert (meta["FMT10K-IM-T"]["rows"], meta["FMT10K-IM-T"]["failed_questions"]) == (7, 1)
    assert meta["FMT10K-IM-T"]["failed_idx_sample"] == "FMT10K-IM-T/race/0"

    table = lake.read(lake.table_uri(str(tmp_path / "lake"), "responses", "CEB-Adult"))
    assert sorted(table["idx"].to_list()) == ["CEB-Adult/gender/1", "CEB-Adult/race/1"]
    log = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    _, long_tokens = prompt_tokens(tokenizer, [{"role": "user", "content": LONG_PROMPT}])
    assert (
        f"questions/CEB-Adult: record CEB-Adult/race/0: prompt: {long_tokens} tokens exceed the model's context of 4096"
        in log
    )
    assert re.search(
        r"questions/CEB-Adult: record CEB-Adult/gender/0: prompt: at least \d+ tokens \(\d+ characters, "
        r"at most \d+ per token\) exceed the model's context of 4096",
        log,
    )
    assert re.search(
        r"questions/FMT10K-IM-T: record FMT10K-IM-T/race/0: turns: turn 3: \d+ tokens \+ max_new_tokens 2 "
        r"exceed the model's context of 4096",
        log,
    )
