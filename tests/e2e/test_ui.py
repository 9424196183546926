"""The user's day in the Dagster UI, in headless Chromium against `dagster dev` after the demo.

Open the asset graph; leave the instance alone through a dataset observation and several
automation ticks (nothing may start); see the figures as images on `reports/paper_figures` and
the asset checks passed; open the partitions of `responses/<E2E_DATASET>`, materialize ONE
partition (tiny-demo, none) from the Materialize dialog, and watch the run succeed. Every step
saves a screenshot under test-artifacts/e2e/; a failed step saves `<step>-FAILED.png` and says
which step failed. Selectors are roles and visible text, as a user would read the page.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from e2e_settings import ARTIFACTS, DEMO_METHODS, E2E_DATASET, METHOD, MODEL
from playwright.sync_api import Locator, Page, expect

from quantbias_assets import lake
from quantbias_assets.assets.datasets import observe_dataset_files_job
from quantbias_assets.catalog.datasets import DATASETS
from quantbias_assets.partitions import partition_key

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 900
# Automation ticks every 30 s: at least 3 ticks after the observation, and 90 s.
QUIET_S = 90
MIN_AUTOMATION_TICKS = 3
REPOSITORY = {"repositoryLocationName": "definitions", "repositoryName": "__repository__"}
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
PARTITION_PLACEHOLDER = "Select a partition or create one"


@contextlib.contextmanager
def ui_step(page: Page, name: str) -> Iterator[None]:
    """Save `<name>.png` after the step, or `<name>-FAILED.png` and a message naming the step."""
    try:
        yield
    except Exception as error:
        shot = ARTIFACTS / f"{name}-FAILED.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=shot, full_page=True)
        raise AssertionError(f"UI step '{name}' failed at {page.url}: {error}\nscreenshot: {shot}") from error
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, f"GraphQL errors: {body['errors']}"
    return body["data"]


RUNS_OF_PARTITION = """
query RunsOfPartition($partition: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $partition}]}) {
    ... on Runs { results { runId status assetSelection { path } } }
  }
}
"""
RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on ExecutionStepFailureEvent { error { message } } } }
  }
}
"""


ALL_RUNS = """
query AllRuns { runsOrError { ... on Runs { results { runId status jobName } } } }
"""
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
AUTOMATION_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 50) { timestamp status } } }
  }
}
"""
ASSET_CHECKS = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } }
      }
    }
  }
}
"""


def all_runs(url: str) -> dict[str, dict[str, Any]]:
    return {run["runId"]: run for run in graphql(url, ALL_RUNS)["runsOrError"]["results"]}


def wait_until_finished(url: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = all_runs(url)[run_id]["status"]
        if status in TERMINAL_STATUSES:
            return status
        time.sleep(3)
    raise AssertionError(f"run {run_id} did not finish within {timeout_s} s; see {url}/runs/{run_id}")


def automation_ticks_since(url: str, since: float) -> list[dict[str, Any]]:
    selector = {**REPOSITORY, "sensorName": "quantbias_automation"}
    sensor = graphql(url, AUTOMATION_TICKS, {"selector": selector})["sensorOrError"]
    return [tick for tick in sensor["sensorState"]["ticks"] if float(tick["timestamp"]) > since]


def asset_checks(url: str, *path: str) -> dict[str, tuple[bool, str | None]]:
    """Check name -> (blocking, status of its execution for the latest materialization)."""
    node = graphql(url, ASSET_CHECKS, {"key": {"path": list(path)}})["assetNodeOrError"]
    checks = node["assetChecksOrError"]["checks"]
    return {c["name"]: (c["blocking"], (c["executionForLatestMaterialization"] or {}).get("status")) for c in checks}


def response_runs(url: str) -> list[dict[str, Any]]:
    """Runs of partition (tiny, none) that materialize responses/<E2E_DATASET>."""
    data = graphql(url, RUNS_OF_PARTITION, {"partition": str(partition_key(MODEL, METHOD))})
    wanted = ["responses", E2E_DATASET]
    return [run for run in data["runsOrError"]["results"] if {"path": wanted} in run["assetSelection"]]


def wait_for_run(url: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        status = next(run["status"] for run in response_runs(url) if run["runId"] == run_id)
        if status in TERMINAL_STATUSES:
            return status
        time.sleep(3)
    raise AssertionError(f"run {run_id} still {status} after {timeout_s} s; see {url}/runs/{run_id}")


def run_errors(url: str, run_id: str) -> str:
    events = graphql(url, RUN_ERRORS, {"runId": run_id})["logsForRun"]["events"]
    return "\n".join(event["error"]["message"] for event in events if event.get("error"))


def dimension_selector(page: Page, dialog: Locator, dimension: str) -> Locator:
    """The partition picker under the `dimension` heading of the launch dialog."""
    boxes = (
        dialog.locator("div")
        .filter(has=page.get_by_text(dimension, exact=True))
        .filter(has=page.get_by_text(PARTITION_PLACEHOLDER))
    )
    # Boxes holding both are the heading's ancestors; the last one in page order is the innermost.
    return boxes.last.get_by_text(PARTITION_PLACEHOLDER)


def pick_partition(page: Page, dialog: Locator, dimension: str, key: str) -> None:
    dimension_selector(page, dialog, dimension).click()
    page.get_by_role("textbox", name="Filter partitions").fill(key)
    page.get_by_role("menuitem", name=re.compile(rf"^{re.escape(key)}\b")).click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the picker, keeps the dialog
    # Its popover leaves the page after a transition; the next picker's filter box must be the only one.
    expect(page.get_by_role("textbox", name="Filter partitions")).to_have_count(0)


def question_ids(data_dir: Path) -> set[str]:
    """The `idx` of every record of E2E_DATASET, read straight from its JSON files."""
    spec = DATASETS[E2E_DATASET]
    return {
        str(record["idx"])
        for axis in spec.axes
        for record in json.loads((data_dir / spec.relative_path(axis)).read_text())
    }


def test_asset_graph_shows_the_pipeline(page: Page, dagster_dev) -> None:
    with ui_step(page, "01-global-asset-lineage"):
        page.goto(f"{dagster_dev.url}/asset-groups", wait_until="domcontentloaded")
        for group in ("datasets", "checkpoints", "responses", "verdicts", "analysis"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible()
        expect(page.get_by_role("button", name="Materialize all")).to_be_visible()
    with ui_step(page, "02-checkpoints-group-graph"):
        # The code location is named after the module `dagster dev -m` loads.
        page.goto(f"{dagster_dev.url}/locations/definitions/asset-groups/checkpoints", wait_until="domcontentloaded")
        expect(page.get_by_text("checkpoint", exact=True).first).to_be_visible()
        # Its downstream response tables are drawn around it.
        expect(page.get_by_text(E2E_DATASET, exact=True).first).to_be_visible()


def test_after_the_demo_a_quiet_instance_stays_quiet(page: Page, dagster_dev) -> None:
    """The dataset files are observed (what the 15-minute schedule does), then the daemon runs
    several automation ticks: the demo left nothing stale, so no run starts."""
    url = dagster_dev.url
    before = all_runs(url)
    assert before and all(run["status"] in TERMINAL_STATUSES for run in before.values())
    launched = graphql(
        url, LAUNCH_RUN, {"params": {"selector": {**REPOSITORY, "jobName": observe_dataset_files_job.name}}}
    )
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    observe_id = launched["launchRun"]["run"]["runId"]
    assert wait_until_finished(url, observe_id, RUN_TIMEOUT_S) == "SUCCESS"
    observed_at = time.time()
    deadline = time.monotonic() + QUIET_S
    while time.monotonic() < deadline or len(automation_ticks_since(url, observed_at)) < MIN_AUTOMATION_TICKS:
        assert time.monotonic() < deadline + RUN_TIMEOUT_S, "the automation sensor stopped ticking"
        time.sleep(10)
    ticks = automation_ticks_since(url, observed_at)
    # The observe schedule itself may fire meanwhile (every 15 minutes): an observation is not a
    # recomputation. Anything else that started is.
    new_runs = {
        run_id: run
        for run_id, run in all_runs(url).items()
        if run_id not in before and run_id != observe_id and run["jobName"] != observe_dataset_files_job.name
    }
    with ui_step(page, "08-quiet-instance-runs"):
        page.goto(f"{url}/runs", wait_until="domcontentloaded")
        assert new_runs == {}, (
            f"{len(new_runs)} run(s) started by themselves within {QUIET_S} s after observing the dataset files "
            f"({len(ticks)} automation ticks): {sorted({run['jobName'] for run in new_runs.values()})}"
        )
        expect(page.get_by_text(observe_dataset_files_job.name).first).to_be_visible()


def test_paper_figures_are_images_on_the_asset_page(page: Page, dagster_dev, e2e_home) -> None:
    pngs = sorted((e2e_home.home / "reports" / "figures").glob("*.png"))
    # 11 figures, less those without data: the effect sizes and BBQ's per-group bias flips need
    # more rows than the demo's sample, the W4-vs-W8 panel an 8-bit method.
    assert len(pngs) >= 8, f"the demo drew {len(pngs)} figures"
    with ui_step(page, "09-paper-figures-asset"):
        page.goto(f"{dagster_dev.url}/assets/reports/paper_figures", wait_until="domcontentloaded")
        row = page.get_by_role("row", name=re.compile(r"^figures\s*\[Show Markdown\]"))
        try:
            expect(row).to_be_visible(timeout=30_000)
        except AssertionError:  # not on the overview: the latest event's metadata, on the events tab
            page.goto(f"{dagster_dev.url}/assets/reports/paper_figures?view=events", wait_until="domcontentloaded")
            expect(row).to_be_visible()
        expect(page.get_by_role("row", name=re.compile(rf"^figures_written\s*{len(pngs)}$"))).to_be_visible()
    with ui_step(page, "10-paper-figures-shown"):
        row.get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        images = dialog.locator("img[src^='data:image/png;base64,']")
        expect(images).to_have_count(len(pngs))
        for index in range(len(pngs)):
            images.nth(index).scroll_into_view_if_needed()
            expect(images.nth(index)).to_be_visible()
        decoded = images.evaluate_all("(imgs) => imgs.map((img) => [img.alt, img.naturalWidth, img.naturalHeight])")
        assert sorted(alt for alt, _, _ in decoded) == [png.stem for png in pngs]
        assert all(width > 300 and height > 200 for _, width, height in decoded), decoded
        images.first.scroll_into_view_if_needed()
    images.nth(0).screenshot(path=ARTIFACTS / "10a-figure-first.png")
    images.nth(len(pngs) - 1).screenshot(path=ARTIFACTS / "10b-figure-last.png")
    with ui_step(page, "11-paper-figures-summary"):
        page.keyboard.press("Escape")
        summary = page.get_by_role("row", name=re.compile(r"^summary"))
        if summary.get_by_text("[Show Markdown]").count():  # long markdown opens in a dialog
            summary.get_by_text("[Show Markdown]").click()
            summary = page.get_by_role("dialog")
        expect(summary.get_by_text("Table 1: flips by the base model's uncertainty")).to_be_visible()
        expect(summary.get_by_role("table").first).to_be_visible()


def test_asset_checks_are_listed_and_pass_on_the_demo(page: Page, dagster_dev) -> None:
    url = dagster_dev.url
    responses = asset_checks(url, "responses", E2E_DATASET)
    verdicts = asset_checks(url, "verdicts", "CEB-Continuation-S")
    assert responses == {
        name: (True, "SUCCEEDED")
        for name in ("no_failed_questions", "one_row_per_key", "no_bad_rows", "probabilities_sum_to_one")
    }
    assert verdicts == {name: (True, "SUCCEEDED") for name in ("no_failed_rows", "one_row_per_key", "no_bad_rows")}
    table1 = asset_checks(url, "marts", "table1_uncertainty_bins")
    assert table1 and all(status == "SUCCEEDED" for _, status in table1.values()), table1
    with ui_step(page, "12-asset-checks"):
        page.goto(f"{url}/assets/responses/{E2E_DATASET}?view=checks", wait_until="domcontentloaded")
        for name in responses:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^(Passed|Succeeded)$")).first).to_be_visible()


def test_partitions_view_lists_the_registered_model(page: Page, dagster_dev) -> None:
    with ui_step(page, "03-responses-partitions"):
        page.goto(f"{dagster_dev.url}/assets/responses/{E2E_DATASET}?view=partitions", wait_until="domcontentloaded")
        expect(page.get_by_role("textbox", name=re.compile(r"^Filter by model"))).to_be_visible()
        page.get_by_role("textbox", name=re.compile(r"^Filter by model")).fill(MODEL)
        expect(page.get_by_text(MODEL, exact=True).first).to_be_visible()
        expect(page.get_by_text(METHOD, exact=True).first).to_be_visible()


def test_materialize_one_partition_from_the_ui(page: Page, dagster_dev, e2e_home, data_dir: Path) -> None:
    url = dagster_dev.url
    known_runs = {run["runId"] for run in response_runs(url)}

    with ui_step(page, "04-materialize-dialog"):
        page.goto(f"{url}/assets/responses/{E2E_DATASET}?view=partitions", wait_until="domcontentloaded")
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        expect(dialog).to_be_visible()
        pick_partition(page, dialog, "method", METHOD)
        pick_partition(page, dialog, "model", MODEL)
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()

    with ui_step(page, "05-run-launched"):
        dialog.get_by_role("button", name="Launch 1 run").click()
        expect(dialog).to_be_hidden()
        toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}"))
        short_id = toast.inner_text().split()[-1]
        new_runs = [run for run in response_runs(url) if run["runId"] not in known_runs]
        assert [run["runId"][:8] for run in new_runs] == [short_id], f"runs launched: {new_runs}"
        run_id = new_runs[0]["runId"]

    status = wait_for_run(url, run_id, RUN_TIMEOUT_S)
    with ui_step(page, "06-run-succeeded"):
        page.goto(f"{url}/runs/{run_id}", wait_until="domcontentloaded")
        expect(page.get_by_text(f"partition: {partition_key(MODEL, METHOD)}").first).to_be_visible()
        assert status == "SUCCESS", f"run {run_id} ended {status}:\n{run_errors(url, run_id)}"
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()

    expected_ids = question_ids(data_dir)
    assert len(expected_ids) == 800  # 4 axes x 200 questions
    with ui_step(page, "07-partition-materialized"):
        page.goto(f"{url}/assets/responses/{E2E_DATASET}?view=partitions", wait_until="domcontentloaded")
        # the demo's methods, this partition among them
        expect(page.get_by_text(f"Materialized ({len(DEMO_METHODS)})", exact=True)).to_be_visible()
        # Pick the partition in the method column, then the model column: its metadata shows.
        page.get_by_text(METHOD, exact=True).first.click()
        page.get_by_text(MODEL, exact=True).first.click()
        expect(page.get_by_text(str(partition_key(MODEL, METHOD)), exact=True).first).to_be_visible()
        expect(page.get_by_role("row", name=f"rows {len(expected_ids)}", exact=True)).to_be_visible()

    # The partition the run wrote holds one row per question of the dataset (the demo's sample grew
    # to the whole dataset); the demo's other partitions are untouched samples.
    uri = lake.table_uri(str(e2e_home.home / "lake"), "responses", E2E_DATASET)
    table = lake.read(uri, filters={"model": MODEL, "method": METHOD})
    assert table.height == len(expected_ids) and set(table["idx"]) == expected_ids
    others = lake.read(uri).filter(pl.col("method") != METHOD)
    assert sorted(others["method"].unique()) == sorted(m for m in DEMO_METHODS if m != METHOD)
    assert others.height < len(expected_ids) * (len(DEMO_METHODS) - 1)
