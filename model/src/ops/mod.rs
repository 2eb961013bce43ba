//! 3D tensor ops that candle 0.11.1 lacks, NCDHW throughout, usable as ordinary differentiable tensors.
//!
//! The public functions here are the API every network uses. Each validates its arguments and returns
//! [`crate::Error::InvalidArgument`] instead of panicking. [`reference`] holds slow, obviously-correct
//! implementations built from candle's own differentiable ops; they are the yardstick for the fast kernels'
//! tests.

pub mod reference;

mod act;
mod conv3d;
#[cfg(target_arch = "x86_64")]
mod conv3d_avx512;
#[cfg(feature = "cuda")]
pub mod cuda;
mod elem;
mod norm;
mod pool;
mod upsample;

use crate::{Error, Result};
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Tensor};

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
        if wd.contains(&0) || xd.contains(&0) {
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
        if let Some(b) = bias
            && b.dims() != [o]
        {
            return Err(Error::invalid(
                "conv3d",
                format!("bias must be [{o}], got {:?}", b.dims()),
            ));
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
    if !has_native_conv(x) {
        return reference::conv3d(x, w, bias, params);
    }
    check_float("conv3d", x, &[Some(w), bias])?;
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let op = conv3d::Conv3dOp::plain(*params);
    Ok(match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op)?,
        None => x.apply_op2(&w, op)?,
    })
}

/// Activation fused into [`conv3d_act`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConvAct {
    /// No activation (plain conv).
    None,
    /// LeakyReLU with this negative slope (as [`leaky_relu`]).
    LeakyRelu(f64),
    /// Exact (erf) GELU (as [`gelu`]).
    Gelu,
}

impl ConvAct {
    fn act(self) -> Option<act::Act> {
        match self {
            Self::None => None,
            Self::LeakyRelu(s) => Some(act::Act::Leaky(s)),
            Self::Gelu => Some(act::Act::Gelu),
        }
    }
}

pub use conv3d::ConvKernel;

/// `act(conv3d(x, w, bias))` for inference: on the CPU the activation is applied to each output block while
/// the conv kernel still has it in cache (no second pass over memory, no second buffer). The result has **no
/// backward** on the CPU (use [`conv3d`] and the activation ops for training); elsewhere it is the two ops.
pub fn conv3d_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv3dParams,
    act: ConvAct,
) -> Result<Tensor> {
    conv3d_with_kernel(x, w, bias, params, act, ConvKernel::Auto)
}

/// [`conv3d_act`] with a forced forward kernel (tests and benchmarks; a kernel that does not apply to the
/// geometry or dtype falls back to the generic path). Inference only when `act` is not `None` or the
/// kernel is not `Auto`.
#[doc(hidden)]
pub fn conv3d_with_kernel(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv3dParams,
    act: ConvAct,
    kernel: ConvKernel,
) -> Result<Tensor> {
    if !x.device().is_cpu() || (act == ConvAct::None && kernel == ConvKernel::Auto) {
        let y = conv3d(x, w, bias, params)?;
        return match act {
            ConvAct::None => Ok(y),
            ConvAct::LeakyRelu(s) => leaky_relu(&y, s),
            ConvAct::Gelu => gelu(&y),
        };
    }
    params.validate(x, w, bias)?;
    check_float("conv3d", x, &[Some(w), bias])?;
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let op = conv3d::Conv3dOp {
        p: *params,
        act: act.act(),
        kernel,
    };
    Ok(match bias {
        Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op)?,
        None => x.apply_op2_no_bwd(&w, &op)?,
    })
}

/// The backward kernels of [`conv3d`] on their own (for benchmarks): `dx` (if `want_dx`) and `dw` (if `want_dw`)
/// from `x`, `w` and the output gradient `dy`, without building an autograd graph.
#[doc(hidden)]
pub fn conv3d_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    params: &Conv3dParams,
    want_dx: bool,
    want_dw: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let out = params.validate(x, w, None)?;
    let (xd, wd) = (x.dims(), w.dims());
    if dy.dims() != [xd[0], wd[0], out[0], out[1], out[2]] {
        return Err(Error::invalid(
            "conv3d_backward",
            format!("gradient {:?} does not match the output", dy.dims()),
        ));
    }
    check_float("conv3d_backward", x, &[Some(w), Some(dy)])?;
    let (x, w, dy) = (x.contiguous()?, w.contiguous()?, dy.contiguous()?);
    let x_dims = [xd[0], xd[1], xd[2], xd[3], xd[4]];
    let w_dims = [wd[0], wd[1], wd[2], wd[3], wd[4]];
    let dx = match want_dx {
        true => Some(dy.apply_op2_no_bwd(&w, &conv3d::Conv3dInputGradOp { p: *params, x_dims })?),
        false => None,
    };
    let dw = match want_dw {
        true => Some(x.apply_op2_no_bwd(&dy, &conv3d::Conv3dWeightGradOp { p: *params, w_dims })?),
        false => None,
    };
    Ok((dx, dw))
}

/// Flops (2 per multiply-add) of `conv3d` on an input `[N, C, D, H, W]` with weight `[O, C/g, kD, kH, kW]`.
pub fn conv3d_flops(x_dims: [usize; 5], w_dims: [usize; 5], params: &Conv3dParams) -> Result<f64> {
    let out = params.output_size(
        [x_dims[2], x_dims[3], x_dims[4]],
        [w_dims[2], w_dims[3], w_dims[4]],
    )?;
    let per_out: usize = w_dims[1..].iter().product();
    Ok(2.0 * (x_dims[0] * w_dims[0] * out.iter().product::<usize>()) as f64 * per_out as f64)
}

/// Stride, padding, output padding, dilation (each per axis D, H, W) and groups of a transposed 3D convolution,
/// with PyTorch's `nn.ConvTranspose3d` meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose3dParams {
    /// Step of the kernel per axis.
    pub stride: [usize; 3],
    /// Implicit zero padding removed from both sides of the output, per axis.
    pub padding: [usize; 3],
    /// Extra size added to one side of the output, per axis (must be smaller than the stride).
    pub output_padding: [usize; 3],
    /// Spacing between kernel taps per axis.
    pub dilation: [usize; 3],
    /// Number of channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose3dParams {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: [0; 3],
            output_padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

impl ConvTranspose3dParams {
    /// Isotropic stride and padding, no output padding, dilation 1, one group (e.g. `iso(2, 0)` for the usual
    /// kernel-2 stride-2 upsampling).
    pub fn iso(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride; 3],
            padding: [padding; 3],
            ..Self::default()
        }
    }

    /// Output spatial size: `(in - 1)·s - 2p + d·(k - 1) + output_padding + 1` per axis.
    pub fn output_size(&self, input: [usize; 3], kernel: [usize; 3]) -> Result<[usize; 3]> {
        let mut out = [0; 3];
        for a in 0..3 {
            let full = (input[a] - 1) * self.stride[a]
                + self.dilation[a] * (kernel[a] - 1)
                + self.output_padding[a]
                + 1;
            if full <= 2 * self.padding[a] {
                return Err(Error::invalid(
                    "conv_transpose3d",
                    format!("axis {a}: padding {} leaves no output", self.padding[a]),
                ));
            }
            out[a] = full - 2 * self.padding[a];
        }
        Ok(out)
    }
}

/// Transposed 3D convolution (PyTorch `conv_transpose3d`): `x: [N, Cin, D, H, W]`,
/// `w: [Cin, Cout/groups, kD, kH, kW]`, `bias: [Cout]`. Differentiable in `x`, `w` and `bias`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: &ConvTranspose3dParams,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    let (xd, wd) = (x.dims(), w.dims());
    if xd.len() != 5 || wd.len() != 5 {
        return Err(Error::invalid(
            OP,
            format!("input {xd:?} and weight {wd:?} must both be rank 5"),
        ));
    }
    let p = params;
    if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
        return Err(Error::invalid(
            OP,
            format!("groups, stride and dilation must be positive: {p:?}"),
        ));
    }
    if xd.contains(&0) || wd.contains(&0) {
        return Err(Error::invalid(
            OP,
            format!("empty input {xd:?} or weight {wd:?}"),
        ));
    }
    if (0..3).any(|a| p.output_padding[a] >= p.stride[a]) {
        return Err(Error::invalid(
            OP,
            format!(
                "output_padding {:?} must be smaller than stride {:?}",
                p.output_padding, p.stride
            ),
        ));
    }
    if xd[1] != wd[0] || xd[1] % p.groups != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "weight [Cin, Cout/groups, ...] = {wd:?} does not fit input channels {} in {} groups",
                xd[1], p.groups
            ),
        ));
    }
    let cout = wd[1] * p.groups;
    if let Some(b) = bias
        && b.dims() != [cout]
    {
        return Err(Error::invalid(
            OP,
            format!("bias must be [{cout}], got {:?}", b.dims()),
        ));
    }
    let out = p.output_size([xd[2], xd[3], xd[4]], [wd[2], wd[3], wd[4]])?;
    let conv = Conv3dParams {
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
    };
    if !has_native_conv(x) {
        return Err(Error::invalid(
            OP,
            "only CPU tensors (and CUDA tensors in a `cudnn` build) are supported",
        ));
    }
    check_float(OP, x, &[Some(w), bias])?;
    let op = conv3d::Conv3dInputGradOp {
        p: conv,
        x_dims: [xd[0], cout, out[0], out[1], out[2]],
    };
    let y = x.contiguous()?.apply_op2(&w.contiguous()?, op)?; // [N, Cout, D', H', W']
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, cout, 1, 1, 1))?)?,
        None => y,
    })
}

/// An op's output together with the op's own backward kernel, for benchmarks (`logonet bench ops`): calling
/// [`OpRun::backward`] with an upstream gradient `g` runs exactly the kernels candle's autograd runs for this
/// op (what PyTorch's `y.backward(g)` runs), without candle's gradient bookkeeping around them.
#[doc(hidden)]
pub struct OpRun {
    /// The op's output (part of the autograd graph like the public function's result).
    pub y: Tensor,
    backward: Option<BackwardFn>,
}

type BackwardFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Vec<Option<Tensor>>>>;

impl OpRun {
    /// The gradients of the op's inputs (input first, then parameters where the op has them) for the
    /// upstream gradient `g`.
    pub fn backward(&self, g: &Tensor) -> Result<Vec<Tensor>> {
        let f = self.backward.as_ref().ok_or_else(|| {
            Error::invalid("OpRun::backward", "no fused backward kernel on this device")
        })?;
        Ok(f(g)?.into_iter().flatten().collect())
    }
    fn plain(y: Tensor) -> Self {
        Self { y, backward: None }
    }
    fn op1<O: CustomOp1 + Clone + Send + Sync + 'static>(x: &Tensor, op: O) -> Result<Self> {
        let x = x.contiguous()?;
        let y = x.apply_op1(op.clone())?;
        let y2 = y.clone();
        Ok(Self {
            y,
            backward: Some(Box::new(move |g| Ok(vec![op.bwd(&x, &y2, g)?]))),
        })
    }
    fn op2<O: CustomOp2 + Clone + Send + Sync + 'static>(
        x: &Tensor,
        a: &Tensor,
        op: O,
    ) -> Result<Self> {
        let (x, a) = (x.contiguous()?, a.contiguous()?);
        let y = x.apply_op2(&a, op.clone())?;
        let y2 = y.clone();
        Ok(Self {
            y,
            backward: Some(Box::new(move |g| {
                let (d1, d2) = op.bwd(&x, &a, &y2, g)?;
                Ok(vec![d1, d2])
            })),
        })
    }
    fn op3<O: CustomOp3 + Clone + Send + Sync + 'static>(
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        op: O,
    ) -> Result<Self> {
        let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
        let y = x.apply_op3(&a, &b, op.clone())?;
        let y2 = y.clone();
        Ok(Self {
            y,
            backward: Some(Box::new(move |g| {
                let (d1, d2, d3) = op.bwd(&x, &a, &b, &y2, g)?;
                Ok(vec![d1, d2, d3])
            })),
        })
    }
}

fn pool3d(
    op: &'static str,
    max: bool,
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<OpRun> {
    check_rank5(op, x)?;
    if kernel.contains(&0) || stride.contains(&0) {
        return Err(Error::invalid(
            op,
            format!("kernel {kernel:?} and stride {stride:?} must be positive"),
        ));
    }
    let d = x.dims();
    for a in 0..3 {
        if 2 * padding[a] > kernel[a] {
            return Err(Error::invalid(
                op,
                format!("padding {padding:?} must be at most half the kernel {kernel:?}"),
            ));
        }
        if d[2 + a] + 2 * padding[a] < kernel[a] {
            return Err(Error::invalid(
                op,
                format!("input {d:?} is smaller than the kernel {kernel:?}"),
            ));
        }
    }
    if !x.device().is_cpu() {
        return Err(Error::invalid(op, "only CPU tensors are supported so far"));
    }
    check_float(op, x, &[])?;
    OpRun::op1(
        x,
        pool::PoolOp(pool::Pool {
            max,
            k: kernel,
            s: stride,
            p: padding,
        }),
    )
}

/// 3D max pooling of `[N, C, D, H, W]` (`ceil_mode=False`, implicit −∞ padding). Differentiable (the gradient
/// goes to the first maximum of each window, as in PyTorch).
pub fn max_pool3d(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<Tensor> {
    Ok(max_pool3d_run(x, kernel, stride, padding)?.y)
}

/// [`max_pool3d`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn max_pool3d_run(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<OpRun> {
    pool3d("max_pool3d", true, x, kernel, stride, padding)
}

/// 3D average pooling of `[N, C, D, H, W]` (`ceil_mode=False`, `count_include_pad=True`). Differentiable.
pub fn avg_pool3d(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<Tensor> {
    Ok(avg_pool3d_run(x, kernel, stride, padding)?.y)
}

/// [`avg_pool3d`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn avg_pool3d_run(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<OpRun> {
    pool3d("avg_pool3d", false, x, kernel, stride, padding)
}

/// Trilinear ×2 upsampling of `[N, C, D, H, W]` with `align_corners=False`, exactly as PyTorch's
/// `nn.Upsample(scale_factor=2, mode="trilinear")`. Differentiable.
pub fn upsample_trilinear2x(x: &Tensor) -> Result<Tensor> {
    Ok(upsample_trilinear2x_run(x)?.y)
}

/// [`upsample_trilinear2x`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn upsample_trilinear2x_run(x: &Tensor) -> Result<OpRun> {
    check_rank5("upsample_trilinear2x", x)?;
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::upsample_trilinear2x(x)?));
    }
    check_float("upsample_trilinear2x", x, &[])?;
    OpRun::op1(x, upsample::UpsampleOp(upsample::Mode::Trilinear))
}

/// Nearest-neighbour ×2 upsampling of `[N, C, D, H, W]`. Differentiable.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    Ok(upsample_nearest2x_run(x)?.y)
}

/// [`upsample_nearest2x`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn upsample_nearest2x_run(x: &Tensor) -> Result<OpRun> {
    check_rank5("upsample_nearest2x", x)?;
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::upsample_nearest2x(x)?));
    }
    check_float("upsample_nearest2x", x, &[])?;
    OpRun::op1(x, upsample::UpsampleOp(upsample::Mode::Nearest))
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
    Ok(batch_norm_eval_run(x, weight, bias, running_mean, running_var, eps)?.y)
}

/// [`batch_norm_eval`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn batch_norm_eval_run(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<OpRun> {
    check_channels(
        "batch_norm_eval",
        x,
        &[Some(running_mean), Some(running_var), weight, bias],
    )?;
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::batch_norm_eval(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            eps,
        )?));
    }
    check_float(
        "batch_norm_eval",
        x,
        &[Some(running_mean), Some(running_var), weight, bias],
    )?;
    let (n, c, d, h, w) = x.dims5()?;
    let view = norm::View {
        outer: n,
        c,
        inner: d * h * w,
        mode: norm::Mode::Batch,
    };
    let stats = Tensor::stack(&[running_mean.detach(), running_var.detach()], 0)?;
    fused_norm(x, view, stats, weight, bias, eps, false)
}

/// BatchNorm3d in training mode on `[N, C, D, H, W]`: normalises with the batch statistics (biased variance).
/// Returns `(y, batch_mean [C], batch_var_unbiased [C])`; the caller updates its running statistics with
/// momentum (`rm = (1-m)·rm + m·mean`, `rv = (1-m)·rv + m·var_unbiased`), as PyTorch does. Differentiable
/// through the batch statistics. Needs more than one value per channel (`N·D·H·W > 1`), as PyTorch.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (run, mean, var) = batch_norm_train_run(x, weight, bias, eps)?;
    Ok((run.y, mean, var))
}

/// [`batch_norm_train`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn batch_norm_train_run(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(OpRun, Tensor, Tensor)> {
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
    if !x.device().is_cpu() {
        let (y, m, v) = reference::batch_norm_train(x, weight, bias, eps)?;
        return Ok((OpRun::plain(y), m, v));
    }
    check_float("batch_norm_train", x, &[weight, bias])?;
    let c = x.dims()[1];
    let view = norm::View {
        outer: n,
        c,
        inner: d * h * w,
        mode: norm::Mode::Batch,
    };
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&norm::StatsOp { view })?; // [2, C]
    let run = fused_norm(&x, view, stats.clone(), weight, bias, eps, true)?;
    let m = (n * d * h * w) as f64;
    let var_unbiased = (stats.get(1)? * (m / (m - 1.0)))?;
    Ok((run, stats.get(0)?, var_unbiased))
}

/// InstanceNorm3d on `[N, C, D, H, W]` (statistics per sample and channel, biased variance), with optional
/// affine `weight`/`bias` `[C]`. Differentiable. Needs more than one spatial element (`D·H·W > 1`), as
/// PyTorch.
pub fn instance_norm3d(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    Ok(instance_norm3d_run(x, weight, bias, eps)?.y)
}

/// [`instance_norm3d`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn instance_norm3d_run(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<OpRun> {
    check_channels("instance_norm3d", x, &[weight, bias])?;
    let (n, c, d, h, w) = x.dims5()?;
    if d * h * w < 2 {
        return Err(Error::invalid(
            "instance_norm3d",
            format!(
                "expected more than 1 spatial element per channel, got input {:?}",
                x.dims()
            ),
        ));
    }
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::instance_norm3d(
            x, weight, bias, eps,
        )?));
    }
    check_float("instance_norm3d", x, &[weight, bias])?;
    let view = norm::View {
        outer: n,
        c,
        inner: d * h * w,
        mode: norm::Mode::Instance,
    };
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&norm::StatsOp { view })?;
    fused_norm(&x, view, stats, weight, bias, eps, true)
}

/// LayerNorm over the channel axis of `[N, C, D, H, W]` (what `nn.LayerNorm(C)` does on tokens
/// `[N, DHW, C]`). Differentiable.
pub fn layer_norm_channels(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(layer_norm_channels_run(x, weight, bias, eps)?.y)
}

/// [`layer_norm_channels`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn layer_norm_channels_run(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<OpRun> {
    check_channels("layer_norm_channels", x, &[Some(weight), Some(bias)])?;
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::layer_norm_channels(
            x, weight, bias, eps,
        )?));
    }
    check_float("layer_norm_channels", x, &[Some(weight), Some(bias)])?;
    let (n, c, d, h, w) = x.dims5()?;
    let view = norm::View {
        outer: n,
        c,
        inner: d * h * w,
        mode: norm::Mode::Layer,
    };
    let wb = Tensor::stack(&[weight, bias], 0)?; // [2, C]
    OpRun::op2(x, &wb, norm::LayerNormOp { view, eps })
}

/// LayerNorm over the last axis of `[..., C]` tokens, `nn.LayerNorm(C)`. Differentiable.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(layer_norm_last_run(x, weight, bias, eps)?.y)
}

/// [`layer_norm_last`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn layer_norm_last_run(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<OpRun> {
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
    if x.elem_count() == 0 {
        return Err(Error::invalid(
            "layer_norm_last",
            format!("empty input {:?}", x.dims()),
        ));
    }
    if !x.device().is_cpu() {
        return Ok(OpRun::plain(reference::layer_norm_last(
            x, weight, bias, eps,
        )?));
    }
    check_float("layer_norm_last", x, &[Some(weight), Some(bias)])?;
    let view = norm::View {
        outer: x.elem_count() / c,
        c,
        inner: 1,
        mode: norm::Mode::Layer,
    };
    let wb = Tensor::stack(&[weight, bias], 0)?; // [2, C]
    OpRun::op2(x, &wb, norm::LayerNormOp { view, eps })
}

/// Applies the fused normalise + affine op (Batch/Instance views) with statistics `stats [2, groups]`.
fn fused_norm(
    x: &Tensor,
    view: norm::View,
    stats: Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    batch_stats: bool,
) -> Result<OpRun> {
    let c = view.c;
    let w = match weight {
        Some(w) => w.clone(),
        None => Tensor::ones(c, x.dtype(), x.device())?,
    };
    let b = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(c, x.dtype(), x.device())?,
    };
    let wb = Tensor::stack(&[&w, &b], 0)?; // [2, C]
    OpRun::op3(
        x,
        &stats,
        &wb,
        norm::NormOp {
            view,
            eps,
            batch_stats,
        },
    )
}

/// Exact GELU, `x·Φ(x)` with the error function (PyTorch `nn.GELU()`). Differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(gelu_run(x)?.y)
}

/// [`gelu`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn gelu_run(x: &Tensor) -> Result<OpRun> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(OpRun::plain(x.gelu_erf()?));
    }
    OpRun::op1(x, act::ActOp(act::Act::Gelu))
}

/// LeakyReLU with `negative_slope` (PyTorch default 0.01). Differentiable.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    Ok(leaky_relu_run(x, negative_slope)?.y)
}

/// [`leaky_relu`] with a handle on its backward kernel (benchmarks).
#[doc(hidden)]
pub fn leaky_relu_run(x: &Tensor, negative_slope: f64) -> Result<OpRun> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(OpRun::plain(reference::leaky_relu(x, negative_slope)?));
    }
    OpRun::op1(x, act::ActOp(act::Act::Leaky(negative_slope)))
}

/// Whether the conv custom ops have a kernel for `x`'s device: always on the CPU, and on CUDA in a build with
/// the `cudnn` feature (cuDNN N-d convolutions, [`cuda`]).
fn has_native_conv(x: &Tensor) -> bool {
    x.device().is_cpu() || (cfg!(feature = "cudnn") && x.device().is_cuda())
}

/// Fast kernels run on CPU f32/f64 tensors; all tensors must share the dtype of `x`.
fn check_float(op: &'static str, x: &Tensor, others: &[Option<&Tensor>]) -> Result<()> {
    let dt = x.dtype();
    if !matches!(dt, DType::F32 | DType::F64) {
        return Err(Error::invalid(
            op,
            format!("only f32 and f64 tensors are supported, got {dt:?}"),
        ));
    }
    for t in others.iter().flatten() {
        if t.dtype() != dt {
            return Err(Error::invalid(
                op,
                format!("dtype mismatch: input {dt:?}, parameter {:?}", t.dtype()),
            ));
        }
        if !t.device().same_device(x.device()) {
            return Err(Error::invalid(
                op,
                "input and parameters are on different devices",
            ));
        }
    }
    Ok(())
}

fn check_rank5(op: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 5 || x.dims().contains(&0) {
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
