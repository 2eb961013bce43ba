//! 3D max and average pooling as custom ops with backward (`ceil_mode=False`; average pooling counts the
//! zero padding, PyTorch's default `count_include_pad=True`). Parallel over (sample, channel) planes.

use super::conv3d::dispatch_float;
use super::elem::{Elem, slice};
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

/// Visits every output of one plane with its window: `f(out_index, window ranges)`.
fn for_windows(pool: &Pool, i: [usize; 3], mut f: impl FnMut(usize, [(usize, usize); 3])) {
    let o = pool.out(i);
    let mut idx = 0;
    for z in 0..o[0] {
        let wz = window(z, pool.s[0], pool.p[0], pool.k[0], i[0]);
        for y in 0..o[1] {
            let wy = window(y, pool.s[1], pool.p[1], pool.k[1], i[1]);
            for x in 0..o[2] {
                let wx = window(x, pool.s[2], pool.p[2], pool.k[2], i[2]);
                f(idx, [wz, wy, wx]);
                idx += 1;
            }
        }
    }
}

/// Flat index of the first maximum of the window (NaN wins, as in PyTorch).
fn argmax<T: Elem>(plane: &[T], i: [usize; 3], w: [(usize, usize); 3]) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for z in w[0].0..w[0].1 {
        for y in w[1].0..w[1].1 {
            for x in w[2].0..w[2].1 {
                let j = (z * i[1] + y) * i[2] + x;
                let v = plane[j];
                match best {
                    None => best = Some((j, v)),
                    Some((_, b)) if v > b || v.to_f64().is_nan() && !b.to_f64().is_nan() => {
                        best = Some((j, v))
                    }
                    _ => {}
                }
            }
        }
    }
    best.map(|(j, _)| j)
}

fn forward<T: Elem>(x: &[T], dims: [usize; 5], pool: &Pool) -> Vec<T> {
    let i = [dims[2], dims[3], dims[4]];
    let (isp, osp) = (
        i.iter().product::<usize>(),
        pool.out(i).iter().product::<usize>(),
    );
    let inv = T::from_f64(1.0 / pool.k.iter().product::<usize>() as f64);
    let mut y = vec![T::default(); dims[0] * dims[1] * osp];
    y.par_chunks_mut(osp)
        .zip(x.par_chunks(isp))
        .for_each(|(yp, xp)| {
            for_windows(pool, i, |o, w| {
                yp[o] = if pool.max {
                    argmax(xp, i, w).map_or(T::default(), |j| xp[j])
                } else {
                    let mut s = T::default();
                    for z in w[0].0..w[0].1 {
                        for yy in w[1].0..w[1].1 {
                            for v in &xp[(z * i[1] + yy) * i[2]..][w[2].0..w[2].1] {
                                s += *v;
                            }
                        }
                    }
                    s * inv
                };
            });
        });
    y
}

fn backward<T: Elem>(x: &[T], g: &[T], dims: [usize; 5], pool: &Pool) -> Vec<T> {
    let i = [dims[2], dims[3], dims[4]];
    let (isp, osp) = (
        i.iter().product::<usize>(),
        pool.out(i).iter().product::<usize>(),
    );
    let inv = T::from_f64(1.0 / pool.k.iter().product::<usize>() as f64);
    let mut dx = vec![T::default(); x.len()];
    dx.par_chunks_mut(isp)
        .zip(x.par_chunks(isp).zip(g.par_chunks(osp)))
        .for_each(|(dp, (xp, gp))| {
            for_windows(pool, i, |o, w| {
                if pool.max {
                    if let Some(j) = argmax(xp, i, w) {
                        dp[j] += gp[o];
                    }
                } else {
                    let v = gp[o] * inv;
                    for z in w[0].0..w[0].1 {
                        for yy in w[1].0..w[1].1 {
                            for d in &mut dp[(z * i[1] + yy) * i[2]..][w[2].0..w[2].1] {
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
