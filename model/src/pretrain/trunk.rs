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
use crate::nets::van3d::Van3d;
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
    first_conv: DoubleCbr,
    van3d: Van3d,
    upsample: Vec<DoubleCbr>,
    conv_res: Vec<DoubleCbr>,
    conv: Vec<DoubleCbr>,
    final_conv0: DoubleCbr,
    final_upsample: DoubleCbr,
}

impl UlkanetTrunk {
    /// Same construction (and names) as `nets::ulkanet::Ulkanet` with its `Logits` head, minus `final_conv1`.
    fn new(cfg: &ulkanet::Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let s = cfg.num_stages();
        let c = cfg.embed_dims[s - 1];
        let ch = |i: usize| c >> i; // C/2^i
        let out = cfg.out_channels;
        Ok(Self {
            cfg: cfg.clone(),
            first_conv: DoubleCbr::new(
                vb.pp("first_conv"),
                cfg.in_channels,
                ch(s),
                ch(s - 1),
                false,
            )?,
            van3d: Van3d::new(
                vb.pp("van3d"),
                cfg.in_channels,
                &cfg.embed_dims,
                &cfg.mlp_ratios,
                &cfg.depths,
            )?,
            upsample: (0..s)
                .map(|i| {
                    DoubleCbr::new(
                        vb.pp(format!("upsample{i}")),
                        ch(i),
                        ch(i + 1),
                        ch(i + 1),
                        true,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            conv_res: (0..s - 1)
                .map(|i| {
                    DoubleCbr::new(
                        vb.pp(format!("conv_res{i}")),
                        ch(i + 1),
                        ch(i + 1),
                        ch(i + 1),
                        false,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            conv: (0..s - 1)
                .map(|i| {
                    DoubleCbr::new(
                        vb.pp(format!("conv{i}")),
                        ch(i),
                        ch(i + 1),
                        ch(i + 1),
                        false,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            final_conv0: DoubleCbr::new(vb.pp("final_conv0"), ch(s), out, out, false)?,
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
        let s = self.cfg.num_stages();
        let first_x = self.first_conv.forward_t(x, train)?; // [N, C/2^(S-1), D, H, W]
        let f = self.van3d.forward_t(x, train)?; // f[i]: [N, C/2^(S-1-i), D/2^(i+2), ...]
        let mut y = self.upsample[0].forward_t(&f[s - 1], train)?; // [N, C/2, D/2^S, ...]
        for i in 0..s - 1 {
            let v = self.conv_res[i].forward_t(&f[s - 2 - i], train)?;
            let cat = Tensor::cat(&[&y, &v], 1)?; // [N, C/2^i, ...]
            y = self.conv[i].forward_t(&cat, train)?; // [N, C/2^(i+1), ...]
            y = self.upsample[i + 1].forward_t(&y, train)?; // [N, C/2^(i+2), 2×]
        }
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
    fn new(cfg: &logonet::Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let p = cfg.patch_count;
        let global = Ulkanet::new_subnet(&cfg.global(), vb.pp("van"))?;
        let local_cfg = cfg.local();
        let mut locals = Vec::with_capacity(p * p * p);
        for i in 0..p {
            for j in 0..p {
                for k in 0..p {
                    locals.push(Ulkanet::new_subnet(
                        &local_cfg,
                        vb.pp(format!("van{i}_{j}_{k}")),
                    )?);
                }
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            global,
            locals,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.cfg.check_input(x.dims())?;
        let p = self.cfg.patch_count;
        let (_, _, d, h, w) = x.dims5()?;
        let (sd, sh, sw) = (d / p, h / p, w / p);
        let mut planes = Vec::with_capacity(p);
        for i in 0..p {
            let xi = x.narrow(2, i * sd, sd)?;
            let mut rows = Vec::with_capacity(p);
            for j in 0..p {
                let xij = xi.narrow(3, j * sh, sh)?;
                let mut parts = Vec::with_capacity(p);
                for k in 0..p {
                    let sub = xij.narrow(4, k * sw, sw)?.contiguous()?; // [N, in, D/p, H/p, W/p]
                    parts.push(self.locals[(i * p + j) * p + k].forward_unchecked(&sub, train)?);
                }
                rows.push(Tensor::cat(&parts, 4)?); // [N, out, D/p, H/p, W]
            }
            planes.push(Tensor::cat(&rows, 3)?); // [N, out, D/p, H, W]
        }
        let local = Tensor::cat(&planes, 2)?; // [N, out, D, H, W]
        let global = self.global.forward_unchecked(x, train)?; // [N, out, D, H, W]
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
