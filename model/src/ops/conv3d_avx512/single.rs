//! AVX-512 kernel for f32 dense conv3d with **one input channel** (`C = 1`, `groups = 1`), any stride,
//! padding and dilation: the strided 7³ patch embedding of the first encoder stage (`1 → 64`, stride 4).
//!
//! The input sample is copied once into a zero-padded volume (so no bounds checks in the loop), the weights
//! are packed tap-major `[tap][O padded to 16·OV]`. The micro-kernel computes `P` consecutive output
//! positions of one row × `16·OV` output channels in `P × OV` zmm accumulators: per tap it loads `OV`
//! weight vectors and broadcasts `P` input scalars (stride `s` apart). The tile is transposed back to NCDHW
//! through a small buffer.

#![allow(clippy::needless_range_loop)]
#![allow(clippy::too_many_arguments)]
#![allow(unsafe_op_in_unsafe_fn)]

use super::super::act::Act;
use super::super::conv3d::{Geom, epilogue};
use super::super::elem::{SharedMut, out_buf};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Positions per tile.
const P: usize = 6;
/// Output-channel vectors per tile.
const OV: usize = 4;

/// Whether the kernel handles `g` (f32 data is the caller's business).
pub(crate) fn usable(g: &Geom) -> bool {
    g.groups == 1 && g.c == 1 && std::arch::is_x86_feature_detected!("avx512f")
}

/// Forward conv `y [N, O, out]` (call only when [`usable`]).
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    act: Option<Act>,
) -> Vec<f32> {
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let [od, oh, ow] = g.out;
    let kt = kd * kh * kw;
    let (isp, osp) = (id * ih * iw, od * oh * ow);
    let ot = 16 * OV;
    let nob = g.o.div_ceil(ot);
    // Packed weights [ob][tap][ot], zero past O; bias padded the same way.
    let mut wp = vec![0f32; nob * kt * ot];
    for o in 0..g.o {
        let (ob, ol) = (o / ot, o % ot);
        for t in 0..kt {
            wp[(ob * kt + t) * ot + ol] = w[o * kt + t];
        }
    }
    let bp: Vec<f32> = (0..nob * ot)
        .map(|o| bias.map_or(0.0, |b| b.get(o).copied().unwrap_or(0.0)))
        .collect();
    let (dp, hp, wpd) = (id + 2 * g.p[0], ih + 2 * g.p[1], iw + 2 * g.p[2]);
    // Positions of the last tile past the row end read up to P·s further: a zero tail covers them.
    let tail = P * g.s[2] + 1;
    let mut y = out_buf::<f32>(g.n * g.o * osp);
    let yp = SharedMut(y.as_mut_ptr());
    let nxb = ow.div_ceil(P);
    for b in 0..g.n {
        let mut xp = vec![0f32; dp * hp * wpd + tail];
        xp.par_chunks_mut(hp * wpd)
            .take(dp)
            .enumerate()
            .for_each(|(pz, dst)| {
                let iz = pz as isize - g.p[0] as isize;
                if iz < 0 || iz >= id as isize {
                    return;
                }
                for yy in 0..ih {
                    let src = &x[b * isp + (iz as usize * ih + yy) * iw..][..iw];
                    dst[(yy + g.p[1]) * wpd + g.p[2]..][..iw].copy_from_slice(src);
                }
            });
        let tasks = od * oh * nob;
        (0..tasks).into_par_iter().for_each(|task| {
            let (zy, ob) = (task / nob, task % nob);
            let (z, yy) = (zy / oh, zy % oh);
            let mut tile = [[0f32; 16 * OV]; P];
            for xbk in 0..nxb {
                let x0 = xbk * P;
                // SAFETY: AVX-512F checked by `usable`; the broadcasts read xp at padded coordinates
                // (z·s + a·d, y·s + b·d, (x0 + p)·s + c·d), inside the padded volume for valid positions and
                // inside the zero tail for positions past the row end; weight loads stay in block ob.
                unsafe {
                    micro(
                        xp.as_ptr(),
                        wp[ob * kt * ot..].as_ptr(),
                        &bp[ob * ot..],
                        g,
                        hp,
                        wpd,
                        z,
                        yy,
                        x0,
                        &mut tile,
                    );
                }
                let np = P.min(ow - x0);
                for ol in 0..ot {
                    let o = ob * ot + ol;
                    if o >= g.o {
                        break;
                    }
                    // SAFETY: row (z, yy), columns x0 .. x0 + np of channel o belong to this task only.
                    unsafe {
                        let d = yp.ptr().add((b * g.o + o) * osp + (z * oh + yy) * ow + x0);
                        for pp in 0..np {
                            *d.add(pp) = tile[pp][ol];
                        }
                    }
                }
            }
            if act.is_some() {
                for o in ob * ot..((ob + 1) * ot).min(g.o) {
                    // SAFETY: row (z, yy) of channel o was written by this task only (above).
                    let r = unsafe {
                        std::slice::from_raw_parts_mut(
                            yp.ptr().add((b * g.o + o) * osp + (z * oh + yy) * ow),
                            ow,
                        )
                    };
                    epilogue(r, act);
                }
            }
        });
    }
    y
}

#[target_feature(enable = "avx512f")]
unsafe fn micro(
    xp: *const f32,
    wblk: *const f32,
    bias: &[f32],
    g: &Geom,
    hp: usize,
    wpd: usize,
    z: usize,
    yy: usize,
    x0: usize,
    tile: &mut [[f32; 16 * OV]; P],
) {
    let [kd, kh, kw] = g.k;
    let [s0, s1, s2] = g.s;
    let [d0, d1, d2] = g.d;
    let ot = 16 * OV;
    let mut acc = [[_mm512_setzero_ps(); OV]; P];
    for v in 0..OV {
        let bv = _mm512_loadu_ps(bias.as_ptr().add(v * 16));
        for p in 0..P {
            acc[p][v] = bv;
        }
    }
    for a in 0..kd {
        for bb in 0..kh {
            let row = xp.add(((z * s0 + a * d0) * hp + yy * s1 + bb * d1) * wpd + x0 * s2);
            let wrow = wblk.add((a * kh + bb) * kw * ot);
            for c in 0..kw {
                let base = row.add(c * d2);
                let wt = wrow.add(c * ot);
                let mut wv = [_mm512_setzero_ps(); OV];
                for v in 0..OV {
                    wv[v] = _mm512_loadu_ps(wt.add(v * 16));
                }
                for p in 0..P {
                    let sv = _mm512_set1_ps(*base.add(p * s2));
                    for v in 0..OV {
                        acc[p][v] = _mm512_fmadd_ps(wv[v], sv, acc[p][v]);
                    }
                }
            }
        }
    }
    for p in 0..P {
        for v in 0..OV {
            _mm512_storeu_ps(tile[p].as_mut_ptr().add(v * 16), acc[p][v]);
        }
    }
}
