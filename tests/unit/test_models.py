"""Model registry, method table, recipe schemes, calibration sampling, checkpoint manifest.

Expected values come from spec §6 (written out by hand here) or from an independent
computation (hashlib over the files, random.Random over the indices).
"""

import hashlib
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from quantbias_assets.catalog.methods import (
    BACKFILL_METHODS,
    METHOD_SPECS,
    get_method,
    quantization_methods_csv,
    quantized_label_order,
    validate_methods,
)
from quantbias_assets.catalog.models import (
    PAPER_MODELS,
    add_model,
    get_model,
    load_registry,
    validate_nickname,
)
from quantbias_assets.checkpoint_manifest import (
    CheckpointManifest,
    manifest_path,
    read_manifest,
    weights_digest,
    write_manifest,
    write_manifest_file,
)
from quantbias_assets.cli import main as cli_main
from quantbias_assets.quantize import (
    CalibrationSettings,
    activation_args,
    select_calibration_texts,
    staged_folder,
    weight_args,
)

# ------------------------------------------------------------------ paper registry


def test_paper_models_are_the_ten_bases_of_spec_6_1():
    assert [(m.nickname, m.source, m.size_b) for m in PAPER_MODELS] == [
        ("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1.5),
        ("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct", 3.0),
        ("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", 7.0),
        ("qwen2.5-14b-instruct", "Qwen/Qwen2.5-14B-Instruct", 14.0),
        ("qwen2-7b-instruct", "Qwen/Qwen2-7B-Instruct", 7.0),
        ("llama3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 1.0),
        ("llama3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3.0),
        ("llama3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ("ministral-8b-instruct", "mistralai/Ministral-8B-Instruct-2410", 8.0),
    ]
    assert all(not m.trust_remote_code for m in PAPER_MODELS)


def test_published_checkpoints_follow_spec_6_1():
    registry = load_registry(Path("/nonexistent/models.yaml"))
    assert registry["qwen2.5-0.5b-instruct"].published == {
        "rtn-w4a16": "stan-hua/Qwen2.5-0.5B-Instruct-LC-RTN-W4A16",
        "rtn-w8a16": "stan-hua/Qwen2.5-0.5B-Instruct-LC-RTN-W8A16",
        "sq-rtn-w4a16": "stan-hua/Qwen2.5-0.5B-Instruct-LC-SmoothQuant-RTN-W4A16",
        "gptq-w4a16": "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4",
        "awq-w4a16": "Qwen/Qwen2.5-0.5B-Instruct-AWQ",
    }
    llama3b = registry["llama3.2-3b-instruct"]
    assert llama3b.published["rtn-w8a16"] == "stan-hua/Meta-Llama-3.2-3B-Instruct-LC-RTN-W8A16"
    assert llama3b.published["gptq-w4a16"] == "stan-hua/Meta-Llama-3.2-3B-Instruct-LC-GPTQ-W4A16"
    assert llama3b.published["awq-w4a16"] == "stan-hua/Meta-Llama-3.2-3B-Instruct-AWQ-W4A16"
    llama8b = registry["llama3.1-8b-instruct"]
    assert llama8b.published["gptq-w4a16"] == "neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w4a16"
    assert llama8b.published["awq-w4a16"] == "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    assert registry["ministral-8b-instruct"].published["sq-rtn-w4a16"] == (
        "stan-hua/Ministral-8B-Instruct-2410-LC-SmoothQuant-RTN-W4A16"
    )
    # W8A8 variants are supplementary: always quantized here, never published.
    assert all("rtn-w8a8" not in m.published and "none" not in m.published for m in PAPER_MODELS)


# ------------------------------------------------------------------ methods


def test_method_catalog_paper_labels_bits_and_calibration():
    assert {k: m.label for k, m in METHOD_SPECS.items()} == {
        "none": "Native",
        "rtn-w8a16": "RTN W8A16",
        "rtn-w4a16": "RTN W4A16",
        "sq-rtn-w4a16": "RTN W4A16 + SQ",
        "gptq-w4a16": "GPTQ W4A16",
        "awq-w4a16": "AWQ W4A16",
        "rtn-w8a8": "RTN W8A8",
        "sq-rtn-w8a8": "RTN W8A8 + SQ",
    }
    assert {k: (m.weight_bits, m.activation_bits) for k, m in METHOD_SPECS.items()} == {
        "none": (16, 16),
        "rtn-w8a16": (8, 16),
        "rtn-w4a16": (4, 16),
        "sq-rtn-w4a16": (4, 16),
        "gptq-w4a16": (4, 16),
        "awq-w4a16": (4, 16),
        "rtn-w8a8": (8, 8),
        "sq-rtn-w8a8": (8, 8),
    }
    assert {k for k, m in METHOD_SPECS.items() if m.needs_calibration} == {
        "sq-rtn-w4a16",
        "gptq-w4a16",
        "awq-w4a16",
        "sq-rtn-w8a8",
    }


def test_backfill_and_plot_order_come_from_the_catalog():
    # A new model gets the native model and the paper's 5 variants; W8A8 is supplementary.
    assert BACKFILL_METHODS == ("none", "rtn-w8a16", "rtn-w4a16", "sq-rtn-w4a16", "gptq-w4a16", "awq-w4a16")
    assert quantized_label_order() == (
        "RTN W8A16",
        "RTN W4A16",
        "RTN W4A16 + SQ",
        "GPTQ W4A16",
        "AWQ W4A16",
        "RTN W8A8",
        "RTN W8A8 + SQ",
    )
    assert {k: m.family for k, m in METHOD_SPECS.items()} == {
        "none": "native",
        "rtn-w8a16": "rtn",
        "rtn-w4a16": "rtn",
        "sq-rtn-w4a16": "rtn",
        "gptq-w4a16": "gptq",
        "awq-w4a16": "awq",
        "rtn-w8a8": "rtn",
        "sq-rtn-w8a8": "rtn",
    }


def test_committed_dbt_seed_is_generated_from_the_catalog():
    seed = Path(__file__).parents[2] / "dbt_analysis" / "seeds" / "quantization_methods.csv"
    generated = quantization_methods_csv()
    assert generated.splitlines()[:2] == ["method,label,w_bits,a_bits,family", "none,Native,16,16,native"]
    assert generated.splitlines()[-1] == "sq-rtn-w8a8,RTN W8A8 + SQ,8,8,rtn"
    # Regenerate with: python -m quantbias_assets.catalog.methods > dbt_analysis/seeds/quantization_methods.csv
    assert seed.read_text() == generated


def test_a_method_choice_outside_the_catalog_is_refused():
    assert validate_methods(["none", "rtn-w4a16"], "demo") == ("none", "rtn-w4a16")
    with pytest.raises(ValueError, match=r"^demo: unknown method 'rtn-w3a16'; expected one of none, "):
        validate_methods(["none", "rtn-w3a16"], "demo")


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match=r"method: unknown method 'rtn-w3a16'; expected one of none, "):
        get_method("rtn-w3a16")


def test_schemes_per_method():
    assert weight_args(get_method("rtn-w4a16"), 64) == {
        "num_bits": 4,
        "type": "int",
        "strategy": "group",
        "group_size": 64,
        "symmetric": True,
        "dynamic": False,
    }
    assert weight_args(get_method("awq-w4a16"))["symmetric"] is False
    assert weight_args(get_method("awq-w4a16"))["group_size"] == 128
    assert weight_args(get_method("rtn-w8a16")) == {
        "num_bits": 8,
        "type": "int",
        "strategy": "channel",
        "symmetric": True,
        "dynamic": False,
    }
    assert activation_args(get_method("rtn-w4a16")) is None
    assert activation_args(get_method("sq-rtn-w8a8")) == {
        "num_bits": 8,
        "type": "int",
        "strategy": "token",
        "symmetric": True,
        "dynamic": True,
    }
    with pytest.raises(ValueError, match="does not quantize"):
        weight_args(get_method("none"))


# ------------------------------------------------------------------ user registry file


@pytest.mark.parametrize(
    "bad",
    [
        "org/model",
        "my model",
        "Qwen2",
        "",
        "a\tb",
        ".",
        "..",
        ".hidden",
        "-flag",
        "_x",
        "a\\b",
        "a\0b",
        "ok\n",
        "x" * 101,
    ],
)
def test_invalid_nicknames_are_refused(bad):
    with pytest.raises(ValueError, match=r"nickname: .* not a valid model partition key"):
        validate_nickname(bad)


def test_valid_nicknames_keep_dots_inside():
    for good in ("qwen2.5-0.5b-instruct", "a..b", "9", "x" * 100, "smollm2_135m."):
        assert validate_nickname(good) == good


@pytest.mark.parametrize(
    ("model", "method"), [("..", "none"), (".", "none"), ("a/b", "none"), ("ok", ".."), ("ok", "")]
)
def test_checkpoint_paths_refuse_unsafe_partition_keys(tmp_path, model, method):
    with pytest.raises(ValueError, match=r"^(model|method): .* is not a safe folder name"):
        manifest_path(tmp_path / "store", model, method)


def test_add_model_local_folder_and_hub_id(tmp_path):
    registry_file = tmp_path / "home" / "models.yaml"
    folder = tmp_path / "My-Model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))

    local = add_model(str(folder), path=registry_file)
    hub = add_model(
        "org/Some-Model",
        "some-model",
        size_b=1.5,
        revision="abc123",
        trust_remote_code=True,
        published={"gptq-w4a16": "org/Some-Model-GPTQ"},
        path=registry_file,
    )

    assert (local.nickname, local.source, local.family, local.trust_remote_code) == (
        "my-model",
        str(folder.absolute()),
        "llama",
        False,
    )
    assert yaml.safe_load(registry_file.read_text()) == {
        "models": [
            {
                "nickname": "my-model",
                "source": str(folder.absolute()),
                "family": "llama",
                "size_b": None,
                "revision": None,
                "trust_remote_code": False,
                "published": {},
            },
            {
                "nickname": "some-model",
                "source": "org/Some-Model",
                "family": None,
                "size_b": 1.5,
                "revision": "abc123",
                "trust_remote_code": True,
                "published": {"gptq-w4a16": "org/Some-Model-GPTQ"},
            },
        ]
    }
    registry = load_registry(registry_file)
    assert len(registry) == 12
    assert registry["some-model"] == hub
    assert registry["my-model"].is_local and not registry["some-model"].is_local
    assert get_model("some-model", registry_file).published_checkpoint("gptq-w4a16") == "org/Some-Model-GPTQ"


def test_add_model_refusals_leave_the_file_unchanged(tmp_path):
    registry_file = tmp_path / "models.yaml"
    add_model("org/first", "first", path=registry_file)
    before = registry_file.read_text()
    with pytest.raises(ValueError, match="nickname: 'a b'"):
        add_model("org/x", "a b", path=registry_file)
    with pytest.raises(ValueError, match=r"nickname: 'org/x'"):
        add_model("org/x", "org/x", path=registry_file)
    with pytest.raises(ValueError, match=rf"{registry_file}: record 1: nickname: 'first' is already registered"):
        add_model("org/again", "first", path=registry_file)
    with pytest.raises(ValueError, match="record 1: nickname: 'qwen2-7b-instruct' is already registered"):
        add_model("org/again", "qwen2-7b-instruct", path=registry_file)
    with pytest.raises(ValueError, match="source: '/no/such/folder' is neither an existing local folder nor a hub id"):
        add_model("/no/such/folder", "nowhere", path=registry_file)
    with pytest.raises(ValueError, match=r"record 1: published.fp8: unknown quantization method"):
        add_model("org/y", "y", published={"fp8": "org/y-fp8"}, path=registry_file)
    assert registry_file.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.yaml"]


def test_registry_file_errors_name_file_record_and_field(tmp_path):
    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"nickname": "ok", "source": "org/ok"},
                    {"nickname": "fine", "source": "org/fine", "trust_remote_code": "yes"},
                ]
            }
        )
    )
    with pytest.raises(ValueError, match=rf"^{registry_file}: record 1: trust_remote_code: expected true or false$"):
        load_registry(registry_file)
    registry_file.write_text(yaml.safe_dump({"models": [{"nickname": "ok", "source": "org/ok", "colour": "red"}]}))
    with pytest.raises(ValueError, match=r"record 0: colour: unknown field"):
        load_registry(registry_file)
    registry_file.write_text(yaml.safe_dump({"models": [{"source": "org/ok"}]}))
    with pytest.raises(ValueError, match=r"record 0: nickname: missing or not a string"):
        load_registry(registry_file)


def test_registry_file_refuses_dot_nicknames(tmp_path):
    registry_file = tmp_path / "models.yaml"
    for bad in ("..", "."):
        registry_file.write_text(yaml.safe_dump({"models": [{"nickname": bad, "source": "org/x"}]}))
        with pytest.raises(
            ValueError, match=rf"^{registry_file}: record 0: nickname: '{re.escape(bad)}' is not a valid"
        ):
            load_registry(registry_file)


@pytest.mark.parametrize("bad", ["..", "."])
def test_cli_models_add_refuses_dot_nicknames_and_writes_nothing(tmp_path, monkeypatch, capsys, bad):
    """Before the fix `--nickname ..` registered a model whose checkpoints landed in
    $QUANTBIAS_HOME/<method>/ and `.` in <store>/<method>/ (replacing what was there)."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUANTBIAS_HOME", str(home))
    folder = tmp_path / "My-Model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    assert cli_main(["models", "add", str(folder), "--nickname", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: nickname: '{bad}' is not a valid model partition key;") and err.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # home not even created


def test_cli_models_add_and_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    assert cli_main(["models", "add", "org/Cli-Model"]) == 0
    assert cli_main(["models", "add", "org/other", "--nickname", "has space"]) == 2
    assert "nickname: 'has space'" in capsys.readouterr().err
    assert cli_main(["models", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 11
    assert lines[-1] == "cli-model\t-\t-\torg/Cli-Model\t-"


# ------------------------------------------------------------------ calibration sampling


def test_calibration_selection_is_seeded_and_counted():
    texts = [f"sample {i}" for i in range(10)] + ["", "   "]
    settings = CalibrationSettings(source="x.txt", num_samples=4, max_seq_length=16, seed=7)
    order = list(range(10))
    random.Random(7).shuffle(order)
    assert select_calibration_texts(texts, settings, "x.txt") == [f"sample {i}" for i in order[:4]]
    other = CalibrationSettings(source="x.txt", num_samples=4, max_seq_length=16, seed=8)
    assert select_calibration_texts(texts, other, "x.txt") != select_calibration_texts(texts, settings, "x.txt")
    too_many = CalibrationSettings(source="x.txt", num_samples=11)
    with pytest.raises(ValueError, match=r"^x.txt: calibration set has 10 samples, fewer than the 11 requested"):
        select_calibration_texts(texts, too_many, "x.txt")


def test_calibration_identity_records_the_local_source_digest(tmp_path):
    source = tmp_path / "calib.txt"
    source.write_text("a\nb\n")
    identity = CalibrationSettings(source=str(source), num_samples=2, max_seq_length=8, seed=3).identity()
    assert identity == {
        "source": str(source),
        "num_samples": 2,
        "max_seq_length": 8,
        "seed": 3,
        "source_digest": hashlib.sha256(b"a\nb\n").hexdigest(),
    }
    assert CalibrationSettings().identity() == {
        "source": "reference",
        "num_samples": 512,
        "max_seq_length": 6144,
        "seed": 0,
    }
    with pytest.raises(ValueError, match="num_samples: 0 must be >= 1"):
        CalibrationSettings(num_samples=0)


# ------------------------------------------------------------------ manifest and folders


def test_manifest_round_trip_and_missing(tmp_path):
    manifest = CheckpointManifest(
        model="tiny",
        method="rtn-w4a16",
        source="quantized",
        path="/m",
        digest="d" * 64,
        calibration={"seed": 0},
        quantization_config={"format": "pack-quantized"},
        size_bytes=10,
    )
    written = write_manifest(tmp_path, manifest)
    assert (
        written == tmp_path / "tiny" / "rtn-w4a16" / "checkpoint.json" == manifest_path(tmp_path, "tiny", "rtn-w4a16")
    )
    assert read_manifest(tmp_path, "tiny", "rtn-w4a16") == manifest
    assert manifest.identity == {"digest": "d" * 64}
    with pytest.raises(
        FileNotFoundError, match=r"tiny/none/checkpoint.json: no checkpoint manifest for model 'tiny', method 'none'"
    ):
        read_manifest(tmp_path, "tiny", "none")
    with pytest.raises(ValueError, match="source: 'copied' is not one of quantized, base, published"):
        CheckpointManifest(model="a", method="none", source="copied", path="/x")  # type: ignore[arg-type]


def test_weights_digest_matches_an_independent_hash(tmp_path):
    (tmp_path / "model-00002.safetensors").write_bytes(b"second")
    (tmp_path / "model-00001.safetensors").write_bytes(b"first")
    (tmp_path / "config.json").write_text("{}")  # not a weight file
    expected = hashlib.sha256(b"model-00001.safetensors\0first" + b"model-00002.safetensors\0second").hexdigest()
    assert weights_digest(tmp_path) == expected
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        weights_digest(empty)


def test_staged_folder_replaces_whole_or_leaves_nothing(tmp_path):
    target = tmp_path / "store" / "tiny" / "rtn-w4a16"
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("quantization failed")
    assert list((tmp_path / "store" / "tiny").iterdir()) == []

    manifest = CheckpointManifest(model="tiny", method="rtn-w4a16", source="quantized", path=str(target))
    with staged_folder(target) as staging:
        write_manifest_file(staging, manifest)
        (staging / "v1").write_text("1")
    with staged_folder(target) as staging:
        write_manifest_file(staging, manifest)
        (staging / "v2").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint.json", "v2"]
    assert [p.name for p in target.parent.iterdir()] == ["rtn-w4a16"]


def test_staged_folder_refuses_to_replace_a_foreign_folder_and_keeps_its_files(tmp_path):
    """`nickname .` made the target <store>/<method>/, another folder; only a checkpoint this
    project wrote (its checkpoint.json) or an empty folder may be replaced."""
    target = tmp_path / "store" / "none"
    (target / "tiny").mkdir(parents=True)
    (target / "tiny" / "checkpoint.json").write_text("{}")
    (target / "notes.txt").write_text("keep me")
    with (
        pytest.raises(
            FileExistsError, match=rf"^{target}: folder exists without a checkpoint.json written by quantbias"
        ),
        staged_folder(target) as staging,
    ):
        (staging / "model.safetensors").write_bytes(b"x")
    assert (target / "notes.txt").read_text() == "keep me"
    assert (target / "tiny" / "checkpoint.json").read_text() == "{}"
    assert sorted(p.name for p in target.parent.iterdir()) == ["none"]  # no staging folder left

    # a file where a folder should go, and a foreign checkpoint.json, are refused the same way
    (tmp_path / "file").write_text("data")
    with (
        pytest.raises(FileExistsError, match="exists and is not a checkpoint folder"),
        staged_folder(tmp_path / "file"),
    ):
        pass
    (target / "checkpoint.json").write_text(json.dumps({"name": "someone else's"}))
    with pytest.raises(FileExistsError), staged_folder(target):
        pass
    assert (tmp_path / "file").read_text() == "data" and (target / "notes.txt").exists()


def test_staged_folder_refuses_a_folder_that_appears_while_building(tmp_path):
    target = tmp_path / "store" / "tiny" / "none"
    with pytest.raises(FileExistsError, match="refusing to replace it"), staged_folder(target) as staging:
        (staging / "v1").write_text("1")
        target.mkdir(parents=True)
        (target / "theirs").write_text("2")
    assert [p.name for p in target.parent.iterdir()] == ["none"]
    assert [p.name for p in target.iterdir()] == ["theirs"]


def test_staged_folder_replaces_an_empty_folder_and_its_own_checkpoints(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    manifest = CheckpointManifest(model="tiny", method="none", source="base", path="/m")
    with staged_folder(target) as staging:
        write_manifest_file(staging, manifest)
        (staging / "v1").write_text("1")
    with staged_folder(target) as staging:
        write_manifest_file(staging, manifest)
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint.json"]


def test_cli_quantize_refuses_a_foreign_out_folder(tmp_path, monkeypatch, capsys):
    import numpy as np
    from safetensors.numpy import save_file

    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path / "home"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(base / "model.safetensors"))
    out = tmp_path / "Documents"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert cli_main(["quantize", "--model", str(base), "--method", "none", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {out}: folder exists without a checkpoint.json written by quantbias; refusing to replace it "
        "(remove it yourself or choose another target)\n"
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert cli_main(["quantize", "--model", str(base), "--method", "none", "--out", str(tmp_path / "fresh")]) == 0
    assert cli_main(["quantize", "--model", str(base), "--method", "none", "--out", str(tmp_path / "fresh")]) == 0
    assert json.loads((tmp_path / "fresh" / "checkpoint.json").read_text())["source"] == "base"


def test_cli_quantize_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert cli_main(["quantize", "--model", str(tmp_path / "absent"), "--method", "rtn-w4a16", "--out", str(out)]) == 2
    assert f"error: {tmp_path / 'absent'}: base model folder does not exist" in capsys.readouterr().err
    assert cli_main(["quantize", "--model", str(tmp_path), "--method", "int3", "--out", str(out)]) == 2
    assert "error: method: unknown method 'int3'" in capsys.readouterr().err
    assert not out.exists()


def test_registry_sensor_never_adds_an_unsafe_partition():
    import dagster as dg

    from quantbias_assets.automation import build_model_registry_sensor

    sensor = build_model_registry_sensor(lambda: ["good-model", "..", "."], [dg.AssetKey("checkpoint")])
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
    assert [request.partition_keys for request in result.dynamic_partitions_requests] == [["good-model"]]
    assert {request.partition_key.keys_by_dimension["model"] for request in result.run_requests} == {"good-model"}
