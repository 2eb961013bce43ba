#!/usr/bin/env bash
# Side-by-side forward benchmark of one network: PyTorch (scripts/torch_logonet_bench.py, CPU) and
# `logonet bench model`, alternating, ROUNDS rounds, each reporting wall time, peak RSS and the steal time
# the hypervisor took from this VM during the run (the host is shared; a round with much steal is noise).
#
#   scripts/bench-vs-torch.sh [MODEL] [ROUNDS] [THREADS]      # defaults: logonet-s 2 2
#
# Environment: LOGONET (the binary, default target/release/logonet), PYTHON (a Python with torch 2.15,
# default python3), SIZE (window, default 96), RUNS (timed passes per side and round, default 3).
set -euo pipefail
MODEL=${1:-logonet-s}
ROUNDS=${2:-2}
THREADS=${3:-2}
LOGONET=${LOGONET:-target/release/logonet}
PYTHON=${PYTHON:-python3}
SIZE=${SIZE:-96}
RUNS=${RUNS:-3}
cd "$(dirname "$0")/.."
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  echo "round $round: $MODEL ${SIZE}^3, $THREADS threads"
  s0=$(steal_ticks)
  /usr/bin/time -f "  torch   peak RSS %M KB" env OMP_NUM_THREADS="$THREADS" "$PYTHON" scripts/torch_logonet_bench.py \
    --device cpu --threads "$THREADS" --model "$MODEL" --size "$SIZE" --runs "$RUNS" 2>&1 \
    | grep -E 'median|RSS' | sed 's/^.*fp32: /  torch   /'
  s1=$(steal_ticks)
  echo "  torch   steal $(( (s1 - s0) / hz )) s"
  s0=$(steal_ticks)
  /usr/bin/time -f "  logonet peak RSS %M KB" env RAYON_NUM_THREADS="$THREADS" "$LOGONET" bench model \
    --model "$MODEL" --size "$SIZE" --threads "$THREADS" --runs "$RUNS" 2>&1 \
    | grep -E '^forward|RSS' | sed 's/^forward */  logonet /'
  s1=$(steal_ticks)
  echo "  logonet steal $(( (s1 - s0) / hz )) s"
done
