//! The pre-training networks: a segmentation trunk followed by [`Projection2`].
//!
//! * LoGoNet (`PREVANV4121GL`, `commons/models/pre_training/pre_van_v4_121gl.py`): global VANV4121 (`van.*`)
//!   plus the eight local VANV4121 (`van{i}_{j}_{k}.*`) on the 2×2×2 sub-cubes, stitched back and **summed**,
//!   without the fusion head (`conv.*` does not exist here): `[B, 14, X, Y, Z]` into the head.
//! * ULKANet (`PREVANV412`): the 78-channel tensor `cat[first_conv(x), final_upsample(final_conv0(y))]` that
//!   would otherwise enter `final_conv1` goes into the head (`final_conv1.*` does not exist here).
//!
//! Parameter names are the reference's (the head under `pre_train_proj`), so a pre-trained checkpoint's trunk
//! loads into the segmentation network unchanged (see [`super::finetune`]).

use super::head::{Projection2, Projection2Config};
use crate::nets::layers::DoubleCbr;
use crate::nets::ulkanet::{self, Ulkanet};
use crate::nets::{NetConfig, logonet};
use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// The head's prefix in the state dict.
pub const HEAD_PREFIX: &str = "pre_train_proj";

/// ULKANet without `final_conv1`: everything up to the concat that enters it.
#[derive(Clone, Debug)]
struct UlkanetTrunk {
    cfg: ulkanet::Config,
    body: ulkanet::Body,
    final_conv0: DoubleCbr,
    final_upsample: DoubleCbr,
}

impl UlkanetTrunk {
    /// Same construction (and names) as `nets::ulkanet::Ulkanet` with its `Logits` head, minus `final_conv1`.
    fn new(cfg: &ulkanet::Config, vb: VarBuilder) -> Result<Self> {
        let body = ulkanet::Body::new(cfg, &vb)?;
        let s = cfg.num_stages();
        let cs = cfg.embed_dims[s - 1] >> s; // C/2^S
        let out = cfg.out_channels;
        Ok(Self {
            cfg: cfg.clone(),
            body,
            final_conv0: DoubleCbr::new(vb.pp("final_conv0"), cs, out, out, false)?,
            final_upsample: DoubleCbr::new(vb.pp("final_upsample"), out, out, out, true)?,
        })
    }

    /// Channels of the concat: `out + C/2^(S-1)` (78 for ULKANet-S with 14 classes).
    fn out_channels(&self) -> usize {
        let s = self.cfg.num_stages();
        self.cfg.out_channels + (self.cfg.embed_dims[s - 1] >> (s - 1))
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input("PREVANV412", x.dims())?;
        let (first_x, y) = self.body.view().forward_t(x, train)?; // y: [N, C/2^S, D/2, H/2, W/2]
        let y = self.final_conv0.forward_t(&y, train)?; // [N, out, D/2, H/2, W/2]
        let y = self.final_upsample.forward_t(&y, train)?; // [N, out, D, H, W]
        Ok(Tensor::cat(&[&first_x, &y], 1)?) // [N, C/2^(S-1) + out, D, H, W]
    }
}

/// LoGoNet without the fusion head: global + stitched locals, summed.
#[derive(Clone, Debug)]
struct LogonetTrunk {
    cfg: logonet::Config,
    global: Ulkanet,
    locals: Vec<Ulkanet>,
}

impl LogonetTrunk {
    /// Same construction (and names) as `nets::logonet::Logonet`, minus the fusion head `conv.*`.
    fn new(cfg: &logonet::Config, vb: VarBuilder) -> Result<Self> {
        let (global, locals) = logonet::build_branches(cfg, vb)?;
        Ok(Self {
            cfg: cfg.clone(),
            global,
            locals,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input(x.dims())?;
        let (global, local, _) =
            logonet::forward_branches(&self.cfg, &self.global, &self.locals, x, train)?;
        Ok((global + local)?) // [N, out, D, H, W]
    }
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Trunk {
    Logonet(LogonetTrunk),
    Ulkanet(UlkanetTrunk),
}

/// A pre-training network: trunk + `Projection2`.
#[derive(Clone, Debug)]
pub struct PretrainNet {
    net: NetConfig,
    trunk: Trunk,
    head: Projection2,
}

impl PretrainNet {
    /// Builds the pre-training network for the segmentation network `net` on crops of `dims` with
    /// `cluster_num` clusterers and `class_size` logit slots; weights under `vb` (head under `pre_train_proj`).
    pub fn new(
        net: &NetConfig,
        dims: [usize; 3],
        cluster_num: usize,
        class_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        net.check_input(&[1, net.in_channels(), dims[0], dims[1], dims[2]])?;
        let (trunk, input_dim) = match net {
            NetConfig::Logonet(c) => (
                Trunk::Logonet(LogonetTrunk::new(c, vb.clone())?),
                c.out_channels,
            ),
            NetConfig::Ulkanet(c) => {
                let t = UlkanetTrunk::new(c, vb.clone())?;
                let n = t.out_channels();
                (Trunk::Ulkanet(t), n)
            }
        };
        let head_cfg = Projection2Config {
            input_dim,
            dims,
            cluster_num,
            class_size,
        };
        let head = Projection2::new(head_cfg, vb.pp(HEAD_PREFIX))?;
        Ok(Self {
            net: net.clone(),
            trunk,
            head,
        })
    }

    /// The segmentation network whose trunk this is.
    pub fn net_config(&self) -> &NetConfig {
        &self.net
    }

    /// The head.
    pub fn head(&self) -> &Projection2 {
        &self.head
    }

    /// Trunk features `[B, 14 | 78, X, Y, Z]`.
    pub fn trunk_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.trunk {
            Trunk::Logonet(t) => t.forward_t(x, train),
            Trunk::Ulkanet(t) => t.forward_t(x, train),
        }
    }

    /// `[B, in, X, Y, Z]` → logits `[B, Z, C, K]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = self.head.config().dims;
        let (_, _, nx, ny, nz) = x.dims5()?;
        if [nx, ny, nz] != dims {
            return Err(Error::InputSize {
                model: "pre-training network".into(),
                got: vec![nx, ny, nz],
                msg: format!("the projection head was built for {dims:?}"),
            });
        }
        let features = self.trunk_forward(x, train)?; // [B, 14 | 78, X, Y, Z]
        self.head.forward(&features, train) // [B, Z, C, K]
    }
}
