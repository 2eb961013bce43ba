#!/usr/bin/env python3
"""PyTorch CPU side of `logonet bench ops`: the same op shapes, timed the same way, for side-by-side ratios.

    OMP_NUM_THREADS=1 python3 scripts/torch_ops_bench.py --threads 1 --reps 4 [--filter depthwise] [--json]

Each case runs one warm-up and `--reps` timed repetitions and reports the fastest, as GFLOP/s per core-second
(2 * MACs / wall / threads), for the forward pass, the input gradient and the weight gradient
(`torch.nn.grad.conv3d_input` / `conv3d_weight`, which is what autograd calls). Norms and activations report
forward + backward wall and CPU seconds on 1x32x96^3, as in the Rust table.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F


def timed(fn, reps):
    fn()
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if t1 - t0 < best_wall:
            best_wall, best_cpu = t1 - t0, c1 - c0
    return best_wall, best_cpu


def conv_cases():
    # (name, cin, cout, k, dilation, groups, spatial)
    return [
        ("conv3d 3^3 64->64 1x64x48^3", 64, 64, 3, 1, 1, 48),
        ("conv3d 3^3 1->32 1x1x96^3", 1, 32, 3, 1, 1, 96),
        ("conv3d 3^3 96->14 1x96x96^3", 96, 14, 3, 1, 1, 96),
        ("depthwise 5^3 1x64x48^3", 64, 64, 5, 1, 64, 48),
        ("depthwise 7^3 dil 3 1x64x48^3", 64, 64, 7, 3, 64, 48),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--filter", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    for name, cin, cout, k, dil, groups, s in conv_cases():
        if a.filter not in name:
            continue
        pad = dil * (k - 1) // 2
        x = torch.randn(1, cin, s, s, s)
        w = torch.randn(cout, cin // groups, k, k, k) * 0.05
        y = F.conv3d(x, w, padding=pad, dilation=dil, groups=groups)
        gy = torch.randn_like(y)
        macs = y.numel() * (cin // groups) * k ** 3
        passes = {
            "forward": lambda: F.conv3d(x, w, padding=pad, dilation=dil, groups=groups),
            "input-grad": lambda: torch.nn.grad.conv3d_input(x.shape, w, gy, padding=pad, dilation=dil, groups=groups),
            "weight-grad": lambda: torch.nn.grad.conv3d_weight(x, w.shape, gy, padding=pad, dilation=dil, groups=groups),
        }
        for p, fn in passes.items():
            with torch.no_grad():
                wall, cpu = timed(fn, a.reps)
            rows.append({"case": name, "pass": p, "wall_ms": wall * 1e3, "cpu_s": cpu,
                         "gflops_per_core": 2 * macs / wall / 1e9 / a.threads})
    x = torch.randn(1, 32, 96, 96, 96)
    bn = torch.nn.BatchNorm3d(32)
    ln_w, ln_b = torch.ones(32), torch.zeros(32)
    norms = {
        "batchnorm3d (train) 1x32x96^3": lambda t: bn(t),
        "layernorm channels 1x32x96^3": lambda t: F.layer_norm(t.movedim(1, -1), (32,), ln_w, ln_b).movedim(-1, 1),
        "gelu 1x32x96^3": lambda t: F.gelu(t),
        "leaky_relu 1x32x96^3": lambda t: F.leaky_relu(t, 0.01),
    }
    for name, f in norms.items():
        if a.filter not in name:
            continue
        xr = x.clone().requires_grad_(True)

        def fb():
            y = f(xr)
            y.backward(torch.ones_like(y))
        wall, cpu = timed(fb, a.reps)
        rows.append({"case": name, "pass": "fwd+bwd", "wall_ms": wall * 1e3, "cpu_s": cpu, "gflops_per_core": None})
    if a.json:
        print(json.dumps({"torch": torch.__version__, "threads": a.threads, "rows": rows}, indent=1))
        return
    print(f"torch {torch.__version__}, f32, {a.threads} threads, fastest of {a.reps} runs")
    print(f"{'case':<34} {'pass':<12} {'wall ms':>9} {'CPU s':>8} {'GFLOP/s/core':>13}")
    for r in rows:
        g = "" if r["gflops_per_core"] is None else f"{r['gflops_per_core']:.1f}"
        print(f"{r['case']:<34} {r['pass']:<12} {r['wall_ms']:>9.1f} {r['cpu_s']:>8.3f} {g:>13}")


if __name__ == "__main__":
    main()
