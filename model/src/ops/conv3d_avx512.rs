//! Direct ("implicit GEMM") AVX-512 kernel for f32 conv3d with stride 1 along every axis: any kernel size,
//! padding, dilation and groups.
//!
//! A task computes one output row `(sample, group, z, y)`; for each block of 8 output channels and each
//! 48-wide chunk of the row it keeps 8 × 3 zmm accumulators in registers over the whole reduction
//! (input channels × kernel taps): per tap, 3 masked unaligned loads of the input row and 24 FMAs with
//! broadcast weights (packed `[block][ci][tap][8]`). Rows outside the input (padding along D and H) are
//! skipped; padding along W and the row tail are handled with load/store masks, so no padded copy is made.
//! An optional activation is applied to each finished output row while it is in cache.

// Numeric kernels index several arrays with one loop counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]
#![allow(unsafe_op_in_unsafe_fn)]

pub(crate) mod blocked;
pub(crate) mod depthwise;
pub(crate) mod single;
pub(crate) mod wgrad;

use super::act::Act;
use super::conv3d::{Geom, epilogue};
use super::elem::{SharedMut, out_buf};
use rayon::prelude::*;
use std::arch::x86_64::*;

const OB: usize = 8;
const LANES: usize = 16;

/// Runs the kernel if the CPU has AVX-512F and the geometry fits (stride 1); `None` otherwise.
pub(crate) fn try_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    act: Option<Act>,
) -> Option<Vec<f32>> {
    if g.s != [1, 1, 1] || !std::arch::is_x86_feature_detected!("avx512f") {
        return None;
    }
    Some(forward(x, w, bias, g, act))
}

fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geom, act: Option<Act>) -> Vec<f32> {
    let kt: usize = g.k.iter().product();
    let nob = g.og.div_ceil(OB);
    // Packed weights [group][block][ci][tap][8], zero for channels past og.
    let mut wp = vec![0f32; g.groups * nob * g.cg * kt * OB];
    for grp in 0..g.groups {
        for ol in 0..g.og {
            let (ob, o) = (ol / OB, ol % OB);
            for ci in 0..g.cg {
                for t in 0..kt {
                    wp[(((grp * nob + ob) * g.cg + ci) * kt + t) * OB + o] =
                        w[((grp * g.og + ol) * g.cg + ci) * kt + t];
                }
            }
        }
    }
    let [od, oh, ow] = g.out;
    let osp = od * oh * ow;
    let mut y = out_buf::<f32>(g.n * g.o * osp);
    let yp = SharedMut(y.as_mut_ptr());
    let rows = od * oh;
    let tasks = g.n * g.groups * rows;
    (0..tasks).into_par_iter().for_each(|t| {
        let (bg, r) = (t / rows, t % rows);
        let (b, grp) = (bg / g.groups, bg % g.groups);
        let mut x0 = 0;
        while x0 < ow {
            let nv = (ow - x0).div_ceil(LANES).min(3);
            // SAFETY: AVX-512F was detected in try_forward; the task writes only row r of its (sample, group)
            // output channels, disjoint from every other task; loads are masked to the input row.
            unsafe {
                match nv {
                    1 => row_kernel::<1>(x, &wp, bias, g, yp, b, grp, r, x0),
                    2 => row_kernel::<2>(x, &wp, bias, g, yp, b, grp, r, x0),
                    _ => row_kernel::<3>(x, &wp, bias, g, yp, b, grp, r, x0),
                }
            }
            x0 += nv * LANES;
        }
        if act.is_some() {
            for ol in 0..g.og {
                let oc = grp * g.og + ol;
                // SAFETY: row r of output channel oc of sample b was written by this task only (see above).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(yp.ptr().add((b * g.o + oc) * osp + r * ow), ow)
                };
                epilogue(row, act);
            }
        }
    });
    y
}

/// Lanes of the 16-wide vector starting at input position `start` that fall in `0..n` and whose output
/// position (`out_start + lane`) is below `ow`.
#[inline]
fn lane_mask(start: isize, n: usize, out_start: usize, ow: usize) -> u16 {
    let mut m = 0u16;
    for l in 0..LANES {
        let i = start + l as isize;
        if i >= 0 && (i as usize) < n && out_start + l < ow {
            m |= 1 << l;
        }
    }
    m
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn row_kernel<const NV: usize>(
    x: &[f32],
    wp: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    yp: SharedMut<f32>,
    b: usize,
    grp: usize,
    r: usize,
    x0: usize,
) {
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let [od, oh, ow] = g.out;
    let (z, yy) = (r / oh, r % oh);
    let kt = kd * kh * kw;
    let isp = id * ih * iw;
    let osp = od * oh * ow;
    let nob = g.og.div_ceil(OB);
    // Load masks per (tap along W, vector) and store masks per vector.
    let mut lmask = [[0u16; 3]; 64];
    let kw_m = kw.min(64);
    for (c, lm) in lmask.iter_mut().enumerate().take(kw_m) {
        for (j, m) in lm.iter_mut().enumerate().take(NV) {
            let start = (x0 + j * LANES) as isize + (c * g.d[2]) as isize - g.p[2] as isize;
            *m = lane_mask(start, iw, x0 + j * LANES, ow);
        }
    }
    let mut smask = [0u16; 3];
    for (j, m) in smask.iter_mut().enumerate().take(NV) {
        *m = lane_mask(0, usize::MAX >> 1, x0 + j * LANES, ow);
    }
    let xb = x.as_ptr().add((b * g.c + grp * g.cg) * isp);
    for ob in 0..nob {
        let wblk = wp.as_ptr().add((grp * nob + ob) * g.cg * kt * OB);
        let mut acc = [[_mm512_setzero_ps(); NV]; OB];
        for ci in 0..g.cg {
            let xc = xb.add(ci * isp);
            let wc = wblk.add(ci * kt * OB);
            for a in 0..kd {
                let iz = (z + a * g.d[0]) as isize - g.p[0] as isize;
                if iz < 0 || iz >= id as isize {
                    continue;
                }
                for bb in 0..kh {
                    let iy = (yy + bb * g.d[1]) as isize - g.p[1] as isize;
                    if iy < 0 || iy >= ih as isize {
                        continue;
                    }
                    let row = xc.add((iz as usize * ih + iy as usize) * iw);
                    let wt = wc.add((a * kh + bb) * kw * OB);
                    for c in 0..kw_m {
                        let off = (x0 + c * g.d[2]) as isize - g.p[2] as isize;
                        let mut v = [_mm512_setzero_ps(); NV];
                        for j in 0..NV {
                            v[j] = _mm512_maskz_loadu_ps(
                                lmask[c][j],
                                row.wrapping_offset(off + (j * LANES) as isize),
                            );
                        }
                        let wv = wt.add(c * OB);
                        for o in 0..OB {
                            let s = _mm512_set1_ps(*wv.add(o));
                            for j in 0..NV {
                                acc[o][j] = _mm512_fmadd_ps(s, v[j], acc[o][j]);
                            }
                        }
                    }
                }
            }
        }
        for (o, acc_o) in acc.iter().enumerate() {
            let ol = ob * OB + o;
            if ol >= g.og {
                break;
            }
            let oc = grp * g.og + ol;
            let bv = _mm512_set1_ps(bias.map_or(0.0, |bb| bb[oc]));
            let dst = yp.ptr().add((b * g.o + oc) * osp + r * ow + x0);
            for j in 0..NV {
                _mm512_mask_storeu_ps(dst.add(j * LANES), smask[j], _mm512_add_ps(acc_o[j], bv));
            }
        }
    }
}
