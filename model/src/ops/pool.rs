//! 3D max and average pooling as custom ops with backward (`ceil_mode=False`; average pooling counts the
//! zero padding, PyTorch's default `count_include_pad=True`). Parallel over (sample, channel) planes.

use super::conv3d::dispatch_float;
use super::elem::{Elem, out_buf, slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Pooling geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pool {
    pub max: bool,
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
}

impl Pool {
    pub(crate) fn out(&self, i: [usize; 3]) -> [usize; 3] {
        [0, 1, 2].map(|a| (i[a] + 2 * self.p[a] - self.k[a]) / self.s[a] + 1)
    }
}

fn dims5(l: &Layout) -> candle_core::Result<[usize; 5]> {
    match l.dims() {
        &[a, b, c, d, e] => Ok([a, b, c, d, e]),
        d => candle_core::bail!("pool3d: input must be rank 5, got {d:?}"),
    }
}

/// Input index range of output `o` along one axis.
#[inline]
fn window(o: usize, s: usize, p: usize, k: usize, n: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).min(n as isize)).max(0) as usize;
    (lo, hi.max(lo))
}

/// Window ranges of every output index along one axis.
fn windows(pool: &Pool, i: [usize; 3], a: usize) -> Vec<(usize, usize)> {
    (0..pool.out(i)[a])
        .map(|o| window(o, pool.s[a], pool.p[a], pool.k[a], i[a]))
        .collect()
}

/// Is `v` NaN (generic: NaN is the only value unequal to itself).
#[inline(always)]
#[allow(clippy::eq_op)]
fn is_nan<T: Elem>(v: T) -> bool {
    v != v
}

/// Visits every output row `(z, y)` of one plane with the input rows of its window: `f(out_row_index, rows)`
/// where `rows` yields the flat start of each input row `(iz, iy)` in window order.
fn for_rows(
    i: [usize; 3],
    wz: &[(usize, usize)],
    wy: &[(usize, usize)],
    mut f: impl FnMut(usize, &mut dyn Iterator<Item = usize>),
) {
    let oy = wy.len();
    for (z, &(z0, z1)) in wz.iter().enumerate() {
        for (y, &(y0, y1)) in wy.iter().enumerate() {
            let mut rows = (z0..z1).flat_map(|iz| (y0..y1).map(move |iy| (iz * i[1] + iy) * i[2]));
            f(z * oy + y, &mut rows);
        }
    }
}

fn forward<T: Elem>(x: &[T], dims: [usize; 5], pool: &Pool) -> Vec<T> {
    let i = [dims[2], dims[3], dims[4]];
    let o = pool.out(i);
    let (isp, osp) = (i.iter().product::<usize>(), o.iter().product::<usize>());
    let inv = T::from_f64(1.0 / pool.k.iter().product::<usize>() as f64);
    let (wz, wy, wx) = (
        windows(pool, i, 0),
        windows(pool, i, 1),
        windows(pool, i, 2),
    );
    let mut y = out_buf::<T>(dims[0] * dims[1] * osp);
    // One task per (sample, channel) plane; per output row, the window's input rows are combined in turn.
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    y.par_chunks_mut(osp)
        .zip(x.par_chunks(isp))
        .for_each(|(yp, xp)| {
            for_rows(i, &wz, &wy, |r, rows| {
                let yr = &mut yp[r * o[2]..][..o[2]];
                yr.fill(if pool.max { neg_inf } else { T::default() });
                for start in rows {
                    let xr = &xp[start..][..i[2]];
                    for (yv, &(x0, x1)) in yr.iter_mut().zip(&wx) {
                        let win = &xr[x0..x1];
                        if pool.max {
                            let mut m = *yv;
                            for &v in win {
                                if v > m || (is_nan(v) && !is_nan(m)) {
                                    m = v;
                                }
                            }
                            *yv = m;
                        } else {
                            let mut acc = T::default();
                            for &v in win {
                                acc += v;
                            }
                            *yv += acc;
                        }
                    }
                }
                if !pool.max {
                    for yv in yr.iter_mut() {
                        *yv *= inv;
                    }
                }
            });
        });
    y
}

fn backward<T: Elem>(x: &[T], g: &[T], dims: [usize; 5], pool: &Pool) -> Vec<T> {
    let i = [dims[2], dims[3], dims[4]];
    let o = pool.out(i);
    let (isp, osp) = (i.iter().product::<usize>(), o.iter().product::<usize>());
    let inv = T::from_f64(1.0 / pool.k.iter().product::<usize>() as f64);
    let (wz, wy, wx) = (
        windows(pool, i, 0),
        windows(pool, i, 1),
        windows(pool, i, 2),
    );
    let mut dx = out_buf::<T>(x.len());
    dx.par_chunks_mut(isp)
        .zip(x.par_chunks(isp).zip(g.par_chunks(osp)))
        .for_each(|(dp, (xp, gp))| {
            // Max: the first maximum of each window (same scan order as the forward) takes the gradient.
            let mut best_v = vec![T::default(); o[2]];
            let mut best_i = vec![usize::MAX; o[2]];
            for_rows(i, &wz, &wy, |r, rows| {
                let gr = &gp[r * o[2]..][..o[2]];
                if pool.max {
                    best_i.fill(usize::MAX);
                    for start in rows {
                        let xr = &xp[start..][..i[2]];
                        for ((m, bi), &(x0, x1)) in
                            best_v.iter_mut().zip(best_i.iter_mut()).zip(&wx)
                        {
                            for (j, &v) in xr[x0..x1].iter().enumerate() {
                                if *bi == usize::MAX || v > *m || (is_nan(v) && !is_nan(*m)) {
                                    *m = v;
                                    *bi = start + x0 + j;
                                }
                            }
                        }
                    }
                    for (bi, gv) in best_i.iter().zip(gr) {
                        if *bi != usize::MAX {
                            dp[*bi] += *gv;
                        }
                    }
                } else {
                    for start in rows {
                        let dr = &mut dp[start..][..i[2]];
                        for (gv, &(x0, x1)) in gr.iter().zip(&wx) {
                            let v = *gv * inv;
                            for d in &mut dr[x0..x1] {
                                *d += v;
                            }
                        }
                    }
                }
            });
        });
    dx
}

/// Pooling forward op.
#[derive(Clone)]
pub(crate) struct PoolOp(pub Pool);

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        if self.0.max {
            "max-pool3d"
        } else {
            "avg-pool3d"
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = dims5(l)?;
        fn go<T: Elem>(
            p: &Pool,
            dims: [usize; 5],
            s: &CpuStorage,
            l: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(forward(
                slice::<T>(s, l, "pool3d")?,
                dims,
                p,
            )))
        }
        let st = dispatch_float!(s, "pool3d", go(&self.0, dims, s, l))?;
        let o = self.0.out([dims[2], dims[3], dims[4]]);
        Ok((st, Shape::from(vec![dims[0], dims[1], o[0], o[1], o[2]])))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &PoolBwdOp(self.0),
        )?))
    }
}

/// Pooling backward op `(x, grad) → dx`.
struct PoolBwdOp(Pool);

impl CustomOp2 for PoolBwdOp {
    fn name(&self) -> &'static str {
        "pool3d-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = dims5(l1)?;
        let o = self.0.out([dims[2], dims[3], dims[4]]);
        if dims5(l2)? != [dims[0], dims[1], o[0], o[1], o[2]] {
            candle_core::bail!(
                "pool3d-bwd: gradient {:?} does not match input {dims:?}",
                l2.dims()
            );
        }
        fn go<T: Elem>(
            p: &Pool,
            dims: [usize; 5],
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "pool3d-bwd")?;
            let g = slice::<T>(s2, l2, "pool3d-bwd")?;
            Ok(T::to_cpu_storage_owned(backward(x, g, dims, p)))
        }
        let st = dispatch_float!(s1, "pool3d-bwd", go(&self.0, dims, s1, l1, s2, l2))?;
        Ok((st, l1.shape().clone()))
    }
}
