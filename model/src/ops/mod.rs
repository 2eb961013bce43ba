//! 3D tensor ops that candle 0.11.1 lacks, NCDHW throughout, usable as ordinary differentiable tensors.
//!
//! The public functions here are the API every network uses. Each validates its arguments and returns
//! [`crate::Error::InvalidArgument`] instead of panicking. [`reference`] holds slow, obviously-correct
//! implementations built from candle's own differentiable ops; they are the yardstick for the fast kernels'
//! tests.

pub mod reference;

use crate::{Error, Result};
use candle_core::Tensor;

/// Stride, padding, dilation (each per axis: depth, height, width) and groups of a 3D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv3dParams {
    /// Step of the kernel per axis (D, H, W).
    pub stride: [usize; 3],
    /// Zero padding added on both sides per axis (D, H, W).
    pub padding: [usize; 3],
    /// Spacing between kernel taps per axis (D, H, W).
    pub dilation: [usize; 3],
    /// Number of channel groups (1 = dense, `in_channels` = depthwise).
    pub groups: usize,
}

impl Default for Conv3dParams {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

impl Conv3dParams {
    /// Isotropic stride `s`, padding `p`, dilation `d` and `groups`.
    pub fn iso(stride: usize, padding: usize, dilation: usize, groups: usize) -> Self {
        Self {
            stride: [stride; 3],
            padding: [padding; 3],
            dilation: [dilation; 3],
            groups,
        }
    }

    /// Output spatial size for an input of `input` (D, H, W) and kernel `kernel` (kd, kh, kw).
    pub fn output_size(&self, input: [usize; 3], kernel: [usize; 3]) -> Result<[usize; 3]> {
        let mut out = [0; 3];
        for a in 0..3 {
            let eff = self.dilation[a] * (kernel[a] - 1) + 1;
            let padded = input[a] + 2 * self.padding[a];
            if padded < eff {
                return Err(Error::invalid(
                    "conv3d",
                    format!(
                        "axis {a}: padded input {padded} is smaller than the dilated kernel {eff}"
                    ),
                ));
            }
            out[a] = (padded - eff) / self.stride[a] + 1;
        }
        Ok(out)
    }

    /// Checks the parameters against an input `[N, C, D, H, W]` and weight `[O, C/groups, kd, kh, kw]`.
    pub fn validate(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<[usize; 3]> {
        let (xd, wd) = (x.dims(), w.dims());
        if xd.len() != 5 {
            return Err(Error::invalid(
                "conv3d",
                format!("input must be [N, C, D, H, W], got {xd:?}"),
            ));
        }
        if wd.len() != 5 {
            return Err(Error::invalid(
                "conv3d",
                format!("weight must be [O, C/groups, kD, kH, kW], got {wd:?}"),
            ));
        }
        if self.groups == 0 || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(Error::invalid(
                "conv3d",
                format!("groups, stride and dilation must be positive: {self:?}"),
            ));
        }
        if wd.iter().any(|&d| d == 0) || xd.iter().any(|&d| d == 0) {
            return Err(Error::invalid(
                "conv3d",
                format!("empty input {xd:?} or weight {wd:?}"),
            ));
        }
        let (c, o) = (xd[1], wd[0]);
        if c % self.groups != 0 || o % self.groups != 0 {
            return Err(Error::invalid(
                "conv3d",
                format!(
                    "groups {} must divide input channels {c} and output channels {o}",
                    self.groups
                ),
            ));
        }
        if wd[1] * self.groups != c {
            return Err(Error::invalid(
                "conv3d",
                format!(
                    "weight expects {} input channels per group, input has {c} channels in {} groups",
                    wd[1], self.groups
                ),
            ));
        }
        if let Some(b) = bias {
            if b.dims() != [o] {
                return Err(Error::invalid(
                    "conv3d",
                    format!("bias must be [{o}], got {:?}", b.dims()),
                ));
            }
        }
        self.output_size([xd[2], xd[3], xd[4]], [wd[2], wd[3], wd[4]])
    }
}

/// 3D convolution (cross-correlation, as PyTorch), `x: [N, C, D, H, W]`, `w: [O, C/groups, kD, kH, kW]`,
/// `bias: [O]` → `[N, O, D', H', W']`. Differentiable in `x`, `w` and `bias`.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv3dParams,
) -> Result<Tensor> {
    params.validate(x, w, bias)?;
    reference::conv3d(x, w, bias, params)
}

/// Trilinear ×2 upsampling of `[N, C, D, H, W]` with `align_corners=False`, exactly as PyTorch's
/// `nn.Upsample(scale_factor=2, mode="trilinear")`. Differentiable.
pub fn upsample_trilinear2x(x: &Tensor) -> Result<Tensor> {
    check_rank5("upsample_trilinear2x", x)?;
    reference::upsample_trilinear2x(x)
}

/// Nearest-neighbour ×2 upsampling of `[N, C, D, H, W]`. Differentiable.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    check_rank5("upsample_nearest2x", x)?;
    reference::upsample_nearest2x(x)
}

/// BatchNorm3d in evaluation mode: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`, per channel
/// of `[N, C, D, H, W]`. Differentiable in `x`, `weight`, `bias`.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    check_channels(
        "batch_norm_eval",
        x,
        &[Some(running_mean), Some(running_var), weight, bias],
    )?;
    reference::batch_norm_eval(x, weight, bias, running_mean, running_var, eps)
}

/// BatchNorm3d in training mode on `[N, C, D, H, W]`: normalises with the batch statistics (biased variance).
/// Returns `(y, batch_mean [C], batch_var_unbiased [C])`; the caller updates its running statistics with
/// momentum (`rm = (1-m)·rm + m·mean`, `rv = (1-m)·rv + m·var_unbiased`), as PyTorch does. Differentiable
/// through the batch statistics.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    check_channels("batch_norm_train", x, &[weight, bias])?;
    let (n, _c, d, h, w) = x.dims5()?;
    if n * d * h * w < 2 {
        return Err(Error::invalid(
            "batch_norm_train",
            format!(
                "expected more than 1 value per channel when training, got input {:?}",
                x.dims()
            ),
        ));
    }
    reference::batch_norm_train(x, weight, bias, eps)
}

/// InstanceNorm3d on `[N, C, D, H, W]` (statistics per sample and channel, biased variance), with optional
/// affine `weight`/`bias` `[C]`. Differentiable.
pub fn instance_norm3d(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_channels("instance_norm3d", x, &[weight, bias])?;
    reference::instance_norm3d(x, weight, bias, eps)
}

/// LayerNorm over the channel axis of `[N, C, D, H, W]` (what `nn.LayerNorm(C)` does on tokens
/// `[N, DHW, C]`). Differentiable.
pub fn layer_norm_channels(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    check_channels("layer_norm_channels", x, &[Some(weight), Some(bias)])?;
    reference::layer_norm_channels(x, weight, bias, eps)
}

/// LayerNorm over the last axis of `[..., C]` tokens, `nn.LayerNorm(C)`. Differentiable.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let c = *x
        .dims()
        .last()
        .ok_or_else(|| Error::invalid("layer_norm_last", "scalar input"))?;
    for t in [weight, bias] {
        if t.dims() != [c] {
            return Err(Error::invalid(
                "layer_norm_last",
                format!("weight/bias must be [{c}], got {:?}", t.dims()),
            ));
        }
    }
    reference::layer_norm_last(x, weight, bias, eps)
}

/// Exact GELU, `x·Φ(x)` with the error function (PyTorch `nn.GELU()`). Differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// LeakyReLU with `negative_slope` (PyTorch default 0.01). Differentiable.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    reference::leaky_relu(x, negative_slope)
}

fn check_rank5(op: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 5 || x.dims().iter().any(|&d| d == 0) {
        return Err(Error::invalid(
            op,
            format!(
                "input must be a non-empty [N, C, D, H, W], got {:?}",
                x.dims()
            ),
        ));
    }
    Ok(())
}

fn check_channels(op: &'static str, x: &Tensor, per_channel: &[Option<&Tensor>]) -> Result<()> {
    check_rank5(op, x)?;
    let c = x.dims()[1];
    for t in per_channel.iter().flatten() {
        if t.dims() != [c] {
            return Err(Error::invalid(
                op,
                format!("per-channel tensor must be [{c}], got {:?}", t.dims()),
            ));
        }
    }
    Ok(())
}
