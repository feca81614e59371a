#!/usr/bin/env bash
# After `cameo pretrain` and `cameo eyes train`: ship the model, measure everything, write docs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
.venv/bin/cameo model export --run runs/pretrain --overwrite
$PY benchmarks/base_quality.py --seeds 2
$PY benchmarks/clone_quality.py --people 5 --seeds 2
$PY benchmarks/write_docs.py
