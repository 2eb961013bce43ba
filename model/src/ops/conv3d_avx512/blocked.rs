//! Channel-blocked ("nCdhw16c") AVX-512 kernel for f32 dense conv3d (`groups == 1`, stride 1, any kernel,
//! padding and dilation), used for the forward pass and, through the flipped kernel, the input gradient.
//!
//! A z-slab of the input is copied once into a zero-padded, channel-blocked buffer
//! `[C/16][planes][Hp][Wp][16]`, and the weights are packed as `[O-block][C/16][tap][16 ci][16·OV o]`. The
//! micro-kernel computes `P` consecutive output positions of one row × `16·OV` output channels
//! (`P × OV = 24` zmm accumulators): per input channel and tap it loads `OV` weight vectors and broadcasts
//! `P` input scalars (all at constant offsets from one pointer), so 24 FMAs cost `OV + P` loads and
//! almost no other instructions. Padding costs nothing in the loop (it is in the copy); positions past
//! the row end are computed on the next row's data and dropped.
//!
//! Loop order (one task = one output row × one block of output channels): for each 16-channel input block
//! and kernel plane, every position tile of the row runs over the same few KB of weights, so they are read
//! from L1 rather than streamed from L2 once per tile (that stream held the kernel near 60 % of peak). The
//! row's accumulators live in a per-thread buffer between passes (one load and store per tile and pass,
//! against 9 × 16 × 24 FMAs). The finished row is transposed back to NCDHW and an optional activation is
//! applied while it is in cache.

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

/// Weight bytes of one pass that should stay in L1 (32 KB here) next to the input rows and the tile.
const L1_WEIGHT_BYTES: usize = 20 * 1024;

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

/// `LOGONET_CONV_ORDER=tile` runs each position tile through all weights before the next tile (the
/// previous loop order, weights streamed from L2 per tile), for benchmarks.
fn tile_outer() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var("LOGONET_CONV_ORDER").is_ok_and(|v| v == "tile"))
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
            // Kernel rows (kh taps) per pass over the output row: the pass's weights
            // (rows × kw × 16 ci × ot floats) stay in L1 while every position tile of the row uses them.
            let rows_per_pass = if kh * kw * CB * ot * 4 <= L1_WEIGHT_BYTES {
                kh
            } else {
                1
            };
            (0..tasks).into_par_iter().for_each_init(
                || vec![0f32; nxb * P * ot],
                |acc, task| {
                    let (zy, ob) = (task / nob, task % nob);
                    let (zl, yy) = (zy / oh, zy % oh);
                    let wblk = wp[ob * ncb * kt * CB * ot..].as_ptr();
                    // acc [x tile][P][ot] (position-major), starts at the bias.
                    let bo = &bp[ob * ot..][..ot];
                    for pos in acc.chunks_exact_mut(ot) {
                        pos.copy_from_slice(bo);
                    }
                    // One pass: kernel rows b0 .. b0 + nr of plane a over input block cb, for tile xbk.
                    let pass =
                        |acc: &mut [f32], cb: usize, a: usize, b0: usize, nr: usize, xbk: usize| {
                            let t0 = (a * kh + b0) * kw;
                            // SAFETY: AVX-512F checked by `usable`; every broadcast reads xb inside the
                            // channel block's stride (positions past the row end land in the next row or
                            // the zero tail); weight loads stay in the packed block (taps t0 .. t0 + nr·kw
                            // of block cb); the tile has P × ot floats.
                            unsafe {
                                let base = xb.as_ptr().add(
                                    cb * cstride
                                        + (zl + a * g.d[0]) * plane
                                        + (yy + b0 * g.d[1]) * row
                                        + xbk * P * CB,
                                );
                                micro::<P, OV>(
                                    base,
                                    g.d[1] * row,
                                    g.d[2] * CB,
                                    nr,
                                    kw,
                                    wblk.add((cb * kt + t0) * CB * ot),
                                    acc.as_mut_ptr().add(xbk * P * ot),
                                );
                            }
                        };
                    if tile_outer() {
                        for xbk in 0..nxb {
                            for cb in 0..ncb {
                                for a in 0..kd {
                                    pass(acc, cb, a, 0, kh, xbk);
                                }
                            }
                        }
                    } else {
                        for cb in 0..ncb {
                            for a in 0..kd {
                                let mut b0 = 0;
                                while b0 < kh {
                                    let nr = rows_per_pass.min(kh - b0);
                                    for xbk in 0..nxb {
                                        pass(acc, cb, a, b0, nr, xbk);
                                    }
                                    b0 += nr;
                                }
                            }
                        }
                    }
                    for ol in 0..ot {
                        let o = ob * ot + ol;
                        if o >= g.o {
                            break;
                        }
                        // SAFETY: row (z0 + zl, yy) of output channel o belongs to this task only (tasks
                        // differ in (z, y, ob)); all indices are inside y.
                        let r = unsafe {
                            std::slice::from_raw_parts_mut(
                                yp.ptr()
                                    .add((b * g.o + o) * osp + ((z0 + zl) * oh + yy) * ow),
                                ow,
                            )
                        };
                        for (xx, v) in r.iter_mut().enumerate() {
                            *v = acc[xx * ot + ol];
                        }
                        if act.is_some() {
                            epilogue(r, act);
                        }
                    }
                },
            );
            z0 += nz;
        }
    }
    y
}

/// `P` positions × `16·OV` output channels: `acc [P][16·OV]` (in and out) += the taps of `nr` kernel rows
/// × `kw` columns over one 16-channel input block. `base` points at the first tap's first position; the
/// weights of the pass are `[nr·kw][16 ci][16·OV o]` from `wt`.
#[target_feature(enable = "avx512f")]
unsafe fn micro<const P: usize, const OV: usize>(
    base: *const f32,
    row_step: usize,
    col_step: usize,
    nr: usize,
    kw: usize,
    wt: *const f32,
    acc_io: *mut f32,
) {
    let ot = OV * 16;
    let mut acc = [[_mm512_setzero_ps(); OV]; P];
    for p in 0..P {
        for v in 0..OV {
            acc[p][v] = _mm512_loadu_ps(acc_io.add(p * ot + v * 16));
        }
    }
    for r in 0..nr {
        for c in 0..kw {
            let xs = base.add(r * row_step + c * col_step);
            let wtap = wt.add((r * kw + c) * CB * ot);
            for cl in 0..CB {
                let mut wv = [_mm512_setzero_ps(); OV];
                for v in 0..OV {
                    wv[v] = _mm512_loadu_ps(wtap.add(cl * ot + v * 16));
                }
                for p in 0..P {
                    let s = _mm512_set1_ps(*xs.add(p * CB + cl));
                    for v in 0..OV {
                        acc[p][v] = _mm512_fmadd_ps(wv[v], s, acc[p][v]);
                    }
                }
            }
        }
    }
    for p in 0..P {
        for v in 0..OV {
            _mm512_storeu_ps(acc_io.add(p * ot + v * 16), acc[p][v]);
        }
    }
}
