//! `Projection2` (reference `commons/models/pre_training/pretrain_projection_2.py`): the pre-training head that
//! turns the trunk's `[B, 14, X, Y, Z]` features into per-slice, per-clusterer logits `[B, Z, C, K]`.
//!
//! ```text
//! conv1: CBG(in→C), CBG(C→C)                 [B, C, X, Y, Z]   (CBG = Conv3d k3 p1 + BatchNorm3d + GELU)
//! permute(0,3,2,1,4)                          [B, Y, X, C, Z]   (Y becomes channels)
//! conv2: CBG(Y→K), CBG(K→K)                   [B, K, X, C, Z]
//! permute(0,2,1,3,4)                          [B, X, K, C, Z]   (X becomes channels)
//! conv3: CBG(X→X/16), CBG(X/16→1)             [B, 1, K, C, Z]
//! permute(0,4,3,2,1)                          [B, Z, C, K, 1]   (Z becomes channels)
//! conv4: Conv3d(Z→Z,k3,p1)+BN+GELU, Conv3d(Z→Z,k1)+ReLU   [B, Z, C, K, 1]
//! ```
//! The reference ends with `squeeze()`, which drops *every* size-1 axis (the batch with B = 1, the cluster
//! axis with C = 1). Here the last axis alone is dropped: the output is always `[B, Z, C, K]`.
//!
//! Parameter names are the reference's (`conv1.0.weight`, `conv1.1.running_mean`, ...), so a
//! `VarBuilder` at `pre_train_proj` loads the reference state dict unchanged.

use crate::ops::{self, Conv3dParams};
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarBuilder;

/// BatchNorm epsilon and momentum (PyTorch defaults).
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Sizes of the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Projection2Config {
    /// Channels of the trunk output (14 for LoGoNet, 78 for ULKANet's concat).
    pub input_dim: usize,
    /// Spatial size of the crop `[X, Y, Z]` (the head's channel counts depend on it).
    pub dims: [usize; 3],
    /// Number of clusterers C.
    pub cluster_num: usize,
    /// Logit slots K per clusterer (at least the largest k; 500 in the reference).
    pub class_size: usize,
}

impl Projection2Config {
    fn validate(&self) -> Result<()> {
        let [x, y, z] = self.dims;
        if x < 16
            || y == 0
            || z == 0
            || self.cluster_num == 0
            || self.class_size == 0
            || self.input_dim == 0
        {
            return Err(Error::invalid(
                "Projection2",
                format!("need X >= 16 and positive sizes, got {self:?} (conv3 has X/16 channels)"),
            ));
        }
        Ok(())
    }
}

/// Conv3d (with bias) followed by BatchNorm3d, as the reference's `nn.Sequential` entries `i` and `i + 1`.
#[derive(Clone, Debug)]
struct ConvBn {
    w: Tensor,
    b: Tensor,
    bn_w: Tensor,
    bn_b: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    padding: usize,
}

impl ConvBn {
    fn new(vb: &VarBuilder, conv: usize, cin: usize, cout: usize, kernel: usize) -> Result<Self> {
        let c = vb.pp(conv.to_string());
        let n = vb.pp((conv + 1).to_string());
        let init_w = candle_nn::init::DEFAULT_KAIMING_UNIFORM;
        let bound = 1.0 / ((cin * kernel.pow(3)) as f64).sqrt();
        let init_b = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            w: c.get_with_hints((cout, cin, kernel, kernel, kernel), "weight", init_w)?,
            b: c.get_with_hints(cout, "bias", init_b)?,
            bn_w: n.get_with_hints(cout, "weight", candle_nn::Init::Const(1.0))?,
            bn_b: n.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?,
            running_mean: n.get_with_hints(cout, "running_mean", candle_nn::Init::Const(0.0))?,
            running_var: n.get_with_hints(cout, "running_var", candle_nn::Init::Const(1.0))?,
            num_batches_tracked: n.get_with_hints_dtype(
                (),
                "num_batches_tracked",
                candle_nn::Init::Const(0.0),
                candle_core::DType::I64,
            )?,
            padding: kernel / 2,
        })
    }

    /// Conv + BN; in training mode BN uses batch statistics and updates the running ones in place (when they
    /// are variables of a `VarMap`).
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = ops::conv3d(
            x,
            &self.w,
            Some(&self.b),
            &Conv3dParams::iso(1, self.padding, 1, 1),
        )?;
        if !train {
            return ops::batch_norm_eval(
                &y,
                Some(&self.bn_w),
                Some(&self.bn_b),
                &self.running_mean,
                &self.running_var,
                BN_EPS,
            );
        }
        let (out, mean, var) =
            ops::batch_norm_train(&y, Some(&self.bn_w), Some(&self.bn_b), BN_EPS)?;
        if self.running_mean.is_variable() {
            let rm = ((self.running_mean.detach() * (1.0 - BN_MOMENTUM))?
                + (mean.detach() * BN_MOMENTUM)?)?;
            let rv = ((self.running_var.detach() * (1.0 - BN_MOMENTUM))?
                + (var.detach() * BN_MOMENTUM)?)?;
            Var::from_tensor(&self.running_mean)?.set(&rm.to_dtype(self.running_mean.dtype())?)?;
            Var::from_tensor(&self.running_var)?.set(&rv.to_dtype(self.running_var.dtype())?)?;
            if self.num_batches_tracked.is_variable() {
                let n = self.num_batches_tracked.detach();
                let one = Tensor::ones((), n.dtype(), n.device())?;
                Var::from_tensor(&self.num_batches_tracked)?.set(&(n + one)?)?;
            }
        }
        Ok(out)
    }
}

/// Two Conv3d(k3)+BN+GELU blocks (`nn.Sequential` indices 0,1,(2) and 3,4,(5)).
#[derive(Clone, Debug)]
struct Cbg2 {
    a: ConvBn,
    b: ConvBn,
}

impl Cbg2 {
    fn new(vb: VarBuilder, cin: usize, mid: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            a: ConvBn::new(&vb, 0, cin, mid, 3)?,
            b: ConvBn::new(&vb, 3, mid, cout, 3)?,
        })
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = ops::gelu(&self.a.forward(x, train)?)?;
        ops::gelu(&self.b.forward(&h, train)?)
    }
}

/// The pre-training projection head.
#[derive(Clone, Debug)]
pub struct Projection2 {
    cfg: Projection2Config,
    conv1: Cbg2,
    conv2: Cbg2,
    conv3: Cbg2,
    conv4_0: ConvBn,
    conv4_3_w: Tensor,
    conv4_3_b: Tensor,
}

/// Intermediate outputs of [`Projection2::forward_debug`] (the fixture's `inter_item0.*`).
#[derive(Clone, Debug)]
pub struct Projection2Debug {
    /// After conv1: [B, C, X, Y, Z].
    pub conv1_out: Tensor,
    /// After conv2: [B, K, X, C, Z].
    pub conv2_out: Tensor,
    /// After conv3: [B, 1, K, C, Z].
    pub conv3_out: Tensor,
    /// After conv4: [B, Z, C, K, 1].
    pub conv4_out: Tensor,
}

impl Projection2 {
    /// Builds (or loads) the head under `vb` (the reference's `pre_train_proj`).
    pub fn new(cfg: Projection2Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let [x, y, z] = cfg.dims;
        let (c, k) = (cfg.cluster_num, cfg.class_size);
        let v4 = vb.pp("conv4");
        let bound = 1.0 / (z as f64).sqrt();
        Ok(Self {
            cfg,
            conv1: Cbg2::new(vb.pp("conv1"), cfg.input_dim, c, c)?,
            conv2: Cbg2::new(vb.pp("conv2"), y, k, k)?,
            conv3: Cbg2::new(vb.pp("conv3"), x, x / 16, 1)?,
            conv4_0: ConvBn::new(&v4, 0, z, z, 3)?,
            conv4_3_w: v4.pp("3").get_with_hints(
                (z, z, 1, 1, 1),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_UNIFORM,
            )?,
            conv4_3_b: v4.pp("3").get_with_hints(
                z,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?,
        })
    }

    /// The head's sizes.
    pub fn config(&self) -> &Projection2Config {
        &self.cfg
    }

    /// `[B, in, X, Y, Z]` → logits `[B, Z, C, K]` (≥ 0).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dbg = self.forward_debug(x, train)?;
        Ok(dbg.conv4_out.squeeze(4)?) // [B, Z, C, K]
    }

    /// Like [`Projection2::forward`], returning every stage's output.
    pub fn forward_debug(&self, x: &Tensor, train: bool) -> Result<Projection2Debug> {
        let (_b, cin, nx, ny, nz) = x.dims5()?;
        if cin != self.cfg.input_dim || [nx, ny, nz] != self.cfg.dims {
            return Err(Error::invalid(
                "Projection2",
                format!(
                    "input {:?} does not match the head's [_, {}, {:?}]",
                    x.dims(),
                    self.cfg.input_dim,
                    self.cfg.dims
                ),
            ));
        }
        let conv1_out = self.conv1.forward(x, train)?; // [B, C, X, Y, Z]
        let h = conv1_out.permute((0, 3, 2, 1, 4))?.contiguous()?; // [B, Y, X, C, Z]
        let conv2_out = self.conv2.forward(&h, train)?; // [B, K, X, C, Z]
        let h = conv2_out.permute((0, 2, 1, 3, 4))?.contiguous()?; // [B, X, K, C, Z]
        let conv3_out = self.conv3.forward(&h, train)?; // [B, 1, K, C, Z]
        let h = conv3_out.permute((0, 4, 3, 2, 1))?.contiguous()?; // [B, Z, C, K, 1]
        let h = ops::gelu(&self.conv4_0.forward(&h, train)?)?; // [B, Z, C, K, 1]
        let h = ops::conv3d(
            &h,
            &self.conv4_3_w,
            Some(&self.conv4_3_b),
            &Conv3dParams::default(),
        )?;
        let conv4_out = h.relu()?; // [B, Z, C, K, 1]
        Ok(Projection2Debug {
            conv1_out,
            conv2_out,
            conv3_out,
            conv4_out,
        })
    }
}
