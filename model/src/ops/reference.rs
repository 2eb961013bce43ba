//! Reference implementations of the 3D ops, composed from candle's own differentiable ops.
//!
//! Slow but simple: they are what the fast kernels are tested against, and they get their gradients from
//! candle's autograd. Arguments are assumed validated by the callers in [`super`].

use super::Conv3dParams;
use crate::{Error, Result};
use candle_core::{D, DType, Tensor};

/// conv3d as a sum over kernel depth of candle conv2d calls with the output depth folded into the batch.
/// Needs isotropic H/W stride, padding and dilation (a candle conv2d limit); any depth parameters.
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv3dParams) -> Result<Tensor> {
    let (n, c, d, h, wd) = x.dims5()?;
    let (o, _cg, kd, _kh, _kw) = w.dims5()?;
    if p.stride[1] != p.stride[2] || p.padding[1] != p.padding[2] || p.dilation[1] != p.dilation[2]
    {
        return Err(Error::invalid(
            "reference::conv3d",
            "needs equal H and W stride/padding/dilation",
        ));
    }
    let [od, _, _] = p.output_size([d, h, wd], [kd, w.dims()[3], w.dims()[4]])?;
    // Pad depth with zeros: [N, C, D + 2pd, H, W].
    let xp = if p.padding[0] > 0 {
        let z = Tensor::zeros((n, c, p.padding[0], h, wd), x.dtype(), x.device())?;
        Tensor::cat(&[&z, x, &z], 2)?
    } else {
        x.clone()
    };
    let mut acc: Option<Tensor> = None;
    for t in 0..kd {
        // Input depths used by tap t for every output depth: od*s + t*dil.
        let idx: Vec<u32> = (0..od)
            .map(|q| (q * p.stride[0] + t * p.dilation[0]) as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let xs = xp.index_select(&idx, 2)?; // [N, C, D', H, W]
        let xs = xs.permute((0, 2, 1, 3, 4))?.reshape((n * od, c, h, wd))?; // [N*D', C, H, W]
        let wt = w.narrow(2, t, 1)?.squeeze(2)?.contiguous()?; // [O, C/g, kh, kw]
        let y = xs.conv2d(&wt, p.padding[1], p.stride[1], p.dilation[1], p.groups)?; // [N*D', O, H', W']
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let y = acc.ok_or_else(|| Error::invalid("reference::conv3d", "empty kernel"))?;
    let (_, _, oh, ow) = y.dims4()?;
    let y = y
        .reshape((n, od, o, oh, ow))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?; // [N, O, D', H', W']
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1, 1))?)?,
        None => y,
    })
}

/// Linear ×2 upsampling along one axis with `align_corners=False`:
/// `out[2i] = 0.25·x[i-1] + 0.75·x[i]`, `out[2i+1] = 0.75·x[i] + 0.25·x[i+1]`, indices clamped at the borders.
fn upsample_linear2x_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    let n = x.dims()[axis];
    let prev = if n > 1 {
        Tensor::cat(&[&x.narrow(axis, 0, 1)?, &x.narrow(axis, 0, n - 1)?], axis)?
    } else {
        x.clone()
    };
    let next = if n > 1 {
        Tensor::cat(
            &[&x.narrow(axis, 1, n - 1)?, &x.narrow(axis, n - 1, 1)?],
            axis,
        )?
    } else {
        x.clone()
    };
    let even = ((prev * 0.25)? + (x * 0.75)?)?;
    let odd = ((x * 0.75)? + (next * 0.25)?)?;
    let stacked = Tensor::stack(&[&even, &odd], axis + 1)?; // [..., n, 2, ...]
    let mut dims = x.dims().to_vec();
    dims[axis] *= 2;
    Ok(stacked.reshape(dims)?)
}

/// Trilinear ×2, `align_corners=False`, as three separable linear passes.
pub fn upsample_trilinear2x(x: &Tensor) -> Result<Tensor> {
    let y = upsample_linear2x_axis(x, 2)?;
    let y = upsample_linear2x_axis(&y, 3)?;
    upsample_linear2x_axis(&y, 4)
}

/// Nearest ×2 by broadcasting: `[N,C,D,H,W] → [N,C,D,2,H,2,W,2] → [N,C,2D,2H,2W]`.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    let y = x
        .reshape(vec![n * c, d, 1, h, 1, w, 1])?
        .broadcast_as(vec![n * c, d, 2, h, 2, w, 2])?
        .contiguous()?
        .reshape((n, c, 2 * d, 2 * h, 2 * w))?;
    Ok(y)
}

fn per_channel(t: &Tensor) -> Result<Tensor> {
    Ok(t.reshape((1, t.elem_count(), 1, 1, 1))?)
}

/// Eval-mode BatchNorm with running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let inv = (running_var + eps)?.sqrt()?.recip()?;
    let mut y = x
        .broadcast_sub(&per_channel(running_mean)?)?
        .broadcast_mul(&per_channel(&inv)?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&per_channel(w)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&per_channel(b)?)?;
    }
    Ok(y)
}

/// Train-mode BatchNorm: normalise with batch mean and biased variance; also returns mean and unbiased var.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, d, h, w) = x.dims5()?;
    let m = (n * d * h * w) as f64;
    let xc = x.transpose(0, 1)?.reshape((c, n * d * h * w))?; // [C, M]
    let mean = xc.mean_keepdim(1)?; // [C, 1]
    let centered = xc.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?; // biased
    let inv = (var.clone() + eps)?.sqrt()?.recip()?;
    let mean = mean.flatten_all()?;
    let var = var.flatten_all()?;
    let inv = inv.flatten_all()?;
    let mut y = x
        .broadcast_sub(&per_channel(&mean)?)?
        .broadcast_mul(&per_channel(&inv)?)?;
    if let Some(wt) = weight {
        y = y.broadcast_mul(&per_channel(wt)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&per_channel(b)?)?;
    }
    let var_unbiased = (var * (m / (m - 1.0).max(1.0)))?;
    Ok((y, mean, var_unbiased))
}

/// InstanceNorm3d: statistics over D, H, W per (sample, channel).
pub fn instance_norm3d(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    let xf = x.reshape((n, c, d * h * w))?;
    let mean = xf.mean_keepdim(2)?;
    let centered = xf.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(2)?;
    let mut y = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, d, h, w))?;
    if let Some(wt) = weight {
        y = y.broadcast_mul(&per_channel(wt)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&per_channel(b)?)?;
    }
    Ok(y)
}

/// LayerNorm over channels of NCDHW.
pub fn layer_norm_channels(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let y = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(y.broadcast_mul(&per_channel(weight)?)?
        .broadcast_add(&per_channel(bias)?)?)
}

/// LayerNorm over the last axis.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let y = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(y.broadcast_mul(weight)?.broadcast_add(bias)?)
}

/// LeakyReLU as `max(x, 0) + slope·min(x, 0)`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    Ok((x.maximum(&zeros)? + (x.minimum(&zeros)? * slope)?)?)
}

/// A naive f64 conv3d on flat C-order buffers, for tests of the fast kernels (no autograd).
#[allow(clippy::too_many_arguments)]
pub fn conv3d_naive_f64(
    x: &[f64],
    x_dims: [usize; 5],
    w: &[f64],
    w_dims: [usize; 5],
    bias: Option<&[f64]>,
    p: &Conv3dParams,
) -> Result<(Vec<f64>, [usize; 5])> {
    let [n, c, d, h, wd] = x_dims;
    let [o, cg, kd, kh, kw] = w_dims;
    let [od, oh, ow] = p.output_size([d, h, wd], [kd, kh, kw])?;
    let og = o / p.groups;
    let mut y = vec![0f64; n * o * od * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for z in 0..od {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut s = bias.map(|b| b[oc]).unwrap_or(0.0);
                        for ic in 0..cg {
                            let cin = g * cg + ic;
                            for a in 0..kd {
                                let iz = (z * p.stride[0] + a * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                if iz < 0 || iz >= d as isize {
                                    continue;
                                }
                                for bb in 0..kh {
                                    let iy = (yy * p.stride[1] + bb * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if iy < 0 || iy >= h as isize {
                                        continue;
                                    }
                                    for cc in 0..kw {
                                        let ix = (xx * p.stride[2] + cc * p.dilation[2]) as isize
                                            - p.padding[2] as isize;
                                        if ix < 0 || ix >= wd as isize {
                                            continue;
                                        }
                                        let xi = (((b * c + cin) * d + iz as usize) * h
                                            + iy as usize)
                                            * wd
                                            + ix as usize;
                                        let wi = (((oc * cg + ic) * kd + a) * kh + bb) * kw + cc;
                                        s += x[xi] * w[wi];
                                    }
                                }
                            }
                        }
                        y[(((b * o + oc) * od + z) * oh + yy) * ow + xx] = s;
                    }
                }
            }
        }
    }
    Ok((y, [n, o, od, oh, ow]))
}

/// Converts any float tensor to an f32 `Vec` (test helper).
pub fn to_vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
