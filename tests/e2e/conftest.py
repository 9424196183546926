"""The browser test's world: the demo's QUANTBIAS_HOME, `dagster dev` on loopback, headless Chromium.

`e2e_home` runs `quantbias demo --model tiny` in a fresh QUANTBIAS_HOME, as a new user would
before opening the UI: the tiny model registered as `tiny-demo`, question tables, checkpoints,
responses and verdicts of the demo's methods, analysis, dbt marts and figures, all on the
persistent instance in its DAGSTER_HOME. `dagster_dev` serves `definitions` from the repo on a
free loopback port with that home and stops its whole process group afterwards. `browser` is
Debian's Chromium driven by Playwright (no browser download). Screenshots, the demo's output
and the webserver's log land in test-artifacts/e2e/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_settings import ARTIFACTS, DEMO_MODEL_ARG, REPO_ROOT

# Generous: CI has 2 cores, and this machine shares them with other jobs.
DEMO_TIMEOUT_S = 1800
SERVER_START_TIMEOUT_S = 300
SERVER_STOP_TIMEOUT_S = 60
UI_TIMEOUT_MS = 90_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium keeps dialling Google's hosts, refused on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Telemetry off; no "join the community" dialog over the pages under test.
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


@dataclass(frozen=True)
class E2EHome:
    home: Path
    dagster_home: Path
    env: dict[str, str]  # the environment of `dagster dev` (and so of its runs and workers)


@dataclass(frozen=True)
class DagsterDev:
    url: str
    process: subprocess.Popen
    log: Path


def e2e_environment(home: Path, dagster_home: Path, data_dir: Path) -> dict[str, str]:
    return {
        "QUANTBIAS_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "QUANTBIAS_DATA_DIR": str(data_dir),
        "QUANTBIAS_ENV": "local",
        # 2 shared cores: one torch thread per worker keeps the run from thrashing.
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def run_demo(env: dict[str, str]) -> None:
    """`quantbias demo --model tiny`, as a user runs it, with its output in demo.log."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.run(
            # One torch thread: the other test worker shares the 2 cores.
            [sys.executable, "-m", "quantbias_assets.cli", "demo", "--model", DEMO_MODEL_ARG, "--torch-threads", "1"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=DEMO_TIMEOUT_S,
        )
    assert demo.returncode == 0, f"setup: quantbias demo failed ({demo.returncode}); see {log}"


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> E2EHome:
    home = tmp_path_factory.mktemp("e2e_home")
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {**os.environ, **e2e_environment(home, dagster_home, data_dir)}
    run_demo(env)
    return E2EHome(home=home, dagster_home=dagster_home, env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_signal_handlers() -> None:
    """In the child: a shell running jobs in the background ignores SIGINT; take it back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def wait_for_server(server: DagsterDev, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {server.process.returncode} before serving; see {server.log}")
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"dagster dev did not answer {server.url}/server_info within {timeout_s} s; see {server.log}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGINT to dagster dev's own process group (webserver, daemon, code servers, runs), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    # Whatever is left of the group (a run's worker, a code server) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def dagster_dev(e2e_home: E2EHome) -> Iterator[DagsterDev]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*.png"):
        stale.unlink()
    url = f"http://127.0.0.1:{free_port()}"
    log = ARTIFACTS / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(dagster), "dev", "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1], "-m", "definitions"],
            cwd=REPO_ROOT,
            env=e2e_home.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole by its id
            preexec_fn=default_signal_handlers,
        )
    server = DagsterDev(url=url, process=process, log=log)
    try:
        wait_for_server(server, SERVER_START_TIMEOUT_S)
        yield server
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def browser_context(dagster_dev: DagsterDev):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="e2e-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,  # a fresh, empty --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        # The UI's first queries are slow on 2 busy cores.
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()
