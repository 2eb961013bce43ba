//! Channel-blocked ("nCdhw16c") AVX-512 kernel for f32 dense conv3d (`groups == 1`, stride 1, any kernel,
//! padding and dilation), used for the forward pass and, through the flipped kernel, the input gradient.
//!
//! A z-slab of the input is copied once into a zero-padded, channel-blocked buffer
//! `[C/16][planes][Hp][Wp][16]`, and the weights are packed as `[O-block][C/16][tap][16 ci][16·OV o]`. The
//! micro-kernel computes `P` consecutive output positions of one row × `16·OV` output channels
//! (`P × OV = 24` zmm accumulators): per input channel and tap it loads `OV` weight vectors and broadcasts
//! `P` input scalars (all at constant offsets from one pointer), so 24 FMAs cost `OV + P` loads and
//! almost no other instructions. Padding costs nothing in the loop (it is in the copy); positions past
//! the row end are computed on the next row's data and dropped. The tile is transposed back to NCDHW
//! through a small buffer; an optional activation is applied to each finished output row while it is in cache.

#![allow(clippy::needless_range_loop)]
#![allow(clippy::too_many_arguments)]
#![allow(unsafe_op_in_unsafe_fn)]

use super::super::act::Act;
use super::super::conv3d::{Geom, epilogue};
use super::super::elem::{SharedMut, out_buf};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Channel block (one zmm of f32).
const CB: usize = 16;

/// Whether the kernel handles `g` (f32 data is the caller's business): dense, stride 1, at least 8 input
/// and 8 output channels (fewer would waste most of each 16-channel block).
pub(crate) fn usable(g: &Geom) -> bool {
    g.groups == 1
        && g.s == [1, 1, 1]
        && g.c >= 8
        && g.o >= 8
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// Forward conv `y [N, O, out]` (call only when [`usable`]).
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    act: Option<Act>,
) -> Vec<f32> {
    let nvec = g.o.div_ceil(16);
    let (p, ov) = match tile_override() {
        Some(t) => t,
        None if nvec.is_multiple_of(2) => (12, 2),
        None if nvec.is_multiple_of(3) => (8, 3),
        None => (24, 1),
    };
    match (p, ov) {
        (6, 4) => run::<6, 4>(x, w, bias, g, act),
        (12, 2) => run::<12, 2>(x, w, bias, g, act),
        (8, 3) => run::<8, 3>(x, w, bias, g, act),
        _ => run::<24, 1>(x, w, bias, g, act),
    }
}

/// `LOGONET_CONV_TILE=PxV` (6x4, 12x2, 8x3, 24x1) forces the register tile (positions × 16-channel
/// vectors), for benchmarks.
fn tile_override() -> Option<(usize, usize)> {
    static T: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let v = std::env::var("LOGONET_CONV_TILE").ok()?;
        let (a, b) = v.split_once('x')?;
        let t = (a.parse().ok()?, b.parse().ok()?);
        [(6, 4), (12, 2), (8, 3), (24, 1)].contains(&t).then_some(t)
    })
}

fn run<const P: usize, const OV: usize>(
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
    let ncb = g.c.div_ceil(CB);
    let ot = OV * 16;
    let nob = g.o.div_ceil(ot);
    // Packed weights [ob][cb][t][16 ci][ot], zero past C and O.
    let mut wp = vec![0f32; nob * ncb * kt * CB * ot];
    wp.par_chunks_mut(ncb * kt * CB * ot)
        .enumerate()
        .for_each(|(ob, dst)| {
            for cb in 0..ncb {
                for t in 0..kt {
                    for cl in 0..CB {
                        let ci = cb * CB + cl;
                        if ci >= g.c {
                            break;
                        }
                        for ol in 0..ot {
                            let o = ob * ot + ol;
                            if o >= g.o {
                                break;
                            }
                            dst[((cb * kt + t) * CB + cl) * ot + ol] = w[(o * g.c + ci) * kt + t];
                        }
                    }
                }
            }
        });
    let bp: Vec<f32> = (0..nob * ot)
        .map(|o| bias.map_or(0.0, |b| b.get(o).copied().unwrap_or(0.0)))
        .collect();
    let (hp, wpad) = (ih + 2 * g.p[1], iw + 2 * g.p[2]);
    let halo = (kd - 1) * g.d[0];
    let row = wpad * CB;
    let plane = hp * row;
    // Output planes per slab: the blocked input slab holds about 2^22 floats.
    let zs = ((1usize << 22) / (ncb * plane).max(1))
        .saturating_sub(halo)
        .clamp(1, od);
    let mut y = out_buf::<f32>(g.n * g.o * osp);
    let yp = SharedMut(y.as_mut_ptr());
    let nxb = ow.div_ceil(P);
    for b in 0..g.n {
        let mut z0 = 0;
        while z0 < od {
            let nz = zs.min(od - z0);
            let planes = nz + halo;
            let cbl = planes * plane;
            // One extra row (+ P positions) of zeros per channel block for positions past the last row end.
            let cstride = cbl + row + (P + (kw - 1) * g.d[2]) * CB;
            let mut xb = vec![0f32; ncb * cstride];
            xb.par_chunks_mut(cstride)
                .enumerate()
                .for_each(|(cb, dst)| {
                    for pz in 0..planes {
                        let iz = (z0 + pz) as isize - g.p[0] as isize;
                        if iz < 0 || iz >= id as isize {
                            continue;
                        }
                        for cl in 0..CB.min(g.c - cb * CB) {
                            let src = &x[(b * g.c + cb * CB + cl) * isp + iz as usize * ih * iw..]
                                [..ih * iw];
                            for yy in 0..ih {
                                let d0 = pz * plane + (yy + g.p[1]) * row + g.p[2] * CB + cl;
                                for (xx, v) in src[yy * iw..][..iw].iter().enumerate() {
                                    dst[d0 + xx * CB] = *v;
                                }
                            }
                        }
                    }
                });
            let tasks = nz * oh * nob;
            (0..tasks).into_par_iter().for_each(|task| {
                let (zy, ob) = (task / nob, task % nob);
                let (zl, yy) = (zy / oh, zy % oh);
                let wblk = wp[ob * ncb * kt * CB * ot..].as_ptr();
                let mut tile = [[0f32; 64]; 24];
                for xbk in 0..nxb {
                    let x0 = xbk * P;
                    // SAFETY: AVX-512F checked by `usable`; every broadcast reads xb inside the channel
                    // block's stride (positions past the row end land in the next row or the zero tail);
                    // weight loads stay in the packed block; the tile has P rows of ot floats.
                    unsafe {
                        micro::<P, OV>(
                            xb.as_ptr(),
                            cstride,
                            ncb,
                            wblk,
                            &bp[ob * ot..],
                            g,
                            plane,
                            row,
                            zl,
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
                        // SAFETY: row (z0 + zl, yy), columns x0 .. x0 + np of output channel o belong to
                        // this task only (tasks differ in (z, y, ob)); all indices are inside y.
                        unsafe {
                            let d = yp
                                .ptr()
                                .add((b * g.o + o) * osp + ((z0 + zl) * oh + yy) * ow + x0);
                            for pp in 0..np {
                                *d.add(pp) = tile[pp][ol];
                            }
                        }
                    }
                }
                if act.is_some() {
                    for o in ob * ot..((ob + 1) * ot).min(g.o) {
                        // SAFETY: row (z0 + zl, yy) of channel o was written by this task only (above).
                        let r = unsafe {
                            std::slice::from_raw_parts_mut(
                                yp.ptr()
                                    .add((b * g.o + o) * osp + ((z0 + zl) * oh + yy) * ow),
                                ow,
                            )
                        };
                        epilogue(r, act);
                    }
                }
            });
            z0 += nz;
        }
    }
    y
}

#[target_feature(enable = "avx512f")]
unsafe fn micro<const P: usize, const OV: usize>(
    xb: *const f32,
    cstride: usize,
    ncb: usize,
    wblk: *const f32,
    bias: &[f32],
    g: &Geom,
    plane: usize,
    row: usize,
    zl: usize,
    yy: usize,
    x0: usize,
    tile: &mut [[f32; 64]; 24],
) {
    let [kd, kh, kw] = g.k;
    let kt = kd * kh * kw;
    let ot = OV * 16;
    let mut acc = [[_mm512_setzero_ps(); OV]; P];
    for v in 0..OV {
        let bv = _mm512_loadu_ps(bias.as_ptr().add(v * 16));
        for p in 0..P {
            acc[p][v] = bv;
        }
    }
    for cb in 0..ncb {
        let xc = xb.add(cb * cstride);
        for a in 0..kd {
            for bb in 0..kh {
                for c in 0..kw {
                    let t = (a * kh + bb) * kw + c;
                    let base = xc.add(
                        (zl + a * g.d[0]) * plane
                            + (yy + bb * g.d[1]) * row
                            + (x0 + c * g.d[2]) * CB,
                    );
                    let wt = wblk.add((cb * kt + t) * CB * ot);
                    for cl in 0..CB {
                        let mut wv = [_mm512_setzero_ps(); OV];
                        for v in 0..OV {
                            wv[v] = _mm512_loadu_ps(wt.add(cl * ot + v * 16));
                        }
                        for p in 0..P {
                            let s = _mm512_set1_ps(*base.add(p * CB + cl));
                            for v in 0..OV {
                                acc[p][v] = _mm512_fmadd_ps(wv[v], s, acc[p][v]);
                            }
                        }
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
