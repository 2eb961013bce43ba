//! LoGoNet (`VANV4122GL`, `commons/models/van_v4_122gl.py`) and its InstanceNorm twin (`VANV4121GL`),
//! exactly as the reference code (spec §1.8):
//!
//! ```text
//! local = p³ INDEPENDENT VANV4121 sub-nets (first `local_stages` encoder stages), van{i}_{j}_{k} on the
//!         sub-cube (i, j, k) of a p×p×p split along (D, H, W), re-assembled in place
//! glob  = VANV4121 (all stages) on the whole input                       -> `van`
//! y     = conv.3(GELU(norm(conv.0(glob + local))))                       -> logits
//! ```
//! The paper speaks of "2 encoder blocks" for the local module and a separate classifier; the code uses the
//! first 2 **stages**, 8 independent weight sets, a **sum** of global and local outputs and the 1×1 conv as
//! classifier. We follow the code (it produced the published numbers).

use super::flops::MacCounter;
use super::inference::InferenceNet;
use super::layers::{BatchNorm3d, Conv3d};
use super::ulkanet::{self, Ulkanet, check_input_dims};
use crate::ops;
use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The normalisation in the fusion head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FusionNorm {
    /// `nn.BatchNorm3d` (`VANV4122GL`, the paper's LoGoNet).
    #[default]
    Batch,
    /// `nn.InstanceNorm3d` without affine parameters or running statistics (`VANV4121GL`).
    Instance,
}

/// Hyper-parameters of LoGoNet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (classes).
    pub out_channels: usize,
    /// Channels per encoder stage of the global net (the local nets use the first `local_stages`).
    pub embed_dims: Vec<usize>,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// MLP ratios per stage.
    pub mlp_ratios: Vec<usize>,
    /// Sub-cubes per axis (`patch_count`, 2 in the paper: 8 local nets).
    pub patch_count: usize,
    /// Encoder stages of each local net (2 in the reference).
    pub local_stages: usize,
    /// Normalisation of the fusion head.
    #[serde(default)]
    pub fusion_norm: FusionNorm,
}

impl Config {
    fn from_ulka(u: ulkanet::Config) -> Self {
        Self {
            in_channels: u.in_channels,
            out_channels: u.out_channels,
            embed_dims: u.embed_dims,
            depths: u.depths,
            mlp_ratios: u.mlp_ratios,
            patch_count: 2,
            local_stages: 2,
            fusion_norm: FusionNorm::Batch,
        }
    }

    /// The fixtures' tiny LoGoNet (983,896 parameters).
    pub fn tiny() -> Self {
        Self::from_ulka(ulkanet::Config::tiny())
    }

    /// The paper's LoGoNet (67,579,560 parameters).
    pub fn s() -> Self {
        Self::from_ulka(ulkanet::Config::s())
    }

    /// LoGoNet-L (172,580,904 parameters).
    pub fn l() -> Self {
        Self::from_ulka(ulkanet::Config::l())
    }

    /// The global sub-network's configuration.
    pub fn global(&self) -> ulkanet::Config {
        ulkanet::Config {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            embed_dims: self.embed_dims.clone(),
            depths: self.depths.clone(),
            mlp_ratios: self.mlp_ratios.clone(),
        }
    }

    /// Each local sub-network's configuration (first `local_stages` stages).
    pub fn local(&self) -> ulkanet::Config {
        let n = self.local_stages.min(self.embed_dims.len());
        ulkanet::Config {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            embed_dims: self.embed_dims[..n].to_vec(),
            depths: self.depths[..n.min(self.depths.len())].to_vec(),
            mlp_ratios: self.mlp_ratios[..n.min(self.mlp_ratios.len())].to_vec(),
        }
    }

    /// Every spatial input size must be a multiple of this: `lcm(2^(S+1), p·2^(local_stages+1))` (32 for
    /// the 4-stage configs).
    pub fn input_multiple(&self) -> usize {
        let a = self.global().input_multiple();
        let b = self.patch_count.max(1) * self.local().input_multiple();
        a / gcd(a, b) * b
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        self.global().validate()?;
        if self.patch_count == 0
            || self.local_stages == 0
            || self.local_stages > self.embed_dims.len()
        {
            return Err(Error::invalid(
                "logonet::Config",
                format!(
                    "patch_count {} and local_stages {} must be in 1..=stages",
                    self.patch_count, self.local_stages
                ),
            ));
        }
        self.local().validate()
    }

    /// Checks an input shape `[N, C, D, H, W]`.
    pub fn check_input(&self, dims: &[usize]) -> Result<()> {
        check_input_dims("LoGoNet", dims, self.in_channels, self.input_multiple())
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The fusion head's normalisation layer.
#[derive(Clone, Debug)]
pub(super) enum FusionNormLayer {
    Batch(BatchNorm3d),
    Instance,
}

/// Outputs of the two branches, for tests and inspection.
#[derive(Clone, Debug)]
pub struct LogonetParts {
    /// Global VANV4121 output `[N, out, D, H, W]`.
    pub global: Tensor,
    /// Local outputs stitched back `[N, out, D, H, W]`.
    pub local: Tensor,
    /// Each local output `[N, out, D/p, H/p, W/p]`, in order (i, j, k) with k fastest.
    pub local_parts: Vec<Tensor>,
    /// Final logits `[N, out, D, H, W]`.
    pub logits: Tensor,
}

/// The two branches of LoGoNet: the global VANV4121 (`van.*`) and the `p³` local ones (`van{i}_{j}_{k}.*`, k
/// fastest). Shared by [`Logonet`] and the pre-training trunk, which has no fusion head.
pub(crate) fn build_branches(cfg: &Config, vb: VarBuilder) -> Result<(Ulkanet, Vec<Ulkanet>)> {
    cfg.validate()?;
    let p = cfg.patch_count;
    let global = Ulkanet::new_subnet(&cfg.global(), vb.pp("van"))?;
    let local_cfg = cfg.local();
    let mut locals = Vec::with_capacity(p * p * p);
    for i in 0..p {
        for j in 0..p {
            for k in 0..p {
                let name = format!("van{i}_{j}_{k}");
                locals.push(Ulkanet::new_subnet(&local_cfg, vb.pp(name))?);
            }
        }
    }
    Ok((global, locals))
}

/// Runs both branches layer by layer: returns `(global, local, local_parts)`, the global output and the
/// stitched local outputs `[N, out, D, H, W]`, and each local output `[N, out, D/p, H/p, W/p]` (k fastest).
/// The input shape must have been checked.
pub(crate) fn forward_branches(
    cfg: &Config,
    global: &Ulkanet,
    locals: &[Ulkanet],
    x: &Tensor,
    train: bool,
) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
    let p = cfg.patch_count;
    let (_, _, d, h, w) = x.dims5()?;
    let (sd, sh, sw) = (d / p, h / p, w / p);
    let mut local_parts = Vec::with_capacity(p * p * p);
    for i in 0..p {
        let xi = x.narrow(2, i * sd, sd)?;
        for j in 0..p {
            let xij = xi.narrow(3, j * sh, sh)?;
            for k in 0..p {
                let sub = xij.narrow(4, k * sw, sw)?.contiguous()?; // [N, in, D/p, H/p, W/p]
                let net = &locals[(i * p + j) * p + k];
                local_parts.push(net.forward_unchecked(&sub, train)?); // [N, out, D/p, H/p, W/p]
            }
        }
    }
    // Re-assemble: cat along W (k), then H (j), then D (i): the exact inverse of the split.
    let mut planes = Vec::with_capacity(p);
    for i in 0..p {
        let mut rows = Vec::with_capacity(p);
        for j in 0..p {
            let start = (i * p + j) * p;
            rows.push(Tensor::cat(&local_parts[start..start + p], 4)?); // [N, out, D/p, H/p, W]
        }
        planes.push(Tensor::cat(&rows, 3)?); // [N, out, D/p, H, W]
    }
    let local = Tensor::cat(&planes, 2)?; // [N, out, D, H, W]
    let global = global.forward_unchecked(x, train)?; // [N, out, D, H, W]
    Ok((global, local, local_parts))
}

/// LoGoNet (`VANV4122GL` / `VANV4121GL`).
#[derive(Clone, Debug)]
pub struct Logonet {
    pub(super) cfg: Config,
    pub(super) global: Ulkanet,
    pub(super) locals: Vec<Ulkanet>,
    pub(super) conv0: Conv3d,
    pub(super) norm: FusionNormLayer,
    pub(super) conv3: Conv3d,
}

impl Logonet {
    /// Builds LoGoNet; weights `van.*`, `van{i}_{j}_{k}.*`, `conv.{0,1,3}.*` under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (global, locals) = build_branches(cfg, vb.clone())?;
        let out = cfg.out_channels;
        let conv0 = Conv3d::iso(vb.pp("conv").pp("0"), out, out, 3, 1, 1, 1, 1)?;
        let norm = match cfg.fusion_norm {
            FusionNorm::Batch => {
                FusionNormLayer::Batch(BatchNorm3d::new(vb.pp("conv").pp("1"), out)?)
            }
            FusionNorm::Instance => FusionNormLayer::Instance,
        };
        let conv3 = Conv3d::iso(vb.pp("conv").pp("3"), out, out, 1, 1, 0, 1, 1)?;
        Ok(Self {
            cfg: cfg.clone(),
            global,
            locals,
            conv0,
            norm,
            conv3,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `[N, in, D, H, W]` → logits `[N, out, D, H, W]`; D, H, W multiples of [`Config::input_multiple`].
    ///
    /// Eval mode (`train = false`) runs the [`InferenceNet`] form (BatchNorm folded, no autograd graph),
    /// built from the current weights on each call; to run many windows build the `InferenceNet` once.
    /// Train mode, and [`Logonet::forward_graph`] in either mode, run layer by layer with autograd.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input(x.dims())?; // before folding: shape-only networks must fail here
        if train {
            Ok(self.forward_parts(x, true)?.logits)
        } else {
            InferenceNet::from_logonet(self)?.forward(x)
        }
    }

    /// The layer-by-layer forward (differentiable in both modes; eval mode uses the running statistics).
    pub fn forward_graph(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_parts(x, train)?.logits)
    }

    /// Layer-by-layer forward pass that also returns the branch outputs.
    pub fn forward_parts(&self, x: &Tensor, train: bool) -> Result<LogonetParts> {
        self.cfg.check_input(x.dims())?;
        let (global, local, local_parts) =
            forward_branches(&self.cfg, &self.global, &self.locals, x, train)?;
        let y = (&global + &local)?; // element-wise sum
        let y = self.conv0.forward(&y)?; // [N, out, D, H, W]
        let y = match &self.norm {
            FusionNormLayer::Batch(bn) => bn.forward_t(&y, train)?,
            FusionNormLayer::Instance => ops::instance_norm3d(&y, None, None, 1e-5)?,
        };
        let y = ops::gelu(&y)?;
        let logits = self.conv3.forward(&y)?; // [N, out, D, H, W]
        Ok(LogonetParts {
            global,
            local,
            local_parts,
            logits,
        })
    }

    /// Records MACs for an input shape; returns the output shape.
    pub fn macs(&self, c: &mut MacCounter, input: [usize; 5]) -> Result<[usize; 5]> {
        let p = self.cfg.patch_count;
        let sub = [input[0], input[1], input[2] / p, input[3] / p, input[4] / p];
        c.set_part("local");
        for net in &self.locals {
            net.macs(c, sub)?;
        }
        c.set_part("global");
        let s = self.global.macs(c, input)?;
        c.set_part("fusion head");
        let s = self.conv0.macs(c, s)?;
        let s = match &self.norm {
            FusionNormLayer::Batch(bn) => bn.macs(c, s),
            FusionNormLayer::Instance => {
                c.add_norm(s.iter().product::<usize>() as u64, false);
                s
            }
        };
        let s = self.conv3.macs(c, s)?;
        c.set_part("");
        Ok(s)
    }
}
