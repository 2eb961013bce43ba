#!/usr/bin/env bash
# ACDC experiment of docs/PRETRAINING.md: masked pre-training on every ACDC image (no labels), fine-tuning on a
# few labelled patients, validation Dice on patients 49-60, against training from scratch on the same few.
#
#   BIN=target/release/logonet DATA=/path/to/acdc_cardiac_mri OUT=out/acdc THREADS=16 \
#       scripts/experiments/acdc_pretrain.sh
#
# The run is split into stages (pretrain, finetune, scratch); each writes OUT/<stage>/DONE when finished and is
# skipped afterwards, so when one invocation must stay under a time limit, run the script again until it
# prints the table (OUT/results.md). BUDGET_S bounds one invocation: a stage is started only when its
# estimate fits in what is left, and each command runs under `timeout`.
#
# Environment (defaults in brackets):
#   BIN [target/release/logonet]   DATA [$LOGONET_DATA/acdc_cardiac_mri]   OUT [out/acdc_pretrain]
#   PRE_DATA [DATA] (folder whose images are pre-trained on; labels there are ignored)
#   THREADS [nproc]  BUDGET_S [560]  MODEL [tiny]  CROP [32]  SEED [0]
#   TRAIN_PATIENTS ["001 002 003 004"]   VAL_PATIENTS ["049 ... 060"]
#   pre-training: CLUSTERERS [20]  K_MIN [80]  K_MAX [500]  PRE_EPOCHS [50]  CROPS_PER_VOLUME [4]
#                 PRE_TIME_S [300] (training stops after this many seconds, checkpoint of the last step kept)
#                 NO_MASK [0] (1 = the no-masking ablation)  PRE_BATCH [] (empty = the CLI default)
#   fine-tuning and scratch (identical but for --init; constant LR as the reference's fine-tuning):
#                 FT_EPOCHS [30]  FT_STEPS [8]  FT_LR [2e-4]  FT_EST_S [240] (expected seconds of one run)
#   STAGE_TIMEOUT_S [BUDGET_S]  (hard limit of one command)
# Ablations: NO_MASK=1; CLUSTERERS=1 vs CLUSTERERS=20 (use another OUT for each).
set -euo pipefail

BIN=${BIN:-target/release/logonet}
DATA=${DATA:-${LOGONET_DATA:-/work/shared/data}/acdc_cardiac_mri}
OUT=${OUT:-out/acdc_pretrain}
THREADS=${THREADS:-$(nproc)}
BUDGET_S=${BUDGET_S:-560}
MODEL=${MODEL:-tiny}
CROP=${CROP:-32}
SEED=${SEED:-0}
TRAIN_PATIENTS=${TRAIN_PATIENTS:-"001 002 003 004"}
VAL_PATIENTS=${VAL_PATIENTS:-"049 050 051 052 053 054 055 056 057 058 059 060"}
CLUSTERERS=${CLUSTERERS:-20}
K_MIN=${K_MIN:-80}
K_MAX=${K_MAX:-500}
PRE_EPOCHS=${PRE_EPOCHS:-50}
PRE_TIME_S=${PRE_TIME_S:-300}
CROPS_PER_VOLUME=${CROPS_PER_VOLUME:-4}
NO_MASK=${NO_MASK:-0}
PRE_BATCH=${PRE_BATCH:-}
FT_EPOCHS=${FT_EPOCHS:-30}
FT_STEPS=${FT_STEPS:-8}
FT_LR=${FT_LR:-2e-4}
FT_EST_S=${FT_EST_S:-240}
STAGE_TIMEOUT_S=${STAGE_TIMEOUT_S:-$BUDGET_S}

export RAYON_NUM_THREADS=$THREADS
START=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$(cd "$DATA" && pwd)
PRE_DATA=$(cd "${PRE_DATA:-$DATA}" && pwd)
[ -x "$BIN" ] || { echo "BIN=$BIN is not an executable (build: cargo build --release -p logonet --bin logonet)" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
LOG="$OUT/run.log"
echo "== $(date -u +%FT%TZ) acdc_pretrain.sh: $(uname -n), $(nproc) cores, THREADS=$THREADS, load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# Labelled folder for `logonet train`: the training patients, then the validation patients (sorted last, so
# `--val-cases` holds exactly them out). Both frames (ED, ES) of each patient when present.
LAB="$OUT/labelled"
if [ ! -f "$LAB/READY" ]; then
  rm -rf "$LAB"; mkdir -p "$LAB"
  nval=0
  for p in $TRAIN_PATIENTS $VAL_PATIENTS; do
    for img in "$DATA"/patient${p}_frame*_image.nii.gz; do
      [ -e "$img" ] || continue
      lab=${img%_image.nii.gz}_label.nii.gz
      [ -e "$lab" ] || { echo "missing label $lab" >&2; exit 2; }
      ln -s "$img" "$LAB/"; ln -s "$lab" "$LAB/"
    done
  done
  for p in $VAL_PATIENTS; do
    for img in "$DATA"/patient${p}_frame*_image.nii.gz; do [ -e "$img" ] && nval=$((nval + 1)); done
  done
  [ "$nval" -gt 0 ] || { echo "no validation patient ($VAL_PATIENTS) in $DATA" >&2; exit 2; }
  echo "$nval" > "$LAB/VAL_CASES"
  touch "$LAB/READY"
fi
NVAL=$(cat "$LAB/VAL_CASES")

# run STAGE ESTIMATE_S command...: runs once, under timeout, when the estimate fits in the budget.
run_stage() {
  local stage=$1 est=$2; shift 2
  if [ -f "$OUT/$stage/DONE" ]; then echo "-- $stage: done before" | tee -a "$LOG"; return 0; fi
  if [ "$(left)" -lt "$est" ]; then
    echo "-- $stage: needs ~${est} s, $(left) s left in this invocation: run the script again" | tee -a "$LOG"
    exit 3
  fi
  local limit=$(( $(left) < STAGE_TIMEOUT_S ? $(left) : STAGE_TIMEOUT_S ))
  echo "-- $stage: $* (limit ${limit} s)" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  local rc=0 TIMEFORMAT="$stage: %R s wall, %U s user, %S s sys (CPU of the command and its children)"
  { time timeout "$limit" "$@" > "$OUT/$stage.stdout" 2> "$OUT/$stage.stderr" || rc=$?; } 2>> "$OUT/times.txt"
  if [ "$rc" != 0 ]; then
    echo "-- $stage FAILED (exit $rc; 124 = timed out) after $(( $(date +%s) - t0 )) s; see $OUT/$stage.stderr" | tee -a "$LOG"
    tail -5 "$OUT/$stage.stderr" >&2
    rm -rf "$OUT/$stage.partial"; mv "$OUT/$stage" "$OUT/$stage.partial" 2>/dev/null || true
    exit 4
  fi
  touch "$OUT/$stage/DONE"
  echo "-- $stage: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}

# --out-channels 4: the trunk has the fine-tuning class count (background, RV, MYO, LV), so every trunk tensor
# loads in `train --init` (with the reference's 14 the nets' last convolutions would be re-initialised).
PRE_ARGS=(pretrain --data "$PRE_DATA" --model "$MODEL" --crop "$CROP" --intensity zscore --out-channels 4
  --clusterers "$CLUSTERERS" --k-min "$K_MIN" --k-max "$K_MAX" --epochs "$PRE_EPOCHS"
  --crops-per-volume "$CROPS_PER_VOLUME" --time-limit-s "$PRE_TIME_S" --seed "$SEED" --out "$OUT/pretrain")
[ "$NO_MASK" = 1 ] && PRE_ARGS+=(--no-mask)
[ -n "$PRE_BATCH" ] && PRE_ARGS+=(--batch "$PRE_BATCH")
run_stage pretrain $((PRE_TIME_S + 60)) "$BIN" "${PRE_ARGS[@]}"

# Fine-tuning and scratch: the same command but for --init. Validation (sliding window on the $NVAL validation
# volumes) only after the last epoch.
TRAIN_ARGS=(train --data "$LAB" --model "$MODEL" --crop "$CROP" --recipe mri --epochs "$FT_EPOCHS"
  --schedule constant --steps-per-epoch "$FT_STEPS" --batch 2 --samples 2 --lr "$FT_LR"
  --val-every "$FT_EPOCHS" --val-cases "$NVAL" --seed "$SEED" --workers 2)
run_stage finetune "$FT_EST_S" "$BIN" "${TRAIN_ARGS[@]}" --init "$OUT/pretrain/pretrain.safetensors" --out "$OUT/finetune"
run_stage scratch "$FT_EST_S" "$BIN" "${TRAIN_ARGS[@]}" --out "$OUT/scratch"

# Results table.
python3 - "$OUT" <<'EOF' | tee "$OUT/results.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
pre = json.loads((out / "pretrain" / "pretrain.json").read_text())
cfg = pre["config"]
steps = pre.get("step_losses", [])
print(f"pre-training: {pre['crops']} crops {cfg['crop']}, {len(pre['ks'])} clusterers (k {min(pre['ks'])}..{max(pre['ks'])}), "
      f"mask {'off' if cfg['mask'] is None else cfg['mask']}, {len(pre['epochs'])} of {cfg['epochs']} epochs "
      f"({len(steps)} steps of batch {cfg.get('batch', 1)}{', stopped by the time limit' if pre.get('stopped_by_time_limit') else ''}); "
      f"epoch losses {[round(e['mean_loss'], 4) for e in pre['epochs']]}"
      + (f", first/last step {steps[0]:.4f}/{steps[-1]:.4f}" if steps else ""))
print()
print("| run | validation cases | mean Dice (bg incl.) | RV | MYO | LV | mean of 1-3 | epochs |")
print("|---|---|---|---|---|---|---|---|")
for run in ["scratch", "finetune"]:
    vals = [json.loads(l) for l in (out / run / "train_log.jsonl").read_text().splitlines() if l.strip()]
    vals = [v for v in vals if v.get("event") == "validation"]
    if not vals:
        print(f"| {run} | - | no validation | | | | | |")
        continue
    v = vals[-1]
    pl = v["per_label"] + [None] * 4
    fg = [x for x in pl[1:4] if x is not None]
    f = lambda x: "-" if x is None else f"{x:.4f}"
    n = (out / "labelled" / "VAL_CASES").read_text().strip()
    print(f"| {run} | {n} | {v['mean_dice']:.4f} | {f(pl[1])} | {f(pl[2])} | {f(pl[3])} | "
          f"{f(sum(fg) / len(fg) if fg else None)} | {v['epoch'] + 1} |")
EOF
echo "== times (wall, CPU):" | tee -a "$LOG"; cat "$OUT/times.txt" | tee -a "$LOG"
