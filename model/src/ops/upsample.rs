//! ×2 upsampling of `[N, C, D, H, W]` as custom ops: trilinear (`align_corners=False`, PyTorch's index rule)
//! and nearest, with their exact adjoints as backward. Parallel over output planes (forward) and over
//! (sample, channel) (backward).

use super::conv3d::dispatch_float;
use super::elem::{Elem, slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Interpolation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Trilinear, `align_corners=False`.
    Trilinear,
    /// Nearest neighbour.
    Nearest,
}

/// Sources of output index `j` of a linear ×2 upsampling of length `n`: `(i0, w0, i1, w1)`.
#[inline]
fn taps(j: usize, n: usize) -> (usize, f64, usize, f64) {
    let i = j / 2;
    if j.is_multiple_of(2) {
        (i.saturating_sub(1), 0.25, i, 0.75)
    } else {
        (i, 0.75, (i + 1).min(n - 1), 0.25)
    }
}

fn dims5(l: &Layout) -> candle_core::Result<[usize; 5]> {
    match l.dims() {
        &[a, b, c, d, e] => Ok([a, b, c, d, e]),
        d => candle_core::bail!("upsample: input must be rank 5, got {d:?}"),
    }
}

fn forward<T: Elem>(x: &[T], dims: [usize; 5], mode: Mode) -> Vec<T> {
    let [n, c, d, h, w] = dims;
    let (oh, ow) = (2 * h, 2 * w);
    let (psz, opsz) = (h * w, oh * ow);
    let mut y = vec![T::default(); n * c * 2 * d * opsz];
    y.par_chunks_mut(opsz).enumerate().for_each(|(idx, out)| {
        let (nc, zo) = (idx / (2 * d), idx % (2 * d));
        let xv = &x[nc * d * psz..][..d * psz];
        match mode {
            Mode::Nearest => {
                let plane = &xv[(zo / 2) * psz..][..psz];
                for yo in 0..oh {
                    let src = &plane[(yo / 2) * w..][..w];
                    for (o, s) in out[yo * ow..][..ow].chunks_exact_mut(2).zip(src) {
                        o[0] = *s;
                        o[1] = *s;
                    }
                }
            }
            Mode::Trilinear => {
                let (z0, wz0, z1, wz1) = taps(zo, d);
                let (wz0, wz1) = (T::from_f64(wz0), T::from_f64(wz1));
                let (p0, p1) = (&xv[z0 * psz..][..psz], &xv[z1 * psz..][..psz]);
                // Depth blend [H, W].
                let tmp: Vec<T> = p0
                    .iter()
                    .zip(p1)
                    .map(|(a, b)| *a * wz0 + *b * wz1)
                    .collect();
                let mut row = vec![T::default(); w];
                for yo in 0..oh {
                    let (y0, wy0, y1, wy1) = taps(yo, h);
                    let (wy0, wy1) = (T::from_f64(wy0), T::from_f64(wy1));
                    for ((r, a), b) in row
                        .iter_mut()
                        .zip(&tmp[y0 * w..][..w])
                        .zip(&tmp[y1 * w..][..w])
                    {
                        *r = *a * wy0 + *b * wy1;
                    }
                    let orow = &mut out[yo * ow..][..ow];
                    let (q, t) = (T::from_f64(0.25), T::from_f64(0.75));
                    for i in 0..w {
                        let l = row[i.saturating_sub(1)];
                        let r = row[(i + 1).min(w - 1)];
                        orow[2 * i] = l * q + row[i] * t;
                        orow[2 * i + 1] = row[i] * t + r * q;
                    }
                }
            }
        }
    });
    y
}

fn backward<T: Elem>(g: &[T], dims: [usize; 5], mode: Mode) -> Vec<T> {
    let [n, c, d, h, w] = dims;
    let (oh, ow) = (2 * h, 2 * w);
    let (psz, opsz) = (h * w, oh * ow);
    let mut dx = vec![T::default(); n * c * d * psz];
    dx.par_chunks_mut(d * psz)
        .enumerate()
        .for_each(|(nc, dxv)| {
            let gv = &g[nc * 2 * d * opsz..][..2 * d * opsz];
            let mut rows = vec![T::default(); oh * w];
            let mut plane = vec![T::default(); psz];
            for zo in 0..2 * d {
                let gp = &gv[zo * opsz..][..opsz];
                match mode {
                    Mode::Nearest => {
                        let dst = &mut dxv[(zo / 2) * psz..][..psz];
                        for yo in 0..oh {
                            for (dd, o) in dst[(yo / 2) * w..][..w]
                                .iter_mut()
                                .zip(gp[yo * ow..][..ow].chunks_exact(2))
                            {
                                *dd += o[0] + o[1];
                            }
                        }
                    }
                    Mode::Trilinear => {
                        // Wᵀ: [2H, 2W] → [2H, W].
                        rows.fill(T::default());
                        for yo in 0..oh {
                            let grow = &gp[yo * ow..][..ow];
                            let r = &mut rows[yo * w..][..w];
                            for (j, gvj) in grow.iter().enumerate() {
                                let (i0, w0, i1, w1) = taps(j, w);
                                r[i0] += *gvj * T::from_f64(w0);
                                r[i1] += *gvj * T::from_f64(w1);
                            }
                        }
                        // Hᵀ: [2H, W] → [H, W].
                        plane.fill(T::default());
                        for yo in 0..oh {
                            let (y0, wy0, y1, wy1) = taps(yo, h);
                            let (wy0, wy1) = (T::from_f64(wy0), T::from_f64(wy1));
                            for i in 0..w {
                                let v = rows[yo * w + i];
                                plane[y0 * w + i] += v * wy0;
                                plane[y1 * w + i] += v * wy1;
                            }
                        }
                        // Dᵀ: scatter into the two source planes.
                        let (z0, wz0, z1, wz1) = taps(zo, d);
                        let (wz0, wz1) = (T::from_f64(wz0), T::from_f64(wz1));
                        for (dd, v) in dxv[z0 * psz..][..psz].iter_mut().zip(&plane) {
                            *dd += *v * wz0;
                        }
                        for (dd, v) in dxv[z1 * psz..][..psz].iter_mut().zip(&plane) {
                            *dd += *v * wz1;
                        }
                    }
                }
            }
        });
    dx
}

/// ×2 upsampling op.
pub(crate) struct UpsampleOp(pub Mode);

impl CustomOp1 for UpsampleOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Mode::Trilinear => "upsample-trilinear2x",
            Mode::Nearest => "upsample-nearest2x",
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = dims5(l)?;
        fn go<T: Elem>(
            mode: Mode,
            dims: [usize; 5],
            s: &CpuStorage,
            l: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(forward(
                slice::<T>(s, l, "upsample")?,
                dims,
                mode,
            )))
        }
        let st = dispatch_float!(s, "upsample", go(self.0, dims, s, l))?;
        let [n, c, d, h, w] = dims;
        Ok((st, Shape::from(vec![n, c, 2 * d, 2 * h, 2 * w])))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, d, h, w) = x.dims5()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(
            &UpsampleBwdOp {
                mode: self.0,
                x_dims: [n, c, d, h, w],
            },
        )?))
    }
}

/// Adjoint of [`UpsampleOp`]: `grad [N, C, 2D, 2H, 2W] → dx [N, C, D, H, W]`.
struct UpsampleBwdOp {
    mode: Mode,
    x_dims: [usize; 5],
}

impl CustomOp1 for UpsampleBwdOp {
    fn name(&self) -> &'static str {
        "upsample2x-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let [n, c, d, h, w] = self.x_dims;
        if dims5(l)? != [n, c, 2 * d, 2 * h, 2 * w] {
            candle_core::bail!(
                "upsample2x-bwd: gradient {:?} does not match input {:?}",
                l.dims(),
                self.x_dims
            );
        }
        fn go<T: Elem>(
            mode: Mode,
            dims: [usize; 5],
            s: &CpuStorage,
            l: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(backward(
                slice::<T>(s, l, "upsample2x-bwd")?,
                dims,
                mode,
            )))
        }
        let st = dispatch_float!(s, "upsample2x-bwd", go(self.mode, self.x_dims, s, l))?;
        Ok((st, Shape::from(self.x_dims.to_vec())))
    }
}
