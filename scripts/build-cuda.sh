#!/usr/bin/env bash
# Builds the CUDA `logonet` binary on a machine without a GPU and leaves it stripped at target-cuda/logonet,
# ready to carry to a GPU machine (then run scripts/gpu-check.sh there).
#
# Needs the CUDA 13.0 pip packages in a virtual environment ($CUDA_VENV, default /work/cudavenv) and a link-time
# stub for libcuda: the recipe is in README ("CUDA"). The first build takes 25+ minutes on 2 cores (candle-kernels).
# Environment: CUDA_VENV, CARGO_TARGET_DIR (default /work/cudatarget, kept apart from the CPU build),
# FEATURES (default cudnn; `cuda` for a build without cuDNN, whose conv3d falls back to candle conv2d slices).
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_VENV=${CUDA_VENV:-/work/cudavenv}
N=$(echo "$CUDA_VENV"/lib/python3*/site-packages/nvidia)
[ -d "$N/cu13" ] || { echo "no CUDA 13 pip packages under $N (README, CUDA)" >&2; exit 1; }
export CUDA_HOME=$N/cu13 CUDNN_LIB=$N/cudnn PATH=$N/cu13/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000 CPATH=$N/cu13/include:$N/cudnn/include
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/cudatarget}
nice -n 19 cargo build --release -p logonet --bin logonet --features "${FEATURES:-cudnn}"
mkdir -p target-cuda
strip -o target-cuda/logonet "$CARGO_TARGET_DIR/release/logonet"
ls -la target-cuda/logonet
