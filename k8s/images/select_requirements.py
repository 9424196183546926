"""Print the pip requirements of one image, selected from pyproject.toml (used while building images).

Each image installs this package with `pip install --no-deps` plus the requirements printed here,
so one list of pins (pyproject.toml + constraints.txt) feeds every image:
  orchestrator     dagster, dbt and the analysis stack; no torch, no model libraries
  quantizer-worker the worker runtime plus the `quant` extra (llmcompressor); no orchestration
  vllm-worker      the worker runtime without torch/transformers: the vLLM wheel brings its own pins

Usage: python select_requirements.py PYPROJECT {orchestrator|quantizer-worker|vllm-worker}
"""

from __future__ import annotations

import re
import sys
import tomllib

MODEL_LIBRARIES = {"torch", "transformers", "tokenizers", "accelerate"}
ORCHESTRATION = {
    "dagster",
    "dagster-webserver",
    "dagster-graphql",
    "dagster-shared",
    "dagster-k8s",
    "dagster-dbt",
    "dbt-core",
    "dbt-duckdb",
    "duckdb",
    "kubernetes",
    "fairlearn",
    "matplotlib",
}
# The orchestrator image also needs Postgres storage for the Helm chart's instance.
ORCHESTRATOR_EXTRAS = ["dagster-postgres==0.29.27"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def select_requirements(pyproject: dict, image: str) -> list[str]:
    project = pyproject["project"]
    base: list[str] = project["dependencies"]
    if image == "orchestrator":
        return [r for r in base if requirement_name(r) not in MODEL_LIBRARIES] + ORCHESTRATOR_EXTRAS
    worker = [r for r in base if requirement_name(r) not in ORCHESTRATION]
    if image == "quantizer-worker":
        return worker + project["optional-dependencies"]["quant"]
    if image == "vllm-worker":
        return [r for r in worker if requirement_name(r) not in MODEL_LIBRARIES]
    raise ValueError(f"image: {image!r}: expected orchestrator, quantizer-worker or vllm-worker")


def main() -> None:
    path, image = sys.argv[1], sys.argv[2]
    with open(path, "rb") as file:
        print("\n".join(select_requirements(tomllib.load(file), image)))


if __name__ == "__main__":
    main()
