//! Direct register-blocked AVX-512 kernels for f32 depthwise conv3d (one input channel per group), stride 1
//! along every axis, any padding and dilation, `kH <= 7`, `kW <= 16`.
//!
//! Both kernels work on blocks of `R` output rows of one output plane that are `dilation_h` apart (one residue
//! class of rows modulo the dilation), so that the `R + kH - 1` input rows the block reads are also one
//! dilation apart and every loaded input vector serves up to `kH` output rows (`kH` FMAs per load instead of
//! one). The row is vectorised along W in chunks of `NV` zmm vectors; padding along W and the row tail are
//! handled with load/store masks, rows outside the input (padding along D and H) are skipped.
//!
//! * Forward (also the input gradient, as the forward conv with the flipped kernel): `R × NV` accumulators
//!   stay in registers over all `kD · kW` tap columns; per tap column the `kH` weights are broadcast once.
//!   Two variants: where almost all taps fall inside the input ([`padded_pays`]), each task copies its
//!   channel's slab of input planes into a zero-padded per-thread buffer (only the input rows are copied once
//!   the zero border exists) and the inner loop has plain loads, no masks and no bounds checks, with blocks of
//!   8 rows (`R × NV ≤ 24` accumulators); otherwise (large dilated padding, where many taps hit padding) the
//!   masked kernel reads the input as it is and skips rows and planes outside it.
//! * Weight gradient: the block's `R × NV` output-gradient vectors stay in registers; per tap column `kH`
//!   accumulators collect `Σ dy · x` over the block and are added to a per-task `[kt][16]` tile, which is
//!   reduced horizontally once per task (a task is one `(channel, output plane)` pair, summed over samples).

#![allow(clippy::needless_range_loop)]
#![allow(clippy::too_many_arguments)]
#![allow(unsafe_op_in_unsafe_fn)]

use super::super::act::Act;
use super::super::conv3d::{Geom, epilogue};
use super::super::elem::{SharedMut, out_buf};
use super::{LANES, lane_mask};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Expands `body` once per listed value of `var` (a literal), so that register-array indices derived from
/// it are compile-time constants (LLVM does not fully unroll the nested row/tap loops by itself).
macro_rules! unroll {
    ($var:ident in [$($n:literal)*] $body:block) => {
        $( { let $var: usize = $n; $body } )*
    };
}

/// Output rows per register block.
const R: usize = 6;
/// Largest kernel extent along H the kernels are instantiated for.
const MAX_KH: usize = 7;
/// Largest kernel extent along W (size of the mask tables).
const MAX_KW: usize = 16;

/// Whether the depthwise kernels handle `g` (f32 data is the caller's business).
pub(crate) fn usable(g: &Geom) -> bool {
    g.cg == 1
        && g.s == [1, 1, 1]
        && (1..=MAX_KH).contains(&g.k[1])
        && g.k[2] <= MAX_KW
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// Row blocks of one output plane: `(first row, row count)` with rows `first + i·dh`, `i < count <= R`.
fn row_blocks(oh: usize, dh: usize) -> Vec<(usize, usize)> {
    row_blocks_of(oh, dh, R)
}

/// [`row_blocks`] with blocks of at most `r` rows.
fn row_blocks_of(oh: usize, dh: usize, r: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for rho in 0..dh.min(oh) {
        let n = (oh - rho).div_ceil(dh);
        let mut q = 0;
        while q < n {
            let c = (n - q).min(r);
            v.push((rho + q * dh, c));
            q += c;
        }
    }
    v
}

/// Load masks `[tap along W][vector]` and store masks `[vector]` for the chunk of `NV` vectors at `x0`.
fn masks(g: &Geom, x0: usize, nv: usize) -> ([[u16; 3]; MAX_KW], [u16; 3]) {
    let (iw, ow) = (g.i[2], g.out[2]);
    let mut lm = [[0u16; 3]; MAX_KW];
    for (c, m) in lm.iter_mut().enumerate().take(g.k[2]) {
        for (j, mj) in m.iter_mut().enumerate().take(nv) {
            let start = (x0 + j * LANES) as isize + (c * g.d[2]) as isize - g.p[2] as isize;
            *mj = lane_mask(start, iw, x0 + j * LANES, ow);
        }
    }
    let mut sm = [0u16; 3];
    for (j, m) in sm.iter_mut().enumerate().take(nv) {
        *m = lane_mask(0, usize::MAX >> 1, x0 + j * LANES, ow);
    }
    (lm, sm)
}

/// W chunks `(x0, nv)` of an output row: 3 vectors at a time, the last chunk shorter.
fn chunks(ow: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut x0 = 0;
    while x0 < ow {
        let nv = (ow - x0).div_ceil(LANES).min(3);
        v.push((x0, nv));
        x0 += nv * LANES;
    }
    v
}

/// Output rows per register block for a chunk of `nv` vectors and `kh` taps along H: `rows × nv`
/// accumulators, `kh` broadcast weights and one input vector at a time fit in the 32 zmm registers.
fn rows_for(nv: usize, kh: usize) -> usize {
    if let Some(r) = env_rows() {
        return r;
    }
    match nv {
        3 if kh <= 5 => 8,
        3 => 6,
        _ => 8,
    }
}

fn env_rows() -> Option<usize> {
    static R: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *R.get_or_init(|| {
        std::env::var("LOGONET_DW_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|r| *r == 6 || *r == 8)
    })
}

/// f32 elements of one task's zero-padded input slab (2 MiB): large enough that the `(kD - 1)·dD` halo planes
/// copied twice are a small part of a slab; a slab is read a few planes at a time, so it need not fit in L2.
const SLAB_BUDGET: usize = 512 * 1024;

thread_local! {
    /// Per-thread zero-padded input slab, reused across tasks and calls (no page faults after the first).
    static PAD: std::cell::RefCell<PadBuf> = const {
        std::cell::RefCell::new(PadBuf { buf: Vec::new(), key: None, zero: Vec::new() })
    };
}

/// A thread's slab buffer and what it holds: for the layout `key`, every element outside the copied input
/// rows and columns is zero, and `zero[l]` says that plane slot `l` is zero throughout. A task with the same
/// layout then only copies the input rows (and clears the slots of planes outside the input that still hold
/// data); the zero border is written once per layout.
struct PadBuf {
    buf: Vec<f32>,
    key: Option<[usize; 7]>,
    zero: Vec<bool>,
}

/// Shape of the zero-padded input slab of the forward kernel: padded plane `q`, row `v`, column `u` hold the
/// input at `(q - pD, v - pH, u - pW)` (zero outside the input), with `hp`/`wp` large enough for every row
/// block and every W chunk at its full size, so the inner loops need neither masks nor bounds checks.
struct Pad {
    hp: usize,
    wp: usize,
    /// Output planes per slab (the last slab may have fewer).
    zs: usize,
    /// Padded planes of a slab: `zs + (kD - 1)·dD`.
    planes: usize,
}

impl Pad {
    /// `blocks`: the row blocks `(first row, block height)` the kernel runs (computed rows included).
    fn new(g: &Geom, blocks: impl Iterator<Item = (usize, usize)>) -> Self {
        let [od, _, ow] = g.out;
        let halo = |a: usize| (g.k[a] - 1) * g.d[a];
        // One past the last padded row a block reads: its first row + (height - 1 + kH - 1)·dH.
        let hp = blocks
            .map(|(y0, rr)| y0 + (rr - 1) * g.d[1] + halo(1) + 1)
            .max()
            .unwrap_or(1);
        let wp = (ow.next_multiple_of(LANES) + halo(2)).next_multiple_of(LANES);
        let per_plane = hp * wp;
        let zmax = (SLAB_BUDGET / per_plane)
            .saturating_sub(halo(0))
            .max(4)
            .min(od);
        // Slabs of equal size.
        let zs = od.div_ceil(od.div_ceil(zmax));
        Pad {
            hp,
            wp,
            zs,
            planes: zs + halo(0),
        }
    }

    /// Makes `st.buf` hold `planes·hp·wp` elements with a zero border for this layout (zeroing the whole
    /// buffer when the layout differs from the last one of this thread).
    fn prepare(&self, st: &mut PadBuf, g: &Geom) {
        let need = self.planes * self.hp * self.wp;
        let key = [
            self.hp,
            self.wp,
            g.p[1],
            g.p[2],
            self.nrow(g),
            self.ncol(g),
            self.planes,
        ];
        if st.key != Some(key) || st.buf.len() < need {
            st.buf.clear();
            st.buf.resize(need, 0.0);
            st.zero = vec![true; self.planes];
            st.key = Some(key);
        }
    }

    /// Input columns that land inside a padded row.
    fn ncol(&self, g: &Geom) -> usize {
        g.i[2].min(self.wp.saturating_sub(g.p[2]))
    }

    /// Input rows that land inside a padded plane.
    fn nrow(&self, g: &Geom) -> usize {
        g.i[1].min(self.hp.saturating_sub(g.p[1]))
    }

    /// Input plane of padded plane slot `l` of the slab starting at output plane `z0`, if inside the input.
    fn input_plane(g: &Geom, z0: usize, l: usize) -> Option<usize> {
        (z0 + l).checked_sub(g.p[0]).filter(|&iz| iz < g.i[0])
    }

    /// Makes plane slot `l` of `st.buf` (after [`Pad::prepare`]) padded plane `z0 + l` of input channel
    /// `xc` (`[iD, iH, iW]`): copies the input rows, or clears the slot's rows where the plane is outside the
    /// input and the slot still holds data.
    fn fill_plane(&self, st: &mut PadBuf, xc: &[f32], g: &Geom, z0: usize, l: usize) {
        let [_, ih, iw] = g.i;
        let [_, ph, pw] = g.p;
        let (hp, wp) = (self.hp, self.wp);
        let (ncol, nrow) = (self.ncol(g), self.nrow(g));
        let rows = &mut st.buf[l * hp * wp..][..hp * wp][ph * wp..][..nrow * wp];
        let Some(iz) = Self::input_plane(g, z0, l) else {
            if !st.zero[l] {
                rows.fill(0.0);
                st.zero[l] = true;
            }
            return;
        };
        let src = &xc[iz * ih * iw..][..ih * iw];
        for (iy, row) in rows.chunks_exact_mut(wp).enumerate() {
            // SAFETY: AVX-512F checked by `usable`; the row has wp (a multiple of 16) elements, pw + ncol
            // ≤ wp, and the loads are masked to the ncol ≤ iW elements of input row iy.
            unsafe { copy_row(row, src[iy * iw..].as_ptr(), pw, ncol) };
        }
        st.zero[l] = false;
    }

    /// Asks for the input plane of slot `l` to be brought into L2 (it is copied one output plane later, so the
    /// copy does not wait for memory).
    fn prefetch_plane(xc: &[f32], g: &Geom, z0: usize, l: usize) {
        let Some(iz) = Self::input_plane(g, z0, l) else {
            return;
        };
        let plane = &xc[iz * g.i[1] * g.i[2]..][..g.i[1] * g.i[2]];
        for line in plane.chunks(16) {
            // SAFETY: a prefetch of a valid address has no effect other than on caches.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
        }
    }
}

/// `row[u] = src[u - pw]` for `pw ≤ u < pw + ncol` (`pw + ncol ≤ row.len()`, a multiple of 16); the other
/// elements are left as they are.
#[target_feature(enable = "avx512f")]
unsafe fn copy_row(row: &mut [f32], src: *const f32, pw: usize, ncol: usize) {
    let d = row.as_mut_ptr();
    let mut u0 = pw / LANES * LANES;
    while u0 < pw + ncol {
        let lo = pw.saturating_sub(u0).min(LANES);
        let hi = (pw + ncol - u0).min(LANES);
        let m = ((1u32 << hi) - (1u32 << lo)) as u16;
        let v = _mm512_maskz_loadu_ps(m, src.wrapping_add(u0).wrapping_sub(pw));
        _mm512_mask_storeu_ps(d.add(u0), m, v);
        u0 += LANES;
    }
}

/// Whether the padded forward kernel is worth it: it computes every tap, also those that fall in the
/// padding, where [`fwd_block_masked`] skips rows and planes outside the input. Taken when at least 90 % of
/// the tap positions along D and H are inside the input (5³ with padding 2 on 48³: 95 %; 7³ with dilation
/// 3 and padding 9 on 48³: 79 %, where the masked kernel is faster).
fn padded_pays(g: &Geom) -> bool {
    let valid = |a: usize| {
        let (n, k, d, p) = (g.out[a], g.k[a], g.d[a], g.p[a]);
        let mut v = 0usize;
        for t in 0..k {
            let lo = p.saturating_sub(t * d);
            let hi = (g.i[a] + p).saturating_sub(t * d).min(n);
            v += hi.saturating_sub(lo);
        }
        v as f64 / (n * k) as f64
    };
    valid(0) * valid(1) >= 0.9
}

/// Forward depthwise conv `y [N, O, out]` (call only when [`usable`]); `padded` forces one of the two kernels
/// (`None`: [`padded_pays`] decides).
///
/// A task is one `(sample, input channel, slab of output planes)`: it copies the slab's input planes into a
/// zero-padded, L2-sized buffer (row pitch a multiple of 16 floats), then runs the register-blocked kernel
/// over every output channel of that input channel, plane by plane, without masks or bounds checks (rows and
/// lanes past the output are computed from the zero padding and not stored), and applies the activation to
/// each finished plane.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    act: Option<Act>,
    padded: Option<bool>,
) -> Vec<f32> {
    if !padded.unwrap_or_else(|| padded_pays(g)) {
        return forward_masked(x, w, bias, g, act);
    }
    let [od, oh, ow] = g.out;
    let osp = od * oh * ow;
    let isp: usize = g.i.iter().product();
    let kt: usize = g.k.iter().product();
    let mut y = out_buf::<f32>(g.n * g.o * osp);
    let yp = SharedMut(y.as_mut_ptr());
    let ch = chunks(ow);
    // Per chunk: its row blocks (for the chunk's block height) and store masks.
    type Plan = (usize, usize, usize, Vec<(usize, usize)>, [u16; 3]);
    let plan: Vec<Plan> = ch
        .iter()
        .map(|&(x0, nv)| {
            let mut sm = [0u16; 3];
            for (j, m) in sm.iter_mut().enumerate().take(nv) {
                *m = lane_mask(0, usize::MAX >> 1, x0 + j * LANES, ow);
            }
            let rr = rows_for(nv, g.k[1]);
            (x0, nv, rr, row_blocks_of(oh, g.d[1], rr), sm)
        })
        .collect();
    let pad = Pad::new(
        g,
        plan.iter()
            .flat_map(|(_, _, rr, blocks, _)| blocks.iter().map(|&(y0, _)| (y0, *rr))),
    );
    let slabs = od.div_ceil(pad.zs);
    let tasks = g.n * g.c * slabs;
    (0..tasks).into_par_iter().for_each(|t| {
        let (bc, s) = (t / slabs, t % slabs);
        let (b, ic) = (bc / g.c, bc % g.c);
        let (z0, z1) = (s * pad.zs, ((s + 1) * pad.zs).min(od));
        let xc = &x[(b * g.c + ic) * isp..][..isp];
        let halo0 = (g.k[0] - 1) * g.d[0];
        PAD.with(|cell| {
            let st = &mut *cell.borrow_mut();
            pad.prepare(st, g);
            let mut filled = 0;
            for z in z0..z1 {
                // Output plane z reads slots (z - z0) + a·dD, a < kD.
                while filled <= z - z0 + halo0 {
                    pad.fill_plane(st, xc, g, z0, filled);
                    filled += 1;
                }
                if z + 1 < z1 {
                    Pad::prefetch_plane(xc, g, z0, filled);
                }
                let bp = st.buf.as_ptr();
                for oc in ic * g.og..(ic + 1) * g.og {
                    let wk = w[oc * kt..][..kt].as_ptr();
                    let bv = bias.map_or(0.0, |bb| bb[oc]);
                    // SAFETY: the task writes planes z0..z1 of output channel (b, oc) only (disjoint across
                    // tasks); y has N·O·osp elements.
                    let dst = unsafe { yp.ptr().add((b * g.o + oc) * osp) };
                    for (x0, nv, rr, blocks, sm) in &plan {
                        for &(y0, nr) in blocks {
                            // SAFETY: AVX-512F checked by `usable`; the block reads padded rows
                            // y0 + (i + bb)·dH < hp, columns x0 + 16·nv - 1 + (kW - 1)·dW < wp of planes
                            // (z - z0) + a·dD < planes (see `Pad::new`); it stores rows < oh, lanes < ow.
                            unsafe {
                                let src = bp.add(((z - z0) * pad.hp + y0) * pad.wp + x0);
                                let d = dst.add((z * oh + y0) * ow + x0);
                                macro_rules! go {
                                    ($kh:literal) => {
                                        match (nv, rr) {
                                            (1, _) => fwd_block::<$kh, 1, 8>(
                                                src, wk, bv, g, &pad, d, nr, sm,
                                            ),
                                            (2, _) => fwd_block::<$kh, 2, 8>(
                                                src, wk, bv, g, &pad, d, nr, sm,
                                            ),
                                            (_, 8) => fwd_block::<$kh, 3, 8>(
                                                src, wk, bv, g, &pad, d, nr, sm,
                                            ),
                                            _ => fwd_block::<$kh, 3, 6>(
                                                src, wk, bv, g, &pad, d, nr, sm,
                                            ),
                                        }
                                    };
                                }
                                match g.k[1] {
                                    1 => go!(1),
                                    2 => go!(2),
                                    3 => go!(3),
                                    4 => go!(4),
                                    5 => go!(5),
                                    6 => go!(6),
                                    _ => go!(7),
                                }
                            }
                        }
                    }
                    if act.is_some() {
                        // SAFETY: plane z of channel (b, oc) was written by this task only.
                        let plane = unsafe {
                            std::slice::from_raw_parts_mut(dst.add(z * oh * ow), oh * ow)
                        };
                        epilogue(plane, act);
                    }
                }
            }
        });
    });
    y
}

/// One block: output rows `i·dH` (`i < RR`, the first `nr` stored) and `16·NV` columns from `src` (padded
/// slab at the block's first plane, row and column) into `dst` (output at the block's first row and column,
/// row pitch `oW`).
#[target_feature(enable = "avx512f")]
unsafe fn fwd_block<const KH: usize, const NV: usize, const RR: usize>(
    src: *const f32,
    wk: *const f32,
    bias: f32,
    g: &Geom,
    pad: &Pad,
    dst: *mut f32,
    nr: usize,
    sm: &[u16; 3],
) {
    let [kd, _, kw] = g.k;
    let ow = g.out[2];
    let plane_step = g.d[0] * pad.hp * pad.wp;
    let row_step = g.d[1] * pad.wp;
    let mut acc = [[_mm512_set1_ps(bias); NV]; RR];
    for a in 0..kd {
        let pa = src.add(a * plane_step);
        let wa = wk.add(a * KH * kw);
        for c in 0..kw {
            let mut wt = [_mm512_setzero_ps(); KH];
            for bb in 0..KH {
                wt[bb] = _mm512_set1_ps(*wa.add(bb * kw + c));
            }
            let pc = pa.add(c * g.d[2]);
            unroll!(r in [0 1 2 3 4 5 6 7 8 9 10 11 12 13] {
                if r < RR + KH - 1 {
                    let row = pc.add(r * row_step);
                    for j in 0..NV {
                        let v = _mm512_loadu_ps(row.add(j * LANES));
                        unroll!(bb in [0 1 2 3 4 5 6] {
                            // Output row i = r - bb of the block takes tap bb from this input row.
                            let i = r.wrapping_sub(bb);
                            if bb < KH && bb <= r && i < RR {
                                acc[i][j] = _mm512_fmadd_ps(wt[bb], v, acc[i][j]);
                            }
                        });
                    }
                }
            });
        }
    }
    for i in 0..nr.min(RR) {
        let d = dst.add(i * g.d[1] * ow);
        for j in 0..NV {
            _mm512_mask_storeu_ps(d.add(j * LANES), sm[j], acc[i][j]);
        }
    }
}

/// Forward depthwise conv on the input as it is: masked loads for padding along W and the row tails, rows and
/// planes outside the input skipped (see [`padded_pays`]).
fn forward_masked(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    act: Option<Act>,
) -> Vec<f32> {
    let [od, oh, ow] = g.out;
    let osp = od * oh * ow;
    let isp: usize = g.i.iter().product();
    let kt: usize = g.k.iter().product();
    let mut y = out_buf::<f32>(g.n * g.o * osp);
    let yp = SharedMut(y.as_mut_ptr());
    let blocks = row_blocks(oh, g.d[1]);
    let ch = chunks(ow);
    let mk: Vec<_> = ch.iter().map(|&(x0, nv)| masks(g, x0, nv)).collect();
    let tasks = g.n * g.o * od;
    (0..tasks).into_par_iter().for_each(|t| {
        let (bo, z) = (t / od, t % od);
        let (b, oc) = (bo / g.o, bo % g.o);
        let ic = oc / g.og;
        let xc = x[(b * g.c + ic) * isp..].as_ptr();
        let wk = w[oc * kt..].as_ptr();
        let bv = bias.map_or(0.0, |bb| bb[oc]);
        // SAFETY: the task writes output plane z of channel (b, oc) only (disjoint across tasks); y has
        // N·O·osp elements; input loads are masked to the rows' valid columns.
        let dst = unsafe { yp.ptr().add(bo * osp) };
        for &(y0, nr) in &blocks {
            for (&(x0, nv), (lm, sm)) in ch.iter().zip(&mk) {
                // SAFETY: AVX-512F checked by `usable`; see above for the pointers.
                unsafe {
                    macro_rules! go {
                        ($kh:literal) => {
                            match nv {
                                1 => fwd_block_masked::<$kh, 1>(
                                    xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm,
                                ),
                                2 => fwd_block_masked::<$kh, 2>(
                                    xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm,
                                ),
                                _ => fwd_block_masked::<$kh, 3>(
                                    xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm,
                                ),
                            }
                        };
                    }
                    match g.k[1] {
                        1 => go!(1),
                        2 => go!(2),
                        3 => go!(3),
                        4 => go!(4),
                        5 => go!(5),
                        6 => go!(6),
                        _ => go!(7),
                    }
                }
            }
        }
        if act.is_some() {
            // SAFETY: plane z of channel (b, oc) was written by this task only.
            let plane = unsafe { std::slice::from_raw_parts_mut(dst.add(z * oh * ow), oh * ow) };
            epilogue(plane, act);
        }
    });
    y
}

/// One block: output rows `y0 + i·dh` (`i < nr`), columns `x0 .. x0 + 16·NV` of plane `z`.
#[target_feature(enable = "avx512f")]
unsafe fn fwd_block_masked<const KH: usize, const NV: usize>(
    xc: *const f32,
    wk: *const f32,
    bias: f32,
    g: &Geom,
    dst: *mut f32,
    z: usize,
    y0: usize,
    nr: usize,
    x0: usize,
    lm: &[[u16; 3]; MAX_KW],
    sm: &[u16; 3],
) {
    let [id, ih, iw] = g.i;
    let [kd, _, kw] = g.k;
    let [_, oh, ow] = g.out;
    let dh = g.d[1];
    let mut acc = [[_mm512_set1_ps(bias); NV]; R];
    for a in 0..kd {
        let iz = (z + a * g.d[0]) as isize - g.p[0] as isize;
        if iz < 0 || iz >= id as isize {
            continue;
        }
        let plane = xc.add(iz as usize * ih * iw);
        let wa = wk.add(a * KH * kw);
        for c in 0..kw {
            let mut wt = [_mm512_setzero_ps(); KH];
            for bb in 0..KH {
                wt[bb] = _mm512_set1_ps(*wa.add(bb * kw + c));
            }
            let off = (x0 + c * g.d[2]) as isize - g.p[2] as isize;
            let m = &lm[c];
            unroll!(r in [0 1 2 3 4 5 6 7 8 9 10 11] {
                let iy = (y0 + r * dh) as isize - g.p[1] as isize;
                if r < R + KH - 1 && iy >= 0 && iy < ih as isize {
                    let row = plane.add(iy as usize * iw).wrapping_offset(off);
                    let mut v = [_mm512_setzero_ps(); NV];
                    for j in 0..NV {
                        v[j] = _mm512_maskz_loadu_ps(m[j], row.wrapping_add(j * LANES));
                    }
                    unroll!(bb in [0 1 2 3 4 5 6] {
                        // Output row i = r - bb of the block takes tap bb from this input row.
                        let i = r.wrapping_sub(bb);
                        if bb < KH && bb <= r && i < R {
                            for j in 0..NV {
                                acc[i][j] = _mm512_fmadd_ps(wt[bb], v[j], acc[i][j]);
                            }
                        }
                    });
                }
            });
        }
    }
    for i in 0..nr {
        let d = dst.add((z * oh + y0 + i * dh) * ow + x0);
        for j in 0..NV {
            _mm512_mask_storeu_ps(d.add(j * LANES), sm[j], acc[i][j]);
        }
    }
}

/// Weight gradient `dw [O, 1, k]` of a depthwise conv from `x [N, C, i]` and `dy [N, O, out]` (call only
/// when [`usable`]).
pub(crate) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let [od, oh, ow] = g.out;
    let osp = od * oh * ow;
    let isp: usize = g.i.iter().product();
    let kt: usize = g.k.iter().product();
    let blocks = row_blocks(oh, g.d[1]);
    let ch = chunks(ow);
    let mk: Vec<_> = ch.iter().map(|&(x0, nv)| masks(g, x0, nv)).collect();
    let parts: Vec<Vec<f32>> = (0..g.o * od)
        .into_par_iter()
        .map(|t| {
            let (oc, z) = (t / od, t % od);
            let ic = oc / g.og;
            let mut tile = vec![0f32; kt * LANES];
            for b in 0..g.n {
                let xc = x[(b * g.c + ic) * isp..].as_ptr();
                let dyp = dy[(b * g.o + oc) * osp..].as_ptr();
                for &(y0, nr) in &blocks {
                    for (&(x0, nv), (lm, sm)) in ch.iter().zip(&mk) {
                        // SAFETY: AVX-512F checked by `usable`; dy loads stay in the plane (row index
                        // < oh, store mask limits the columns), input loads are masked; tile has kt·16.
                        unsafe {
                            macro_rules! go {
                                ($kh:literal) => {
                                    match nv {
                                        1 => wg_block::<$kh, 1>(
                                            xc, dyp, g, &mut tile, z, y0, nr, x0, lm, sm,
                                        ),
                                        2 => wg_block::<$kh, 2>(
                                            xc, dyp, g, &mut tile, z, y0, nr, x0, lm, sm,
                                        ),
                                        _ => wg_block::<$kh, 3>(
                                            xc, dyp, g, &mut tile, z, y0, nr, x0, lm, sm,
                                        ),
                                    }
                                };
                            }
                            match g.k[1] {
                                1 => go!(1),
                                2 => go!(2),
                                3 => go!(3),
                                4 => go!(4),
                                5 => go!(5),
                                6 => go!(6),
                                _ => go!(7),
                            }
                        }
                    }
                }
            }
            tile.chunks_exact(LANES)
                .map(|l| l.iter().sum::<f32>())
                .collect()
        })
        .collect();
    let mut dw = vec![0f32; g.o * kt];
    for (t, p) in parts.iter().enumerate() {
        let oc = t / od;
        for (d, v) in dw[oc * kt..][..kt].iter_mut().zip(p) {
            *d += *v;
        }
    }
    dw
}

/// One block of the weight gradient: output-gradient rows `y0 + i·dh` (`i < nr`), columns `x0 ..` of plane
/// `z`, accumulated into `tile [kt][16]`.
#[target_feature(enable = "avx512f")]
unsafe fn wg_block<const KH: usize, const NV: usize>(
    xc: *const f32,
    dyp: *const f32,
    g: &Geom,
    tile: &mut [f32],
    z: usize,
    y0: usize,
    nr: usize,
    x0: usize,
    lm: &[[u16; 3]; MAX_KW],
    sm: &[u16; 3],
) {
    let [id, ih, iw] = g.i;
    let [kd, _, kw] = g.k;
    let [_, oh, ow] = g.out;
    let dh = g.d[1];
    let mut dv = [[_mm512_setzero_ps(); NV]; R];
    for i in 0..nr {
        let s = dyp.add((z * oh + y0 + i * dh) * ow + x0);
        for j in 0..NV {
            dv[i][j] = _mm512_maskz_loadu_ps(sm[j], s.add(j * LANES));
        }
    }
    let tp = tile.as_mut_ptr();
    for a in 0..kd {
        let iz = (z + a * g.d[0]) as isize - g.p[0] as isize;
        if iz < 0 || iz >= id as isize {
            continue;
        }
        let plane = xc.add(iz as usize * ih * iw);
        for c in 0..kw {
            let off = (x0 + c * g.d[2]) as isize - g.p[2] as isize;
            let m = &lm[c];
            let mut acc = [_mm512_setzero_ps(); KH];
            unroll!(r in [0 1 2 3 4 5 6 7 8 9 10 11] {
                let iy = (y0 + r * dh) as isize - g.p[1] as isize;
                if r < R + KH - 1 && iy >= 0 && iy < ih as isize {
                    let row = plane.add(iy as usize * iw).wrapping_offset(off);
                    let mut v = [_mm512_setzero_ps(); NV];
                    for j in 0..NV {
                        v[j] = _mm512_maskz_loadu_ps(m[j], row.wrapping_add(j * LANES));
                    }
                    unroll!(bb in [0 1 2 3 4 5 6] {
                        // Output-gradient row i = r - bb meets this input row at tap bb.
                        let i = r.wrapping_sub(bb);
                        if bb < KH && bb <= r && i < R {
                            for j in 0..NV {
                                acc[bb] = _mm512_fmadd_ps(dv[i][j], v[j], acc[bb]);
                            }
                        }
                    });
                }
            });
            for bb in 0..KH {
                let p = tp.add(((a * KH + bb) * kw + c) * LANES);
                _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), acc[bb]));
            }
        }
    }
}
