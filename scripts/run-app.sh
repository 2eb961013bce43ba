#!/usr/bin/env bash
# Builds LoGoNet Studio (release) and starts it on its embedded default sample (the synthetic abdominal CT
# phantom, its ground truth and the bundled model). Extra arguments go to the app, e.g.
#   bash scripts/run-app.sh --open ct.nii.gz --gt labels.nii.gz
# On a machine without a display it runs the app under a virtual X server, saves a screenshot of the first
# frame to out/studio.png and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
cargo build --release -p logonet-studio
bin=target/release/logonet-studio
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec "$bin" "$@"
fi
mkdir -p out
echo "no display: running under xvfb-run, screenshot to out/studio.png"
xvfb-run -a -s "-screen 0 1280x800x24" "$bin" "$@" --screenshot out/studio.png
ls -l out/studio.png
