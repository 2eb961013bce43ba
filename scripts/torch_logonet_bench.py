#!/usr/bin/env python3
"""PyTorch reference forward of LoGoNet (VANV4122GL) and ULKANet (VANV412) on a GPU, for `logonet bench model`.

A minimal, dependency-free port (torch only: no MONAI, timm or mmcv) of the authors' modules from
github.com/7Amin/SSL_VAN @ 3d705fc5 (`commons/models/util_models/van_3d.py`, `attentions/LKA3D.py`,
`van_v4_12.py`, `van_v4_121.py`, `van_v4_122gl.py`), with the same state_dict key names. SyncBatchNorm is
BatchNorm3d (identical in eval mode on one device); drop rates are 0 (Identity), as in the published runs.

    python3 scripts/torch_logonet_bench.py --model logonet-s --size 96 --runs 5
    python3 scripts/torch_logonet_bench.py --check tests/fixtures/reference   # port vs the golden fixtures

Timing: random weights (PyTorch default init), eval mode, fp32, `torch.no_grad()`, one warm-up pass, then
`--runs` passes each bracketed by `torch.cuda.synchronize()`. TF32 is off by default for the convolutions
(`torch.backends.cudnn.allow_tf32 = False`) so that the arithmetic matches `logonet bench model --device cuda`;
`--tf32` restores PyTorch's default (TF32 allowed in cuDNN convolutions). `cudnn.benchmark` stays False (heuristic
algorithm choice, as the Rust side does) unless `--cudnn-benchmark`.
"""

import argparse
import json
import struct
import sys
import time

import torch
import torch.nn as nn


# ---------------------------------------------------------------- modules (SSL_VAN, same key names)
class AttentionModule3D(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.BatchNorm3d(dim)
        self.conv0 = nn.Conv3d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv3d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv3d(dim, dim, 1)

    def forward(self, x):
        u = x
        x = self.norm(x)
        attn = self.conv1(self.conv_spatial(self.conv0(x)))
        return u * attn


class SpatialAttention3D(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.proj_1 = nn.Conv3d(d_model, d_model, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule3D(d_model)
        self.proj_2 = nn.Conv3d(d_model, d_model, 1)

    def forward(self, x):
        s = x
        x = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return x + s


class DWConv3D(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv3d = nn.Conv3d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x):
        return self.dwconv3d(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv3d(dim, hidden, 1)
        self.dwconv3d = DWConv3D(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv3d(self.fc1(x))))


class Block3D(nn.Module):
    """Note the reference's residuals: x = ls*f(BN(x)); x = x + x (drop_path = Identity); no skip around the block."""

    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(dim)
        self.attn = SpatialAttention3D(dim)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x, D, H, W):
        B, N, C = x.shape
        x = x.permute(0, 2, 1).reshape(B, C, D, H, W)
        x = self.layer_scale_1.view(1, C, 1, 1, 1) * self.attn(self.norm1(x))
        x = x + x
        x = self.layer_scale_2.view(1, C, 1, 1, 1) * self.mlp(self.norm2(x))
        x = x + x
        return x.reshape(B, C, N).permute(0, 2, 1)


class OverlapPatchEmbed3D(nn.Module):
    def __init__(self, patch_size, stride, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm3d(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, D, H, W = x.shape
        x = self.norm(x)
        return x.flatten(2).transpose(1, 2), D, H, W


class VAN3D(nn.Module):
    def __init__(self, in_chans, embed_dims, mlp_ratios, depths, num_stages):
        super().__init__()
        self.num_stages = num_stages
        for i in range(num_stages):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed3D(7 if i == 0 else 3, 4 if i == 0 else 2,
                                                                     in_chans if i == 0 else embed_dims[i - 1],
                                                                     embed_dims[i]))
            setattr(self, f"block{i + 1}",
                    nn.ModuleList([Block3D(embed_dims[i], mlp_ratios[i]) for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i]))

    def forward(self, x):
        B = x.shape[0]
        outs = []
        for i in range(self.num_stages):
            x, D, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, D, H, W)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.reshape(B, D, H, W, -1).permute(0, 4, 1, 2, 3).contiguous()
            outs.append(x)
        return outs


def cbr(a, b):
    return [nn.Conv3d(a, b, 3, 1, 1), nn.BatchNorm3d(b), nn.LeakyReLU()]


def up():
    return nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)


class Van412Family(nn.Module):
    """VANV4121 (`head='4121'`, LoGoNet's sub-network) and VANV412 (`head='412'`, ULKANet)."""

    def __init__(self, embed_dims, mlp_ratios, depths, num_stages, in_channels, out_channels, head):
        super().__init__()
        self.van3d = VAN3D(in_channels, embed_dims, mlp_ratios, depths, num_stages)
        self.num_stages = S = num_stages
        C = embed_dims[-1]
        for i in range(S - 1):
            setattr(self, f"conv{i}", nn.Sequential(*cbr(C // 2 ** i, C // 2 ** (i + 1)),
                                                    *cbr(C // 2 ** (i + 1), C // 2 ** (i + 1))))
            setattr(self, f"conv_res{i}", nn.Sequential(*cbr(C // 2 ** (i + 1), C // 2 ** (i + 1)),
                                                        *cbr(C // 2 ** (i + 1), C // 2 ** (i + 1))))
        self.first_conv = nn.Sequential(*cbr(in_channels, C // 2 ** S), *cbr(C // 2 ** S, C // 2 ** (S - 1)))
        lo = C // 2 ** S
        if head == "4121":
            self.final_conv0 = nn.Sequential(*cbr(lo, lo), *cbr(lo, lo))
            self.final_conv1 = nn.Sequential(*cbr(lo + C // 2 ** (S - 1), out_channels),
                                             *cbr(out_channels, out_channels))
            fu = lo
        else:
            self.final_conv0 = nn.Sequential(*cbr(lo, out_channels), *cbr(out_channels, out_channels))
            self.final_conv1 = nn.Sequential(*cbr(out_channels + C // 2 ** (S - 1), out_channels),
                                             *cbr(out_channels, out_channels),
                                             nn.Conv3d(out_channels, out_channels, 1))
            fu = out_channels
        for i in range(S):
            setattr(self, f"upsample{i}", nn.Sequential(*cbr(C // 2 ** i, C // 2 ** (i + 1)),
                                                        *cbr(C // 2 ** (i + 1), C // 2 ** (i + 1)), up()))
        self.final_upsample = nn.Sequential(*cbr(fu, fu), *cbr(fu, fu), up())

    def forward(self, x):
        first_x = self.first_conv(x)
        f = self.van3d(x.contiguous())
        y = self.upsample0(f[-1])
        for i in range(self.num_stages - 1):
            v = getattr(self, f"conv_res{i}")(f[-i - 2])
            y = getattr(self, f"conv{i}")(torch.cat((y, v), dim=1))
            y = getattr(self, f"upsample{i + 1}")(y)
        y = self.final_upsample(self.final_conv0(y))
        return self.final_conv1(torch.cat((first_x, y), dim=1))


class VANV4122GL(nn.Module):
    """LoGoNet: global VANV4121 + 8 independent 2-stage local VANV4121 on the 2x2x2 sub-cubes, summed, fusion head."""

    def __init__(self, embed_dims, mlp_ratios, depths, num_stages, in_channels, out_channels, patch_count=2):
        super().__init__()
        self.patch_count = p = patch_count
        for i in range(p):
            for j in range(p):
                for k in range(p):
                    setattr(self, f"van{i}_{j}_{k}",
                            Van412Family(embed_dims[:-2], mlp_ratios[:-2], depths[:-2], num_stages - 2,
                                         in_channels, out_channels, "4121"))
        self.van = Van412Family(embed_dims, mlp_ratios, depths, num_stages, in_channels, out_channels, "4121")
        self.conv = nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm3d(out_channels),
                                  nn.GELU(), nn.Conv3d(out_channels, out_channels, 1))

    def local(self, x):
        p = self.patch_count
        rows_i = []
        for i, t0 in enumerate(torch.split(x, x.size(2) // p, dim=2)):
            rows_j = []
            for j, t1 in enumerate(torch.split(t0, x.size(3) // p, dim=3)):
                parts = [getattr(self, f"van{i}_{j}_{k}")(t2)
                         for k, t2 in enumerate(torch.split(t1, x.size(4) // p, dim=4))]
                rows_j.append(torch.cat(parts, dim=4))
            rows_i.append(torch.cat(rows_j, dim=3))
        return torch.cat(rows_i, dim=2)

    def forward(self, x):
        return self.conv(self.van(x) + self.local(x))


CONFIGS = {
    # name: (class, embed_dims, mlp_ratios, depths)
    "logonet-s": ("logonet", [64, 128, 256, 512], [8, 8, 4, 4], [3, 4, 6, 3]),
    "logonet-l": ("logonet", [96, 192, 384, 768], [8, 8, 4, 4], [3, 3, 24, 3]),
    "logonet-tiny": ("logonet", [8, 16, 32, 64], [8, 8, 4, 4], [1, 1, 1, 1]),
    "ulkanet-s": ("ulkanet", [64, 128, 256, 512], [8, 8, 4, 4], [3, 4, 6, 3]),
    "ulkanet-tiny": ("ulkanet", [8, 16, 32, 64], [8, 8, 4, 4], [1, 1, 1, 1]),
}


def build(name, out_channels=14):
    kind, dims, mlp, depths = CONFIGS[name]
    if kind == "logonet":
        return VANV4122GL(dims, mlp, depths, 4, 1, out_channels)
    return Van412Family(dims, mlp, depths, 4, 1, out_channels, "412")


# ---------------------------------------------------------------- fixture check (no safetensors package needed)
def read_safetensors(path):
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[v["dtype"]]) if b > a else \
            torch.zeros(0, dtype=dtypes[v["dtype"]])
        out[k] = t.reshape(v["shape"])
    return out


def check(fixtures, device):
    ok = True
    for name, fixture, key in [("logonet-tiny", "logonet_tiny", "output.logits"),
                               ("ulkanet-tiny", "ulkanet_tiny", "output.logits")]:
        w = read_safetensors(f"{fixtures}/{fixture}.weights.safetensors")
        io = read_safetensors(f"{fixtures}/{fixture}.io.safetensors")
        net = build(name).to(device).eval()
        missing, unexpected = net.load_state_dict(w, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            print(f"{fixture}: state_dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
            ok = False
            continue
        with torch.no_grad():
            y = net(io["input.x"].to(device)).cpu()
        d = (y.double() - io[key].double()).abs().max().item()
        print(f"torch port {fixture:<13} max abs diff {d:.3e} vs the reference fixture ({device})")
        ok &= d <= 1e-4
    return ok


# ---------------------------------------------------------------- benchmark
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="logonet-s", choices=sorted(CONFIGS))
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in cuDNN convolutions (PyTorch's default)")
    ap.add_argument("--cudnn-benchmark", action="store_true")
    ap.add_argument("--amp", action="store_true", help="autocast to fp16 (the paper's inference setting)")
    ap.add_argument("--check", metavar="FIXTURES", help="compare the port with tests/fixtures/reference first")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (CPU runs; 0 = torch's default)")
    a = ap.parse_args()

    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if a.check and not check(a.check, dev):
        print("the PyTorch port does not match the fixtures", file=sys.stderr)
        return 1

    torch.manual_seed(0)
    net = build(a.model).to(dev).eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(a.batch, 1, a.size, a.size, a.size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad(), torch.autocast(dev.type, enabled=a.amp):
        net(x)
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(max(1, a.runs)):
            t0 = time.perf_counter()
            y = net(x)
            sync()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    times_sorted = sorted(times)
    res = {
        "model": a.model, "params": params, "input": list(x.shape), "output": list(y.shape),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
        "tf32": a.tf32, "amp": a.amp, "cudnn_benchmark": a.cudnn_benchmark,
        "runs_s": times, "median_s": times_sorted[len(times) // 2], "min_s": times_sorted[0],
        "peak_cuda_mem_bytes": peak,
    }
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"torch {res['torch']} cudnn {res['cudnn']} on {res['device']}: {a.model} ({params:,} params) "
              f"{res['input']} fp32{' +AMP' if a.amp else ''}{' TF32' if a.tf32 else ''}: "
              f"median {res['median_s'] * 1e3:.1f} ms, min {res['min_s'] * 1e3:.1f} ms over {len(times)} runs"
              + (f", peak CUDA memory {peak / 1e9:.2f} GB" if peak is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
