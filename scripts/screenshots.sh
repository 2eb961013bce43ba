#!/usr/bin/env bash
# Runs LoGoNet Studio under a virtual X server (xvfb-run) and saves screenshots of its main screens:
#
#   default_sample.png   first launch: the synthetic phantom with its ground truth, three linked views
#   segmented.png        Segment with the bundled model (or $LOGONET_MODEL), screenshot once it has finished
#   compare.png          ground truth | prediction with the TP/FP/FN difference overlay, metrics table open
#   real_volume.png      a real CT from $LOGONET_DATA (when set), with its ground truth
#
#   scripts/screenshots.sh [OUT_DIR]            (default: out/screenshots)
#   BIN=target/release/logonet-studio scripts/screenshots.sh
#
# Needs: xvfb xauth mesa-vulkan-drivers (apt-get install -y xvfb xauth mesa-vulkan-drivers).
# BIN defaults to target/release/logonet-studio when it exists, else a debug build is made.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/screenshots}"
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
if [[ -z "${BIN:-}" ]]; then
  if [[ -x target/release/logonet-studio ]]; then
    BIN=target/release/logonet-studio
  else
    cargo build -p logonet-studio --bin logonet-studio
    BIN=target/debug/logonet-studio
  fi
fi
run() {
  xvfb-run -a -s "-screen 0 1280x800x24" "$BIN" --size 1280x800 "$@"
}
check() {
  # A real capture of a 1280x800 window is tens of kB; a blank one is a few hundred bytes.
  local f="$1" size
  size=$(stat -c %s "$f")
  if [[ "$size" -lt 5000 ]]; then
    echo "$f looks blank ($size bytes)" >&2
    exit 1
  fi
  echo "wrote $f ($size bytes)"
}
model=()
if [[ -n "${LOGONET_MODEL:-}" ]]; then
  model=(--model "$LOGONET_MODEL")
fi

run --screenshot "$out/default_sample.png"
check "$out/default_sample.png"
run "${model[@]}" --segment --screenshot "$out/segmented.png"
check "$out/segmented.png"
run "${model[@]}" --segment --compare --metrics --screenshot "$out/compare.png"
check "$out/compare.png"
if [[ -n "${LOGONET_DATA:-}" ]]; then
  img="$LOGONET_DATA/ct_abdomen_totalseg/ct_full_3mm.nii.gz"
  gt="$LOGONET_DATA/ct_abdomen_totalseg/label_full_btcv13_derived.nii.gz"
  if [[ -f "$img" && -f "$gt" ]]; then
    run --open "$img" --gt "$gt" --screenshot "$out/real_volume.png"
    check "$out/real_volume.png"
  fi
else
  echo "LOGONET_DATA not set: skipping the real-volume screenshot"
fi
