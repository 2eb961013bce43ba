#!/usr/bin/env bash
# ACDC cardiac MRI training experiment (issue 7): train a small network on patients 1-48 (both frames, ED and
# ES), validate on patients 49-60, and write per-structure validation Dice and wall times to $OUT.
#
# The data is never copied: $OUT/split/{train,val} hold symbolic links to the files in $DATA.
#
# Environment (defaults in brackets):
#   BIN       the logonet binary                       [target/release/logonet]
#   DATA      the acdc_cardiac_mri folder              [$LOGONET_DATA/acdc_cardiac_mri]
#   OUT       output folder (created)                  [acdc_out]
#   THREADS   CPU threads for candle/rayon              [all cores]
#   MINUTES   training wall-clock budget, minutes      [5.5] (stops at the end of the epoch past it)
#   EPOCHS    epoch cap                                [200]
#   MODEL     network preset                           [logonet-tiny]
#   CROP      training crop and validation window      [128,128,32] (ACDC is ~216x256x10: z is zero-padded)
#   BATCH     volumes per step                         [2]
#   SAMPLES   crops per volume                         [2]
#   STEPS     steps per epoch                          [16]
#   LR        AdamW learning rate (constant schedule)  [1e-3]
#   VAL_EVERY validate every N epochs (best kept)      [4]
#   FRAMES    "01 02" (ED and ES) or "01" (ED only)    [01 02]
#   TRAIN_IDS / VAL_IDS  patient number ranges         [1..48] / [49..60]
#   SEED      seed of crops and augmentation           [0]
#   EXTRA     more `logonet train` arguments (e.g. "--init pretrain.safetensors")
#
# To ship less data: DATA may hold only the end-diastole files (patient*_frame01_{image,label}.nii.gz,
# 38 MiB) with FRAMES=01; labels.json is optional.
#
# Outputs in $OUT: run/ (model.safetensors bundle, best_model.safetensors, checkpoint.safetensors,
# train_log.jsonl, train_log.csv), pred/ (validation predictions), eval/ (one `logonet eval` table per case),
# results.tsv (per-structure mean validation Dice over the validation cases), results.md (summary with wall
# times and the command line), time.txt.
set -euo pipefail

BIN=${BIN:-target/release/logonet}
DATA=${DATA:-${LOGONET_DATA:-/work/shared/data}/acdc_cardiac_mri}
OUT=${OUT:-acdc_out}
MINUTES=${MINUTES:-5.5}
EPOCHS=${EPOCHS:-200}
MODEL=${MODEL:-logonet-tiny}
CROP=${CROP:-128,128,32}
BATCH=${BATCH:-2}
SAMPLES=${SAMPLES:-2}
STEPS=${STEPS:-16}
LR=${LR:-1e-3}
VAL_EVERY=${VAL_EVERY:-4}
FRAMES=${FRAMES:-01 02}
TRAIN_IDS=${TRAIN_IDS:-$(seq -s ' ' 1 48)}
VAL_IDS=${VAL_IDS:-$(seq -s ' ' 49 60)}
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
if [ -n "${THREADS:-}" ]; then export RAYON_NUM_THREADS=$THREADS; fi

[ -x "$BIN" ] || { echo "BIN=$BIN is not an executable" >&2; exit 2; }
[ -d "$DATA" ] || { echo "DATA=$DATA is not a folder" >&2; exit 2; }
DATA=$(cd "$DATA" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/split" "$OUT/pred" "$OUT/eval"
mkdir -p "$OUT/split/train" "$OUT/split/val" "$OUT/pred" "$OUT/eval"

link() { # link SET ID...
    local set=$1 n=0
    shift
    for id in "$@"; do
        for f in $FRAMES; do
            local c
            c=$(printf 'patient%03d_frame%s' "$id" "$f")
            if [ -e "$DATA/${c}_image.nii.gz" ] && [ -e "$DATA/${c}_label.nii.gz" ]; then
                ln -s "$DATA/${c}_image.nii.gz" "$OUT/split/$set/${c}_image.nii.gz"
                ln -s "$DATA/${c}_label.nii.gz" "$OUT/split/$set/${c}_label.nii.gz"
                n=$((n + 1))
            fi
        done
    done
    echo "$n"
}
n_train=$(link train $TRAIN_IDS)
n_val=$(link val $VAL_IDS)
LABELS=$DATA/labels.json
if [ ! -f "$LABELS" ]; then
    LABELS=$OUT/labels.json
    printf '{"1": "right_ventricle_cavity", "2": "left_ventricle_myocardium", "3": "left_ventricle_cavity"}\n' >"$LABELS"
fi
echo "split: $n_train training / $n_val validation volumes (symlinks in $OUT/split)"
[ "$n_train" -gt 0 ] && [ "$n_val" -gt 0 ] || { echo "no ACDC cases found in $DATA" >&2; exit 2; }

cmd=("$BIN" train --data "$OUT/split/train" --val-data "$OUT/split/val" --model "$MODEL" --recipe mri
    --crop "$CROP" --batch "$BATCH" --samples "$SAMPLES" --steps-per-epoch "$STEPS" --epochs "$EPOCHS"
    --schedule constant --lr "$LR" --val-every "$VAL_EVERY" --time-limit-min "$MINUTES" --seed "$SEED"
    --classes 4 --out "$OUT/run")
# shellcheck disable=SC2206
cmd+=($EXTRA)
echo "+ ${cmd[*]}"
t0=$(date +%s)
"${cmd[@]}" 2>&1 | tee "$OUT/train_stdout.txt"
t1=$(date +%s)

# Validation through the product path: predict each validation volume with the bundle, then `logonet eval`.
for img in "$OUT"/split/val/*_image.nii.gz; do
    c=$(basename "$img" _image.nii.gz)
    "$BIN" predict -i "$img" -o "$OUT/pred/${c}_pred.nii.gz" -m "$OUT/run/model.safetensors" >>"$OUT/pred/predict.log" 2>&1
    "$BIN" eval --pred "$OUT/pred/${c}_pred.nii.gz" --gt "$OUT/split/val/${c}_label.nii.gz" \
        --labels "$LABELS" --no-surface >"$OUT/eval/${c}.txt"
done
t2=$(date +%s)

# Per-structure mean Dice over the validation volumes (labels absent from both maps are skipped).
awk '$1 ~ /^[0-9]+$/ && $3 != "NaN" && $3 != "nan" { s[$1] += $3; n[$1]++; name[$1] = $2 }
     END { printf "label\tname\tmean_dice\tcases\n";
           for (l = 1; l <= 3; l++) if (n[l] > 0) { printf "%d\t%s\t%.4f\t%d\n", l, name[l], s[l] / n[l], n[l]; m += s[l] / n[l]; k++ }
           if (k > 0) printf "mean\tforeground\t%.4f\t-\n", m / k }' "$OUT"/eval/*.txt >"$OUT/results.tsv"

train_s=$((t1 - t0))
eval_s=$((t2 - t1))
epochs_done=$(grep -c '"event":"epoch"' "$OUT/run/train_log.jsonl" || true)
best=$(grep '"event":"finished"' "$OUT/run/train_log.jsonl" | tail -1 || true)
{
    echo "# ACDC experiment $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), THREADS=${THREADS:-all}"
    echo "command: ${cmd[*]}"
    echo "training wall time: ${train_s} s ($epochs_done epochs in this log); predict+eval wall time: ${eval_s} s"
    echo "trainer's last event: $best"
    echo
    echo "validation Dice per structure ($n_val volumes, logonet predict + logonet eval):"
    echo
    cat "$OUT/results.tsv"
} >"$OUT/results.md"
printf 'train_s\t%s\neval_s\t%s\n' "$train_s" "$eval_s" >"$OUT/time.txt"
cat "$OUT/results.md"
