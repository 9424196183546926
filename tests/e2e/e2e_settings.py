"""What the browser test works on, shared by its fixtures and its tests."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
# `quantbias demo --model tiny` builds the random tiny model and registers it under this nickname
# (the fast demo; the default demo model is the real SmolLM2).
DEMO_MODEL_ARG = "tiny"
MODEL = "tiny-demo"
DEMO_METHODS = ("none", "gptq-w4a16")  # the tiny demo's methods
METHOD = "none"
# The smallest closed dataset (4 axes x 200 questions): the tiny model answers it in seconds.
E2E_DATASET = "CEB-Recognition-S"
