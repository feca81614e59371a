#!/usr/bin/env bash
# A second GPU call: the transformer stage alone, on a VAE checkpoint carried in .gpuvae/vae
# (written here from the shipped cameo-tiny VAE), so the new transformer fits the shipped VAE.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
python3 benchmarks/device/minilm_transport.py unpack .minilm /tmp/minilm || exit 1
export CAMEO_MINILM_DIR=/tmp/minilm
RUN=/tmp/pretrain
mkdir -p $RUN && cp -r .gpuvae/vae $RUN/vae
timeout "${PRETRAIN_S:-265}" python3 -c "import sys; from cameo.cli import main; sys.exit(main())" pretrain \
  --out $RUN --resume --stage transformer --device cuda --workers 14 --seed 0 \
  --steps 60000 --transformer-minutes "${TR_MIN:-2.3}" --batch 384 --lr 1e-3 --warmup 200 \
  --n-clips 5000 --n-images 10000 --n-pairs 1200 --checkpoint-every 250 --max-minutes "${MAX_MIN:-4.2}" \
  > "$OUT/pretrain.log" 2>&1
echo "pretrain exit $?"
tr '\r' '\n' < "$OUT/pretrain.log" | grep -v "it/s" | grep -v "^\s*$" | tail -8
cd $RUN || exit 1
tar czf "$OUT/run.tgz" --exclude='*.pt' --exclude='step-*' .
last=$(ls -d transformer/step-* 2>/dev/null | sort | tail -1)
[ -n "$last" ] && tar czf "$OUT/ckpt-transformer.tgz" --exclude='*.pt' "$last"
ls -la "$OUT"
