"""Print the pip requirements of one image from pyproject.toml (used while building images).

Each image installs this package with `pip install --no-deps` plus the requirements printed here:
the base dependencies and the image's extras, so one list of pins (pyproject.toml +
constraints.txt) feeds every image, and the dependency layer is cached apart from the code:
  orchestrator     extras orchestrator, postgres: Dagster, dbt, the figures; no torch, no model libraries
  quantizer-worker extras hf, quant: transformers and llmcompressor; no orchestration
  vllm-worker      the base only: the vLLM wheel brings its own torch and transformers

Usage: python select_requirements.py PYPROJECT {orchestrator|quantizer-worker|vllm-worker}
"""

from __future__ import annotations

import re
import sys
import tomllib

IMAGE_EXTRAS = {
    "orchestrator": ("orchestrator", "postgres"),
    "quantizer-worker": ("hf", "quant"),
    "vllm-worker": (),
}


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def select_requirements(pyproject: dict, image: str) -> list[str]:
    if image not in IMAGE_EXTRAS:
        raise ValueError(f"image: {image!r}: expected {', '.join(IMAGE_EXTRAS)}")
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *(r for extra in IMAGE_EXTRAS[image] for r in extras[extra])]


def main() -> None:
    path, image = sys.argv[1], sys.argv[2]
    with open(path, "rb") as file:
        print("\n".join(select_requirements(tomllib.load(file), image)))


if __name__ == "__main__":
    main()
