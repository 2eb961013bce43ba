#!/usr/bin/env bash
# CUDA check of the `logonet` binary on a machine with an NVIDIA GPU and PyTorch, but no Rust toolchain.
#
# Run from the repository root with the stripped CUDA build at target-cuda/logonet (an ignored path; build it
# with `scripts/build-cuda.sh` or see README, "CUDA") and tests/fixtures present:
#
#     bash scripts/gpu-check.sh            # everything below; logs also go to $OUT (default /tmp/gpu-check)
#
# 1. nvidia-smi; libcublas/libcudnn/libcurand/libcudart/libnvrtc located in the machine's PyTorch pip packages
#    (the nvidia-* wheels) and put on LD_LIBRARY_PATH; `ldd` of the binary.
# 2. `logonet check parity --device cuda`: the six reference fixtures on the GPU, max abs diff vs PyTorch (<= 1e-4);
#    then target-cuda/ops_cuda if present (the model/tests/ops_cuda.rs test binary, CUDA conv3d vs CPU kernels).
# 3. `logonet bench model --device cuda` for logonet-s and ulkanet-s at 96^3 (fp32; then with TF32 allowed).
# 4. Side by side: scripts/torch_logonet_bench.py (PyTorch, the same networks ported from the reference code,
#    checked against the fixtures first) on the same GPU, same settings.
# 5. End to end: phantoms, a short logonet-tiny training on CUDA, predict --device cuda vs cpu, eval.
set -u
cd "$(dirname "$0")/.."
BIN=${LOGONET_BIN:-target-cuda/logonet}
OUT=${OUT:-/tmp/gpu-check}
RUNS=${RUNS:-5}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: >"$LOG"
say() { printf '\n== %s\n' "$*" | tee -a "$LOG"; }
run() { echo "\$ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

say "date, GPU"
date -u | tee -a "$LOG"
run nvidia-smi
run python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"

say "CUDA libraries from the PyTorch pip packages"
LIBDIRS=$(python3 - <<'PY'
import glob, os
roots = []
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
try:
    import torch
    roots.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
dirs = []
for r in roots:
    for name in ("libcublas.so*", "libcublasLt.so*", "libcudnn.so*", "libcurand.so*", "libcudart.so*", "libnvrtc.so*"):
        for f in glob.glob(os.path.join(r, "**", name), recursive=True):
            d = os.path.dirname(f)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
PY
)
if [ -z "$LIBDIRS" ]; then
    LIBDIRS=$(find / \( -name 'libcudnn.so.9' -o -name 'libcublas.so.13' -o -name 'libcurand.so.10' \
        -o -name 'libcudart.so.13' -o -name 'libnvrtc.so.13' \) -not -path '/proc/*' 2>/dev/null \
        | xargs -r -n1 dirname | sort -u | paste -sd:)
fi
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$LOG"
run ls -la "$BIN"
ldd "$BIN" | grep -E 'not found|cuda|cublas|cudnn|curand|nvrtc' | tee -a "$LOG"
if ldd "$BIN" | grep -q 'not found'; then
    echo "missing libraries: looking for them on the whole machine" | tee -a "$LOG"
    for l in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13 libcudnn.so.9; do
        echo "$l: $(find / -name "$l*" -not -path '/proc/*' 2>/dev/null | head -3 | tr '\n' ' ')" | tee -a "$LOG"
    done
fi
run "$BIN" --version

say "parity: the six reference fixtures on the GPU (tolerance 1e-4)"
run timeout 300 "$BIN" check parity --fixtures tests/fixtures/reference --device cuda
run timeout 300 "$BIN" check parity --fixtures tests/fixtures/reference --device cuda --json >/dev/null
cp -f "$LOG" "$OUT/parity.log" 2>/dev/null
run timeout 300 "$BIN" check parity --fixtures tests/fixtures/reference --device cpu

if [ -x target-cuda/ops_cuda ]; then
    say "CUDA conv3d vs the CPU kernels: forward, both gradients, groups/stride/dilation, conv_transpose3d, autograd"
    run timeout 300 target-cuda/ops_cuda --test-threads 1 --nocapture
fi

say "logonet bench model --device cuda, 96^3, fp32 (no TF32)"
for m in logonet-s ulkanet-s; do
    run timeout 300 "$BIN" bench model -m "$m" --size 96 --runs "$RUNS" --device cuda
done
say "logonet bench model --device cuda, 96^3, TF32 allowed"
for m in logonet-s ulkanet-s; do
    run timeout 300 "$BIN" bench model -m "$m" --size 96 --runs "$RUNS" --device cuda --tf32
done

say "PyTorch on the same GPU: port checked against the fixtures, then LoGoNet-S / ULKANet-S forward at 96^3"
run timeout 300 python3 scripts/torch_logonet_bench.py --check tests/fixtures/reference --model logonet-s --size 96 --runs "$RUNS"
run timeout 300 python3 scripts/torch_logonet_bench.py --model ulkanet-s --size 96 --runs "$RUNS"
run timeout 300 python3 scripts/torch_logonet_bench.py --model logonet-s --size 96 --runs "$RUNS" --tf32
run timeout 300 python3 scripts/torch_logonet_bench.py --model ulkanet-s --size 96 --runs "$RUNS" --tf32
run timeout 300 python3 scripts/torch_logonet_bench.py --model logonet-s --size 96 --runs "$RUNS" --tf32 --amp

say "end to end on the GPU: two phantoms -> logonet-tiny trained 2 epochs with --cuda 0 -> predict --device cuda -> eval"
E2E="$OUT/e2e"
rm -rf "$E2E" && mkdir -p "$E2E/data"
for i in 0 1; do
    run "$BIN" phantom -o "$E2E/data/ph${i}_image.nii.gz" --labels "$E2E/data/ph${i}_label.nii.gz" --seed "$i" --size 96 96 64
done
run timeout 240 "$BIN" train --data "$E2E/data" --model logonet-tiny --out "$E2E/run" --epochs 2 --warmup-epochs 1 \
    --batch 1 --samples 2 --crop 32 --val-every 1 --val-cases 1 --workers 1 --cuda 0
run timeout 120 "$BIN" predict -i "$E2E/data/ph1_image.nii.gz" -o "$E2E/ph1_seg.nii.gz" -m "$E2E/run/model.safetensors" --device cuda
run timeout 120 "$BIN" predict -i "$E2E/data/ph1_image.nii.gz" -o "$E2E/ph1_seg_cpu.nii.gz" -m "$E2E/run/model.safetensors" --device cpu
run "$BIN" eval --pred "$E2E/ph1_seg.nii.gz" --gt "$E2E/data/ph1_label.nii.gz"
run "$BIN" eval --pred "$E2E/ph1_seg.nii.gz" --gt "$E2E/ph1_seg_cpu.nii.gz"

say "CPU for reference (all cores of this machine)"
run timeout 300 "$BIN" bench model -m logonet-s --size 96 --runs 2 --device cpu

say "done: log in $LOG"
