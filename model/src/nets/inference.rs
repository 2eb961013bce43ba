//! The inference form of the networks: eval mode only, built once from a trained network.
//!
//! * **Plain tensors**: every weight is detached, so no op records an autograd graph and each intermediate
//!   is freed as soon as the forward pass stops using it (a `Var`-backed network would keep every
//!   activation alive until the output is dropped).
//! * **BatchNorm folded** (f64 arithmetic, then rounded once to the weights' dtype):
//!   - `Conv → BN` (every decoder `CBR`, the patch embeddings, the LoGoNet fusion head) becomes one conv
//!     with scaled weights and a shifted bias;
//!   - an encoder block's `BN1` is folded into whatever produced the block input (the patch embedding, or
//!     the previous block's `fc2` together with its `2·layer_scale_2`);
//!   - `BN2(2·layer_scale_1·z)` is folded into the input side of the 1³ conv `mlp.fc1` (exact: no padding);
//!   - the last block's `2·layer_scale_2` is folded into its `fc2`.
//!
//!   Only the BatchNorm inside LKA stays (it precedes a padded depthwise conv, where folding is not exact).
//! * **No full-resolution concatenation**: a conv over `cat[a, b]` along channels is computed as
//!   `conv_a(a) + conv_b(b)` with the weight split along its input channels.
//! * **Fused activations**: every LeakyReLU and GELU that follows a conv directly runs inside the conv
//!   ([`ops::conv3d_act`]) on each output block while it is in cache.
//! * **Early release**: the encoder's skip outputs are dropped as the decoder consumes them, and the
//!   full-resolution `first_conv` runs only when its output is needed, at the very end.
//!
//! The result matches the layer-by-layer eval forward within float rounding (relative differences around
//! 1e-6; `tests/nets_inference.rs` checks it against the reference fixtures at 1e-4 and against the
//! unfolded forward at 1e-5 relative).
//!
//! [`profile`] accumulates wall time per op kind when enabled (`logonet bench model --profile`).

use super::flops::MacCounter;
use super::layers::{BatchNorm3d, Conv3d, DoubleCbr, LayerNormChannels};
use super::logonet::{FusionNormLayer, Logonet};
use super::ulkanet::Ulkanet;
use super::van3d::{Block3D, Van3d};
use super::{AnyNet, NetConfig, SegmentationNet};
use crate::ops::{self, Conv3dParams, ConvAct};
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// Per-op wall-time accounting for the inference forward (thread-local; off unless [`profile::start`]).
pub mod profile {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::Instant;

    thread_local! {
        static TABLE: RefCell<Option<BTreeMap<String, (f64, u64)>>> = const { RefCell::new(None) };
    }

    /// Starts (or restarts) recording on this thread.
    pub fn start() {
        TABLE.with(|t| *t.borrow_mut() = Some(BTreeMap::new()));
    }

    /// Stops recording and returns `(op kind, seconds, calls)`, slowest first.
    pub fn take() -> Vec<(String, f64, u64)> {
        let map = TABLE.with(|t| t.borrow_mut().take()).unwrap_or_default();
        let mut v: Vec<_> = map.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    fn enabled() -> bool {
        TABLE.with(|t| t.borrow().is_some())
    }

    /// Runs `f`, charging its wall time to `kind()` when recording.
    pub(crate) fn time<R>(kind: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
        if !enabled() {
            return f();
        }
        let t0 = Instant::now();
        let r = f();
        let dt = t0.elapsed().as_secs_f64();
        let k = kind();
        TABLE.with(|t| {
            if let Some(m) = t.borrow_mut().as_mut() {
                let e = m.entry(k).or_insert((0.0, 0));
                e.0 += dt;
                e.1 += 1;
            }
        });
        r
    }
}

use profile::time;

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.detach()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// `values` as a tensor of `like`'s dtype and device with shape `dims`.
fn from_f64(values: Vec<f64>, dims: &[usize], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, dims, like.device())?.to_dtype(like.dtype())?)
}

/// A per-channel affine map `y = scale·x + shift`, in f64.
#[derive(Clone, Debug)]
struct ChannelAffine {
    scale: Vec<f64>,
    shift: Vec<f64>,
}

impl ChannelAffine {
    /// BatchNorm with running statistics: `scale = γ/√(σ²+ε)`, `shift = β − μ·scale`.
    fn of_bn(bn: &BatchNorm3d) -> Result<Self> {
        let (g, b) = (to_f64(bn.weight())?, to_f64(bn.bias())?);
        let (m, v) = (to_f64(bn.running_mean())?, to_f64(bn.running_var())?);
        let scale: Vec<f64> = g
            .iter()
            .zip(&v)
            .map(|(g, v)| g / (v + bn.eps()).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(&m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok(Self { scale, shift })
    }

    /// `x ↦ k[c]·x` for a per-channel tensor `k` (e.g. `2·layer_scale`).
    fn of_scale(k: &Tensor, factor: f64) -> Result<Self> {
        let scale: Vec<f64> = to_f64(k)?.iter().map(|v| v * factor).collect();
        let shift = vec![0.0; scale.len()];
        Ok(Self { scale, shift })
    }

    /// `next ∘ self`.
    fn then(&self, next: &Self) -> Self {
        let scale = self
            .scale
            .iter()
            .zip(&next.scale)
            .map(|(a, b)| a * b)
            .collect();
        let shift = self
            .shift
            .iter()
            .zip(&next.scale)
            .zip(&next.shift)
            .map(|((t, s), u)| t * s + u)
            .collect();
        Self { scale, shift }
    }
}

/// A convolution with plain (possibly folded) weights.
#[derive(Clone, Debug)]
struct FConv {
    w: Tensor,
    b: Option<Tensor>,
    params: Conv3dParams,
}

impl FConv {
    fn plain(c: &Conv3d) -> Self {
        Self {
            w: c.weight().detach(),
            b: c.bias().map(Tensor::detach),
            params: *c.params(),
        }
    }

    /// `a ∘ conv`: output channel `o` scaled by `a.scale[o]`, bias `a.scale[o]·b[o] + a.shift[o]`.
    fn with_out_affine(c: &Conv3d, a: &ChannelAffine) -> Result<Self> {
        let dims = c.weight().dims().to_vec();
        let o = dims[0];
        if a.scale.len() != o {
            return Err(Error::invalid(
                "InferenceNet",
                format!("affine of {} channels after a conv with {o}", a.scale.len()),
            ));
        }
        let mut w = to_f64(c.weight())?;
        let per = w.len() / o;
        for (row, s) in w.chunks_mut(per).zip(&a.scale) {
            row.iter_mut().for_each(|v| *v *= s);
        }
        let b0 = match c.bias() {
            Some(b) => to_f64(b)?,
            None => vec![0.0; o],
        };
        let b: Vec<f64> = (0..o).map(|i| b0[i] * a.scale[i] + a.shift[i]).collect();
        Ok(Self {
            w: from_f64(w, &dims, c.weight())?,
            b: Some(from_f64(b, &[o], c.weight())?),
            params: *c.params(),
        })
    }

    /// `conv ∘ a` for a dense 1³ conv without padding: `w'[o, i] = w[o, i]·a.scale[i]`,
    /// `b'[o] = b[o] + Σᵢ w[o, i]·a.shift[i]`.
    fn with_in_affine(c: &Conv3d, a: &ChannelAffine) -> Result<Self> {
        let dims = c.weight().dims().to_vec();
        let (o, i) = (dims[0], dims[1]);
        let p = c.params();
        if dims[2..] != [1, 1, 1] || p.groups != 1 || p.padding != [0; 3] || a.scale.len() != i {
            return Err(Error::invalid(
                "InferenceNet",
                format!("cannot fold an input affine into a conv {dims:?} {p:?}"),
            ));
        }
        let w0 = to_f64(c.weight())?;
        let b0 = match c.bias() {
            Some(b) => to_f64(b)?,
            None => vec![0.0; o],
        };
        let mut w = vec![0.0; o * i];
        let mut b = b0;
        for oo in 0..o {
            for ii in 0..i {
                let v = w0[oo * i + ii];
                w[oo * i + ii] = v * a.scale[ii];
                b[oo] += v * a.shift[ii];
            }
        }
        Ok(Self {
            w: from_f64(w, &dims, c.weight())?,
            b: Some(from_f64(b, &[o], c.weight())?),
            params: *p,
        })
    }

    /// Splits a dense conv along its input channels into parts of `sizes` channels (the bias goes to the
    /// first part), so `conv(cat[x₀, x₁, ...]) = Σ part_k(x_k)`.
    fn split_input(self, sizes: &[usize]) -> Result<Vec<Self>> {
        let i = self.w.dims()[1];
        if self.params.groups != 1 || sizes.iter().sum::<usize>() != i {
            return Err(Error::invalid(
                "InferenceNet",
                format!(
                    "cannot split a conv with {i} inputs into {sizes:?} ({:?})",
                    self.params
                ),
            ));
        }
        let mut parts = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for (k, &n) in sizes.iter().enumerate() {
            parts.push(Self {
                w: self.w.narrow(1, start, n)?.contiguous()?,
                b: if k == 0 { self.b.clone() } else { None },
                params: self.params,
            });
            start += n;
        }
        Ok(parts)
    }

    fn kind(&self, x: &Tensor) -> String {
        let d = self.w.dims();
        let k = d[2];
        let sp = x.dims().get(2).copied().unwrap_or(0);
        let (s, dil, g) = (
            self.params.stride[0],
            self.params.dilation[0],
            self.params.groups,
        );
        if g > 1 {
            format!("conv depthwise {k}^3 dil {dil} @{sp}")
        } else if s > 1 {
            format!("conv dense {k}^3 stride {s} @{sp}")
        } else {
            format!("conv dense {k}^3 @{sp}")
        }
    }

    /// `[N, I, D, H, W]` → `[N, O, D', H', W']`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        time(
            || self.kind(x),
            || ops::conv3d(x, &self.w, self.b.as_ref(), &self.params),
        )
    }

    /// `act(conv(x))` with the activation fused into the conv's output blocks.
    fn forward_act(&self, x: &Tensor, act: ConvAct) -> Result<Tensor> {
        time(
            || {
                let a = match act {
                    ConvAct::None => "",
                    ConvAct::LeakyRelu(_) => " + leaky_relu",
                    ConvAct::Gelu => " + gelu",
                };
                format!("{}{a}", self.kind(x))
            },
            || ops::conv3d_act(x, &self.w, self.b.as_ref(), &self.params, act),
        )
    }
}

const LEAKY: ConvAct = ConvAct::LeakyRelu(0.01);

/// `Σ_k parts[k](xs[k])` (a conv over the channel concatenation of `xs`).
fn split_forward(parts: &[FConv], xs: &[&Tensor]) -> Result<Tensor> {
    let mut y = parts[0].forward(xs[0])?;
    for (p, x) in parts.iter().zip(xs).skip(1) {
        let z = p.forward(x)?;
        y = time(|| "add".into(), || y.add(&z))?;
    }
    Ok(y)
}

fn gelu(x: &Tensor) -> Result<Tensor> {
    time(|| "gelu".into(), || ops::gelu(x))
}

fn leaky(x: &Tensor) -> Result<Tensor> {
    time(|| "leaky_relu".into(), || ops::leaky_relu(x, 0.01))
}

/// `CBR → CBR [→ upsample]` with both BatchNorms folded; the first conv may read a channel concatenation.
#[derive(Clone, Debug)]
struct FCbr {
    conv_a: Vec<FConv>,
    conv_b: FConv,
    upsample: bool,
}

impl FCbr {
    /// `splits`: channel counts of the concatenated inputs (`[in]` for a plain input).
    fn new(d: &DoubleCbr, splits: &[usize]) -> Result<Self> {
        let a = FConv::with_out_affine(&d.conv_a, &ChannelAffine::of_bn(&d.bn_a)?)?;
        Ok(Self {
            conv_a: if splits.len() > 1 {
                a.split_input(splits)?
            } else {
                vec![a]
            },
            conv_b: FConv::with_out_affine(&d.conv_b, &ChannelAffine::of_bn(&d.bn_b)?)?,
            upsample: d.upsample,
        })
    }

    /// Inputs `xs` (the concatenated parts, in order) → `[N, out, D, H, W]` (or 2× with upsampling).
    fn forward(&self, xs: &[&Tensor]) -> Result<Tensor> {
        let mut y = if self.conv_a.len() == 1 {
            self.conv_a[0].forward_act(xs[0], LEAKY)? // [N, mid, D, H, W]
        } else {
            leaky(&split_forward(&self.conv_a, xs)?)?
        };
        y = self.conv_b.forward_act(&y, LEAKY)?; // [N, out, D, H, W]
        if self.upsample {
            y = time(
                || "upsample trilinear".into(),
                || ops::upsample_trilinear2x(&y),
            )?;
        }
        Ok(y)
    }
}

/// An encoder block whose input is already `BN1(x)`; its output is whatever the next layer's folding
/// requested (the next block's `BN1(x)`, or the block output for the stage LayerNorm).
#[derive(Clone, Debug)]
struct FBlock {
    proj_1: FConv,
    lka_norm: [Tensor; 4],
    lka_eps: f64,
    conv0: FConv,
    conv_spatial: FConv,
    conv1: FConv,
    proj_2: FConv,
    fc1: FConv,
    dwconv: FConv,
    fc2: FConv,
}

impl FBlock {
    /// `next_norm1`: the next block's `norm1`, folded into this block's `fc2`.
    fn new(b: &Block3D, next_norm1: Option<&BatchNorm3d>) -> Result<Self> {
        let attn = &b.attn;
        let lka = &attn.spatial_gating_unit;
        let bn2 =
            ChannelAffine::of_scale(&b.layer_scale_1, 2.0)?.then(&ChannelAffine::of_bn(&b.norm2)?);
        let mut out = ChannelAffine::of_scale(&b.layer_scale_2, 2.0)?;
        if let Some(n) = next_norm1 {
            out = out.then(&ChannelAffine::of_bn(n)?);
        }
        Ok(Self {
            proj_1: FConv::plain(&attn.proj_1),
            lka_norm: [
                lka.norm.weight().detach(),
                lka.norm.bias().detach(),
                lka.norm.running_mean().detach(),
                lka.norm.running_var().detach(),
            ],
            lka_eps: lka.norm.eps(),
            conv0: FConv::plain(&lka.conv0),
            conv_spatial: FConv::plain(&lka.conv_spatial),
            conv1: FConv::plain(&lka.conv1),
            proj_2: FConv::plain(&attn.proj_2),
            fc1: FConv::with_in_affine(&b.mlp.fc1, &bn2)?,
            dwconv: FConv::plain(&b.mlp.dwconv),
            fc2: FConv::with_out_affine(&b.mlp.fc2, &out)?,
        })
    }

    /// `n1 = BN1(x)` `[B, C, D, H, W]` → same shape.
    fn forward(&self, n1: &Tensor) -> Result<Tensor> {
        // Spatial attention: proj_2(LKA(GELU(proj_1(n1)))) + n1.
        let u = self.proj_1.forward_act(n1, ConvAct::Gelu)?; // [B, C, D, H, W]
        let [g, b, m, v] = &self.lka_norm;
        let mut a = time(
            || "batchnorm (LKA)".into(),
            || ops::batch_norm_eval(&u, Some(g), Some(b), m, v, self.lka_eps),
        )?;
        a = self.conv0.forward(&a)?; // DW 5³
        a = self.conv_spatial.forward(&a)?; // DW 7³ dilation 3
        a = self.conv1.forward(&a)?; // 1³
        a = time(|| "mul".into(), || u.mul(&a))?; // gating
        drop(u);
        a = self.proj_2.forward(&a)?;
        a = time(|| "add".into(), || a.add(n1))?; // z
        // MLP on BN2(2·ls1·z) (folded into fc1), times 2·ls2 (and the next BN1, folded into fc2).
        a = self.fc1.forward(&a)?; // [B, hidden, D, H, W]
        a = self.dwconv.forward_act(&a, ConvAct::Gelu)?;
        self.fc2.forward(&a) // [B, C, D, H, W]
    }
}

/// One encoder stage: patch embedding (with its BN and the first block's BN1 folded), blocks, LayerNorm.
#[derive(Clone, Debug)]
struct FStage {
    proj: FConv,
    blocks: Vec<FBlock>,
    norm: [Tensor; 2],
    norm_eps: f64,
}

#[derive(Clone, Debug)]
struct FEncoder {
    stages: Vec<FStage>,
}

impl FEncoder {
    fn new(v: &Van3d) -> Result<Self> {
        let stages = v
            .stages
            .iter()
            .map(|st| -> Result<FStage> {
                let mut a = ChannelAffine::of_bn(&st.patch_embed.norm)?;
                if let Some(b) = st.blocks.first() {
                    a = a.then(&ChannelAffine::of_bn(&b.norm1)?);
                }
                let blocks = (0..st.blocks.len())
                    .map(|j| FBlock::new(&st.blocks[j], st.blocks.get(j + 1).map(|n| &n.norm1)))
                    .collect::<Result<Vec<_>>>()?;
                let (w, b, eps) = LayerNormChannels::parts(&st.norm);
                Ok(FStage {
                    proj: FConv::with_out_affine(&st.patch_embed.proj, &a)?,
                    blocks,
                    norm: [w.detach(), b.detach()],
                    norm_eps: eps,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { stages })
    }

    /// `[B, Cin, D, H, W]` → the stage outputs.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(self.stages.len());
        let mut x = x.clone();
        for st in &self.stages {
            x = st.proj.forward(&x)?; // [B, C_i, D_i, H_i, W_i]
            for b in &st.blocks {
                x = b.forward(&x)?;
            }
            let [w, b] = &st.norm;
            x = time(
                || "layernorm".into(),
                || ops::layer_norm_channels(&x, w, b, st.norm_eps),
            )?;
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

/// ULKANet / VANV4121 in inference form.
#[derive(Clone, Debug)]
struct FUlka {
    first_conv: FCbr,
    encoder: FEncoder,
    upsample: Vec<FCbr>,
    conv_res: Vec<FCbr>,
    conv: Vec<FCbr>,
    final_conv0: FCbr,
    final_upsample: FCbr,
    final_conv1: FCbr,
    logits: Option<FConv>,
}

impl FUlka {
    fn new(n: &Ulkanet) -> Result<Self> {
        let cfg = n.config();
        let s = cfg.num_stages();
        let c = cfg.embed_dims[s - 1];
        let ch = |i: usize| c >> i;
        let conv = (0..s - 1)
            .map(|i| FCbr::new(&n.conv[i], &[ch(i + 1), ch(i + 1)]))
            .collect::<Result<Vec<_>>>()?;
        let head_c = n.final_upsample.conv_b.weight().dims()[0];
        Ok(Self {
            first_conv: FCbr::new(&n.first_conv, &[cfg.in_channels])?,
            encoder: FEncoder::new(&n.van3d)?,
            upsample: n
                .upsample
                .iter()
                .map(|u| FCbr::new(u, &[u.conv_a.weight().dims()[1]]))
                .collect::<Result<Vec<_>>>()?,
            conv_res: n
                .conv_res
                .iter()
                .map(|u| FCbr::new(u, &[u.conv_a.weight().dims()[1]]))
                .collect::<Result<Vec<_>>>()?,
            conv,
            final_conv0: FCbr::new(&n.final_conv0, &[ch(s)])?,
            final_upsample: FCbr::new(&n.final_upsample, &[head_c])?,
            final_conv1: FCbr::new(&n.final_conv1, &[ch(s - 1), head_c])?,
            logits: n.logits.as_ref().map(FConv::plain),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut f = self.encoder.forward(x)?; // f[i]: [N, C/2^(S-1-i), D/2^(i+2), ...]
        let deepest = f
            .pop()
            .ok_or_else(|| Error::invalid("InferenceNet", "encoder without stages"))?;
        let mut y = self.upsample[0].forward(&[&deepest])?; // [N, C/2, D/2^S, ...]
        drop(deepest);
        for i in 0..self.conv.len() {
            let skip = f
                .pop()
                .ok_or_else(|| Error::invalid("InferenceNet", "missing skip"))?;
            let v = self.conv_res[i].forward(&[&skip])?; // [N, C/2^(i+1), D/2^(S-i), ...]
            drop(skip);
            y = self.conv[i].forward(&[&y, &v])?; // conv over cat[y, v]
            drop(v);
            y = self.upsample[i + 1].forward(&[&y])?; // [N, C/2^(i+2), 2×]
        }
        y = self.final_conv0.forward(&[&y])?; // [N, out | C/2^S, D/2, ...]
        y = self.final_upsample.forward(&[&y])?; // [N, out | C/2^S, D, H, W]
        let first_x = self.first_conv.forward(&[x])?; // [N, C/2^(S-1), D, H, W]
        y = self.final_conv1.forward(&[&first_x, &y])?; // conv over cat[first_x, y]: [N, out, D, H, W]
        drop(first_x);
        match &self.logits {
            Some(conv) => conv.forward(&y),
            None => Ok(y),
        }
    }
}

/// LoGoNet in inference form.
#[derive(Clone, Debug)]
struct FLogo {
    patch_count: usize,
    global: FUlka,
    locals: Vec<FUlka>,
    conv0: FConv,
    instance_norm: bool,
    conv3: FConv,
}

impl FLogo {
    fn new(n: &Logonet) -> Result<Self> {
        let (conv0, instance_norm) = match &n.norm {
            FusionNormLayer::Batch(bn) => (
                FConv::with_out_affine(&n.conv0, &ChannelAffine::of_bn(bn)?)?,
                false,
            ),
            FusionNormLayer::Instance => (FConv::plain(&n.conv0), true),
        };
        Ok(Self {
            patch_count: n.config().patch_count,
            global: FUlka::new(&n.global)?,
            locals: n
                .locals
                .iter()
                .map(FUlka::new)
                .collect::<Result<Vec<_>>>()?,
            conv0,
            instance_norm,
            conv3: FConv::plain(&n.conv3),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.patch_count;
        let (_, _, d, h, w) = x.dims5()?;
        let (sd, sh, sw) = (d / p, h / p, w / p);
        // The global net first: its full-resolution peak is the largest, and nothing else is alive then.
        let global = self.global.forward(x)?; // [N, out, D, H, W]
        let mut planes = Vec::with_capacity(p);
        for i in 0..p {
            let xi = x.narrow(2, i * sd, sd)?;
            let mut rows = Vec::with_capacity(p);
            for j in 0..p {
                let xij = xi.narrow(3, j * sh, sh)?;
                let mut cols = Vec::with_capacity(p);
                for k in 0..p {
                    let sub = time(
                        || "narrow/cat".into(),
                        || xij.narrow(4, k * sw, sw)?.contiguous(),
                    )?; // [N, in, D/p, H/p, W/p]
                    cols.push(self.locals[(i * p + j) * p + k].forward(&sub)?);
                }
                rows.push(time(|| "narrow/cat".into(), || Tensor::cat(&cols, 4))?); // [N, out, D/p, H/p, W]
            }
            planes.push(time(|| "narrow/cat".into(), || Tensor::cat(&rows, 3))?); // [N, out, D/p, H, W]
        }
        let local = time(|| "narrow/cat".into(), || Tensor::cat(&planes, 2))?; // [N, out, D, H, W]
        drop(planes);
        let mut y = time(|| "add".into(), || global.add(&local))?;
        drop((global, local));
        if self.instance_norm {
            y = self.conv0.forward(&y)?;
            y = time(
                || "instancenorm".into(),
                || ops::instance_norm3d(&y, None, None, 1e-5),
            )?;
            y = gelu(&y)?;
        } else {
            y = self.conv0.forward_act(&y, ConvAct::Gelu)?; // BN folded in (VANV4122GL)
        }
        self.conv3.forward(&y) // [N, out, D, H, W] logits
    }
}

#[derive(Clone, Debug)]
enum Inner {
    Ulkanet(Box<FUlka>),
    Logonet(Box<FLogo>),
}

/// A network in inference form (see the module docs): eval mode only, no autograd, BatchNorm folded.
/// Build it once per set of weights ([`InferenceNet::new`]) and call [`InferenceNet::forward`] per window;
/// later changes to the source network's variables are not seen.
#[derive(Clone, Debug)]
pub struct InferenceNet {
    cfg: NetConfig,
    inner: Inner,
}

impl InferenceNet {
    /// Folds `net` (its current weights and running statistics).
    pub fn new(net: &AnyNet) -> Result<Self> {
        match net {
            AnyNet::Ulkanet(n) => Self::from_ulkanet(n),
            AnyNet::Logonet(n) => Self::from_logonet(n),
        }
    }

    /// Folds a ULKANet / VANV4121.
    pub fn from_ulkanet(net: &Ulkanet) -> Result<Self> {
        Ok(Self {
            cfg: NetConfig::Ulkanet(net.config().clone()),
            inner: Inner::Ulkanet(Box::new(FUlka::new(net)?)),
        })
    }

    /// Folds a LoGoNet.
    pub fn from_logonet(net: &Logonet) -> Result<Self> {
        Ok(Self {
            cfg: NetConfig::Logonet(net.config().clone()),
            inner: Inner::Logonet(Box::new(FLogo::new(net)?)),
        })
    }

    /// `[N, in, D, H, W]` → `[N, out, D, H, W]` with running statistics; same result as the layer-by-layer
    /// eval forward up to float rounding. On the CPU a batch runs one sample at a time (the kernels are
    /// parallel within a sample, and the peak memory stays that of one window).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.cfg {
            NetConfig::Ulkanet(c) => c.check_input("ULKANet (VANV412)", x.dims())?,
            NetConfig::Logonet(_) => self.cfg.check_input(x.dims())?,
        }
        self.forward_unchecked(x)
    }

    /// [`InferenceNet::forward`] without the input check (the caller checked it).
    pub(crate) fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(0);
        if n > 1 && x.device().is_cpu() {
            let outs = (0..n)
                .map(|i| self.forward_one(&x.narrow(0, i, 1)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&outs, 0)?);
        }
        self.forward_one(x)
    }

    fn forward_one(&self, x: &Tensor) -> Result<Tensor> {
        match &self.inner {
            Inner::Ulkanet(n) => n.forward(x),
            Inner::Logonet(n) => n.forward(x),
        }
    }
}

impl SegmentationNet for InferenceNet {
    /// Eval mode only: `train = true` is an error.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return Err(Error::invalid(
                "InferenceNet::forward_t",
                "an inference network has folded BatchNorms and cannot train; use the source network",
            ));
        }
        self.forward(x)
    }

    fn net_config(&self) -> NetConfig {
        self.cfg.clone()
    }

    fn macs(&self, input: [usize; 5]) -> Result<MacCounter> {
        self.cfg.check_input(&input)?;
        self.cfg.build_shapes_only()?.0.macs(input)
    }
}
