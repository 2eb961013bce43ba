//! Building blocks shared by the networks: `nn.Conv3d`, `nn.BatchNorm3d` (running statistics kept as
//! variables under their PyTorch names, train/eval), `nn.LayerNorm` over channels, and the
//! Conv → BN → LeakyReLU pairs (`CBR`) the decoders are made of.
//!
//! Every layer takes its weights from a [`VarBuilder`] under the exact PyTorch state-dict names and can report
//! its multiply-accumulate count to a [`MacCounter`] for a given input shape (without running).

use super::flops::{MacCounter, OpKind};
use crate::ops::{self, Conv3dParams};
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder};

/// Name suffixes of the BatchNorm buffers that live in the `VarMap` next to the parameters but are not
/// trained: optimizers and parameter counts skip every variable whose name ends in one of these.
pub const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// True if `name` is a trainable parameter, false for a BatchNorm buffer (see [`BUFFER_SUFFIXES`]).
pub fn is_trainable(name: &str) -> bool {
    !BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// `nn.Conv3d` with PyTorch's default initialisation (`U(-1/√fan_in, 1/√fan_in)` for weight and bias).
#[derive(Clone, Debug)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv3dParams,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
}

impl Conv3d {
    /// A cubic-kernel convolution `in_channels → out_channels` with kernel `kernel`³ and `params`;
    /// weights `{vb}.weight` `[O, I/groups, k, k, k]` and, with `bias`, `{vb}.bias` `[O]`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv3dParams,
        bias: bool,
    ) -> Result<Self> {
        if params.groups == 0
            || !in_channels.is_multiple_of(params.groups)
            || !out_channels.is_multiple_of(params.groups)
        {
            return Err(Error::invalid(
                "Conv3d::new",
                format!(
                    "groups {} must divide {in_channels} and {out_channels}",
                    params.groups
                ),
            ));
        }
        let fan_in = (in_channels / params.groups) * kernel * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints(
            (
                out_channels,
                in_channels / params.groups,
                kernel,
                kernel,
                kernel,
            ),
            "weight",
            init,
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(out_channels, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            params,
            in_channels,
            out_channels,
            kernel,
        })
    }

    #[allow(clippy::too_many_arguments)]
    /// Dense or grouped convolution with isotropic `stride`, `padding`, `dilation`, with bias.
    pub fn iso(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Self> {
        Self::new(
            vb,
            in_channels,
            out_channels,
            kernel,
            Conv3dParams::iso(stride, padding, dilation, groups),
            true,
        )
    }

    /// `[N, I, D, H, W]` → `[N, O, D', H', W']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv3d(x, &self.weight, self.bias.as_ref(), &self.params)
    }

    /// The weight `[O, I/groups, k, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[O]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation and groups.
    pub fn params(&self) -> &Conv3dParams {
        &self.params
    }

    /// Output shape for an input shape `[N, I, D, H, W]`, recording the MACs in `counter`.
    pub fn macs(&self, counter: &mut MacCounter, input: [usize; 5]) -> Result<[usize; 5]> {
        if input[1] != self.in_channels {
            return Err(Error::invalid(
                "Conv3d::macs",
                format!(
                    "expected {} input channels, got {:?}",
                    self.in_channels, input
                ),
            ));
        }
        let k = self.kernel;
        let [d, h, w] = self
            .params
            .output_size([input[2], input[3], input[4]], [k, k, k])?;
        let out = [input[0], self.out_channels, d, h, w];
        let out_elems = out.iter().product::<usize>() as u64;
        let kind = if self.params.groups > 1 && self.params.groups == self.in_channels {
            OpKind::DepthwiseConv {
                kernel: k,
                dilation: self.params.dilation[0],
            }
        } else {
            OpKind::DenseConv {
                kernel: k,
                stride: self.params.stride[0],
            }
        };
        let per_out = (self.in_channels / self.params.groups * k * k * k) as u64;
        counter.add_conv(
            kind,
            out_elems * per_out,
            if self.bias.is_some() { out_elems } else { 0 },
        );
        Ok(out)
    }
}

/// `nn.BatchNorm3d(C)` (eps 1e-5, momentum 0.1, affine, tracked statistics). The running statistics are
/// variables of the `VarBuilder` (`running_mean`, `running_var`, and the I64 scalar `num_batches_tracked`),
/// so with a `VarMap`-backed builder they are saved and loaded with the parameters; a train-mode forward
/// updates them in place exactly as PyTorch does.
#[derive(Clone, Debug)]
pub struct BatchNorm3d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm3d {
    /// PyTorch's default BatchNorm3d over `channels` (weight 1, bias 0, mean 0, var 1).
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let running_mean =
            Var::from_tensor(&vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?;
        let nbt =
            vb.get_with_hints_dtype((), "num_batches_tracked", Init::Const(0.0), DType::I64)?;
        let num_batches_tracked = Var::from_tensor(&nbt)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Eval mode: running statistics. Train mode: batch statistics (biased variance), then
    /// `rm ← 0.9·rm + 0.1·mean`, `rv ← 0.9·rv + 0.1·var_unbiased`, `num_batches_tracked += 1`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return ops::batch_norm_eval(
                x,
                Some(&self.weight),
                Some(&self.bias),
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                self.eps,
            );
        }
        let (y, mean, var_unbiased) =
            ops::batch_norm_train(x, Some(&self.weight), Some(&self.bias), self.eps)?;
        let m = self.momentum;
        let update = |var: &Var, batch: &Tensor| -> Result<()> {
            let old = var.as_tensor().detach();
            let batch = batch.detach().to_dtype(old.dtype())?;
            let new = ((old * (1.0 - m))? + (batch * m)?)?;
            var.set(&new)?;
            Ok(())
        };
        update(&self.running_mean, &mean)?;
        update(&self.running_var, &var_unbiased)?;
        let n = self.num_batches_tracked.as_tensor().detach();
        let one = Tensor::ones((), n.dtype(), n.device())?;
        self.num_batches_tracked.set(&(n + one)?)?;
        Ok(y)
    }

    /// The running mean `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running variance `[C]`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// The affine weight (gamma) `[C]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The affine bias (beta) `[C]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The epsilon added to the variance (1e-5).
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Records the thop-convention cost of a normalisation (4 ops per element when affine).
    pub fn macs(&self, counter: &mut MacCounter, input: [usize; 5]) -> [usize; 5] {
        counter.add_norm(input.iter().product::<usize>() as u64, true);
        input
    }
}

/// `nn.LayerNorm(C)` applied to tokens `[B, N, C]`, computed here on the equivalent `[B, C, D, H, W]`.
#[derive(Clone, Debug)]
pub struct LayerNormChannels {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNormChannels {
    /// `nn.LayerNorm(channels)` (eps 1e-5, weight 1, bias 0).
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            eps: 1e-5,
        })
    }

    /// `[B, C, D, H, W]` → same, normalised over C.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm_channels(x, &self.weight, &self.bias, self.eps)
    }

    /// `(weight, bias, eps)`.
    pub fn parts(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
    }

    /// Records the thop-convention cost (4 ops per element, affine).
    pub fn macs(&self, counter: &mut MacCounter, input: [usize; 5]) -> [usize; 5] {
        counter.add_norm(input.iter().product::<usize>() as u64, true);
        input
    }
}

/// Two `Conv3³ → BatchNorm3d → LeakyReLU(0.01)` in an `nn.Sequential` (indices `.0 .1 .2 .3 .4 .5`),
/// optionally followed by `nn.Upsample(×2, trilinear)` at `.6`.
#[derive(Clone, Debug)]
pub struct DoubleCbr {
    pub(super) conv_a: Conv3d,
    pub(super) bn_a: BatchNorm3d,
    pub(super) conv_b: Conv3d,
    pub(super) bn_b: BatchNorm3d,
    pub(super) upsample: bool,
}

impl DoubleCbr {
    /// `CBR(in → mid) → CBR(mid → out)` (3³ convs, padding 1), with a trailing ×2 upsampling if `upsample`.
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        mid_c: usize,
        out_c: usize,
        upsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv_a: Conv3d::iso(vb.pp("0"), in_c, mid_c, 3, 1, 1, 1, 1)?,
            bn_a: BatchNorm3d::new(vb.pp("1"), mid_c)?,
            conv_b: Conv3d::iso(vb.pp("3"), mid_c, out_c, 3, 1, 1, 1, 1)?,
            bn_b: BatchNorm3d::new(vb.pp("4"), out_c)?,
            upsample,
        })
    }

    /// `[N, in, D, H, W]` → `[N, out, D, H, W]` (or `[N, out, 2D, 2H, 2W]` with upsampling).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv_a.forward(x)?; // [N, mid, D, H, W]
        let x = ops::leaky_relu(&self.bn_a.forward_t(&x, train)?, 0.01)?;
        let x = self.conv_b.forward(&x)?; // [N, out, D, H, W]
        let x = ops::leaky_relu(&self.bn_b.forward_t(&x, train)?, 0.01)?;
        if self.upsample {
            ops::upsample_trilinear2x(&x)
        } else {
            Ok(x)
        } // [N, out, 2D, 2H, 2W]
    }

    /// Output shape for `input`, recording MACs (trilinear upsampling counts 0, as in thop).
    pub fn macs(&self, counter: &mut MacCounter, input: [usize; 5]) -> Result<[usize; 5]> {
        let s = self.conv_a.macs(counter, input)?;
        let s = self.bn_a.macs(counter, s);
        let s = self.conv_b.macs(counter, s)?;
        let s = self.bn_b.macs(counter, s);
        if self.upsample {
            Ok([s[0], s[1], 2 * s[2], 2 * s[3], 2 * s[4]])
        } else {
            Ok(s)
        }
    }
}
