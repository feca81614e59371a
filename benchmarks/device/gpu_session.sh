#!/usr/bin/env bash
# One GPU call of at most 10 minutes (SESSION_S, default 570 s), measurements first:
#   1. benchmarks/gpu_performance.py (PERF_S, default 210 s): cameo's LoRA step against the stock
#      diffusers + PEFT loop on random Wan2.1 1.3B and 14B weights at 480x832x33 (bf16, gradient
#      checkpointing), the same with fp8 and with block offload, 14B with fp8 + offload under a
#      24 GB cap, generation seconds per clip -> $OUT/gpu_performance.json (for docs/performance.md);
#   2. optionally benchmarks/estimate_gpu.py (ESTIMATE_S > 0) -> $OUT/estimate_gpu.json;
#   3. pretraining cameo-tiny on the GPU in whatever time is left (ARCH, FROM, INIT as before;
#      EMA, default 0.999, the transformer's weight average that is exported).
# Prepare here, then carry both (they are git-ignored):
#   pip download diffusers==0.42.1 --no-deps -d .whl
#   python benchmarks/device/minilm_transport.py pack .minilm
# Dry run of step 1 on a CPU: python benchmarks/gpu_performance.py --tiny --out /tmp/p.json
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
SESSION_S=${SESSION_S:-570}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"

# 1. the performance measurements (the JSON is rewritten after every variant)
PERF_S=${PERF_S:-210}
if [ "$PERF_S" -gt 0 ]; then
  timeout "$PERF_S" python3 benchmarks/gpu_performance.py --out "$OUT/gpu_performance.json" \
    --budget-s $(( PERF_S - 45 )) > "$OUT/gpu_performance.log" 2>&1
  echo "gpu_performance exit $? after ${SECONDS}s"
  grep -v "kept in float32" "$OUT/gpu_performance.log" | cut -c 1-300 | tail -14
fi

# 2. estimate vs measured on real Wan configs (random weights), hard-capped; off by default
ESTIMATE_S=${ESTIMATE_S:-0}
if [ "$ESTIMATE_S" -gt 0 ]; then
  timeout "$ESTIMATE_S" python3 benchmarks/estimate_gpu.py --out "$OUT/estimate_gpu.json" --budget-s $(( ESTIMATE_S - 35 )) 2>&1 | tail -8
fi

# 3. pretrain cameo-tiny in the time left: VAE on 17-frame clips, then the transformer
LEFT=$(( SESSION_S - SECONDS - 25 ))
PRETRAIN_S=${PRETRAIN_S:-$LEFT}
if [ "$PRETRAIN_S" -lt 90 ] || ! ls .minilm >/dev/null 2>&1; then
  echo "no pretraining (${PRETRAIN_S}s left, or no .minilm carried)"; ls -la "$OUT"; exit 0
fi
python3 benchmarks/device/minilm_transport.py unpack .minilm /tmp/minilm || exit 1
export CAMEO_MINILM_DIR=/tmp/minilm
MAX_MIN=${MAX_MIN:-$(python3 -c "print(round(($PRETRAIN_S - 30) / 60, 2))")}
VAE_MIN=${VAE_MIN:-$(python3 -c "print(round(0.55 * $MAX_MIN, 2))")}
TR_MIN=${TR_MIN:-$(python3 -c "print(round(0.35 * $MAX_MIN, 2))")}
ARCH=${ARCH-configs/cameo-tiny/next-4x.toml}
RUN=/tmp/pretrain
EXTRA=
if [ -n "${FROM:-}" ]; then  # a committed run whose VAE stages are done: the transformer alone
  rm -rf $RUN && cp -r "$FROM" $RUN || exit 1
  ARCH= EXTRA="--resume --stage transformer ${INIT:+--init-transformer $INIT}"
fi
timeout "$PRETRAIN_S" python3 -c "import sys; from cameo.cli import main; sys.exit(main())" pretrain \
  --out $RUN --device cuda --workers 14 --seed 0 ${ARCH:+--architecture "$ARCH"} \
  --vae-steps 30000 --vae-minutes "$VAE_MIN" --vae-batch-images 32 --vae-batch-clips 8 --vae-clip-frames 17 --vae-lr 6e-4 \
  --steps 60000 --transformer-minutes "$TR_MIN" --batch 128 --lr 7e-4 --warmup 200 --ema "${EMA:-0.999}" \
  --n-clips 6000 --n-images 12000 --n-pairs 1500 --checkpoint-every 500 --max-minutes "$MAX_MIN" \
  $EXTRA > "$OUT/pretrain.log" 2>&1
echo "pretrain exit $? after ${SECONDS}s"
grep -v "it/s\]" "$OUT/pretrain.log" | grep -v "^\s*$" | tail -15
cd $RUN || exit 1
tar czf "$OUT/run.tgz" --exclude='*.pt' --exclude='step-*' .
for stage in vae transformer; do  # the latest weights (no optimiser state), to export from if the run stopped early
  last=$(ls -d $stage/step-* 2>/dev/null | sort | tail -1)
  [ -n "$last" ] && tar czf "$OUT/ckpt-$stage.tgz" --exclude='*.pt' "$last"
done
ls -la "$OUT"
