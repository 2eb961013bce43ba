//! ×2 upsampling of `[N, C, D, H, W]` as custom ops: trilinear (`align_corners=False`, PyTorch's index rule)
//! and nearest, with their exact adjoints as backward. Parallel over output planes (forward) and over
//! (sample, channel) (backward).

use super::conv3d::dispatch_float;
use super::elem::{Elem, out_buf, slice};
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

/// Linear ×2 along a contiguous line: `out[2i] = ¼·row[i−1] + ¾·row[i]`, `out[2i+1] = ¾·row[i] + ¼·row[i+1]`
/// (indices clamped to the line), PyTorch's `align_corners=False` rule.
#[inline(always)]
fn lerp_line<T: Elem>(row: &[T], out: &mut [T]) {
    let w = row.len();
    let (q, t) = (T::from_f64(0.25), T::from_f64(0.75));
    if w == 1 {
        out[0] = row[0];
        out[1] = row[0];
        return;
    }
    out[0] = row[0];
    out[1] = row[0] * t + row[1] * q;
    for (((o, a), b), c) in out[2..2 * w - 2]
        .chunks_exact_mut(2)
        .zip(&row[..w - 2])
        .zip(&row[1..w - 1])
        .zip(&row[2..])
    {
        o[0] = *a * q + *b * t;
        o[1] = *b * t + *c * q;
    }
    out[2 * w - 2] = row[w - 2] * q + row[w - 1] * t;
    out[2 * w - 1] = row[w - 1];
}

/// Adjoint of [`lerp_line`]: `r[i] = ¾·(g[2i] + g[2i+1]) + ¼·(g[2i−1] + g[2i+2])` inside, with the clamped
/// taps folded back at both ends.
#[inline(always)]
fn lerp_line_adj<T: Elem>(g: &[T], r: &mut [T]) {
    let w = r.len();
    let (q, t) = (T::from_f64(0.25), T::from_f64(0.75));
    if w == 1 {
        r[0] = g[0] + g[1];
        return;
    }
    r[0] = g[0] + g[1] * t + g[2] * q;
    let pairs = g[1..2 * w - 1].chunks_exact(2);
    for ((rv, p0), p1) in r[1..w - 1].iter_mut().zip(pairs.clone()).zip(pairs.skip(1)) {
        // p0 = (g[2i−1], g[2i]), p1 = (g[2i+1], g[2i+2]).
        *rv = (p0[1] + p1[0]) * t + (p0[0] + p1[1]) * q;
    }
    r[w - 1] = g[2 * w - 3] * q + g[2 * w - 2] * t + g[2 * w - 1];
}

/// `dst += a·src`.
#[inline(always)]
fn axpy<T: Elem>(dst: &mut [T], a: T, src: &[T]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * *s;
    }
}

/// `dst = a·p + b·q`.
#[inline(always)]
fn blend<T: Elem>(dst: &mut [T], a: T, p: &[T], b: T, q: &[T]) {
    for ((d, x), y) in dst.iter_mut().zip(p).zip(q) {
        *d = a * *x + b * *y;
    }
}

fn forward<T: Elem>(x: &[T], dims: [usize; 5], mode: Mode) -> Vec<T> {
    let [n, c, d, h, w] = dims;
    let (oh, ow) = (2 * h, 2 * w);
    let (psz, opsz) = (h * w, oh * ow);
    let mut y = out_buf::<T>(n * c * 2 * d * opsz);
    // One task per output plane [2H, 2W].
    y.par_chunks_mut(opsz).enumerate().for_each_init(
        || (vec![T::default(); psz], vec![T::default(); w]),
        |(tmp, row), (idx, out)| {
            let (nc, zo) = (idx / (2 * d), idx % (2 * d));
            let xv = &x[nc * d * psz..][..d * psz];
            match mode {
                Mode::Nearest => {
                    let plane = &xv[(zo / 2) * psz..][..psz];
                    for (yo, orow) in out.chunks_exact_mut(ow).enumerate() {
                        let src = &plane[(yo / 2) * w..][..w];
                        for (o, s) in orow.chunks_exact_mut(2).zip(src) {
                            o[0] = *s;
                            o[1] = *s;
                        }
                    }
                }
                Mode::Trilinear => {
                    let (z0, wz0, z1, wz1) = taps(zo, d);
                    // Depth blend [H, W].
                    blend(
                        tmp,
                        T::from_f64(wz0),
                        &xv[z0 * psz..][..psz],
                        T::from_f64(wz1),
                        &xv[z1 * psz..][..psz],
                    );
                    for (yo, orow) in out.chunks_exact_mut(ow).enumerate() {
                        let (y0, wy0, y1, wy1) = taps(yo, h);
                        blend(
                            row,
                            T::from_f64(wy0),
                            &tmp[y0 * w..][..w],
                            T::from_f64(wy1),
                            &tmp[y1 * w..][..w],
                        );
                        lerp_line(row, orow);
                    }
                }
            }
        },
    );
    y
}

fn backward<T: Elem>(g: &[T], dims: [usize; 5], mode: Mode) -> Vec<T> {
    let [n, c, d, h, w] = dims;
    let (oh, ow) = (2 * h, 2 * w);
    let (psz, opsz) = (h * w, oh * ow);
    let mut dx = out_buf::<T>(n * c * d * psz);
    // One task per (sample, channel) volume, whose input-side gradient (≤ a few hundred KiB) stays in cache.
    dx.par_chunks_mut(d * psz)
        .enumerate()
        .for_each(|(nc, dxv)| {
            let gv = &g[nc * 2 * d * opsz..][..2 * d * opsz];
            let mut rows = vec![T::default(); oh * w];
            let mut plane = vec![T::default(); psz];
            for (zo, gp) in gv.chunks_exact(opsz).enumerate() {
                match mode {
                    Mode::Nearest => {
                        let dst = &mut dxv[(zo / 2) * psz..][..psz];
                        for (yo, grow) in gp.chunks_exact(ow).enumerate() {
                            for (dd, o) in dst[(yo / 2) * w..][..w]
                                .iter_mut()
                                .zip(grow.chunks_exact(2))
                            {
                                *dd += o[0] + o[1];
                            }
                        }
                    }
                    Mode::Trilinear => {
                        // Wᵀ: [2H, 2W] → [2H, W].
                        for (r, grow) in rows.chunks_exact_mut(w).zip(gp.chunks_exact(ow)) {
                            lerp_line_adj(grow, r);
                        }
                        // Hᵀ: [2H, W] → [H, W] (the same rule, whole rows as elements).
                        plane.fill(T::default());
                        for yo in 0..oh {
                            let (y0, wy0, y1, wy1) = taps(yo, h);
                            let src = &rows[yo * w..][..w];
                            axpy(&mut plane[y0 * w..][..w], T::from_f64(wy0), src);
                            axpy(&mut plane[y1 * w..][..w], T::from_f64(wy1), src);
                        }
                        // Dᵀ: scatter into the two source planes.
                        let (z0, wz0, z1, wz1) = taps(zo, d);
                        axpy(&mut dxv[z0 * psz..][..psz], T::from_f64(wz0), &plane);
                        axpy(&mut dxv[z1 * psz..][..psz], T::from_f64(wz1), &plane);
                    }
                }
            }
        });
    dx
}

/// ×2 upsampling op.
#[derive(Clone)]
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
