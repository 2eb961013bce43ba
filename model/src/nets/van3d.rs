//! The 3D Visual Attention Network encoder of LoGoNet/ULKANet (`util_models/van_3d.py` and
//! `util_models/attentions/LKA3D.py` of the reference code): large-kernel attention (LKA), the spatial
//! attention wrapper, the convolutional MLP, the encoder block with its unusual residuals, the overlapping
//! patch embedding and the multi-stage encoder `VAN3D`.
//!
//! Everything here works on `[B, C, D, H, W]`; the reference's token layout `[B, D·H·W, C]` is only needed at
//! the block boundary ([`Block3D::forward_tokens`]) and is equivalent (`flatten(2).transpose(1, 2)`).

use super::flops::MacCounter;
use super::layers::{BatchNorm3d, Conv3d, LayerNormChannels};
use crate::ops;
use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

/// Large-kernel attention `AttentionModule3D(dim)`. Unlike VAN and the paper, the reference normalises
/// first: `u · conv1(conv_spatial(conv0(BN(u))))` with a depthwise 5³ conv (pad 2), a depthwise 7³ conv with
/// dilation 3 (pad 9; receptive field 19³) and a pointwise conv (spec §1.1; we follow the code).
#[derive(Clone, Debug)]
pub struct AttentionModule3D {
    pub(super) norm: BatchNorm3d,
    pub(super) conv0: Conv3d,
    pub(super) conv_spatial: Conv3d,
    pub(super) conv1: Conv3d,
}

impl AttentionModule3D {
    /// LKA on `dim` channels, weights under `vb` (`norm`, `conv0`, `conv_spatial`, `conv1`).
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            norm: BatchNorm3d::new(vb.pp("norm"), dim)?,
            conv0: Conv3d::iso(vb.pp("conv0"), dim, dim, 5, 1, 2, 1, dim)?,
            conv_spatial: Conv3d::iso(vb.pp("conv_spatial"), dim, dim, 7, 1, 9, 3, dim)?,
            conv1: Conv3d::iso(vb.pp("conv1"), dim, dim, 1, 1, 0, 1, 1)?,
        })
    }

    /// `[B, C, D, H, W]` → same.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.norm.forward_t(x, train)?; // [B, C, D, H, W]
        let a = self.conv0.forward(&a)?; // DW 5³
        let a = self.conv_spatial.forward(&a)?; // DW 7³ dilation 3
        let a = self.conv1.forward(&a)?; // 1³
        Ok((x * a)?) // gating
    }

    /// Records MACs; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.norm.macs(c, s);
        let s = self.conv0.macs(c, s)?;
        let s = self.conv_spatial.macs(c, s)?;
        self.conv1.macs(c, s)
    }
}

/// `SpatialAttention3D(dim)`: `proj_2(LKA(GELU(proj_1(x)))) + x` (spec §1.2).
#[derive(Clone, Debug)]
pub struct SpatialAttention3D {
    pub(super) proj_1: Conv3d,
    pub(super) spatial_gating_unit: AttentionModule3D,
    pub(super) proj_2: Conv3d,
}

impl SpatialAttention3D {
    /// Weights under `vb` (`proj_1`, `spatial_gating_unit.*`, `proj_2`).
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            proj_1: Conv3d::iso(vb.pp("proj_1"), dim, dim, 1, 1, 0, 1, 1)?,
            spatial_gating_unit: AttentionModule3D::new(vb.pp("spatial_gating_unit"), dim)?,
            proj_2: Conv3d::iso(vb.pp("proj_2"), dim, dim, 1, 1, 0, 1, 1)?,
        })
    }

    /// `[B, C, D, H, W]` → same.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = ops::gelu(&self.proj_1.forward(x)?)?; // [B, C, D, H, W]
        let y = self.spatial_gating_unit.forward_t(&y, train)?;
        let y = self.proj_2.forward(&y)?;
        Ok((y + x)?)
    }

    /// Records MACs; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.proj_1.macs(c, s)?;
        let s = self.spatial_gating_unit.macs(c, s)?;
        self.proj_2.macs(c, s)
    }
}

/// `Mlp(dim, dim·mlp_ratio)`: `fc2(GELU(DWConv3³(fc1(x))))`, all convolutions (spec §1.3; `linear=False`,
/// dropout 0).
#[derive(Clone, Debug)]
pub struct Mlp {
    pub(super) fc1: Conv3d,
    pub(super) dwconv: Conv3d,
    pub(super) fc2: Conv3d,
}

impl Mlp {
    /// Weights `fc1`, `dwconv3d.dwconv3d`, `fc2` under `vb`.
    pub fn new(vb: VarBuilder, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: Conv3d::iso(vb.pp("fc1"), dim, hidden, 1, 1, 0, 1, 1)?,
            dwconv: Conv3d::iso(
                vb.pp("dwconv3d").pp("dwconv3d"),
                hidden,
                hidden,
                3,
                1,
                1,
                1,
                hidden,
            )?,
            fc2: Conv3d::iso(vb.pp("fc2"), hidden, dim, 1, 1, 0, 1, 1)?,
        })
    }

    /// `[B, C, D, H, W]` → same.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.fc1.forward(x)?; // [B, hidden, D, H, W]
        let x = ops::gelu(&self.dwconv.forward(&x)?)?;
        self.fc2.forward(&x) // [B, C, D, H, W]
    }

    /// Records MACs; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.fc1.macs(c, s)?;
        let s = self.dwconv.macs(c, s)?;
        self.fc2.macs(c, s)
    }
}

/// Encoder block `Block3D(dim, mlp_ratio)`, exactly as the reference computes it (spec §1.4):
/// `x = BN1(x); x = ls1·attn(x); x = x + drop_path(x)` (so `2·ls1·attn(BN1(x))` with drop path 0), then the
/// same with BN2 and the MLP. **There is no identity skip from the block input to its output**, unlike VAN
/// and the paper; the code produced the published numbers, so we follow it.
#[derive(Clone, Debug)]
pub struct Block3D {
    pub(super) norm1: BatchNorm3d,
    pub(super) attn: SpatialAttention3D,
    pub(super) layer_scale_1: Tensor,
    pub(super) norm2: BatchNorm3d,
    pub(super) mlp: Mlp,
    pub(super) layer_scale_2: Tensor,
}

impl Block3D {
    /// Weights under `vb` (`norm1`, `attn.*`, `layer_scale_1`, `norm2`, `mlp.*`, `layer_scale_2`).
    pub fn new(vb: VarBuilder, dim: usize, mlp_ratio: usize) -> Result<Self> {
        Ok(Self {
            norm1: BatchNorm3d::new(vb.pp("norm1"), dim)?,
            attn: SpatialAttention3D::new(vb.pp("attn"), dim)?,
            layer_scale_1: vb.get_with_hints(dim, "layer_scale_1", Init::Const(1e-2))?,
            norm2: BatchNorm3d::new(vb.pp("norm2"), dim)?,
            mlp: Mlp::new(vb.pp("mlp"), dim, dim * mlp_ratio)?,
            layer_scale_2: vb.get_with_hints(dim, "layer_scale_2", Init::Const(1e-2))?,
        })
    }

    /// `[B, C, D, H, W]` → same.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.layer_scale_1.dims1()?;
        let x = self.norm1.forward_t(x, train)?; // [B, C, D, H, W]
        let x = self.attn.forward_t(&x, train)?; // its shortcut is BN1(x), not the block input
        let x = x.broadcast_mul(&self.layer_scale_1.reshape((1, c, 1, 1, 1))?)?;
        let x = (&x + &x)?; // x + drop_path(x), drop path = identity
        let x = self.norm2.forward_t(&x, train)?;
        let x = self.mlp.forward(&x)?;
        let x = x.broadcast_mul(&self.layer_scale_2.reshape((1, c, 1, 1, 1))?)?;
        Ok((&x + &x)?)
    }

    /// The reference signature: tokens `[B, D·H·W, C]` (token `d·H·W + h·W + w`) → same.
    pub fn forward_tokens(&self, tokens: &Tensor, dhw: [usize; 3], train: bool) -> Result<Tensor> {
        let (b, n, c) = tokens.dims3()?;
        let [d, h, w] = dhw;
        if n != d * h * w {
            return Err(Error::invalid(
                "Block3D::forward_tokens",
                format!("{n} tokens but D·H·W = {dhw:?}"),
            ));
        }
        let x = tokens.transpose(1, 2)?.reshape((b, c, d, h, w))?; // [B, C, D, H, W]
        let y = self.forward_t(&x, train)?;
        Ok(y.flatten_from(2)?.transpose(1, 2)?.contiguous()?) // [B, N, C]
    }

    /// Records MACs; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.norm1.macs(c, s);
        let s = self.attn.macs(c, s)?;
        let s = self.norm2.macs(c, s);
        self.mlp.macs(c, s)
    }
}

/// `OverlapPatchEmbed3D`: a strided convolution (stage 1: 7³ stride 4 pad 3; later: 3³ stride 2 pad 1)
/// followed by BatchNorm (spec §1.5).
#[derive(Clone, Debug)]
pub struct OverlapPatchEmbed3D {
    pub(super) proj: Conv3d,
    pub(super) norm: BatchNorm3d,
}

impl OverlapPatchEmbed3D {
    /// Weights `proj`, `norm` under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        patch: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            proj: Conv3d::iso(vb.pp("proj"), in_c, out_c, patch, stride, patch / 2, 1, 1)?,
            norm: BatchNorm3d::new(vb.pp("norm"), out_c)?,
        })
    }

    /// `[B, Cin, D, H, W]` → `[B, Cout, D/s, H/s, W/s]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward_t(&self.proj.forward(x)?, train)
    }

    /// Records MACs; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.proj.macs(c, s)?;
        Ok(self.norm.macs(c, s))
    }
}

/// One encoder stage: patch embedding, `depth` blocks, LayerNorm over channels.
#[derive(Clone, Debug)]
pub(super) struct Stage {
    pub(super) patch_embed: OverlapPatchEmbed3D,
    pub(super) blocks: Vec<Block3D>,
    pub(super) norm: LayerNormChannels,
}

/// The multi-stage encoder `VAN3D(in_chans, embed_dims, mlp_ratios, depths, num_stages)` (spec §1.6). Weights
/// `patch_embed{n}`, `block{n}.{j}`, `norm{n}` for stages n = 1..S.
#[derive(Clone, Debug)]
pub struct Van3d {
    pub(super) stages: Vec<Stage>,
}

impl Van3d {
    /// Builds the encoder; `embed_dims`, `mlp_ratios`, `depths` must have the same non-zero length.
    pub fn new(
        vb: VarBuilder,
        in_chans: usize,
        embed_dims: &[usize],
        mlp_ratios: &[usize],
        depths: &[usize],
    ) -> Result<Self> {
        let s = embed_dims.len();
        if s == 0 || mlp_ratios.len() != s || depths.len() != s {
            return Err(Error::invalid(
                "Van3d::new",
                format!(
                    "embed_dims {embed_dims:?}, mlp_ratios {mlp_ratios:?}, depths {depths:?} must have one entry per stage"
                ),
            ));
        }
        let mut stages = Vec::with_capacity(s);
        for i in 0..s {
            let n = i + 1;
            let (in_c, patch, stride) = if i == 0 {
                (in_chans, 7, 4)
            } else {
                (embed_dims[i - 1], 3, 2)
            };
            let patch_embed = OverlapPatchEmbed3D::new(
                vb.pp(format!("patch_embed{n}")),
                in_c,
                embed_dims[i],
                patch,
                stride,
            )?;
            let blocks = (0..depths[i])
                .map(|j| {
                    Block3D::new(
                        vb.pp(format!("block{n}")).pp(j.to_string()),
                        embed_dims[i],
                        mlp_ratios[i],
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let norm = LayerNormChannels::new(vb.pp(format!("norm{n}")), embed_dims[i])?;
            stages.push(Stage {
                patch_embed,
                blocks,
                norm,
            });
        }
        Ok(Self { stages })
    }

    /// Number of stages S.
    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    /// `[B, Cin, D, H, W]` → the S stage outputs `[B, C_i, D/2^(i+2), H/2^(i+2), W/2^(i+2)]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(self.stages.len());
        let mut x = x.clone();
        for stage in &self.stages {
            x = stage.patch_embed.forward_t(&x, train)?; // [B, C_i, D_i, H_i, W_i]
            for block in &stage.blocks {
                x = block.forward_t(&x, train)?;
            }
            x = stage.norm.forward(&x)?; // LayerNorm on tokens == over channels
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// Records MACs; returns the stage output shapes.
    pub fn macs(&self, c: &mut MacCounter, s: [usize; 5]) -> Result<Vec<[usize; 5]>> {
        let mut outs = Vec::new();
        let mut s = s;
        for stage in &self.stages {
            s = stage.patch_embed.macs(c, s)?;
            for block in &stage.blocks {
                s = block.macs(c, s)?;
            }
            s = stage.norm.macs(c, s);
            outs.push(s);
        }
        Ok(outs)
    }
}
