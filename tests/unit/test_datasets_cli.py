"""`quantbias datasets list|check|fetch` through the real argument parser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quantbias_assets.cli import main


def test_check_prints_rows_and_succeeds_on_the_real_files(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "check", "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 17
    assert lines[7].split() == [
        "BBQ", "11956", "rows", "ok", "(not", "available:", "gender_identity,", "race_ethnicity,",
        "race_x_gender,", "race_x_ses,", "ses)",
    ]  # fmt: skip
    assert lines[6].split()[:4] == ["SocialStigmaQA", "0", "rows", "ok"]


def test_check_exits_1_with_the_error_lines(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(data_dir / "closed_datasets/CEB-Credit", tmp_path / "closed_datasets/CEB-Credit")
    age = tmp_path / "closed_datasets/CEB-Credit/age.json"
    records = json.loads(age.read_text())
    records[0]["label"] = "perhaps"
    age.write_text(json.dumps(records))
    assert main(["datasets", "check", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "CEB-Credit                   999 rows  1 error(s)" in out
    assert (
        f"closed_datasets/CEB-Credit/age.json: record {records[0]['idx']}: "
        "label: expected one of yes, no, got 'perhaps'" in out.splitlines()
    )


def test_list_shows_style_rows_and_absent_axes(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    iat = next(line for line in out if line.startswith("IAT "))
    assert iat.split() == ["IAT", "closed", "1444", "age,", "health,", "religion", "/", "absent:", "gender,", "race"]
    fmt = next(line for line in out if line.startswith("FMT10K-IM-T "))
    assert fmt.split()[:3] == ["FMT10K-IM-T", "open", "255"]


def test_fetch_reports_failures_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # nothing listens on loopback port 9: every file fails, none is written
    status = main(["datasets", "fetch", "--base-url", "http://127.0.0.1:9/data", "--dest", str(tmp_path / "d")])
    assert status == 1
    out = capsys.readouterr().out
    assert "0 downloaded, 0 already present, 0 absent upstream, 84 failed" in out
