"""Every error a user's files or machine can cause is one `error: <file>: <field>: ...` line with
exit status 2, never a traceback. Each case runs the real CLI on a real broken file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from quantbias_assets.cli import main


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a fresh interpreter, so a traceback would show."""
    env = {**os.environ, "QUANTBIAS_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "quantbias_assets.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def model_folder(folder: Path) -> Path:
    """A real (small) checkpoint: config.json and one safetensors file of two tensors."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    save_file(
        {"embed": np.arange(64, dtype=np.float32).reshape(8, 8), "norm": np.ones(8, dtype=np.float32)},
        str(folder / "model.safetensors"),
    )
    return folder


def test_malformed_models_yaml_on_models_list(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    registry = home / "models.yaml"
    registry.write_text("models:\n  - nickname: [unclosed\n")
    result = run_cli("models", "list", home=home)
    assert (result.returncode, result.stdout) == (2, "")
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"error: {registry}: not valid YAML: expected ',' or ']', but got '<stream end>' (line 3, column 1)\n"
    )


def test_invalid_registry_record_on_models_list(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path))
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [{"nickname": "ok", "source": "org/ok", "size_b": "big"}]}))
    assert main(["models", "list"]) == 2
    assert capsys.readouterr().err == (
        f"error: {registry}: record 0: size_b: expected a number (billions of parameters)\n"
    )


def test_unwritable_quantbias_home(tmp_path: Path, monkeypatch, capsys) -> None:
    # A regular file where a folder should be: unwritable for root too (chmod is not).
    (tmp_path / "occupied").write_text("a file")
    home = tmp_path / "occupied" / "home"
    monkeypatch.setenv("QUANTBIAS_HOME", str(home))
    assert main(["models", "add", "org/Some-Model", "--nickname", "some"]) == 2
    assert capsys.readouterr().err == f"error: {home}: Not a directory\n"
    assert main(["datasets", "fetch"]) == 2
    assert capsys.readouterr().err == f"error: {home / 'datasets'}: Not a directory\n"
    assert (tmp_path / "occupied").read_text() == "a file"


def test_models_add_with_a_broken_config_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path / "home"))
    folder = model_folder(tmp_path / "Broken")
    (folder / "config.json").write_text('{"model_type": "llama",')
    assert main(["models", "add", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"error: {folder / 'config.json'}: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 24 (char 23)\n"
    )
    assert not (tmp_path / "home" / "models.yaml").exists()


def test_score_with_a_broken_config_names_the_file(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model")
    (folder / "config.json").write_text("[1, 2")
    result = run_cli(
        "score",
        "--model",
        str(folder),
        "--dataset",
        "BBQ",
        "--limit",
        "1",
        "--out",
        str(tmp_path / "o.parquet"),
        home=tmp_path / "home",
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {folder / 'config.json'}: not valid JSON: Expecting ',' delimiter: line 1 column 6 (char 5)\n"
    )
    assert not (tmp_path / "o.parquet").exists()


def test_score_with_truncated_weights_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = model_folder(tmp_path / "model")
    weights = folder / "model.safetensors"
    full = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(full - 100)
    with pytest.raises(SafetensorError):  # the library itself refuses it, without naming the file
        safe_open(str(weights), framework="numpy")
    out = tmp_path / "o.parquet"
    assert main(["score", "--model", str(folder), "--dataset", "BBQ", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {weights}: data_offsets: truncated: the tensors need {full} bytes, the file has {full - 100}\n"
    )
    # a file cut inside its header
    with weights.open("r+b") as handle:
        handle.truncate(20)
    assert main(["score", "--model", str(folder), "--dataset", "BBQ", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {weights}: header: truncated safetensors file (20 bytes)\n"
    assert not out.exists()


def test_quantize_with_truncated_weights_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUANTBIAS_HOME", str(tmp_path / "home"))
    folder = model_folder(tmp_path / "model")
    weights = folder / "model.safetensors"
    full = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(full - 4)
    out = tmp_path / "out"
    assert main(["quantize", "--model", str(folder), "--method", "none", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {weights}: data_offsets: truncated: the tensors need {full} bytes, the file has {full - 4}\n"
    )
    assert not out.exists()
