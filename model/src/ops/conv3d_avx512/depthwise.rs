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
    let mut v = Vec::new();
    for rho in 0..dh.min(oh) {
        let n = (oh - rho).div_ceil(dh);
        let mut q = 0;
        while q < n {
            let c = (n - q).min(R);
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

/// Forward depthwise conv `y [N, O, out]` (call only when [`usable`]).
pub(crate) fn forward(
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
                                1 => fwd_block::<$kh, 1>(xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm),
                                2 => fwd_block::<$kh, 2>(xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm),
                                _ => fwd_block::<$kh, 3>(xc, wk, bv, g, dst, z, y0, nr, x0, lm, sm),
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
unsafe fn fwd_block<const KH: usize, const NV: usize>(
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
