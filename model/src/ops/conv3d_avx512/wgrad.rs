//! Direct AVX-512 kernel for the f32 weight gradient of a dense (or grouped) conv3d with stride 1, on the
//! "shifted" layout of `conv3d::weight_grad_shifted`: the input slab is zero-padded to `[C, planes, Hp, Wp]`
//! and the output gradient is laid out on the same pitch, so kernel tap `t` pairs `dy[o, q]` with
//! `x[ci, q + off_t]` and `dW[o, ci, t] = Σ_q dy[o, q] · x[ci, q + off_t]`.
//!
//! This is a GEMM per tap with a long reduction (`q`), computed as outer products: the output gradient is
//! packed position-major (`[group][q][O padded to 16]`), so one position gives `OV` zmm vectors of output
//! channels; each of `CB` input channels contributes one broadcast scalar `x[ci, q + off_t]`, and the
//! `CB × OV` zmm accumulators (24) take `OV · CB` FMAs per `OV + CB` loads. A task owns one
//! `(group, output block, input block)` tile for all taps, loops over chunks of `q` (the chunk of packed
//! `dy` stays in cache across the taps) and keeps its `[kt][CB][16·OV]` partial sums in a private buffer,
//! so tasks never write the same element and no reduction across threads is needed.

#![allow(clippy::needless_range_loop)]
#![allow(clippy::too_many_arguments)]
#![allow(unsafe_op_in_unsafe_fn)]

use super::super::conv3d::Geom;
use super::super::elem::SharedMut;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Reduction positions per chunk.
const QCHUNK: usize = 256;

/// Whether the CPU runs the kernel.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Output channels of a group padded to a multiple of 16.
pub(crate) fn padded_og(g: &Geom) -> usize {
    g.og.next_multiple_of(16)
}

/// Packs output planes `z0 .. z0 + nz` of sample `b` of `dy [N, O, out]` position-major on the padded pitch
/// (`hp · wp` per plane, `wp` per row): `[groups][nz·hp·wp][padded_og]`, zeros outside the output.
pub(crate) fn pack_dy(
    dy: &[f32],
    g: &Geom,
    b: usize,
    z0: usize,
    nz: usize,
    hp: usize,
    wp: usize,
) -> Vec<f32> {
    let [od, oh, ow] = g.out;
    let osp = od * oh * ow;
    let ogp = padded_og(g);
    let kq = nz * hp * wp;
    let mut out = vec![0f32; g.groups * kq * ogp];
    // One chunk per (group, padded row): rows y >= oh stay zero.
    out.par_chunks_mut(wp * ogp)
        .enumerate()
        .for_each(|(i, dst)| {
            let (grp, r) = (i / (nz * hp), i % (nz * hp));
            let (z, y) = (r / hp, r % hp);
            if y >= oh {
                return;
            }
            for o in 0..g.og {
                let src = &dy[(b * g.o + grp * g.og + o) * osp + ((z0 + z) * oh + y) * ow..][..ow];
                for (xx, v) in src.iter().enumerate() {
                    dst[xx * ogp + o] = *v;
                }
            }
        });
    out
}

/// `acc[grp, t, o, ci] += Σ_{q < kq} dy[grp, q, o] · x[grp·cg + ci, q + offs[t]]`, with `x` rows of `xlen`
/// elements (`offs[t] + kq <= xlen`), `dy` packed by [`pack_dy`] (`kq` positions) and `acc`
/// `[groups, kt, og, cg]`. Call only when [`available`].
pub(crate) fn accumulate(
    x: &[f32],
    xlen: usize,
    dy: &[f32],
    kq: usize,
    offs: &[usize],
    g: &Geom,
    acc: &mut [f32],
) {
    let kt = offs.len();
    let ogp = padded_og(g);
    assert!(x.len() >= g.c * xlen && dy.len() >= g.groups * kq * ogp);
    assert!(acc.len() >= g.groups * kt * g.og * g.cg);
    assert!(offs.iter().all(|&o| o + kq <= xlen));
    let nvec = ogp / 16;
    // zmm vectors of output channels per tile, and input channels per tile (24 accumulators).
    let ov = [4, 3, 2, 1]
        .into_iter()
        .find(|&v| nvec.is_multiple_of(v))
        .unwrap_or(1);
    let cb = 24 / ov;
    let (nob, ncb) = (nvec / ov, g.cg.div_ceil(cb));
    let ap = SharedMut(acc.as_mut_ptr());
    (0..g.groups * nob * ncb).into_par_iter().for_each(|task| {
        let (grp, rest) = (task / (nob * ncb), task % (nob * ncb));
        let (ob, cblk) = (rest / ncb, rest % ncb);
        let tw = cb * ov * 16;
        let mut tile = vec![0f32; kt * tw];
        // Input rows past the group's last channel repeat the last one; their sums are dropped.
        let crow: Vec<usize> = (0..cb).map(|i| (cblk * cb + i).min(g.cg - 1)).collect();
        let dyg = &dy[grp * kq * ogp + ob * ov * 16..];
        let mut q0 = 0;
        while q0 < kq {
            let len = (kq - q0).min(QCHUNK);
            for (t, &off) in offs.iter().enumerate() {
                let mut xp = [std::ptr::null::<f32>(); 24];
                for (p, &c) in xp.iter_mut().zip(&crow) {
                    *p = x[(grp * g.cg + c) * xlen + off + q0..].as_ptr();
                }
                let tp = tile[t * tw..].as_mut_ptr();
                let dp = dyg[q0 * ogp..].as_ptr();
                // SAFETY: AVX-512F checked by the caller; x rows have `len` readable elements
                // (off + q0 + len <= xlen), dy has `len` positions of `ogp` floats from dp (the block's
                // 16·ov channels lie inside ogp), the tile slice holds `tw` floats.
                unsafe {
                    match ov {
                        4 => micro::<4, 6>(dp, ogp, &xp, len, tp),
                        3 => micro::<3, 8>(dp, ogp, &xp, len, tp),
                        2 => micro::<2, 12>(dp, ogp, &xp, len, tp),
                        _ => micro::<1, 24>(dp, ogp, &xp, len, tp),
                    }
                }
            }
            q0 += len;
        }
        for t in 0..kt {
            for (j, &ci_raw) in crow.iter().enumerate() {
                let ci = cblk * cb + j;
                if ci >= g.cg {
                    break;
                }
                debug_assert_eq!(ci, ci_raw);
                for ol in 0..ov * 16 {
                    let o = ob * ov * 16 + ol;
                    if o >= g.og {
                        break;
                    }
                    // SAFETY: element (grp, t, o, ci) belongs to this task's (grp, ob, cblk) tile only.
                    unsafe {
                        *ap.ptr().add(((grp * kt + t) * g.og + o) * g.cg + ci) +=
                            tile[t * tw + j * ov * 16 + ol];
                    }
                }
            }
        }
    });
}

/// `tile[j][v·16 + l] += Σ_{q < len} dy[q·ogp + v·16 + l] · x[j][q]`.
#[target_feature(enable = "avx512f")]
unsafe fn micro<const OV: usize, const CB: usize>(
    dy: *const f32,
    ogp: usize,
    x: &[*const f32; 24],
    len: usize,
    tile: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); OV]; CB];
    for j in 0..CB {
        for v in 0..OV {
            acc[j][v] = _mm512_loadu_ps(tile.add((j * OV + v) * 16));
        }
    }
    let mut xr = [std::ptr::null::<f32>(); CB];
    xr.copy_from_slice(&x[..CB]);
    for q in 0..len {
        let mut d = [_mm512_setzero_ps(); OV];
        for v in 0..OV {
            d[v] = _mm512_loadu_ps(dy.add(q * ogp + v * 16));
        }
        for j in 0..CB {
            let s = _mm512_set1_ps(*xr[j].add(q));
            for v in 0..OV {
                acc[j][v] = _mm512_fmadd_ps(d[v], s, acc[j][v]);
            }
        }
    }
    for j in 0..CB {
        for v in 0..OV {
            _mm512_storeu_ps(tile.add((j * OV + v) * 16), acc[j][v]);
        }
    }
}
