"""The embedded Dagster instance: `$DAGSTER_HOME/dagster.yaml` for a laptop or CI.

Model workers (checkpoint, responses, verdicts) declare `pool="gpu"`. On one machine the pool
holds one slot, so two workers never load models into the same memory at once; everything else
(question tables, analysis, dbt) runs beside them. In a cluster the limit is the number of GPUs
workers may hold at once: `dagster instance concurrency set gpu N`, or the Helm values'
`concurrency.pools.defaultLimit` (docs/automation.md).

A run whose process dies (`kill -9`, out of memory) would keep its gpu slot for good: the default
run launcher cannot tell a dead run from a slow one. `LocalRunLauncher` can (the run's process id
is in its event log), so the daemon's run monitoring marks such a run failed and then frees its
slot, with no one clicking Terminate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterRun
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

from quantbias_assets import settings

GPU_POOL = "gpu"
GPU_POOL_LIMIT = 1
# Each run is a process importing the code location; on a small machine a few at once is plenty.
MAX_CONCURRENT_RUNS = 4
FREE_SLOTS_AFTER_RUN_END_SECONDS = 30
# How often the daemon checks that every started run's process is alive.
RUN_MONITORING_POLL_SECONDS = 15

EMBEDDED_INSTANCE_SETTINGS: dict[str, Any] = {
    "concurrency": {
        # `op`: a run waiting for the gpu slot still runs its other steps; `default_limit`
        # applies to every pool, and `gpu` is the only one the project declares.
        "pools": {"default_limit": GPU_POOL_LIMIT, "granularity": "op"},
        "runs": {"max_concurrent_runs": MAX_CONCURRENT_RUNS},
    },
    # A run whose process died (SIGKILL, out of memory) is marked failed by the daemon's run
    # monitoring (LocalRunLauncher's health check), which then frees its gpu slot instead of
    # blocking every later model worker. A dead local run cannot be resumed: fail it at once.
    "run_launcher": {"module": "quantbias_assets.instance", "class": "LocalRunLauncher"},
    "run_monitoring": {
        "enabled": True,
        "poll_interval_seconds": RUN_MONITORING_POLL_SECONDS,
        "max_resume_run_attempts": 0,
        "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_RUN_END_SECONDS,
    },
    # No network on the machines this targets; never phone home, no "join the community" dialog.
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
}


def with_defaults(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with every setting of `defaults` it lacks; what `config` sets is kept."""
    merged = dict(config)
    for name, default in defaults.items():
        current = merged.get(name)
        if isinstance(default, Mapping) and isinstance(current, Mapping):
            merged[name] = with_defaults(current, default)
        elif name not in merged:
            merged[name] = default
    return merged


RUN_QUEUE_FIELDS = ("max_concurrent_runs", "tag_concurrency_limits", "block_op_concurrency_limited_runs")


def configures_run_queue(config: Mapping[str, Any]) -> bool:
    """Whether `config` sets up the run queue the older way (`run_queue`, or the
    QueuedRunCoordinator's config), which Dagster refuses next to `concurrency: pools/runs`."""
    run_queue = config.get("run_queue") or {}
    coordinator = (config.get("run_coordinator") or {}).get("config") or {}
    return any(name in run_queue or name in coordinator for name in RUN_QUEUE_FIELDS)


def compatible_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The embedded settings minus those Dagster refuses next to what `config` already sets."""
    defaults = dict(EMBEDDED_INSTANCE_SETTINGS)
    if "run_launcher" in config:
        del defaults["run_launcher"]  # the user's launcher, whole: never a mix of two
    concurrency = dict(defaults["concurrency"])
    if configures_run_queue(config):
        # the older spelling of the pools' default limit is the one allowed there
        concurrency = {"default_op_concurrency_limit": GPU_POOL_LIMIT}
    elif "default_op_concurrency_limit" in (config.get("concurrency") or {}):
        del concurrency["pools"]
    defaults["concurrency"] = concurrency
    return defaults


def ensure_dagster_home() -> Path:
    """Create DAGSTER_HOME (default $QUANTBIAS_HOME/dagster) with the embedded instance settings.

    Idempotent: an existing dagster.yaml keeps every setting it has (a user's own pool limit
    included) and gains only the missing ones; the file is rewritten only when that adds
    something. Sets DAGSTER_HOME for this process and its children (`dagster dev`, runs), and
    registers the gpu pool.
    """
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "dagster.yaml"
    current: Any = {}
    if config_file.is_file():
        try:
            current = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{config_file}: not valid YAML: {error}") from None
        if not isinstance(current, dict):
            raise ValueError(f"{config_file}: expected a mapping of instance settings")
    merged = with_defaults(current, compatible_defaults(current))
    if merged != current or not config_file.is_file():
        tmp = config_file.with_name(f".{config_file.name}.tmp")
        tmp.write_text(yaml.safe_dump(merged, sort_keys=False))
        os.replace(tmp, config_file)
    os.environ["DAGSTER_HOME"] = str(home)
    register_gpu_pool(home)
    return home


def register_gpu_pool(home: Path) -> None:
    """Create (or follow a changed `default_limit` with) the `gpu` pool now rather than at the
    next run, so `dagster instance concurrency get gpu` and the UI show the limit in force.
    A limit set with `dagster instance concurrency set` is left alone, as Dagster does."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        current = {pool.name: pool for pool in storage.get_pool_limits()}.get(GPU_POOL)
        if current is None or (current.from_default and current.limit != instance.global_op_concurrency_default_limit):
            storage.initialize_concurrency_limit_to_default(GPU_POOL)


def run_process_id(instance: Any, run_id: str) -> int | None:
    """The process that executes the run: the first process id its engine events record
    ("Started process for run", "Executing steps in process", the multiprocess parent)."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid = (data.metadata or {}).get("pid") if data else None
        if pid is not None:
            return int(pid.value)
    return None


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    try:
        # the state follows the parenthesised command name, which may itself hold spaces
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know


class LocalRunLauncher(DefaultRunLauncher):
    """The default launcher (runs through the code server, on this machine) plus a health
    check of the run's process, so run monitoring can fail a run whose process is gone. It
    checks runs started by `dagster asset materialize` too: they record their process id alike.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_process_id(self._instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no process recorded yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"process {pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process {pid} is gone (killed or crashed) while the run was STARTED"
        )
