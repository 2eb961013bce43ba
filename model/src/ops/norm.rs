//! Fused normalisation ops (BatchNorm eval/train, InstanceNorm, LayerNorm over channels or the last axis).
//!
//! The input is viewed as `[outer, C, inner]`. Groups of elements share statistics: `Batch` = per channel over
//! outer·inner, `Instance` = per (outer, channel) over inner, `Layer` = per (outer, inner) position over the
//! channels.
//!
//! * Batch/Instance: [`StatsOp`] computes per-group mean and biased variance in **one** pass over memory (each
//!   piece of 2048 elements is reduced twice from L1 — mean, then squared deviations — and the pieces are
//!   merged in f64 with Chan's formula, so large means do not cancel). [`NormOp`] normalises with
//!   `y = x·scale[g] + shift[g]`; its backward computes `Σg` and `Σg·(x − mean)` per group and then
//!   `dx`, `dweight`, `dbias` in two sweeps over the same groups, done in waves of groups that fit in the
//!   last-level cache, so the second sweep does not go back to memory.
//! * Layer: [`LayerNormOp`] computes statistics and output block by block (`C × ~1024` positions, in L2), so
//!   the forward reads `x` once and writes `y` once; the backward recomputes the block's statistics and
//!   produces `dx`, `dweight`, `dbias` in the same single sweep.
//!
//! All inner loops run over contiguous memory with 16-32 independent f32 lanes (AVX-512 friendly), partial
//! sums go to f64 every few thousand elements.

// Numeric kernels index several arrays with one loop counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

use super::conv3d::dispatch_float;
use super::elem::{Elem, SharedMut, out_buf, slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
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

/// Independent accumulators in the reductions (two AVX-512 registers of f32).
const LANES: usize = 32;
/// Elements reduced in f32 lanes before the partial sum moves to f64.
const SUB: usize = 2048;
/// Elements per parallel piece of a Batch/Instance row.
const PIECE: usize = 32 * 1024;
/// Elements of one wave of groups in the Batch/Instance backward (x and g together: 8 MiB of f32).
const WAVE: usize = 1 << 20;

/// Σ v in f64 (f32 lanes inside).
#[inline(always)]
fn lane_sum<T: Elem>(v: &[T]) -> f64 {
    let mut total = 0f64;
    for blk in v.chunks(SUB) {
        let mut acc = [T::default(); LANES];
        let mut it = blk.chunks_exact(LANES);
        for c in &mut it {
            for i in 0..LANES {
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

/// Σ (v − m)² in f64 for a short slice (f32 lanes).
#[inline(always)]
fn lane_sq_dev<T: Elem>(v: &[T], m: T) -> f64 {
    let mut acc = [T::default(); LANES];
    let mut it = v.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
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
    s
}

/// (Σ g, Σ g·(x − m)) in f64 for a short slice pair (f32 lanes).
#[inline(always)]
fn lane_g_gx<T: Elem>(g: &[T], x: &[T], m: T) -> (f64, f64) {
    let mut a1 = [T::default(); LANES];
    let mut a2 = [T::default(); LANES];
    let mut gi = g.chunks_exact(LANES);
    let mut xi = x.chunks_exact(LANES);
    for (gc, xc) in (&mut gi).zip(&mut xi) {
        for i in 0..LANES {
            a1[i] += gc[i];
            a2[i] += gc[i] * (xc[i] - m);
        }
    }
    let (mut t1, mut t2) = (0f64, 0f64);
    for (gv, xv) in gi.remainder().iter().zip(xi.remainder()) {
        t1 += gv.to_f64();
        t2 += gv.to_f64() * (*xv - m).to_f64();
    }
    for i in 0..LANES {
        t1 += a1[i].to_f64();
        t2 += a2[i].to_f64();
    }
    (t1, t2)
}

/// Count, mean and sum of squared deviations of a group part; merged with Chan et al.'s formula.
#[derive(Clone, Copy, Default, Debug)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn of<T: Elem>(v: &[T]) -> Self {
        let mut acc = Moments::default();
        for blk in v.chunks(SUB) {
            let n = blk.len() as f64;
            let mean = lane_sum(blk) / n;
            let m2 = lane_sq_dev(blk, T::from_f64(mean));
            // Squared deviations were taken about the f32-rounded mean: correct to the exact mean.
            let dm = mean - T::from_f64(mean).to_f64();
            acc.merge(Moments {
                n,
                mean,
                m2: (m2 - n * dm * dm).max(0.0),
            });
        }
        acc
    }
    fn merge(&mut self, o: Moments) {
        if o.n == 0.0 {
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n / n;
        self.m2 += o.m2 + d * d * self.n * o.n / n;
        self.n = n;
    }
}

/// A contiguous part of one `[inner]` row of a Batch/Instance view.
#[derive(Clone, Copy, Debug)]
struct Piece {
    row: usize,
    start: usize,
    len: usize,
}

impl View {
    fn group_of_row(&self, row: usize) -> usize {
        if self.mode == Mode::Batch {
            row % self.c
        } else {
            row
        }
    }
    /// The rows (`o·C + ch`) of groups `g0..g1`.
    fn rows_of_groups(&self, g0: usize, g1: usize) -> Vec<usize> {
        match self.mode {
            Mode::Batch => (0..self.outer)
                .flat_map(|o| (g0..g1).map(move |ch| o * self.c + ch))
                .collect(),
            _ => (g0..g1).collect(),
        }
    }
    fn pieces(&self, rows: &[usize]) -> Vec<Piece> {
        let per = self.inner.div_ceil(PIECE);
        let chunk = self.inner.div_ceil(per);
        rows.iter()
            .flat_map(|&row| {
                (0..per).map(move |p| Piece {
                    row,
                    start: p * chunk,
                    len: chunk.min(self.inner - p * chunk),
                })
            })
            .filter(|p| p.len > 0)
            .collect()
    }
}

/// Mean and biased variance per group (Batch/Instance), f64, one pass over `x`.
pub(crate) fn stats<T: Elem>(x: &[T], v: &View) -> (Vec<f64>, Vec<f64>) {
    let all: Vec<usize> = (0..v.outer * v.c).collect();
    let pieces = v.pieces(&all);
    let parts: Vec<Moments> = pieces
        .par_iter()
        .map(|p| Moments::of(&x[p.row * v.inner + p.start..][..p.len]))
        .collect();
    let mut acc = vec![Moments::default(); v.groups()];
    for (p, m) in pieces.iter().zip(parts) {
        acc[v.group_of_row(p.row)].merge(m);
    }
    let mean = acc.iter().map(|m| m.mean).collect();
    let var = acc.iter().map(|m| m.m2 / m.n.max(1.0)).collect();
    (mean, var)
}

/// Statistics op (Batch/Instance views): `x → [2, groups]` (mean; biased variance), no gradient.
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
            if x.len() != v.len() || v.mode == Mode::Layer {
                candle_core::bail!("norm-stats: {} elements, view {:?}", x.len(), v);
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

/// Normalise + affine for Batch/Instance views: `(x, stats [2, groups], wb [2, C]) → y`.
#[derive(Clone)]
pub(crate) struct NormOp {
    pub view: View,
    pub eps: f64,
    /// The statistics were computed from `x` (train-mode BN, IN): backward goes through them.
    pub batch_stats: bool,
}

fn inv_std<T: Elem>(st: &[T], g: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mean = st[..g].iter().map(|m| m.to_f64()).collect();
    let inv = st[g..2 * g]
        .iter()
        .map(|v| 1.0 / (v.to_f64() + eps).sqrt())
        .collect();
    (mean, inv)
}

fn norm_fwd<T: Elem>(x: &[T], st: &[T], wb: &[T], v: &View, eps: f64) -> Vec<T> {
    let (c, inner) = (v.c, v.inner);
    let (mean, inv) = inv_std(st, v.groups(), eps);
    let (w, b) = (&wb[..c], &wb[c..2 * c]);
    let mut y = out_buf::<T>(v.len());
    let all: Vec<usize> = (0..v.outer * c).collect();
    let yp = SharedMut(y.as_mut_ptr());
    v.pieces(&all).par_iter().for_each(|p| {
        let (ch, grp) = (p.row % c, v.group_of_row(p.row));
        let scale = inv[grp] * w[ch].to_f64();
        let (scale, shift) = (
            T::from_f64(scale),
            T::from_f64(b[ch].to_f64() - mean[grp] * scale),
        );
        let off = p.row * inner + p.start;
        // SAFETY: pieces are disjoint ranges of y.
        let yr = unsafe { std::slice::from_raw_parts_mut(yp.ptr().add(off), p.len) };
        for (yv, xv) in yr.iter_mut().zip(&x[off..][..p.len]) {
            *yv = *xv * scale + shift;
        }
    });
    y
}

/// Backward (Batch/Instance): returns `dx` (len of x) followed by `dw [C]`, `db [C]`.
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
    let ng = v.groups();
    let (mean, inv) = inv_std(st, ng, eps);
    let w = &wb[..c];
    let mut out = out_buf::<T>(len + 2 * c);
    let dxp = SharedMut(out.as_mut_ptr());
    let mut dw = vec![0f64; c];
    let mut db = vec![0f64; c];
    let m = v.per_group() as f64;
    // Waves of whole groups, about WAVE elements each: sweep 1 (sums) and sweep 2 (dx) of a wave run back to
    // back, so sweep 2 finds x and g in the last-level cache.
    let per_group = v.per_group().max(1);
    let wave = (WAVE / per_group).max(1);
    let mut g0 = 0;
    while g0 < ng {
        let g1 = (g0 + wave).min(ng);
        let rows = v.rows_of_groups(g0, g1);
        let pieces = v.pieces(&rows);
        let sums: Vec<(f64, f64)> = pieces
            .par_iter()
            .map(|p| {
                let grp = v.group_of_row(p.row);
                let off = p.row * inner + p.start;
                let mu = T::from_f64(mean[grp]);
                let (gs, xs) = (&g[off..][..p.len], &x[off..][..p.len]);
                let (mut a, mut b) = (0f64, 0f64);
                for (gb, xb) in gs.chunks(SUB).zip(xs.chunks(SUB)) {
                    let (s1, s2) = lane_g_gx(gb, xb, mu);
                    a += s1;
                    b += s2;
                }
                (a, b)
            })
            .collect();
        // Per group: Σg and Σg·(x − mean).
        let mut s1 = vec![0f64; g1 - g0];
        let mut s2 = vec![0f64; g1 - g0];
        for (p, (a, b)) in pieces.iter().zip(&sums) {
            let grp = v.group_of_row(p.row);
            s1[grp - g0] += a;
            s2[grp - g0] += b;
            let ch = p.row % c;
            db[ch] += a;
            dw[ch] += b * inv[grp];
        }
        pieces.par_iter().for_each(|p| {
            let (ch, grp) = (p.row % c, v.group_of_row(p.row));
            let k = inv[grp] * w[ch].to_f64();
            let off = p.row * inner + p.start;
            // SAFETY: pieces are disjoint ranges of dx (the first `len` entries of `out`).
            let dr = unsafe { std::slice::from_raw_parts_mut(dxp.ptr().add(off), p.len) };
            let gs = &g[off..][..p.len];
            if batch_stats {
                // dx = k·(g − mean(g) − x̂·mean(g·x̂)) = k·g − k·mean(g) − (x − μ)·k·inv²·mean(g·(x − μ)).
                let kk = T::from_f64(k);
                let c0 = T::from_f64(k * s1[grp - g0] / m);
                let bx = T::from_f64(k * inv[grp] * inv[grp] * s2[grp - g0] / m);
                let mu = T::from_f64(mean[grp]);
                for ((d, gv), xv) in dr.iter_mut().zip(gs).zip(&x[off..][..p.len]) {
                    *d = kk * *gv - c0 - (*xv - mu) * bx;
                }
            } else {
                let kk = T::from_f64(k);
                for (d, gv) in dr.iter_mut().zip(gs) {
                    *d = kk * *gv;
                }
            }
        });
        g0 = g1;
    }
    for ch in 0..c {
        out[len + ch] = T::from_f64(dw[ch]);
        out[len + c + ch] = T::from_f64(db[ch]);
    }
    out
}

fn check_sizes(
    op: &str,
    v: &View,
    x: usize,
    g: Option<usize>,
    st: Option<usize>,
    wb: usize,
) -> candle_core::Result<()> {
    let ok = x == v.len()
        && g.is_none_or(|g| g == v.len())
        && st.is_none_or(|s| s == 2 * v.groups())
        && wb == 2 * v.c;
    if !ok {
        candle_core::bail!(
            "{op}: sizes x {x}, grad {g:?}, stats {st:?}, affine {wb} disagree with {v:?}"
        );
    }
    Ok(())
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
            check_sizes("norm", v, x.len(), None, Some(st.len()), wb.len())?;
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
        let (dx, dwb) = split_dx_dwb(&both, x, self.view.c)?;
        Ok((Some(dx), None, Some(dwb)))
    }
}

/// `[dx; dw; db]` flattened → (`dx` shaped as `x`, `[2, C]`).
fn split_dx_dwb(both: &Tensor, x: &Tensor, c: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let len = x.elem_count();
    let dx = both.narrow(0, 0, len)?.reshape(x.shape())?;
    let dwb = both.narrow(0, len, 2 * c)?.reshape((2, c))?;
    Ok((dx, dwb))
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
            if params.len() < ng {
                candle_core::bail!("norm-bwd: {} parameters for {v:?}", params.len());
            }
            let (st, wb) = params.split_at(ng);
            check_sizes("norm-bwd", v, x.len(), Some(g.len()), Some(ng), wb.len())?;
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

// ---------------------------------------------------------------------------------------------------------
// LayerNorm (statistics over the channels of every position), fused statistics + normalisation.

/// Positions per Layer block so that `C × block` f32 stay in L2 (≈128 KiB per array).
fn layer_block(c: usize) -> usize {
    ((32 * 1024) / c.max(1)).clamp(16, 4096)
}

/// Mean and `1/sqrt(var + eps)` of the `n` positions starting at `i0` of sample `xo` (`[C, inner]`), into
/// `mean[..n]`, `inv[..n]` (two sweeps over the block, which is in cache after the first).
#[allow(clippy::too_many_arguments)]
fn layer_block_stats<T: Elem>(
    xo: &[T],
    c: usize,
    inner: usize,
    i0: usize,
    n: usize,
    eps: f64,
    mean: &mut [T],
    inv: &mut [T],
) {
    let (mean, inv) = (&mut mean[..n], &mut inv[..n]);
    mean.fill(T::default());
    for ch in 0..c {
        for (a, xv) in mean.iter_mut().zip(&xo[ch * inner + i0..][..n]) {
            *a += *xv;
        }
    }
    let rcm = T::from_f64(1.0 / c as f64);
    for a in mean.iter_mut() {
        *a *= rcm;
    }
    inv.fill(T::default());
    for ch in 0..c {
        for ((s, xv), m) in inv.iter_mut().zip(&xo[ch * inner + i0..][..n]).zip(&*mean) {
            let d = *xv - *m;
            *s += d * d;
        }
    }
    let rc = 1.0 / c as f64;
    for s in inv.iter_mut() {
        *s = T::from_f64(1.0 / (s.to_f64() * rc + eps).sqrt());
    }
}

/// Σ of a short row (tokens' channels) in the element type: 16 lanes, then a pairwise tree.
#[inline(always)]
fn short_sum<T: Elem>(r: &[T]) -> T {
    short_reduce(r, r, |a, _| a)
}

/// Σ (v − m)² of a short row.
#[inline(always)]
fn short_sq_dev<T: Elem>(r: &[T], m: T) -> T {
    short_reduce(r, r, |a, _| (a - m) * (a - m))
}

/// Σ a·b of two short rows.
#[inline(always)]
fn short_dot<T: Elem>(a: &[T], b: &[T]) -> T {
    short_reduce(a, b, |x, y| x * y)
}

#[inline(always)]
fn short_reduce<T: Elem>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::default(); 16];
    let mut ai = a.chunks_exact(16);
    let mut bi = b.chunks_exact(16);
    for (ac, bc) in (&mut ai).zip(&mut bi) {
        for i in 0..16 {
            acc[i] += f(ac[i], bc[i]);
        }
    }
    for (i, (x, y)) in ai.remainder().iter().zip(bi.remainder()).enumerate() {
        acc[i] += f(*x, *y);
    }
    for w in [8, 4, 2, 1] {
        for i in 0..w {
            let v = acc[i + w];
            acc[i] += v;
        }
    }
    acc[0]
}

/// Row statistics of token rows `[C]` (mean, 1/sqrt(var + eps)), two short reductions in the element type.
#[inline(always)]
fn token_stats<T: Elem>(r: &[T], eps: f64) -> (T, T) {
    let rc = T::from_f64(1.0 / r.len() as f64);
    let m = short_sum(r) * rc;
    let var = short_sq_dev(r, m) * rc;
    (m, T::from_f64(1.0 / (var.to_f64() + eps).sqrt()))
}

fn layer_fwd<T: Elem>(x: &[T], wb: &[T], v: &View, eps: f64) -> Vec<T> {
    let (c, inner) = (v.c, v.inner);
    let (w, b) = (&wb[..c], &wb[c..2 * c]);
    if inner == 1
        && let Some(y) = tokens_fwd(x, wb, c, eps)
    {
        return y;
    }
    let mut y = out_buf::<T>(v.len());
    if inner == 1 {
        // Tokens [outer, C]: rows of C contiguous values.
        y.par_chunks_mut(c * 256)
            .zip(x.par_chunks(c * 256))
            .for_each(|(yb, xb)| {
                for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
                    let (m, iv) = token_stats(xr, eps);
                    for (((yv, xv), wv), bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *yv = (*xv - m) * iv * *wv + *bv;
                    }
                }
            });
        return y;
    }
    let blk = layer_block(c);
    let blocks = inner.div_ceil(blk);
    let yp = SharedMut(y.as_mut_ptr());
    (0..v.outer * blocks).into_par_iter().for_each_init(
        || (vec![T::default(); blk], vec![T::default(); blk]),
        |(mean, inv), t| {
            let (o, i0) = (t / blocks, (t % blocks) * blk);
            let n = blk.min(inner - i0);
            let xo = &x[o * c * inner..][..c * inner];
            layer_block_stats(xo, c, inner, i0, n, eps, mean, inv);
            for ch in 0..c {
                let (wc, bc) = (w[ch], b[ch]);
                let off = (o * c + ch) * inner + i0;
                // SAFETY: task (o, block) writes only its own n columns of every channel.
                let yr = unsafe { std::slice::from_raw_parts_mut(yp.ptr().add(off), n) };
                for (((yv, xv), m), iv) in yr
                    .iter_mut()
                    .zip(&x[off..][..n])
                    .zip(&mean[..n])
                    .zip(&inv[..n])
                {
                    *yv = (*xv - *m) * (*iv * wc) + bc;
                }
            }
        },
    );
    y
}

/// Backward of the Layer view: `[dx; dw; db]`.
fn layer_bwd<T: Elem>(x: &[T], wb: &[T], g: &[T], v: &View, eps: f64) -> Vec<T> {
    let (c, inner, len) = (v.c, v.inner, v.len());
    if inner == 1
        && let Some(out) = tokens_bwd(x, wb, g, c, eps)
    {
        return out;
    }
    let w = &wb[..c];
    let rc = T::from_f64(1.0 / c as f64);
    let mut out = out_buf::<T>(len + 2 * c);
    let dxp = SharedMut(out.as_mut_ptr());
    let parts: Vec<Vec<f64>> = if inner == 1 {
        const ROWS: usize = 256;
        (0..v.outer.div_ceil(ROWS))
            .into_par_iter()
            .fold(
                || vec![0f64; 2 * c],
                |mut acc, t| {
                    let mut dw = vec![T::default(); c];
                    let mut db = vec![T::default(); c];
                    let mut xh = vec![T::default(); c];
                    let mut gw = vec![T::default(); c];
                    for o in t * ROWS..((t + 1) * ROWS).min(v.outer) {
                        let (xr, gr) = (&x[o * c..][..c], &g[o * c..][..c]);
                        let (m, iv) = token_stats(xr, eps);
                        for ch in 0..c {
                            xh[ch] = (xr[ch] - m) * iv;
                            gw[ch] = gr[ch] * w[ch];
                            dw[ch] += gr[ch] * xh[ch];
                            db[ch] += gr[ch];
                        }
                        let p1 = short_sum(&gw) * rc;
                        let p2 = short_dot(&gw, &xh) * rc;
                        // SAFETY: row o belongs to this task only.
                        let dr = unsafe { std::slice::from_raw_parts_mut(dxp.ptr().add(o * c), c) };
                        for ((d, gv), h) in dr.iter_mut().zip(&gw).zip(&xh) {
                            *d = iv * (*gv - p1 - *h * p2);
                        }
                    }
                    for ch in 0..c {
                        acc[ch] += dw[ch].to_f64();
                        acc[c + ch] += db[ch].to_f64();
                    }
                    acc
                },
            )
            .collect()
    } else {
        let blk = layer_block(c);
        let blocks = inner.div_ceil(blk);
        (0..v.outer * blocks)
            .into_par_iter()
            .fold(
                || (vec![0f64; 2 * c], [(); 5].map(|_| vec![T::default(); blk])),
                |(mut acc, mut bufs), t| {
                    let [mean, inv, a1, a2, tmp] = &mut bufs;
                    let (o, i0) = (t / blocks, (t % blocks) * blk);
                    let n = blk.min(inner - i0);
                    let xo = &x[o * c * inner..][..c * inner];
                    layer_block_stats(xo, c, inner, i0, n, eps, mean, inv);
                    let (mean, inv) = (&mean[..n], &inv[..n]);
                    let (a1, a2, tmp) = (&mut a1[..n], &mut a2[..n], &mut tmp[..n]);
                    a1.fill(T::default());
                    a2.fill(T::default());
                    // Sweep 1: Σ_c g·w, Σ_c g·w·x̂ per position; Σ_positions g·x̂ and g per channel.
                    for ch in 0..c {
                        let wc = w[ch];
                        let off = (o * c + ch) * inner + i0;
                        let (gr, xr) = (&g[off..][..n], &x[off..][..n]);
                        for i in 0..n {
                            let xh = (xr[i] - mean[i]) * inv[i];
                            let gw = gr[i] * wc;
                            a1[i] += gw;
                            a2[i] += gw * xh;
                            tmp[i] = gr[i] * xh;
                        }
                        acc[ch] += lane_sum(tmp);
                        acc[c + ch] += lane_sum(gr);
                    }
                    for i in 0..n {
                        a1[i] *= rc;
                        a2[i] *= rc;
                    }
                    // Sweep 2 (from cache): dx = inv·(g·w − mean_c(g·w) − x̂·mean_c(g·w·x̂)).
                    for ch in 0..c {
                        let wc = w[ch];
                        let off = (o * c + ch) * inner + i0;
                        let (gr, xr) = (&g[off..][..n], &x[off..][..n]);
                        // SAFETY: task (o, block) writes only its own n columns of every channel.
                        let dr = unsafe { std::slice::from_raw_parts_mut(dxp.ptr().add(off), n) };
                        for i in 0..n {
                            let xh = (xr[i] - mean[i]) * inv[i];
                            dr[i] = inv[i] * (gr[i] * wc - a1[i] - xh * a2[i]);
                        }
                    }
                    (acc, bufs)
                },
            )
            .map(|(acc, _)| acc)
            .collect()
    };
    let mut dwb = vec![0f64; 2 * c];
    for p in parts {
        for (d, s) in dwb.iter_mut().zip(&p) {
            *d += s;
        }
    }
    for (o, d) in out[len..].iter_mut().zip(&dwb) {
        *o = T::from_f64(*d);
    }
    out
}

/// LayerNorm over the channels (Layer views, `inner == 1` for tokens): `(x, wb [2, C]) → y`.
#[derive(Clone)]
pub(crate) struct LayerNormOp {
    pub view: View,
    pub eps: f64,
}

impl CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: Elem>(
            op: &LayerNormOp,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "layer-norm")?;
            let wb = slice::<T>(s2, l2, "layer-norm")?;
            check_sizes("layer-norm", &op.view, x.len(), None, None, wb.len())?;
            Ok(T::to_cpu_storage_owned(layer_fwd(x, wb, &op.view, op.eps)))
        }
        let st = dispatch_float!(s1, "layer-norm", go(self, s1, l1, s2, l2))?;
        Ok((st, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = grad.contiguous()?.apply_op3_no_bwd(
            &x.contiguous()?,
            &wb.contiguous()?,
            &LayerNormBwdOp {
                view: self.view,
                eps: self.eps,
            },
        )?;
        let (dx, dwb) = split_dx_dwb(&both, x, self.view.c)?;
        Ok((Some(dx), Some(dwb)))
    }
}

/// Backward of [`LayerNormOp`]: `(grad, x, wb) → [dx; dw; db]` flattened.
struct LayerNormBwdOp {
    view: View,
    eps: f64,
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "layer-norm-bwd"
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
            op: &LayerNormBwdOp,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let g = slice::<T>(s1, l1, "layer-norm-bwd")?;
            let x = slice::<T>(s2, l2, "layer-norm-bwd")?;
            let wb = slice::<T>(s3, l3, "layer-norm-bwd")?;
            check_sizes(
                "layer-norm-bwd",
                &op.view,
                x.len(),
                Some(g.len()),
                None,
                wb.len(),
            )?;
            Ok(T::to_cpu_storage_owned(layer_bwd(
                x, wb, g, &op.view, op.eps,
            )))
        }
        let st = dispatch_float!(s1, "layer-norm-bwd", go(self, s1, l1, s2, l2, s3, l3))?;
        Ok((st, Shape::from(self.view.len() + 2 * self.view.c)))
    }
}

// ---------------------------------------------------------------------------------------------------------
// LayerNorm over the last axis of f32 tokens `[rows, C]`, `C ≤ 64`: AVX-512 kernels with the row in registers.

/// Largest C the token kernels keep in registers (4 zmm).
#[cfg(target_arch = "x86_64")]
const TOKEN_MAX_C: usize = 64;

/// Token rows per parallel task (dweight/dbias partial sums stay in f32 over one task, like the generic path).
#[cfg(target_arch = "x86_64")]
const TOKEN_ROWS: usize = 256;

/// Reinterprets `s` as `&[f32]` when `T` is f32.
fn as_f32<T: Elem>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (checked by TypeId), so the slice is reinterpreted as itself.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// Moves an f32 vector into `Vec<T>` when `T` is f32 (`None` otherwise).
fn into_t<T: Elem>(v: Vec<f32>) -> Option<Vec<T>> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        let mut v = std::mem::ManuallyDrop::new(v);
        // SAFETY: T is f32 (checked by TypeId): same layout, pointer, length and capacity.
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
    })
}

/// Whether the AVX-512 token kernels take a `[rows, c]` LayerNorm.
#[cfg(target_arch = "x86_64")]
fn tokens_avx512(c: usize) -> bool {
    (1..=TOKEN_MAX_C).contains(&c) && std::arch::is_x86_feature_detected!("avx512f")
}

/// Forward of the token LayerNorm in f32, or `None` where the AVX-512 kernel does not apply.
fn tokens_fwd<T: Elem>(x: &[T], wb: &[T], c: usize, eps: f64) -> Option<Vec<T>> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(wb)) = (as_f32(x), as_f32(wb))
        && tokens_avx512(c)
    {
        return into_t(tokens_avx512::forward(x, wb, c, eps as f32));
    }
    let _ = (x, wb, c, eps);
    None
}

/// Backward (`[dx; dw; db]`) of the token LayerNorm in f32, or `None` where the AVX-512 kernel does not apply.
fn tokens_bwd<T: Elem>(x: &[T], wb: &[T], g: &[T], c: usize, eps: f64) -> Option<Vec<T>> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(wb), Some(g)) = (as_f32(x), as_f32(wb), as_f32(g))
        && tokens_avx512(c)
    {
        return into_t(tokens_avx512::backward(x, wb, g, c, eps as f32));
    }
    let _ = (x, wb, g, c, eps);
    None
}

/// Token LayerNorm kernels: one row of `C ≤ 64` channels is `NV ≤ 4` zmm vectors (the last one masked), read
/// once; mean and variance are two in-register reductions (the variance from the centred values), the
/// output or the input gradient is written in the same visit. The backward's two row reductions
/// (`Σ g·w`, `Σ g·w·x̂`) are independent and share the visit; `dweight`/`dbias` are accumulated in registers
/// over a task's rows and moved to f64 once per task.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod tokens_avx512 {
    use super::super::elem::{SharedMut, out_buf};
    use super::TOKEN_ROWS;
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    const L: usize = 16;

    /// Load masks of the `NV` vectors of a row of `c` channels.
    fn masks<const NV: usize>(c: usize) -> [u16; NV] {
        std::array::from_fn(|j| {
            let n = c.saturating_sub(j * L).min(L);
            if n == L { u16::MAX } else { (1u16 << n) - 1 }
        })
    }

    /// Mean and `1/sqrt(var + eps)` of a row held in `v` (lanes past C are zero), and the centred row.
    #[inline(always)]
    unsafe fn row_stats<const NV: usize>(
        v: &[__m512; NV],
        mk: &[u16; NV],
        rc: f32,
        eps: f32,
    ) -> ([__m512; NV], __m512) {
        let mut s = v[0];
        for j in 1..NV {
            s = _mm512_add_ps(s, v[j]);
        }
        let m = _mm512_set1_ps(_mm512_reduce_add_ps(s) * rc);
        let d: [__m512; NV] = std::array::from_fn(|j| _mm512_maskz_sub_ps(mk[j], v[j], m));
        let mut q = _mm512_mul_ps(d[0], d[0]);
        for j in 1..NV {
            q = _mm512_fmadd_ps(d[j], d[j], q);
        }
        let var = _mm512_reduce_add_ps(q) * rc;
        (d, _mm512_set1_ps(1.0 / (var + eps).sqrt()))
    }

    pub(super) fn forward(x: &[f32], wb: &[f32], c: usize, eps: f32) -> Vec<f32> {
        let mut y = out_buf::<f32>(x.len());
        // SAFETY: AVX-512F checked by the caller (`tokens_avx512`); c ≤ 64 picks NV.
        unsafe {
            match c.div_ceil(L) {
                1 => fwd::<1>(x, wb, c, eps, &mut y),
                2 => fwd::<2>(x, wb, c, eps, &mut y),
                3 => fwd::<3>(x, wb, c, eps, &mut y),
                _ => fwd::<4>(x, wb, c, eps, &mut y),
            }
        }
        y
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn fwd<const NV: usize>(x: &[f32], wb: &[f32], c: usize, eps: f32, y: &mut [f32]) {
        let rows = x.len() / c;
        let mk = masks::<NV>(c);
        let wv: [__m512; NV] =
            std::array::from_fn(|j| _mm512_maskz_loadu_ps(mk[j], wb[j * L..].as_ptr()));
        let bv: [__m512; NV] =
            std::array::from_fn(|j| _mm512_maskz_loadu_ps(mk[j], wb[c + j * L..].as_ptr()));
        let rc = 1.0 / c as f32;
        let (xp, yp) = (x.as_ptr() as usize, SharedMut(y.as_mut_ptr()));
        (0..rows.div_ceil(TOKEN_ROWS))
            .into_par_iter()
            .for_each(|t| {
                let xp = xp as *const f32;
                for r in t * TOKEN_ROWS..((t + 1) * TOKEN_ROWS).min(rows) {
                    // SAFETY: AVX-512F (see `forward`); row r lies inside x and y (masked tail); each task
                    // writes its own rows only.
                    unsafe {
                        let (xr, yr) = (xp.add(r * c), yp.ptr().add(r * c));
                        let v: [__m512; NV] =
                            std::array::from_fn(|j| _mm512_maskz_loadu_ps(mk[j], xr.add(j * L)));
                        let (d, inv) = row_stats(&v, &mk, rc, eps);
                        for j in 0..NV {
                            let s = _mm512_mul_ps(inv, wv[j]);
                            _mm512_mask_storeu_ps(
                                yr.add(j * L),
                                mk[j],
                                _mm512_fmadd_ps(d[j], s, bv[j]),
                            );
                        }
                    }
                }
            });
    }

    pub(super) fn backward(x: &[f32], wb: &[f32], g: &[f32], c: usize, eps: f32) -> Vec<f32> {
        let mut out = out_buf::<f32>(x.len() + 2 * c);
        // SAFETY: AVX-512F checked by the caller (`tokens_avx512`); c ≤ 64 picks NV.
        let dwb = unsafe {
            match c.div_ceil(L) {
                1 => bwd::<1>(x, wb, g, c, eps, &mut out),
                2 => bwd::<2>(x, wb, g, c, eps, &mut out),
                3 => bwd::<3>(x, wb, g, c, eps, &mut out),
                _ => bwd::<4>(x, wb, g, c, eps, &mut out),
            }
        };
        let len = x.len();
        for (o, d) in out[len..].iter_mut().zip(&dwb) {
            *o = *d as f32;
        }
        out
    }

    /// Writes `dx` into `out[..len]` and returns `[Σ g·x̂; Σ g]` per channel in f64.
    #[target_feature(enable = "avx512f")]
    unsafe fn bwd<const NV: usize>(
        x: &[f32],
        wb: &[f32],
        g: &[f32],
        c: usize,
        eps: f32,
        out: &mut [f32],
    ) -> Vec<f64> {
        let rows = x.len() / c;
        let mk = masks::<NV>(c);
        let wv: [__m512; NV] =
            std::array::from_fn(|j| _mm512_maskz_loadu_ps(mk[j], wb[j * L..].as_ptr()));
        let rc = 1.0 / c as f32;
        let (xp, gp, dxp) = (
            x.as_ptr() as usize,
            g.as_ptr() as usize,
            SharedMut(out.as_mut_ptr()),
        );
        let parts: Vec<Vec<f64>> = (0..rows.div_ceil(TOKEN_ROWS))
            .into_par_iter()
            .fold(
                || vec![0f64; 2 * c],
                |mut acc, t| {
                    let (xp, gp) = (xp as *const f32, gp as *const f32);
                    let mut dw = [_mm512_setzero_ps(); NV];
                    let mut db = [_mm512_setzero_ps(); NV];
                    for r in t * TOKEN_ROWS..((t + 1) * TOKEN_ROWS).min(rows) {
                        // SAFETY: AVX-512F (see `backward`); row r lies inside x, g and dx (masked tail);
                        // each task writes its own rows only.
                        unsafe {
                            let (xr, gr, dr) = (xp.add(r * c), gp.add(r * c), dxp.ptr().add(r * c));
                            let v: [__m512; NV] = std::array::from_fn(|j| {
                                _mm512_maskz_loadu_ps(mk[j], xr.add(j * L))
                            });
                            let gv: [__m512; NV] = std::array::from_fn(|j| {
                                _mm512_maskz_loadu_ps(mk[j], gr.add(j * L))
                            });
                            let (d, inv) = row_stats(&v, &mk, rc, eps);
                            let xh: [__m512; NV] =
                                std::array::from_fn(|j| _mm512_mul_ps(d[j], inv));
                            let gw: [__m512; NV] =
                                std::array::from_fn(|j| _mm512_mul_ps(gv[j], wv[j]));
                            let mut s1 = gw[0];
                            let mut s2 = _mm512_mul_ps(gw[0], xh[0]);
                            for j in 1..NV {
                                s1 = _mm512_add_ps(s1, gw[j]);
                                s2 = _mm512_fmadd_ps(gw[j], xh[j], s2);
                            }
                            for j in 0..NV {
                                dw[j] = _mm512_fmadd_ps(gv[j], xh[j], dw[j]);
                                db[j] = _mm512_add_ps(db[j], gv[j]);
                            }
                            let p1 = _mm512_set1_ps(_mm512_reduce_add_ps(s1) * rc);
                            let p2 = _mm512_set1_ps(_mm512_reduce_add_ps(s2) * rc);
                            for j in 0..NV {
                                // dx = inv·(g·w − mean(g·w) − x̂·mean(g·w·x̂))
                                let t = _mm512_sub_ps(gw[j], _mm512_fmadd_ps(xh[j], p2, p1));
                                _mm512_mask_storeu_ps(dr.add(j * L), mk[j], _mm512_mul_ps(inv, t));
                            }
                        }
                    }
                    let mut tmp = [0f32; 4 * L];
                    for (j, (a, b)) in dw.iter().zip(&db).enumerate() {
                        // SAFETY: tmp holds 4 vectors; the lanes past c are zero and not read back.
                        unsafe {
                            _mm512_storeu_ps(tmp.as_mut_ptr(), *a);
                            _mm512_storeu_ps(tmp[L..].as_mut_ptr(), *b);
                        }
                        for l in 0..L.min(c.saturating_sub(j * L)) {
                            acc[j * L + l] += tmp[l] as f64;
                            acc[c + j * L + l] += tmp[L + l] as f64;
                        }
                    }
                    acc
                },
            )
            .collect();
        let mut dwb = vec![0f64; 2 * c];
        for p in parts {
            for (d, s) in dwb.iter_mut().zip(&p) {
                *d += s;
            }
        }
        dwb
    }
}
