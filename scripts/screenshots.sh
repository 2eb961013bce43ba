#!/usr/bin/env bash
# Runs LoGoNet Studio under a virtual X server and saves screenshots of its main screens.
#
#   scripts/screenshots.sh [OUT_DIR]            (default: out/screenshots)
#
# Needs: xvfb xauth mesa-vulkan-drivers (apt-get install -y xvfb xauth mesa-vulkan-drivers).
# Set LOGONET_DATA to also capture a real CT (the first *.nii.gz under $LOGONET_DATA with a matching label).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/screenshots}"
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
cargo build -p logonet-studio --bin logonet-studio
bin=target/debug/logonet-studio
run() {
  xvfb-run -a -s "-screen 0 1280x800x24" "$bin" --size 1280x800 "$@"
}
run --screenshot "$out/default_sample.png"
echo "wrote $out/default_sample.png"
if [[ -n "${LOGONET_MODEL:-}" ]]; then
  run --model "$LOGONET_MODEL" --segment --screenshot "$out/segmented.png"
  echo "wrote $out/segmented.png"
fi
if [[ -n "${LOGONET_DATA:-}" ]]; then
  img="$(find "$LOGONET_DATA" -name '*.nii.gz' | grep -vi -e label -e seg | sort | head -n 1 || true)"
  if [[ -n "$img" ]]; then
    run --open "$img" --screenshot "$out/real_volume.png"
    echo "wrote $out/real_volume.png ($img)"
  fi
else
  echo "LOGONET_DATA not set: skipping the real-volume screenshot"
fi
