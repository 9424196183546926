"""What the browser test works on, shared by its fixtures and its tests."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
MODEL = "tiny"
METHOD = "none"
# The smallest closed dataset (4 axes x 200 questions): the tiny model answers it in seconds.
E2E_DATASET = "CEB-Recognition-S"
