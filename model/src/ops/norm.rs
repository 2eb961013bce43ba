//! Fused normalisation ops (BatchNorm eval/train, InstanceNorm, LayerNorm over channels or the last axis).
//!
//! The input is viewed as `[outer, C, inner]`. [`StatsOp`] computes per-group mean and biased variance (f64
//! accumulation) without gradient; [`NormOp`] computes `y = (x - mean)·rsqrt(var + eps)·w[c] + b[c]` in one
//! pass and, in backward, returns `dx` (through the batch statistics when they came from `x`) together with
//! `dw`, `db` packed into one buffer. Groups: `Batch` = per channel over outer·inner, `Instance` = per (outer,
//! channel) over inner, `Layer` = per (outer, inner) over channels.

// Numeric kernels index several arrays with one loop counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

use super::conv3d::dispatch_float;
use super::elem::{Elem, SharedMut, slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Which elements share statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One group per channel (BatchNorm).
    Batch,
    /// One group per (outer, channel) (InstanceNorm).
    Instance,
    /// One group per (outer, inner) position, reducing over channels (LayerNorm).
    Layer,
}

/// `[outer, C, inner]` view plus grouping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub outer: usize,
    pub c: usize,
    pub inner: usize,
    pub mode: Mode,
}

impl View {
    pub(crate) fn groups(&self) -> usize {
        match self.mode {
            Mode::Batch => self.c,
            Mode::Instance => self.outer * self.c,
            Mode::Layer => self.outer * self.inner,
        }
    }
    fn len(&self) -> usize {
        self.outer * self.c * self.inner
    }
    /// Elements per group.
    pub(crate) fn per_group(&self) -> usize {
        match self.mode {
            Mode::Batch => self.outer * self.inner,
            Mode::Instance => self.inner,
            Mode::Layer => self.c,
        }
    }
}

/// Σ of a slice in f64 (blocks of 16 lanes in `T`, then f64).
fn sum_f64<T: Elem>(v: &[T]) -> f64 {
    let mut total = 0f64;
    for blk in v.chunks(512) {
        let mut acc = [T::default(); 16];
        let mut it = blk.chunks_exact(16);
        for c in &mut it {
            for i in 0..16 {
                acc[i] += c[i];
            }
        }
        let mut s = 0f64;
        for r in it.remainder() {
            s += r.to_f64();
        }
        for a in acc {
            s += a.to_f64();
        }
        total += s;
    }
    total
}

/// Σ (v - m)² in f64.
fn sq_dev_f64<T: Elem>(v: &[T], m: T) -> f64 {
    let mut total = 0f64;
    for blk in v.chunks(512) {
        let mut acc = [T::default(); 16];
        let mut it = blk.chunks_exact(16);
        for c in &mut it {
            for i in 0..16 {
                let d = c[i] - m;
                acc[i] += d * d;
            }
        }
        let mut s = 0f64;
        for r in it.remainder() {
            let d = (*r - m).to_f64();
            s += d * d;
        }
        for a in acc {
            s += a.to_f64();
        }
        total += s;
    }
    total
}

/// (Σ g, Σ g·(x - m)·inv) in f64.
fn sums_g_gx<T: Elem>(g: &[T], x: &[T], m: T, inv: T) -> (f64, f64) {
    let (mut t1, mut t2) = (0f64, 0f64);
    for (gb, xb) in g.chunks(512).zip(x.chunks(512)) {
        let mut a1 = [T::default(); 16];
        let mut a2 = [T::default(); 16];
        let mut gi = gb.chunks_exact(16);
        let mut xi = xb.chunks_exact(16);
        for (gc, xc) in (&mut gi).zip(&mut xi) {
            for i in 0..16 {
                a1[i] += gc[i];
                a2[i] += gc[i] * ((xc[i] - m) * inv);
            }
        }
        for (gv, xv) in gi.remainder().iter().zip(xi.remainder()) {
            t1 += gv.to_f64();
            t2 += (*gv * ((*xv - m) * inv)).to_f64();
        }
        for i in 0..16 {
            t1 += a1[i].to_f64();
            t2 += a2[i].to_f64();
        }
    }
    (t1, t2)
}

/// Mean and biased variance per group, `[2, groups]` as f64.
pub(crate) fn stats<T: Elem>(x: &[T], v: &View) -> (Vec<f64>, Vec<f64>) {
    let (c, inner) = (v.c, v.inner);
    match v.mode {
        Mode::Batch | Mode::Instance => {
            let rows: Vec<(f64, f64)> = x
                .par_chunks(inner)
                .map(|row| {
                    let s = sum_f64(row);
                    (s, row.len() as f64)
                })
                .collect();
            let g = v.groups();
            let mut mean = vec![0f64; g];
            let mut cnt = vec![0f64; g];
            for (r, (s, n)) in rows.iter().enumerate() {
                let grp = if v.mode == Mode::Batch { r % c } else { r };
                mean[grp] += s;
                cnt[grp] += n;
            }
            for (m, n) in mean.iter_mut().zip(&cnt) {
                *m /= n;
            }
            let sq: Vec<f64> = x
                .par_chunks(inner)
                .enumerate()
                .map(|(r, row)| {
                    let grp = if v.mode == Mode::Batch { r % c } else { r };
                    sq_dev_f64(row, T::from_f64(mean[grp]))
                })
                .collect();
            let mut var = vec![0f64; g];
            for (r, s) in sq.iter().enumerate() {
                let grp = if v.mode == Mode::Batch { r % c } else { r };
                var[grp] += s;
            }
            for (s, n) in var.iter_mut().zip(&cnt) {
                *s /= n;
            }
            (mean, var)
        }
        Mode::Layer => {
            let mut mean = vec![0f64; v.groups()];
            let mut var = vec![0f64; v.groups()];
            if inner == 1 {
                mean.par_iter_mut()
                    .zip(var.par_iter_mut())
                    .zip(x.par_chunks(c))
                    .for_each(|((mo, vo), xo)| {
                        let m = sum_f64(xo) / c as f64;
                        *mo = m;
                        *vo = sq_dev_f64(xo, T::from_f64(m)) / c as f64;
                    });
                return (mean, var);
            }
            let (mp, vp) = (SharedMut(mean.as_mut_ptr()), SharedMut(var.as_mut_ptr()));
            let blocks = inner.div_ceil(BLK);
            (0..v.outer * blocks).into_par_iter().for_each(|t| {
                let (o, i0) = (t / blocks, (t % blocks) * BLK);
                let n = BLK.min(inner - i0);
                let xo = &x[o * c * inner..][..c * inner];
                // Columns of [C, inner]: accumulate in T over channels, vectorised over the block.
                let mut acc = [T::default(); BLK];
                for ch in 0..c {
                    for (a, xv) in acc[..n].iter_mut().zip(&xo[ch * inner + i0..][..n]) {
                        *a += *xv;
                    }
                }
                let inv_c = T::from_f64(1.0 / c as f64);
                for a in acc[..n].iter_mut() {
                    *a *= inv_c;
                }
                let mut sq = [T::default(); BLK];
                for ch in 0..c {
                    for ((s, xv), m) in sq[..n]
                        .iter_mut()
                        .zip(&xo[ch * inner + i0..][..n])
                        .zip(&acc[..n])
                    {
                        let d = *xv - *m;
                        *s += d * d;
                    }
                }
                for i in 0..n {
                    // SAFETY: task (o, block) writes only its own n entries of mean/var.
                    unsafe {
                        *mp.ptr().add(o * inner + i0 + i) = acc[i].to_f64();
                        *vp.ptr().add(o * inner + i0 + i) = sq[i].to_f64() / c as f64;
                    }
                }
            });
            (mean, var)
        }
    }
}

const BLK: usize = 1024;

/// Statistics op: `x → [2, groups]` (mean; biased variance), no gradient.
pub(crate) struct StatsOp {
    pub view: View,
}

impl CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "norm-stats"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: Elem>(v: &View, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s, l, "norm-stats")?;
            if x.len() != v.len() {
                candle_core::bail!("norm-stats: {} elements, expected {:?}", x.len(), v);
            }
            let (m, var) = stats(x, v);
            Ok(T::to_cpu_storage_owned(
                m.iter().chain(&var).map(|&a| T::from_f64(a)).collect(),
            ))
        }
        let st = dispatch_float!(s, "norm-stats", go(&self.view, s, l))?;
        Ok((st, Shape::from((2, self.view.groups()))))
    }
}

/// Normalise + affine: `(x, stats [2, groups], wb [2, C]) → y`.
pub(crate) struct NormOp {
    pub view: View,
    pub eps: f64,
    /// The statistics were computed from `x` (train-mode BN, IN, LN): backward goes through them.
    pub batch_stats: bool,
}

fn inv_std<T: Elem>(st: &[T], g: usize, eps: f64) -> (Vec<T>, Vec<T>) {
    let mean = st[..g].to_vec();
    let inv = st[g..2 * g]
        .iter()
        .map(|v| T::from_f64(1.0 / (v.to_f64() + eps).sqrt()))
        .collect();
    (mean, inv)
}

fn norm_fwd<T: Elem>(x: &[T], st: &[T], wb: &[T], v: &View, eps: f64) -> Vec<T> {
    let (c, inner) = (v.c, v.inner);
    let (mean, inv) = inv_std(st, v.groups(), eps);
    let (w, b) = (&wb[..c], &wb[c..2 * c]);
    let mut y = vec![T::default(); v.len()];
    match v.mode {
        Mode::Batch | Mode::Instance => {
            y.par_chunks_mut(inner)
                .zip(x.par_chunks(inner))
                .enumerate()
                .for_each(|(r, (yr, xr))| {
                    let ch = r % c;
                    let grp = if v.mode == Mode::Batch { ch } else { r };
                    let scale = inv[grp] * w[ch];
                    let shift = b[ch] - mean[grp] * scale;
                    for (yv, xv) in yr.iter_mut().zip(xr) {
                        *yv = *xv * scale + shift;
                    }
                });
        }
        Mode::Layer => {
            // One task per (outer, channel) row; statistics are per position within the row.
            y.par_chunks_mut(inner)
                .zip(x.par_chunks(inner))
                .enumerate()
                .for_each(|(r, (yr, xr))| {
                    let (o, ch) = (r / c, r % c);
                    let (wc, bc) = (w[ch], b[ch]);
                    let m = &mean[o * inner..][..inner];
                    let iv = &inv[o * inner..][..inner];
                    for (((yv, xv), mv), ivv) in yr.iter_mut().zip(xr).zip(m).zip(iv) {
                        *yv = (*xv - *mv) * *ivv * wc + bc;
                    }
                });
        }
    }
    y
}

/// Backward: returns `dx` (len of x) followed by `dw [C]`, `db [C]`.
fn norm_bwd<T: Elem>(
    x: &[T],
    st: &[T],
    wb: &[T],
    g: &[T],
    v: &View,
    eps: f64,
    batch_stats: bool,
) -> Vec<T> {
    let (c, inner, len) = (v.c, v.inner, v.len());
    let (mean, inv) = inv_std(st, v.groups(), eps);
    let w = &wb[..c];
    let mut out = vec![T::default(); len + 2 * c];
    let (dx, dwb) = out.split_at_mut(len);
    match v.mode {
        Mode::Batch | Mode::Instance => {
            let grp_of = |r: usize| if v.mode == Mode::Batch { r % c } else { r };
            // Per row (outer, channel): Σg, Σg·x̂.
            let rows: Vec<(f64, f64)> = g
                .par_chunks(inner)
                .zip(x.par_chunks(inner))
                .enumerate()
                .map(|(r, (gr, xr))| {
                    let grp = grp_of(r);
                    sums_g_gx(gr, xr, mean[grp], inv[grp])
                })
                .collect();
            let ng = v.groups();
            let mut s1 = vec![0f64; ng];
            let mut s2 = vec![0f64; ng];
            for (r, (a, b)) in rows.iter().enumerate() {
                dwb[r % c] += T::from_f64(*b);
                dwb[c + r % c] += T::from_f64(*a);
                s1[grp_of(r)] += a;
                s2[grp_of(r)] += b;
            }
            let m = v.per_group() as f64;
            dx.par_chunks_mut(inner)
                .zip(g.par_chunks(inner))
                .zip(x.par_chunks(inner))
                .enumerate()
                .for_each(|(r, ((dr, gr), xr))| {
                    let ch = r % c;
                    let grp = grp_of(r);
                    let k = inv[grp] * w[ch];
                    if batch_stats {
                        let mg = T::from_f64(s1[grp] / m);
                        let mgx = T::from_f64(s2[grp] / m);
                        let (mu, iv) = (mean[grp], inv[grp]);
                        for ((d, gv), xv) in dr.iter_mut().zip(gr).zip(xr) {
                            let xh = (*xv - mu) * iv;
                            *d = k * (*gv - mg - xh * mgx);
                        }
                    } else {
                        for (d, gv) in dr.iter_mut().zip(gr) {
                            *d = k * *gv;
                        }
                    }
                });
        }
        Mode::Layer => {
            let rc = T::from_f64(1.0 / c as f64);
            let dxp = SharedMut(dx.as_mut_ptr());
            let (tasks, blocks) = if inner == 1 {
                (v.outer.div_ceil(64), 0)
            } else {
                (v.outer * inner.div_ceil(BLK), inner.div_ceil(BLK))
            };
            let parts: Vec<Vec<f64>> = (0..tasks)
                .into_par_iter()
                .fold(
                    || vec![0f64; 2 * c],
                    |mut dwb_p, t| {
                        if inner == 1 {
                            // Token rows [C]: reduce each row over channels.
                            let mut tmp = vec![T::default(); c];
                            for o in t * 64..((t + 1) * 64).min(v.outer) {
                                let (mu, iv) = (mean[o], inv[o]);
                                let gr = &g[o * c..][..c];
                                let xr = &x[o * c..][..c];
                                let (mut p1, mut p2) = (T::default(), T::default());
                                for ch in 0..c {
                                    let xh = (xr[ch] - mu) * iv;
                                    let gw = gr[ch] * w[ch];
                                    p1 += gw;
                                    p2 += gw * xh;
                                    tmp[ch] = xh;
                                    dwb_p[ch] += (gr[ch] * xh).to_f64();
                                    dwb_p[c + ch] += gr[ch].to_f64();
                                }
                                let (p1, p2) = (p1 * rc, p2 * rc);
                                for ch in 0..c {
                                    // SAFETY: row o belongs to this task only.
                                    unsafe {
                                        *dxp.ptr().add(o * c + ch) =
                                            iv * (gr[ch] * w[ch] - p1 - tmp[ch] * p2)
                                    };
                                }
                            }
                            return dwb_p;
                        }
                        let (o, i0) = (t / blocks, (t % blocks) * BLK);
                        let n = BLK.min(inner - i0);
                        let m = &mean[o * inner + i0..][..n];
                        let iv = &inv[o * inner + i0..][..n];
                        let mut a1 = [T::default(); BLK];
                        let mut a2 = [T::default(); BLK];
                        let mut tmp = [T::default(); BLK];
                        for ch in 0..c {
                            let wc = w[ch];
                            let base = (o * c + ch) * inner + i0;
                            let gr = &g[base..][..n];
                            let xr = &x[base..][..n];
                            for ((((p1, p2), t), gv), (xv, (mv, ivv))) in a1[..n]
                                .iter_mut()
                                .zip(a2[..n].iter_mut())
                                .zip(tmp[..n].iter_mut())
                                .zip(gr)
                                .zip(xr.iter().zip(m.iter().zip(iv)))
                            {
                                let xh = (*xv - *mv) * *ivv;
                                let gw = *gv * wc;
                                *p1 += gw;
                                *p2 += gw * xh;
                                *t = *gv * xh;
                            }
                            dwb_p[ch] += sum_f64(&tmp[..n]);
                            dwb_p[c + ch] += sum_f64(gr);
                        }
                        for ch in 0..c {
                            let wc = w[ch];
                            let base = (o * c + ch) * inner + i0;
                            let gr = &g[base..][..n];
                            let xr = &x[base..][..n];
                            for (i, (gv, xv)) in gr.iter().zip(xr).enumerate() {
                                let xh = (*xv - m[i]) * iv[i];
                                // SAFETY: task (o, block) writes only its own columns of every channel.
                                unsafe {
                                    *dxp.ptr().add(base + i) =
                                        iv[i] * (*gv * wc - a1[i] * rc - xh * a2[i] * rc)
                                };
                            }
                        }
                        dwb_p
                    },
                )
                .collect();
            for p in parts {
                for (d, s) in dwb.iter_mut().zip(&p) {
                    *d += T::from_f64(*s);
                }
            }
        }
    }
    out
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        "norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: Elem>(
            op: &NormOp,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "norm")?;
            let st = slice::<T>(s2, l2, "norm")?;
            let wb = slice::<T>(s3, l3, "norm")?;
            let v = &op.view;
            if x.len() != v.len() || st.len() != 2 * v.groups() || wb.len() != 2 * v.c {
                candle_core::bail!(
                    "norm: sizes {}/{}/{} disagree with {v:?}",
                    x.len(),
                    st.len(),
                    wb.len()
                );
            }
            Ok(T::to_cpu_storage_owned(norm_fwd(x, st, wb, v, op.eps)))
        }
        let st = dispatch_float!(s1, "norm", go(self, s1, l1, s2, l2, s3, l3))?;
        Ok((st, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let params = Tensor::cat(&[&stats.flatten_all()?, &wb.flatten_all()?], 0)?;
        let both = grad.apply_op3_no_bwd(
            &x.contiguous()?,
            &params,
            &NormBwdOp {
                view: self.view,
                eps: self.eps,
                batch_stats: self.batch_stats,
            },
        )?;
        let len = self.view.len();
        let dx = both.narrow(0, 0, len)?.reshape(x.shape())?;
        let dwb = both
            .narrow(0, len, 2 * self.view.c)?
            .reshape((2, self.view.c))?;
        Ok((Some(dx), None, Some(dwb)))
    }
}

/// Backward of [`NormOp`]: `(grad, x, [stats; wb] flattened) → [dx; dw; db]` flattened.
struct NormBwdOp {
    view: View,
    eps: f64,
    batch_stats: bool,
}

impl CustomOp3 for NormBwdOp {
    fn name(&self) -> &'static str {
        "norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: Elem>(
            op: &NormBwdOp,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let g = slice::<T>(s1, l1, "norm-bwd")?;
            let x = slice::<T>(s2, l2, "norm-bwd")?;
            let params = slice::<T>(s3, l3, "norm-bwd")?;
            let v = &op.view;
            let ng = 2 * v.groups();
            if g.len() != v.len() || x.len() != v.len() || params.len() != ng + 2 * v.c {
                candle_core::bail!("norm-bwd: sizes disagree with {v:?}");
            }
            let (st, wb) = params.split_at(ng);
            Ok(T::to_cpu_storage_owned(norm_bwd(
                x,
                st,
                wb,
                g,
                v,
                op.eps,
                op.batch_stats,
            )))
        }
        let st = dispatch_float!(s1, "norm-bwd", go(self, s1, l1, s2, l2, s3, l3))?;
        Ok((st, Shape::from(self.view.len() + 2 * self.view.c)))
    }
}
