#!/usr/bin/env bash
# After `cameo pretrain` and `python recipes/train_eyes.py`: ship the model and measure it. The JSON files
# land under docs/; docs/quality.md quotes them by hand, with each one's command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
.venv/bin/cameo model export --run runs/pretrain --overwrite
$PY benchmarks/base_quality.py --seeds 2
$PY benchmarks/clone_quality.py --people 5 --seeds 4 --jobs 2
