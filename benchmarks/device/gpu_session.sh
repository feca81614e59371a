#!/usr/bin/env bash
# One GPU run, prepared to fit a 10-minute call: pretrain cameo-tiny on the GPU with
# time budgets per stage (and, with ESTIMATE_S > 0, first check real Wan configs against
# `cameo estimate`; docs/estimate_gpu.json). ARCH names the shapes (default: the 4x VAE that
# benchmarks/vae_pilot.py chose, docs/quality.md); ARCH= (empty) keeps the shipped shapes.
# Run from the repo root there, with .whl (diffusers wheel) and .minilm (minilm_transport.py
# pack) carried. Results go to $OUT: estimate_gpu.json, run.tgz, logs.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
python3 benchmarks/device/minilm_transport.py unpack .minilm /tmp/minilm || exit 1
export CAMEO_MINILM_DIR=/tmp/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"

# 1. estimate vs measured on real Wan configs (random weights), hard-capped; off by default.
ESTIMATE_S=${ESTIMATE_S:-0}
if [ "$ESTIMATE_S" -gt 0 ]; then
  timeout "$ESTIMATE_S" python3 benchmarks/estimate_gpu.py --out "$OUT/estimate_gpu.json" --budget-s $(( ESTIMATE_S - 35 )) 2>&1 | tail -8
fi
# 1b. the performance suite on the GPU: cameo's step vs the stock loop on a
# random Wan2.1-1.3B at 480x832x33, bf16; off by default (about 2 minutes: lower PRETRAIN_S).
PERF_S=${PERF_S:-0}
if [ "$PERF_S" -gt 0 ]; then
  timeout "$PERF_S" python3 benchmarks/gpu_performance.py --out "$OUT/gpu_performance.json" 2>&1 | tail -30
fi
ARCH=${ARCH-configs/cameo-tiny/next-4x.toml}

# 2. pretrain cameo-tiny: VAE on 17-frame clips from the start, then the transformer.
# FROM=pretrain/next-4x starts from a committed run whose VAE (and decoder) stages are done
# on the CPU: its shapes come from its config.json and only the transformer trains here
# (give it the time: TR_MIN=7). INIT=cameo-tiny warm-starts that transformer from the shipped
# one (on the CPU that beat a cold start by 0.94 -> 0.63 loss at step 100; pretrain/next-4x/README.md).
RUN=/tmp/pretrain
EXTRA=
if [ -n "${FROM:-}" ]; then
  rm -rf $RUN && cp -r "$FROM" $RUN || exit 1
  ARCH= EXTRA="--resume --stage transformer ${INIT:+--init-transformer $INIT}"
fi
timeout "${PRETRAIN_S:-530}" python3 -c "import sys; from cameo.cli import main; sys.exit(main())" pretrain \
  --out $RUN --device cuda --workers 14 --seed 0 ${ARCH:+--architecture "$ARCH"} \
  --vae-steps 30000 --vae-minutes "${VAE_MIN:-5}" --vae-batch-images 32 --vae-batch-clips 8 --vae-clip-frames 17 --vae-lr 6e-4 \
  --steps 60000 --transformer-minutes "${TR_MIN:-2.4}" --batch 128 --lr 7e-4 --warmup 200 \
  --n-clips 6000 --n-images 12000 --n-pairs 1500 --checkpoint-every 500 --max-minutes "${MAX_MIN:-8.5}" \
  $EXTRA > "$OUT/pretrain.log" 2>&1
echo "pretrain exit $?"
grep -v "it/s\]" "$OUT/pretrain.log" | grep -v "^\s*$" | tail -15
cd $RUN || exit 1
tar czf "$OUT/run.tgz" --exclude='*.pt' --exclude='step-*' .
for stage in vae transformer; do  # the latest weights (no optimiser state), to export from if the run stopped early
  last=$(ls -d $stage/step-* 2>/dev/null | sort | tail -1)
  [ -n "$last" ] && tar czf "$OUT/ckpt-$stage.tgz" --exclude='*.pt' "$last"
done
ls -la "$OUT"
