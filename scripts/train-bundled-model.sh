#!/usr/bin/env bash
# Trains the small LoGoNet that LoGoNet Studio ships (assets/models/phantom-logonet-tiny.safetensors) on
# synthetic abdominal CT phantoms, with nothing but the `logonet` binary.
#
#   scripts/train-bundled-model.sh                      # defaults below
#   BIN=target/release/logonet THREADS=16 OUT=out/bundled-model EPOCHS=60 TIME_BUDGET_S=540 \
#     scripts/train-bundled-model.sh
#
# Variables (all optional):
#   BIN            the logonet binary                     (default: target/release/logonet, built if missing)
#   THREADS        CPU threads for training               (default: all cores, nproc)
#   OUT            work folder: phantoms, run logs, bundle (default: out/bundled-model)
#   EPOCHS         epochs of the warm-up cosine schedule   (default: 35)
#   TIME_BUDGET_S  wall-clock limit of each of the two training stages; the best validated bundle so far
#                  is kept when it runs out                (default: 530)
#   STAGE2_EPOCHS, STAGE2_LR: the second stage (default 22 epochs, 1.5e-3; 0 epochs = no second stage)
#   CASES          training phantoms                       (default: 16)
#   INSTALL        1: copy the bundle to assets/models/    (default: 1)
#   SPACING, CROP, BATCH, SAMPLES, LR, VAL_EVERY: model grid in mm (default "3 3 2.5", the default sample's
#                  own grid), crop and window size (64), volumes per step (2), crops per volume (2),
#                  learning rate (2e-3), validation interval in epochs (2)
#
# What it does:
# 1. writes CASES training phantoms (`logonet phantom`, seeds 1..CASES, sizes and spacings that vary while the
#    field of view stays about that of the app's default sample, noise 8..16 HU) plus the app's default
#    sample itself (seed 0, 128x128x96 at 3x3x2.5 mm, 12 HU) as the one validation case, in the BTCV layout
#    (img/imgNNNN.nii.gz, label/labelNNNN.nii.gz) that `logonet train --data` reads; the default sample is
#    the last case, so it is the held-out validation case and never trained on;
# 2. runs `logonet train --model logonet-tiny` twice (stage 2 continues from stage 1's best bundle with
#    `--init` and a new warm-up cosine schedule), with the CT recipe (RAS, -175..250 HU -> 0..1) on a 3x3x2.5 mm
#    grid (`--spacing`: the paper's 1.5x1.5x2 mm would make the default sample 8 times larger and a
#    segmentation in the app 8 times slower) with 64^3 crops (192x192x160 mm of context), validating on
#    the default sample every VAL_EVERY epochs; the best validation Dice is kept;
# 3. prints the final (best) validation Dice on the default sample, and copies the bundle to
#    assets/models/phantom-logonet-tiny.safetensors (about 4 MB).
#
# The shipped bundle was made by this script on a 16-core machine (THREADS=16): stage 1 reached epoch 22 of 35
# in 530 s (best validation mean Dice 0.298), stage 2 ran its 22 epochs in 512 s (0.448; spleen 0.86,
# kidneys 0.89 / 0.80, liver 0.95, stomach 0.91, aorta 0.87, the small organs 0). About 18 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${BIN:-target/release/logonet}"
THREADS="${THREADS:-$(nproc)}"
OUT="${OUT:-out/bundled-model}"
EPOCHS="${EPOCHS:-35}"
TIME_BUDGET_S="${TIME_BUDGET_S:-530}"
CASES="${CASES:-16}"
INSTALL="${INSTALL:-1}"
CROP="${CROP:-64}"
BATCH="${BATCH:-2}"
SAMPLES="${SAMPLES:-2}"
VAL_EVERY="${VAL_EVERY:-2}"
LR="${LR:-2e-3}"
STAGE2_EPOCHS="${STAGE2_EPOCHS:-22}"
STAGE2_LR="${STAGE2_LR:-1.5e-3}"
SPACING="${SPACING:-3 3 2.5}"

if [[ ! -x "$BIN" ]]; then
  echo "building $BIN"
  cargo build --release -p logonet --bin logonet
fi
export RAYON_NUM_THREADS="$THREADS"

data="$OUT/data"
run="$OUT/run"
rm -rf "$data" "$run"
mkdir -p "$data/img" "$data/label" "$run"

# Training phantoms: about the default sample's 384x384x240 mm field of view, other grids and patients.
# (dims, spacing in mm) cycle through these grids; the seed changes anatomy jitter and noise.
grids=(
  "128 128 96  3.0 3.0 2.5"
  "144 144 100 2.7 2.7 2.4"
  "112 112 80  3.4 3.4 3.0"
  "160 160 120 2.4 2.4 2.0"
  "120 136 90  3.3 2.9 2.7"
  "136 120 104 2.8 3.2 2.3"
)
echo "writing $CASES training phantoms and the validation case (the app's default sample) to $data"
for ((c = 1; c <= CASES; c++)); do
  g=(${grids[$(((c - 1) % ${#grids[@]}))]})
  noise=$((8 + (c * 5) % 9))
  id=$(printf "%04d" "$c")
  "$BIN" phantom -o "$data/img/img$id.nii.gz" --labels "$data/label/label$id.nii.gz" \
    --size "${g[0]}" "${g[1]}" "${g[2]}" --spacing "${g[3]}" "${g[4]}" "${g[5]}" \
    --seed "$c" --noise "$noise" 2>/dev/null
done
# The default sample (PhantomConfig::default()): last case = validation case.
"$BIN" phantom -o "$data/img/img9999.nii.gz" --labels "$data/label/label9999.nii.gz" 2>/dev/null

# One `logonet train` run, stopped after TIME_BUDGET_S; prints its validation Dice; sets $bundle.
train_stage() {
  local run="$1" epochs="$2" warmup="$3" lr="$4" val_every="$5" seed="$6"
  shift 6
  mkdir -p "$run"
  local cmd=("$BIN" train --data "$data" --model logonet-tiny --out "$run"
    --spacing $SPACING --epochs "$epochs" --warmup-epochs "$warmup" --batch "$BATCH" --samples "$SAMPLES"
    --crop "$CROP" --lr "$lr" --weight-decay 1e-5 --val-every "$val_every" --val-cases 1 --classes 14
    --seed "$seed" --workers 2 "$@")
  echo "training ($THREADS threads, at most ${TIME_BUDGET_S}s):"
  echo "  RAYON_NUM_THREADS=$THREADS ${cmd[*]}"
  local start rc elapsed
  start=$(date +%s)
  set +e
  timeout --signal=TERM "$TIME_BUDGET_S" "${cmd[@]}"
  rc=$?
  set -e
  elapsed=$(($(date +%s) - start))
  if [[ $rc -eq 124 ]]; then
    echo "time budget of ${TIME_BUDGET_S}s reached after $elapsed s: keeping the best validated bundle so far"
  elif [[ $rc -ne 0 ]]; then
    echo "logonet train failed (exit $rc)" >&2
    exit "$rc"
  else
    echo "training finished in $elapsed s"
  fi
  bundle="$run/model.safetensors"
  [[ -f "$bundle" ]] || bundle="$run/best_model.safetensors"
  if [[ ! -f "$bundle" ]]; then
    echo "no bundle written (no validation finished within the budget?): see $run/train_log.csv" >&2
    exit 1
  fi
  # Best validation Dice (mean over the labels of the default sample, background included as in training).
  best=$(awk -F, '$1 == "validation" && $8 != "" { if ($8 > b) { b = $8; e = $2 } } END { if (e != "") printf "%.4f at epoch %d", b, e }' "$run/train_log.csv")
  last=$(awk -F, '$1 == "validation" && $8 != "" { d = $8; e = $2 } END { if (e != "") printf "%.4f at epoch %d", d, e }' "$run/train_log.csv")
  echo "validation Dice on the default sample: best $best; last $last"
  # Per label (background, then BTCV 1..13) at the best validation.
  grep '"best":true' "$run/train_log.jsonl" | tail -n 1 |
    sed -e 's/.*"per_label":\[\([^]]*\)\].*/per-label Dice at the best epoch (0 = background, 1..13 BTCV): \1/' || true
}

# Stage 1: from random weights.
train_stage "$run/stage1" "$EPOCHS" 3 "$LR" "$VAL_EVERY" 0
# Stage 2: continue from stage 1's best bundle with a fresh warm-up cosine (new crops: seed 1).
if [[ "$STAGE2_EPOCHS" -gt 0 ]]; then
  train_stage "$run/stage2" "$STAGE2_EPOCHS" 1 "$STAGE2_LR" 1 1 --init "$bundle"
fi
ls -l "$bundle"
if [[ "$INSTALL" == 1 ]]; then
  mkdir -p assets/models
  cp "$bundle" assets/models/phantom-logonet-tiny.safetensors
  echo "installed assets/models/phantom-logonet-tiny.safetensors"
fi
echo "final validation Dice: ${best:-none}"
