//! ULKANet (`VANV412`, `commons/models/van_v4_12.py`) and the LoGoNet sub-network `VANV4121`
//! (`van_v4_121.py`, same network with a different head), exactly as the reference code (spec §1.7).
//!
//! ```text
//! first_x = CBR(in→C/2^S) → CBR(→C/2^(S-1))                    full resolution
//! f       = VAN3D(x)                                           S stages
//! y       = upsample0(f[S-1])                                  CBR ×2 → trilinear ×2
//! for i in 0..S-1: y = upsample{i+1}(conv{i}(cat[y, conv_res{i}(f[S-2-i])]))
//! y       = final_conv1(cat[first_x, final_upsample(final_conv0(y))])
//! ```
//! The reference's `upsample` argument ("vae"/"deconv") is ignored by both classes; there are no transposed
//! convolutions.

use super::flops::MacCounter;
use super::inference::InferenceNet;
use super::layers::{Conv3d, DoubleCbr};
use super::van3d::Van3d;
use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of ULKANet / VANV4121 (the reference constructor's arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Input channels (1 for CT).
    pub in_channels: usize,
    /// Output channels (14 classes for BTCV).
    pub out_channels: usize,
    /// Channels per encoder stage; must double from stage to stage (the decoder's channel arithmetic
    /// assumes `embed_dims[i] = C/2^(S-1-i)`).
    pub embed_dims: Vec<usize>,
    /// Encoder blocks per stage.
    pub depths: Vec<usize>,
    /// MLP expansion ratio per stage.
    pub mlp_ratios: Vec<usize>,
}

impl Config {
    /// The fixtures' tiny net: dims [8, 16, 32, 64], depths [1, 1, 1, 1], mlp [8, 8, 4, 4], 1 → 14.
    pub fn tiny() -> Self {
        Self {
            in_channels: 1,
            out_channels: 14,
            embed_dims: vec![8, 16, 32, 64],
            depths: vec![1; 4],
            mlp_ratios: vec![8, 8, 4, 4],
        }
    }

    /// The paper's default ("S"; `BTCV/main.py` defaults): dims 64..512, depths 3, 4, 6, 3, mlp 8, 8, 4, 4.
    pub fn s() -> Self {
        Self {
            in_channels: 1,
            out_channels: 14,
            embed_dims: vec![64, 128, 256, 512],
            depths: vec![3, 4, 6, 3],
            mlp_ratios: vec![8, 8, 4, 4],
        }
    }

    /// The large variant ("L", job ids 4129/41229): dims 96..768, depths 3, 3, 24, 3, mlp 8, 8, 4, 4.
    pub fn l() -> Self {
        Self {
            in_channels: 1,
            out_channels: 14,
            embed_dims: vec![96, 192, 384, 768],
            depths: vec![3, 3, 24, 3],
            mlp_ratios: vec![8, 8, 4, 4],
        }
    }

    /// Number of encoder stages S.
    pub fn num_stages(&self) -> usize {
        self.embed_dims.len()
    }

    /// Every spatial input size must be a multiple of this (`2^(S+1)`: stride 4 then S-1 stride-2 stages,
    /// exactly re-upsampled by ×2 steps).
    pub fn input_multiple(&self) -> usize {
        1 << (self.num_stages() + 1)
    }

    /// Checks the configuration (lengths, channel doubling, non-zero channels).
    pub fn validate(&self) -> Result<()> {
        let s = self.num_stages();
        let bad = |msg: String| Err(Error::invalid("ulkanet::Config", msg));
        if s == 0 || self.depths.len() != s || self.mlp_ratios.len() != s {
            return bad(format!(
                "embed_dims {:?}, depths {:?}, mlp_ratios {:?} need one entry per stage",
                self.embed_dims, self.depths, self.mlp_ratios
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.mlp_ratios.contains(&0) {
            return bad(format!(
                "channels and mlp ratios must be positive: {self:?}"
            ));
        }
        let c = self.embed_dims[s - 1];
        if !c.is_multiple_of(1 << s) || (0..s).any(|i| self.embed_dims[i] != c >> (s - 1 - i)) {
            return bad(format!(
                "embed_dims {:?} must double per stage and the last must be divisible by 2^{s}",
                self.embed_dims
            ));
        }
        Ok(())
    }

    /// Checks an input shape `[N, C, D, H, W]` (channels and spatial multiples) for model `model`.
    pub fn check_input(&self, model: &str, dims: &[usize]) -> Result<()> {
        check_input_dims(model, dims, self.in_channels, self.input_multiple())
    }
}

/// Shared input check: rank 5, `in_channels`, every spatial size a positive multiple of `multiple`.
pub(crate) fn check_input_dims(
    model: &str,
    dims: &[usize],
    in_channels: usize,
    multiple: usize,
) -> Result<()> {
    if dims.len() != 5 || dims[0] == 0 {
        return Err(Error::invalid(
            "forward",
            format!("{model} expects [N, C, D, H, W], got {dims:?}"),
        ));
    }
    if dims[1] != in_channels {
        return Err(Error::invalid(
            "forward",
            format!("{model} expects {in_channels} input channels, got {dims:?}"),
        ));
    }
    let spatial = &dims[2..];
    if spatial
        .iter()
        .any(|&d| d == 0 || !d.is_multiple_of(multiple))
    {
        return Err(Error::InputSize {
            model: model.to_string(),
            got: spatial.to_vec(),
            msg: format!(
                "every spatial size must be a positive multiple of {multiple} (the encoder downsamples by {multiple} \
                 and the decoder upsamples back exactly); crop or pad, e.g. to 96³"
            ),
        });
    }
    Ok(())
}

/// Which head the network has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// `VANV412` (ULKANet): `final_conv1 = CBR(out + C/2^(S-1) → out) → CBR(out → out) → Conv1³(out → out)`;
    /// outputs logits.
    Logits,
    /// `VANV4121` (LoGoNet sub-network): `final_conv1 = CBR(C/2^S + C/2^(S-1) → out) → CBR(out → out)`,
    /// no final 1×1 conv; outputs post-BN+LeakyReLU features.
    Features,
}

/// The layers every ULKANet variant shares (the encoder and the decoder up to `final_conv0`), built with the
/// reference's names. Used by [`Ulkanet`] and by the pre-training trunk (which has no `final_conv1`).
#[derive(Clone, Debug)]
pub(crate) struct Body {
    pub(crate) first_conv: DoubleCbr,
    pub(crate) van3d: Van3d,
    pub(crate) upsample: Vec<DoubleCbr>,
    pub(crate) conv_res: Vec<DoubleCbr>,
    pub(crate) conv: Vec<DoubleCbr>,
}

impl Body {
    /// `first_conv`, `van3d`, `upsample{i}`, `conv_res{i}`, `conv{i}` under `vb`.
    pub(crate) fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let s = cfg.num_stages();
        let c = cfg.embed_dims[s - 1];
        let ch = |i: usize| c >> i; // C/2^i
        let first_conv = DoubleCbr::new(
            vb.pp("first_conv"),
            cfg.in_channels,
            ch(s),
            ch(s - 1),
            false,
        )?;
        let van3d = Van3d::new(
            vb.pp("van3d"),
            cfg.in_channels,
            &cfg.embed_dims,
            &cfg.mlp_ratios,
            &cfg.depths,
        )?;
        let cbrs = |name: &str, n: usize, cin: &dyn Fn(usize) -> usize, up: bool| {
            (0..n)
                .map(|i| {
                    let cout = ch(i + 1);
                    DoubleCbr::new(vb.pp(format!("{name}{i}")), cin(i), cout, cout, up)
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            first_conv,
            van3d,
            upsample: cbrs("upsample", s, &|i| ch(i), true)?,
            conv_res: cbrs("conv_res", s - 1, &|i| ch(i + 1), false)?,
            conv: cbrs("conv", s - 1, &|i| ch(i), false)?,
        })
    }

    /// Borrowed view for [`BodyRef::forward_t`].
    pub(crate) fn view(&self) -> BodyRef<'_> {
        BodyRef {
            first_conv: &self.first_conv,
            van3d: &self.van3d,
            upsample: &self.upsample,
            conv_res: &self.conv_res,
            conv: &self.conv,
        }
    }
}

/// The shared layers by reference (so [`Ulkanet`] can keep them as its own fields).
pub(crate) struct BodyRef<'a> {
    pub(crate) first_conv: &'a DoubleCbr,
    pub(crate) van3d: &'a Van3d,
    pub(crate) upsample: &'a [DoubleCbr],
    pub(crate) conv_res: &'a [DoubleCbr],
    pub(crate) conv: &'a [DoubleCbr],
}

impl BodyRef<'_> {
    /// `[N, in, D, H, W]` → (`first_conv(x)` `[N, C/2^(S-1), D, H, W]`, decoder output
    /// `[N, C/2^S, D/2, H/2, W/2]`), layer by layer.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let s = self.upsample.len();
        let first_x = self.first_conv.forward_t(x, train)?; // [N, C/2^(S-1), D, H, W]
        let f = self.van3d.forward_t(x, train)?; // f[i]: [N, C/2^(S-1-i), D/2^(i+2), ...]
        let mut y = self.upsample[0].forward_t(&f[s - 1], train)?; // [N, C/2, D/2^S, ...]
        for i in 0..s - 1 {
            let v = self.conv_res[i].forward_t(&f[s - 2 - i], train)?; // [N, C/2^(i+1), D/2^(S-i), ...]
            let cat = Tensor::cat(&[&y, &v], 1)?; // [N, C/2^i, ...] upsampled first, skip second
            y = self.conv[i].forward_t(&cat, train)?; // [N, C/2^(i+1), ...]
            y = self.upsample[i + 1].forward_t(&y, train)?; // [N, C/2^(i+2), 2×]
        }
        Ok((first_x, y)) // y: [N, C/2^S, D/2, H/2, W/2]
    }
}

/// ULKANet (`VANV412`) or the LoGoNet sub-network (`VANV4121`).
#[derive(Clone, Debug)]
pub struct Ulkanet {
    pub(super) cfg: Config,
    pub(super) head: Head,
    pub(super) first_conv: DoubleCbr,
    pub(super) van3d: Van3d,
    pub(super) upsample: Vec<DoubleCbr>,
    pub(super) conv_res: Vec<DoubleCbr>,
    pub(super) conv: Vec<DoubleCbr>,
    pub(super) final_conv0: DoubleCbr,
    pub(super) final_upsample: DoubleCbr,
    pub(super) final_conv1: DoubleCbr,
    pub(super) logits: Option<Conv3d>,
}

impl Ulkanet {
    /// ULKANet (`VANV412`), the paper's ULKANet.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::with_head(cfg, Head::Logits, vb)
    }

    /// The LoGoNet sub-network (`VANV4121`).
    pub fn new_subnet(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::with_head(cfg, Head::Features, vb)
    }

    /// Either variant, weights under `vb` with the reference's names.
    pub fn with_head(cfg: &Config, head: Head, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let s = cfg.num_stages();
        let c = cfg.embed_dims[s - 1];
        let ch = |i: usize| c >> i; // C/2^i
        let out = cfg.out_channels;
        let Body {
            first_conv,
            van3d,
            upsample,
            conv_res,
            conv,
        } = Body::new(cfg, &vb)?;
        let (final_conv0, final_upsample, final_conv1, logits) = match head {
            Head::Logits => (
                DoubleCbr::new(vb.pp("final_conv0"), ch(s), out, out, false)?,
                DoubleCbr::new(vb.pp("final_upsample"), out, out, out, true)?,
                DoubleCbr::new(vb.pp("final_conv1"), out + ch(s - 1), out, out, false)?,
                Some(Conv3d::iso(
                    vb.pp("final_conv1").pp("6"),
                    out,
                    out,
                    1,
                    1,
                    0,
                    1,
                    1,
                )?),
            ),
            Head::Features => (
                DoubleCbr::new(vb.pp("final_conv0"), ch(s), ch(s), ch(s), false)?,
                DoubleCbr::new(vb.pp("final_upsample"), ch(s), ch(s), ch(s), true)?,
                DoubleCbr::new(vb.pp("final_conv1"), ch(s) + ch(s - 1), out, out, false)?,
                None,
            ),
        };
        Ok(Self {
            cfg: cfg.clone(),
            head,
            first_conv,
            van3d,
            upsample,
            conv_res,
            conv,
            final_conv0,
            final_upsample,
            final_conv1,
            logits,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The head variant.
    pub fn head(&self) -> Head {
        self.head
    }

    /// `[N, in, D, H, W]` → `[N, out, D, H, W]` (logits for [`Head::Logits`], features for
    /// [`Head::Features`]). D, H, W must be multiples of [`Config::input_multiple`].
    ///
    /// Eval mode (`train = false`) runs the [`InferenceNet`] form (BatchNorm folded, no autograd graph),
    /// built from the current weights on each call; to run many windows build the `InferenceNet` once.
    /// Train mode, and [`Ulkanet::forward_graph`] in either mode, run layer by layer with autograd.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input(self.name(), x.dims())?;
        if train {
            self.forward_unchecked(x, true)
        } else {
            InferenceNet::from_ulkanet(self)?.forward_unchecked(x)
        }
    }

    /// The layer-by-layer forward (differentiable in both modes; eval mode uses the running statistics).
    pub fn forward_graph(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input(self.name(), x.dims())?;
        self.forward_unchecked(x, train)
    }

    fn name(&self) -> &'static str {
        match self.head {
            Head::Logits => "ULKANet (VANV412)",
            Head::Features => "VANV4121",
        }
    }

    pub(crate) fn forward_unchecked(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let body = BodyRef {
            first_conv: &self.first_conv,
            van3d: &self.van3d,
            upsample: &self.upsample,
            conv_res: &self.conv_res,
            conv: &self.conv,
        };
        let (first_x, y) = body.forward_t(x, train)?; // y: [N, C/2^S, D/2, H/2, W/2]
        let y = self.final_conv0.forward_t(&y, train)?; // [N, out | C/2^S, D/2, ...]
        let y = self.final_upsample.forward_t(&y, train)?; // [N, out | C/2^S, D, H, W]
        let y = Tensor::cat(&[&first_x, &y], 1)?; // first_conv output first
        let y = self.final_conv1.forward_t(&y, train)?; // [N, out, D, H, W]
        match &self.logits {
            Some(conv) => conv.forward(&y), // [N, out, D, H, W] logits
            None => Ok(y),
        }
    }

    /// Records MACs for an input shape; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, input: [usize; 5]) -> Result<[usize; 5]> {
        let part = c.part().to_string();
        let prefix = if part.is_empty() {
            String::new()
        } else {
            format!("{part} ")
        };
        c.set_part(format!("{prefix}decoder"));
        let first = self.first_conv.macs(c, input)?;
        c.set_part(format!("{prefix}encoder"));
        let f = self.van3d.macs(c, input)?;
        c.set_part(format!("{prefix}decoder"));
        let s = f.len();
        let mut y = self.upsample[0].macs(c, f[s - 1])?;
        for i in 0..s - 1 {
            let v = self.conv_res[i].macs(c, f[s - 2 - i])?;
            y[1] += v[1];
            y = self.conv[i].macs(c, y)?;
            y = self.upsample[i + 1].macs(c, y)?;
        }
        let y = self.final_conv0.macs(c, y)?;
        let mut y = self.final_upsample.macs(c, y)?;
        y[1] += first[1];
        let mut y = self.final_conv1.macs(c, y)?;
        if let Some(conv) = &self.logits {
            y = conv.macs(c, y)?;
        }
        c.set_part(part);
        Ok(y)
    }
}
