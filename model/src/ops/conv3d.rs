//! conv3d as candle custom ops: forward, input-gradient and weight-gradient, each with a CPU kernel.
//!
//! * Dense and grouped convolutions (`C/groups > 1`): im2col of a slab of output rows into a cache-sized
//!   column buffer, then one `gemm` per slab (weights `[O/g, C/g·k³]` × columns `[C/g·k³, P]`); slabs run in
//!   parallel on rayon's pool.
//! * One input channel per group (depthwise, or any conv with `C/groups == 1`): direct loops that accumulate
//!   whole output rows (vectorised axpy over W), parallel over (sample, output channel).
//! * Input gradient: for stride 1 and `padding <= dilation·(k-1)` it is the forward conv of the output
//!   gradient with the flipped, transposed kernel (so it reuses the fast kernels above); otherwise
//!   `gemm` (Wᵀ·dY) + col2im.
//! * Weight gradient: dY·colsᵀ accumulated over slabs (dense) or direct row products (depthwise).
//!
//! `cuda_fwd` (feature `cuda`) calls the cuDNN convolutions in [`super::cuda`]; without the `cudnn` feature the
//! public functions in [`super`] send CUDA tensors to [`super::reference`] instead.

use super::Conv3dParams;
use super::act::{Act, apply_inplace};
use super::elem::{Elem, SharedMut, out_buf, slice, threads};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

/// Geometry of one convolution (all sizes of the *forward* op).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub groups: usize,
    pub cg: usize,
    pub og: usize,
    pub i: [usize; 3],
    pub k: [usize; 3],
    pub out: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub d: [usize; 3],
}

impl Geom {
    pub(crate) fn new(x: [usize; 5], w: [usize; 5], p: &Conv3dParams, out: [usize; 3]) -> Self {
        Self {
            n: x[0],
            c: x[1],
            o: w[0],
            groups: p.groups,
            cg: w[1],
            og: w[0] / p.groups,
            i: [x[2], x[3], x[4]],
            k: [w[2], w[3], w[4]],
            out,
            s: p.stride,
            p: p.padding,
            d: p.dilation,
        }
    }
    fn isp(&self) -> usize {
        self.i.iter().product()
    }
    fn osp(&self) -> usize {
        self.out.iter().product()
    }
    fn kt(&self) -> usize {
        self.k.iter().product()
    }
    fn kk(&self) -> usize {
        self.cg * self.kt()
    }
}

/// Output positions `x` in `0..n_out` whose input `x·s + off` lies in `0..n_in`, as a half-open range.
#[inline]
fn valid(n_out: usize, s: usize, off: isize, n_in: usize) -> (usize, usize) {
    let si = s as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off + si - 1) / si) as usize
    };
    let lim = n_in as isize - off;
    let hi = if lim <= 0 {
        0
    } else {
        ((lim + si - 1) / si) as usize
    }
    .min(n_out);
    (lo.min(hi), hi)
}

#[inline]
fn in_index(o: usize, s: usize, t: usize, d: usize, p: usize, n: usize) -> Option<usize> {
    let i = (o * s + t * d) as isize - p as isize;
    (i >= 0 && i < n as isize).then_some(i as usize)
}

/// Output rows (z, y) per slab so that the column buffer holds about `target` elements.
fn rows_per_slab(kk: usize, ow: usize, rows: usize, target: usize) -> usize {
    (target / (kk * ow).max(1)).clamp(1, rows.max(1))
}

const SLAB: usize = 1 << 18;

/// im2col of output rows `r0..r1` (row = z·OH + y) of sample `b`, group `grp` into `col [cg·kt, pc]`.
fn im2col<T: Elem>(x: &[T], g: &Geom, b: usize, grp: usize, r0: usize, r1: usize, col: &mut [T]) {
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let [_, oh, ow] = g.out;
    let pc = (r1 - r0) * ow;
    let isp = g.isp();
    let zero = T::default();
    for ci in 0..g.cg {
        let xp = &x[(b * g.c + grp * g.cg + ci) * isp..][..isp];
        for a in 0..kd {
            for bb in 0..kh {
                for cc in 0..kw {
                    let row = ((ci * kd + a) * kh + bb) * kw + cc;
                    let dst = &mut col[row * pc..][..pc];
                    let off = (cc * g.d[2]) as isize - g.p[2] as isize;
                    let (xl, xh) = valid(ow, g.s[2], off, iw);
                    for r in r0..r1 {
                        let seg = &mut dst[(r - r0) * ow..][..ow];
                        let (z, y) = (r / oh, r % oh);
                        let (Some(iz), Some(iy)) = (
                            in_index(z, g.s[0], a, g.d[0], g.p[0], id),
                            in_index(y, g.s[1], bb, g.d[1], g.p[1], ih),
                        ) else {
                            seg.fill(zero);
                            continue;
                        };
                        let xrow = &xp[(iz * ih + iy) * iw..][..iw];
                        seg[..xl].fill(zero);
                        seg[xh..].fill(zero);
                        if xh <= xl {
                            continue; // the tap reads no input column: the row stays zero
                        }
                        if g.s[2] == 1 {
                            let st = (xl as isize + off) as usize;
                            seg[xl..xh].copy_from_slice(&xrow[st..st + (xh - xl)]);
                        } else {
                            for (xx, v) in seg[xl..xh].iter_mut().enumerate() {
                                *v = xrow[((xx + xl) as isize * g.s[2] as isize + off) as usize];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`] for one input channel `ci` of the group: `plane += col2im(col)`.
fn col2im_channel<T: Elem>(col: &[T], g: &Geom, r0: usize, r1: usize, ci: usize, plane: &mut [T]) {
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let [_, oh, ow] = g.out;
    let pc = (r1 - r0) * ow;
    for a in 0..kd {
        for bb in 0..kh {
            for cc in 0..kw {
                let row = ((ci * kd + a) * kh + bb) * kw + cc;
                let src = &col[row * pc..][..pc];
                let off = (cc * g.d[2]) as isize - g.p[2] as isize;
                let (xl, xh) = valid(ow, g.s[2], off, iw);
                if xh <= xl {
                    continue; // the tap writes no input column
                }
                for r in r0..r1 {
                    let seg = &src[(r - r0) * ow..][..ow];
                    let (z, y) = (r / oh, r % oh);
                    let (Some(iz), Some(iy)) = (
                        in_index(z, g.s[0], a, g.d[0], g.p[0], id),
                        in_index(y, g.s[1], bb, g.d[1], g.p[1], ih),
                    ) else {
                        continue;
                    };
                    let xrow = &mut plane[(iz * ih + iy) * iw..][..iw];
                    if g.s[2] == 1 {
                        let st = (xl as isize + off) as usize;
                        for (d, v) in xrow[st..st + (xh - xl)].iter_mut().zip(&seg[xl..xh]) {
                            *d += *v;
                        }
                    } else {
                        for (xx, v) in seg[xl..xh].iter().enumerate() {
                            xrow[((xx + xl) as isize * g.s[2] as isize + off) as usize] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// `LOGONET_CONV_GEMM=1` disables the direct AVX-512 kernel (for benchmarks comparing the two paths).
fn gemm_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("LOGONET_CONV_GEMM").is_ok_and(|v| v == "1"))
}

/// `LOGONET_CONV_BLOCKED=0` switches the channel-blocked dense kernel off (the row kernel runs instead), for
/// benchmarks comparing the two.
fn blocked_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("LOGONET_CONV_BLOCKED").is_ok_and(|v| v == "0"))
}

fn as_f32<T: Elem>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (checked by TypeId), so the slice is reinterpreted as itself.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

fn as_f32_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (checked by TypeId), so the slice is reinterpreted as itself.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

fn from_f32<T: Elem>(v: Vec<f32>) -> Vec<T> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        let mut v = std::mem::ManuallyDrop::new(v);
        // SAFETY: T is f32 (checked by TypeId): same layout, pointer, length and capacity.
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
    } else {
        v.into_iter().map(|a| T::from_f64(a as f64)).collect()
    }
}

/// Forward conv: `y [N, O, out]`.
pub(crate) fn forward<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    forward_with(x, w, bias, g, None, ConvKernel::Auto)
}

/// Applies the optional activation epilogue in place (f32 or f64 data).
pub(crate) fn epilogue<T: Elem>(s: &mut [T], act: Option<Act>) {
    let Some(a) = act else {
        return;
    };
    if let Some(f) = as_f32_mut(s) {
        apply_inplace(f, a);
    } else if let Some(d) = as_f64_mut(s) {
        apply_inplace(d, a);
    }
}

fn as_f64_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f64]> {
    // SAFETY: T is f64 (checked by TypeId), so the slice is reinterpreted as itself.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f64>(), s.len()) })
}

/// `LOGONET_CONV_KERNEL=pointwise|blocked|row|depthwise[-padded|-masked]|single|generic` replaces the automatic forward kernel
/// choice (benchmarks; a kernel that does not apply falls back as in [`forward_with`]).
fn env_kernel() -> Option<ConvKernel> {
    static K: std::sync::OnceLock<Option<ConvKernel>> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        Some(match std::env::var("LOGONET_CONV_KERNEL").ok()?.as_str() {
            "pointwise" => ConvKernel::Pointwise,
            "blocked" => ConvKernel::Blocked,
            "row" => ConvKernel::Row,
            "depthwise" => ConvKernel::Depthwise,
            "depthwise-padded" => ConvKernel::DepthwisePadded,
            "depthwise-masked" => ConvKernel::DepthwiseMasked,
            "single" => ConvKernel::Single,
            "generic" => ConvKernel::Generic,
            _ => return None,
        })
    })
}

/// The geometry of a pointwise conv with each sample's positions seen as `[1, P / W', W']`: `W'` is the
/// largest divisor of `P` up to 96, preferring multiples of 12 (the blocked kernel's position block).
fn pointwise_rows(g: &Geom) -> Geom {
    let p = g.osp();
    let divs = || (1..=96.min(p)).rev().filter(move |d| p.is_multiple_of(*d));
    let wr = divs()
        .find(|d| d.is_multiple_of(12) && *d >= 24)
        .or_else(|| divs().next())
        .unwrap_or(1);
    Geom {
        i: [1, p / wr, wr],
        out: [1, p / wr, wr],
        ..*g
    }
}

/// Dense pointwise conv (1³ kernel, stride 1, no padding, one group): one GEMM per sample.
fn is_pointwise(g: &Geom) -> bool {
    g.k == [1, 1, 1] && g.s == [1, 1, 1] && g.p == [0, 0, 0] && g.groups == 1
}

/// Whether the channel-blocked kernel is the faster dense kernel for `g` (measured with `logonet bench ops`
/// on this machine, see docs/PERFORMANCE.md): it needs at least 8 input and output channels; on rows shorter
/// than its position block it wastes lanes like the row kernel, so it is taken from 8-wide rows on.
#[cfg(target_arch = "x86_64")]
fn prefer_blocked(g: &Geom) -> bool {
    !blocked_off() && super::conv3d_avx512::blocked::usable(g) && g.out[2] >= 8
}

/// Forward conv with an optional fused activation (applied to each output block while it is in cache) and a
/// kernel choice (`Auto` unless a test or benchmark forces one; a forced kernel that does not apply to `g`
/// or to the dtype falls back to the generic im2col/direct path).
pub(crate) fn forward_with<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    act: Option<Act>,
    kernel: ConvKernel,
) -> Vec<T> {
    use ConvKernel as K;
    let kernel = match kernel {
        K::Auto => env_kernel().unwrap_or(K::Auto),
        k => k,
    };
    let auto = kernel == K::Auto && !gemm_forced();
    if is_pointwise(g) {
        // Measured (docs/PERFORMANCE.md): the cache-blocked GEMM beats the AVX-512 conv kernels on 1³ convs,
        // which re-read the whole input per block of output channels. Forced, those kernels see the volume
        // as rows of a width that suits their vectors (no lanes wasted on short rows).
        let gp = pointwise_rows(g);
        #[cfg(target_arch = "x86_64")]
        if let (Some(xf), Some(wf)) = (as_f32(x), as_f32(w)) {
            let bf = bias.and_then(as_f32);
            if bias.is_none() || bf.is_some() {
                use super::conv3d_avx512 as k;
                if kernel == K::Blocked && k::blocked::usable(&gp) {
                    return from_f32(k::blocked::forward(xf, wf, bf, &gp, act));
                }
                if kernel == K::Row
                    && g.og >= 4
                    && let Some(y) = k::try_forward(xf, wf, bf, &gp, act)
                {
                    return from_f32(y);
                }
            }
        }
        if auto || kernel == K::Pointwise {
            return forward_pointwise(x, w, bias, g, act);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(xf), Some(wf)) = (as_f32(x), as_f32(w)) {
        let bf = bias.and_then(as_f32);
        if bias.is_none() || bf.is_some() {
            use super::conv3d_avx512 as k;
            if ((auto && prefer_blocked(g)) || kernel == K::Blocked) && k::blocked::usable(g) {
                return from_f32(k::blocked::forward(xf, wf, bf, g, act));
            }
            if (auto || kernel == K::Row)
                && g.og >= 4
                && g.k[2] <= 16
                && let Some(y) = k::try_forward(xf, wf, bf, g, act)
            {
                return from_f32(y);
            }
            if ((auto && g.s != [1, 1, 1]) || kernel == K::Single) && k::single::usable(g) {
                return from_f32(k::single::forward(xf, wf, bf, g, act));
            }
            let dw_padded = match kernel {
                K::DepthwiseMasked => Some(false),
                K::DepthwisePadded => Some(true),
                _ => None,
            };
            if (auto || kernel == K::Depthwise || dw_padded.is_some())
                && g.cg == 1
                && k::depthwise::usable(g)
            {
                return from_f32(k::depthwise::forward(xf, wf, bf, g, act, dw_padded));
            }
        }
    }
    let mut y = if g.cg == 1 {
        forward_direct(x, w, bias, g)
    } else {
        forward_gemm(x, w, bias, g)
    };
    if act.is_some() {
        y.par_chunks_mut(1 << 14).for_each(|c| epilogue(c, act));
    }
    y
}

/// Which forward kernel runs (tests and benchmarks force one; `Auto` picks by geometry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// Shape-dependent choice (the default).
    Auto,
    /// One GEMM per sample (dense 1³, stride 1, no padding).
    Pointwise,
    /// Channel-blocked AVX-512 kernel (dense, stride 1, ≥ 8 channels each side).
    Blocked,
    /// Row ("implicit GEMM") AVX-512 kernel (stride 1, ≥ 4 output channels per group).
    Row,
    /// Register-blocked AVX-512 depthwise kernels (the padded or the masked one, by geometry).
    Depthwise,
    /// The depthwise kernel on a zero-padded copy of the input (every tap computed, no masks).
    DepthwisePadded,
    /// The depthwise kernel on the input as it is (masked loads, rows outside the input skipped).
    DepthwiseMasked,
    /// AVX-512 kernel for one input channel, any stride (the strided patch embedding of the image).
    Single,
    /// im2col + `gemm` (dense/grouped) or direct loops (one input channel per group).
    Generic,
}

/// Pointwise (1³) conv as one GEMM per sample: `y[b] [O, P] = W [O, C] · x[b] [C, P] (+ bias)`, NCDHW as
/// it is (no im2col, no copy). Tiles of `[rows of O] × [columns of P]` run in parallel, each a `gemm` call
/// followed by the activation epilogue on the tile while it is in cache.
fn forward_pointwise<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    act: Option<Act>,
) -> Vec<T> {
    let (c, o, p) = (g.c, g.o, g.osp());
    let mut y = out_buf::<T>(g.n * o * p);
    // Column tiles of up to 768 positions; row tiles keep an output tile near 96 K elements (in L2) and
    // give every thread several tasks when P is small.
    let pc = p.min(768);
    let npc = p.div_ceil(pc);
    let nt = threads();
    let mut mo = (96 * 1024 / pc).clamp(16, o.max(16)).min(o);
    while mo > 16 && g.n * npc * o.div_ceil(mo) < 4 * nt {
        mo = (mo / 2).max(16);
    }
    let nmo = o.div_ceil(mo);
    let tasks = g.n * nmo * npc;
    let yp = SharedMut(y.as_mut_ptr());
    let one = T::from_f64(1.0);
    (0..tasks).into_par_iter().for_each(|t| {
        let (b, r) = (t / (nmo * npc), t % (nmo * npc));
        let (om, pb) = (r / npc, r % npc);
        let (o0, o1) = (om * mo, ((om + 1) * mo).min(o));
        let (p0, p1) = (pb * pc, ((pb + 1) * pc).min(p));
        let dst0 = (b * o + o0) * p + p0;
        if let Some(bv) = bias {
            for (oo, &bo) in bv.iter().enumerate().take(o1).skip(o0) {
                // SAFETY: the task owns rows o0..o1, columns p0..p1 of sample b's output (disjoint tiles).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(yp.ptr().add((b * o + oo) * p + p0), p1 - p0)
                };
                row.fill(bo);
            }
        }
        // SAFETY: dst is the task's own tile (row stride P); lhs rows o0..o1 of W [O, C] (row stride C);
        // rhs columns p0..p1 of x[b] [C, P] (row stride P); all in bounds.
        unsafe {
            gemm(
                o1 - o0,
                p1 - p0,
                c,
                yp.ptr().add(dst0),
                1,
                p as isize,
                bias.is_some(),
                w.as_ptr().add(o0 * c),
                1,
                c as isize,
                x.as_ptr().add(b * c * p + p0),
                1,
                p as isize,
                one,
                one,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        if act.is_some() {
            for oo in o0..o1 {
                // SAFETY: as above, the task's own tile row.
                let row = unsafe {
                    std::slice::from_raw_parts_mut(yp.ptr().add((b * o + oo) * p + p0), p1 - p0)
                };
                epilogue(row, act);
            }
        }
    });
    y
}

fn forward_gemm<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let osp = g.osp();
    let kk = g.kk();
    let ow = g.out[2];
    let rows = g.out[0] * g.out[1];
    let mut y = vec![T::default(); g.n * g.o * osp];
    if let Some(bv) = bias {
        y.par_chunks_mut(osp)
            .enumerate()
            .for_each(|(i, pl)| pl.fill(bv[i % g.o]));
    }
    let rps = rows_per_slab(kk, ow, rows, SLAB);
    let slabs = rows.div_ceil(rps);
    let tasks = g.n * g.groups * slabs;
    let yp = SharedMut(y.as_mut_ptr());
    let one = T::from_f64(1.0);
    (0..tasks).into_par_iter().for_each_init(
        || vec![T::default(); kk * rps * ow],
        |col, t| {
            let (bg, sl) = (t / slabs, t % slabs);
            let (b, grp) = (bg / g.groups, bg % g.groups);
            let (r0, r1) = (sl * rps, ((sl + 1) * rps).min(rows));
            let pc = (r1 - r0) * ow;
            im2col(x, g, b, grp, r0, r1, &mut col[..kk * pc]);
            // SAFETY: the task writes columns r0·ow..r1·ow of the O/g output planes of its (sample, group);
            // no two tasks share a (sample, group, slab), so the writes are disjoint. All pointers stay in
            // bounds: y has N·O·osp elements, w has O·kk, col has ≥ kk·pc.
            unsafe {
                gemm(
                    g.og,
                    pc,
                    kk,
                    yp.ptr().add((b * g.o + grp * g.og) * osp + r0 * ow),
                    1,
                    osp as isize,
                    bias.is_some(),
                    w.as_ptr().add(grp * g.og * kk),
                    1,
                    kk as isize,
                    col.as_ptr(),
                    1,
                    pc as isize,
                    one,
                    one,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
        },
    );
    y
}

/// `(lo, hi, off)` per kernel tap along W.
fn w_ranges(g: &Geom, ow: usize) -> Vec<(usize, usize, isize)> {
    (0..g.k[2])
        .map(|cc| {
            let off = (cc * g.d[2]) as isize - g.p[2] as isize;
            let (l, h) = valid(ow, g.s[2], off, g.i[2]);
            (l, h, off)
        })
        .collect()
}

fn forward_direct<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let (isp, osp, kt) = (g.isp(), g.osp(), g.kt());
    let [od, oh, ow] = g.out;
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let ranges = w_ranges(g, ow);
    let mut y = vec![T::default(); g.n * g.o * osp];
    y.par_chunks_mut(osp).enumerate().for_each(|(idx, yp)| {
        let (b, oc) = (idx / g.o, idx % g.o);
        let ic = oc / g.og;
        let xp = &x[(b * g.c + ic) * isp..][..isp];
        let wk = &w[oc * kt..][..kt];
        let bv = bias.map_or(T::default(), |bb| bb[oc]);
        for z in 0..od {
            for yy in 0..oh {
                let row = &mut yp[(z * oh + yy) * ow..][..ow];
                row.fill(bv);
                for a in 0..kd {
                    let Some(iz) = in_index(z, g.s[0], a, g.d[0], g.p[0], id) else {
                        continue;
                    };
                    for bb in 0..kh {
                        let Some(iy) = in_index(yy, g.s[1], bb, g.d[1], g.p[1], ih) else {
                            continue;
                        };
                        let xrow = &xp[(iz * ih + iy) * iw..][..iw];
                        let wrow = &wk[(a * kh + bb) * kw..][..kw];
                        for (&(l, h, off), &wv) in ranges.iter().zip(wrow) {
                            if l >= h {
                                continue; // this tap touches no output column
                            }
                            if g.s[2] == 1 {
                                let src = &xrow[(l as isize + off) as usize..][..h - l];
                                for (r, v) in row[l..h].iter_mut().zip(src) {
                                    *r += wv * *v;
                                }
                            } else {
                                for xx in l..h {
                                    row[xx] +=
                                        wv * xrow[(xx as isize * g.s[2] as isize + off) as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    y
}

/// Input gradient `dx [N, C, i]` from `dy [N, O, out]`.
pub(crate) fn input_grad<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let flip_ok = g.s == [1, 1, 1] && (0..3).all(|a| g.p[a] <= g.d[a] * (g.k[a] - 1));
    if flip_ok {
        // dx = conv(dy, flip(wᵀ)) with padding d·(k-1) - p: W'[g·cg + ci, oi, t] = W[g·og + oi, ci, kt-1-t].
        let kt = g.kt();
        let mut wt = vec![T::default(); w.len()];
        for grp in 0..g.groups {
            for oi in 0..g.og {
                for ci in 0..g.cg {
                    let src = &w[((grp * g.og + oi) * g.cg + ci) * kt..][..kt];
                    let dst = &mut wt[((grp * g.cg + ci) * g.og + oi) * kt..][..kt];
                    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = *s;
                    }
                }
            }
        }
        let g2 = Geom {
            n: g.n,
            c: g.o,
            o: g.c,
            groups: g.groups,
            cg: g.og,
            og: g.cg,
            i: g.out,
            k: g.k,
            out: g.i,
            s: [1; 3],
            p: [0, 1, 2].map(|a| g.d[a] * (g.k[a] - 1) - g.p[a]),
            d: g.d,
        };
        return forward(dy, &wt, None, &g2);
    }
    input_grad_col2im(dy, w, g)
}

fn input_grad_col2im<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (isp, osp, kk) = (g.isp(), g.osp(), g.kk());
    let ow = g.out[2];
    let rows = g.out[0] * g.out[1];
    let mut dx = vec![T::default(); g.n * g.c * isp];
    let rps = rows_per_slab(kk, ow, rows, SLAB);
    let mut dcol = vec![T::default(); kk * rps * ow];
    let nt = threads();
    let par = if nt > 1 {
        Parallelism::Rayon(nt)
    } else {
        Parallelism::None
    };
    let one = T::from_f64(1.0);
    for b in 0..g.n {
        for grp in 0..g.groups {
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + rps).min(rows);
                let pc = (r1 - r0) * ow;
                // SAFETY: dcol holds kk·pc elements written as [kk, pc] row-major; lhs reads Wᵀ of this group
                // (element (r, o) at w[(grp·og + o)·kk + r]); rhs reads dy rows of this (sample, group).
                unsafe {
                    gemm(
                        kk,
                        pc,
                        g.og,
                        dcol.as_mut_ptr(),
                        1,
                        pc as isize,
                        false,
                        w.as_ptr().add(grp * g.og * kk),
                        kk as isize,
                        1,
                        dy.as_ptr().add((b * g.o + grp * g.og) * osp + r0 * ow),
                        1,
                        osp as isize,
                        one,
                        one,
                        false,
                        false,
                        false,
                        par,
                    )
                }
                let dcol = &dcol[..kk * pc];
                dx[(b * g.c + grp * g.cg) * isp..][..g.cg * isp]
                    .par_chunks_mut(isp)
                    .enumerate()
                    .for_each(|(ci, plane)| col2im_channel(dcol, g, r0, r1, ci, plane));
                r0 = r1;
            }
        }
    }
    dx
}

/// Weight gradient `dw [O, C/g, k]` from `x [N, C, i]` and `dy [N, O, out]`.
pub(crate) fn weight_grad<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if g.cg == 1
        && !gemm_forced()
        && super::conv3d_avx512::depthwise::usable(g)
        && let (Some(xf), Some(dyf)) = (as_f32(x), as_f32(dy))
    {
        return from_f32(super::conv3d_avx512::depthwise::weight_grad(xf, dyf, g));
    }
    if g.cg == 1 {
        weight_grad_direct(x, dy, g)
    } else if shifted_ok(g) && !gemm_forced() {
        weight_grad_shifted(x, dy, g)
    } else {
        weight_grad_gemm(x, dy, g)
    }
}

/// Stride 1 and output extents that fit the zero-padded input (`out + d·(k−1) <= in + 2p` per axis).
fn shifted_ok(g: &Geom) -> bool {
    (0..3).all(|a| g.s[a] == 1 && g.out[a] + g.d[a] * (g.k[a] - 1) <= g.i[a] + 2 * g.p[a])
}

/// Weight gradient without im2col (stride 1): with the input zero-padded to `[C, Dp, Hp, Wp]` and `dy` laid out
/// on the same padded row/plane pitch (zeros outside `out`), tap `t` of the kernel reads the input at a
/// constant flat offset, so `dW[:, :, t]` is one plain GEMM over all output positions of a z-slab:
/// `dWᵀ_t [cg, og] = Xp[cg, q + off_t] · dYpᵀ[q, og]`, contiguous along the reduction axis on both sides.
/// Taps (and groups) run in parallel with per-thread accumulators, reduced at the end of each slab.
fn weight_grad_shifted<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let [id, ih, iw] = g.i;
    let [od, oh, ow] = g.out;
    let [kd, kh, kw] = g.k;
    let (isp, osp, kt, kk) = (g.isp(), g.osp(), g.kt(), g.kk());
    let (hp, wp) = (ih + 2 * g.p[1], iw + 2 * g.p[2]);
    let dp = id + 2 * g.p[0];
    let plane = hp * wp;
    let halo = (kd - 1) * g.d[0] + 1;
    // Output planes per slab: the padded input slab holds about 2^23 elements.
    let zs = ((1usize << 23) / (g.c * plane).max(1))
        .saturating_sub(halo)
        .clamp(1, od.max(1));
    let offs: Vec<usize> = (0..kt)
        .map(|t| {
            let (a, b, c) = (t / (kh * kw), (t / kw) % kh, t % kw);
            a * g.d[0] * plane + b * g.d[1] * wp + c * g.d[2]
        })
        .collect();
    let acc_len = g.groups * kt * g.og * g.cg;
    let mut acc = vec![T::default(); acc_len];
    let one = T::from_f64(1.0);
    let zero = T::default();
    for b in 0..g.n {
        let mut z0 = 0;
        while z0 < od {
            let z1 = (z0 + zs).min(od);
            let nz = z1 - z0;
            let kq = nz * plane;
            // Padded input planes z0 .. z0 + nz + halo (padded coordinates), plus zero tail for the last taps.
            let xplanes = (nz + halo).min(dp - z0) + 1;
            let xlen = xplanes * plane;
            let mut xp = vec![zero; g.c * xlen];
            xp.par_chunks_mut(xlen).enumerate().for_each(|(ci, dst)| {
                let src = &x[(b * g.c + ci) * isp..][..isp];
                for pz in 0..xplanes {
                    let zz = (z0 + pz) as isize - g.p[0] as isize;
                    if zz < 0 || zz >= id as isize {
                        continue;
                    }
                    let zz = zz as usize;
                    for y in 0..ih {
                        let d0 = (pz * hp + y + g.p[1]) * wp + g.p[2];
                        dst[d0..d0 + iw].copy_from_slice(&src[(zz * ih + y) * iw..][..iw]);
                    }
                }
            });
            #[cfg(target_arch = "x86_64")]
            if super::conv3d_avx512::wgrad::available()
                && let (Some(xf), Some(dyf), Some(af)) =
                    (as_f32(&xp), as_f32(dy), as_f32_mut(&mut acc))
            {
                // Direct AVX-512 kernel on the position-major packed output gradient.
                let dyt = super::conv3d_avx512::wgrad::pack_dy(dyf, g, b, z0, nz, hp, wp);
                super::conv3d_avx512::wgrad::accumulate(xf, xlen, &dyt, kq, &offs, g, af);
                z0 = z1;
                continue;
            }
            let mut dyp = vec![zero; g.o * kq];
            dyp.par_chunks_mut(kq).enumerate().for_each(|(oc, dst)| {
                let src = &dy[(b * g.o + oc) * osp..][..osp];
                for z in 0..nz {
                    for y in 0..oh {
                        let d0 = (z * hp + y) * wp;
                        dst[d0..d0 + ow].copy_from_slice(&src[((z0 + z) * oh + y) * ow..][..ow]);
                    }
                }
            });
            let part = (0..g.groups * kt)
                .into_par_iter()
                .fold(
                    || vec![T::default(); acc_len],
                    |mut a, task| {
                        let (grp, t) = (task / kt, task % kt);
                        let off = offs[t];
                        debug_assert!(off + kq <= xlen);
                        // SAFETY: dst = a[(grp·kt + t)·og·cg ..][.. og·cg] holds [cg, og] column-major (element
                        // (ci, o) at o·cg + ci); lhs element (ci, q) = xp[(grp·cg + ci)·xlen + off + q] with
                        // off + q < off + kq <= xlen (zero tail plane); rhs element (q, o) =
                        // dyp[(grp·og + o)·kq + q]. All in bounds, buffers private or read-only.
                        unsafe {
                            gemm(
                                g.cg,
                                g.og,
                                kq,
                                a.as_mut_ptr().add((grp * kt + t) * g.og * g.cg),
                                g.cg as isize,
                                1,
                                true,
                                xp.as_ptr().add(grp * g.cg * xlen + off),
                                1,
                                xlen as isize,
                                dyp.as_ptr().add(grp * g.og * kq),
                                kq as isize,
                                1,
                                one,
                                one,
                                false,
                                false,
                                false,
                                Parallelism::None,
                            )
                        }
                        a
                    },
                )
                .reduce(
                    || vec![T::default(); acc_len],
                    |mut a, o| {
                        for (x, y) in a.iter_mut().zip(&o) {
                            *x += *y;
                        }
                        a
                    },
                );
            for (x, y) in acc.iter_mut().zip(&part) {
                *x += *y;
            }
            z0 = z1;
        }
    }
    // acc [groups, kt, og, cg] -> dw [O = groups·og, cg, kt]
    let mut dw = vec![T::default(); g.o * kk];
    for grp in 0..g.groups {
        for t in 0..kt {
            let blk = &acc[(grp * kt + t) * g.og * g.cg..][..g.og * g.cg];
            for o in 0..g.og {
                for ci in 0..g.cg {
                    dw[((grp * g.og + o) * g.cg + ci) * kt + t] = blk[o * g.cg + ci];
                }
            }
        }
    }
    dw
}

fn weight_grad_gemm<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (osp, kk) = (g.osp(), g.kk());
    let ow = g.out[2];
    let rows = g.out[0] * g.out[1];
    // Longer slabs: the gemm reduction runs over the slab, and dW is re-read once per slab.
    let rps = rows_per_slab(kk, ow, rows, 8 * SLAB);
    let slabs = rows.div_ceil(rps);
    let tasks = g.n * g.groups * slabs;
    let len = g.o * kk;
    let one = T::from_f64(1.0);
    (0..tasks)
        .into_par_iter()
        .fold(
            || (vec![T::default(); len], vec![T::default(); kk * rps * ow]),
            |(mut acc, mut col), t| {
                let (bg, sl) = (t / slabs, t % slabs);
                let (b, grp) = (bg / g.groups, bg % g.groups);
                let (r0, r1) = (sl * rps, ((sl + 1) * rps).min(rows));
                let pc = (r1 - r0) * ow;
                im2col(x, g, b, grp, r0, r1, &mut col[..kk * pc]);
                // SAFETY: acc is this fold's private [O, kk] buffer (the group's rows start at grp·og·kk);
                // lhs = dy rows [og, pc] of this (sample, group, slab); rhs = colᵀ [pc, kk] (element (j, r) at
                // col[r·pc + j]); all in bounds.
                unsafe {
                    gemm(
                        g.og,
                        kk,
                        pc,
                        acc.as_mut_ptr().add(grp * g.og * kk),
                        1,
                        kk as isize,
                        true,
                        dy.as_ptr().add((b * g.o + grp * g.og) * osp + r0 * ow),
                        1,
                        osp as isize,
                        col.as_ptr(),
                        pc as isize,
                        1,
                        one,
                        one,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    )
                }
                (acc, col)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(
            || vec![T::default(); len],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += *y;
                }
                a
            },
        )
}

fn weight_grad_direct<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (isp, osp, kt) = (g.isp(), g.osp(), g.kt());
    let [od, oh, ow] = g.out;
    let [id, ih, iw] = g.i;
    let [kd, kh, kw] = g.k;
    let ranges = w_ranges(g, ow);
    let mut dw = vec![T::default(); g.o * kt];
    dw.par_chunks_mut(kt).enumerate().for_each(|(oc, out)| {
        let ic = oc / g.og;
        // Per-tap row accumulators [kt, ow], reduced at the end (no horizontal sums in the hot loop).
        let mut acc = vec![T::default(); kt * ow];
        for b in 0..g.n {
            let xp = &x[(b * g.c + ic) * isp..][..isp];
            let dyp = &dy[(b * g.o + oc) * osp..][..osp];
            for z in 0..od {
                for yy in 0..oh {
                    let dyrow = &dyp[(z * oh + yy) * ow..][..ow];
                    for a in 0..kd {
                        let Some(iz) = in_index(z, g.s[0], a, g.d[0], g.p[0], id) else {
                            continue;
                        };
                        for bb in 0..kh {
                            let Some(iy) = in_index(yy, g.s[1], bb, g.d[1], g.p[1], ih) else {
                                continue;
                            };
                            let xrow = &xp[(iz * ih + iy) * iw..][..iw];
                            for (cc, &(l, h, off)) in ranges.iter().enumerate() {
                                if h <= l {
                                    continue;
                                }
                                let arow = &mut acc[((a * kh + bb) * kw + cc) * ow..][..ow];
                                if g.s[2] == 1 {
                                    let src = &xrow[(l as isize + off) as usize..][..h - l];
                                    for ((r, v), d) in
                                        arow[l..h].iter_mut().zip(src).zip(&dyrow[l..h])
                                    {
                                        *r += *v * *d;
                                    }
                                } else {
                                    for xx in l..h {
                                        arow[xx] += dyrow[xx]
                                            * xrow[(xx as isize * g.s[2] as isize + off) as usize];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (t, o) in out.iter_mut().enumerate() {
            let mut s = T::default();
            for v in &acc[t * ow..(t + 1) * ow] {
                s += *v;
            }
            *o = s;
        }
    });
    dw
}

// ---------------------------------------------------------------------------------------------------------
// candle custom ops

fn dims5(l: &Layout, what: &str) -> candle_core::Result<[usize; 5]> {
    match l.dims() {
        &[a, b, c, d, e] => Ok([a, b, c, d, e]),
        d => candle_core::bail!("{what} must be rank 5, got {d:?}"),
    }
}

fn to_candle(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

macro_rules! dispatch_float {
    ($s:expr, $op:expr, $f:ident ( $($args:tt)* )) => {
        match $s {
            CpuStorage::F32(_) => $f::<f32>($($args)*),
            CpuStorage::F64(_) => $f::<f64>($($args)*),
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $op),
        }
    };
}
pub(crate) use dispatch_float;

/// Forward conv3d op (`x`, `w`[, `bias`]).
pub(crate) struct Conv3dOp {
    pub p: Conv3dParams,
    /// Activation fused into the output (inference only: such an op has no backward).
    pub act: Option<Act>,
    /// Forward kernel choice (`Auto` except in tests and benchmarks).
    pub kernel: ConvKernel,
}

impl Conv3dOp {
    /// The plain, differentiable conv.
    pub(crate) fn plain(p: Conv3dParams) -> Self {
        Self {
            p,
            act: None,
            kernel: ConvKernel::Auto,
        }
    }
}

impl Conv3dOp {
    fn geom(&self, l1: &Layout, l2: &Layout) -> candle_core::Result<(Geom, Shape)> {
        let xd = dims5(l1, "conv3d input")?;
        let wd = dims5(l2, "conv3d weight")?;
        let out = self
            .p
            .output_size([xd[2], xd[3], xd[4]], [wd[2], wd[3], wd[4]])
            .map_err(to_candle)?;
        let g = Geom::new(xd, wd, &self.p, out);
        Ok((g, Shape::from(vec![xd[0], wd[0], out[0], out[1], out[2]])))
    }

    fn run(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn go<T: Elem>(
            g: &Geom,
            act: Option<Act>,
            kernel: ConvKernel,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            b: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "conv3d")?;
            let w = slice::<T>(s2, l2, "conv3d")?;
            let bias = match b {
                Some((s, l)) => Some(slice::<T>(s, l, "conv3d")?),
                None => None,
            };
            Ok(T::to_cpu_storage_owned(forward_with(
                x, w, bias, g, act, kernel,
            )))
        }
        let (g, shape) = self.geom(l1, l2)?;
        let st = dispatch_float!(
            s1,
            "conv3d",
            go(&g, self.act, self.kernel, s1, l1, s2, l2, b)
        )?;
        Ok((st, shape))
    }

    /// Input and weight gradients; each only when its tensor takes part in autograd (a variable or the
    /// result of an op), so e.g. the first layer's input gradient (the image) is never computed.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if self.act.is_some() {
            candle_core::bail!("conv3d with a fused activation is inference-only (no backward)");
        }
        let grad = grad.contiguous()?;
        let xd = dims5(x.layout(), "conv3d input")?;
        let dx = match x.track_op() {
            true => Some(grad.apply_op2_no_bwd(
                w,
                &Conv3dInputGradOp {
                    p: self.p,
                    x_dims: xd,
                },
            )?),
            false => None,
        };
        let wd = dims5(w.layout(), "conv3d weight")?;
        let dw = match w.track_op() {
            true => Some(x.apply_op2_no_bwd(
                &grad,
                &Conv3dWeightGradOp {
                    p: self.p,
                    w_dims: wd,
                },
            )?),
            false => None,
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for Conv3dOp {
    fn name(&self) -> &'static str {
        "conv3d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(s1, l1, s2, l2, None)
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::conv3d_fwd(&self.p, (s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, grad)
    }
}

impl CustomOp3 for Conv3dOp {
    fn name(&self) -> &'static str {
        "conv3d"
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
        self.run(s1, l1, s2, l2, Some((s3, l3)))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::conv3d_fwd(&self.p, (s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, grad)?;
        let (n, o, _, _, _) = grad.dims5()?;
        let db = grad.contiguous()?.reshape((n, o, ()))?.sum(2)?.sum(0)?;
        Ok((dx, dw, Some(db)))
    }
}

/// Checks that an input `xd`, an output gradient `dyd` and a weight `wd` belong to one convolution
/// (batch, output channels and grouped input channels agree); shared by both gradient ops.
fn check_grad_dims(
    op: &str,
    xd: [usize; 5],
    dyd: [usize; 5],
    wd: [usize; 5],
    groups: usize,
) -> candle_core::Result<()> {
    if dyd[0] != xd[0] || dyd[1] != wd[0] || xd[1] != wd[1] * groups {
        candle_core::bail!("{op}: input {xd:?}, gradient {dyd:?} and weight {wd:?} disagree");
    }
    Ok(())
}

/// Input gradient of conv3d, `(dy, w) -> dx`; also the forward pass of a transposed convolution (its own
/// backward is then `conv3d` and the weight gradient with roles swapped).
pub(crate) struct Conv3dInputGradOp {
    pub p: Conv3dParams,
    /// Shape of the forward input `x` (the output of this op).
    pub x_dims: [usize; 5],
}

impl CustomOp2 for Conv3dInputGradOp {
    fn name(&self) -> &'static str {
        "conv3d-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dyd = dims5(l1, "conv3d output gradient")?;
        let wd = dims5(l2, "conv3d weight")?;
        let xd = self.x_dims;
        let g = Geom::new(xd, wd, &self.p, [dyd[2], dyd[3], dyd[4]]);
        check_grad_dims("conv3d-input-grad", xd, dyd, wd, self.p.groups)?;
        fn go<T: Elem>(
            g: &Geom,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let dy = slice::<T>(s1, l1, "conv3d-input-grad")?;
            let w = slice::<T>(s2, l2, "conv3d-input-grad")?;
            Ok(T::to_cpu_storage_owned(input_grad(dy, w, g)))
        }
        let st = dispatch_float!(s1, "conv3d-input-grad", go(&g, s1, l1, s2, l2))?;
        Ok((st, Shape::from(xd.to_vec())))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::conv3d_input_grad(&self.p, self.x_dims, (s1, l1), (s2, l2))
    }
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // This op is linear in dy and w: d(dy) = conv3d(grad, w), d(w) = weight_grad(x = grad, dy = dy).
        // Each only when its tensor takes part in autograd.
        let grad = grad.contiguous()?;
        let ddy = match dy.track_op() {
            true => Some(grad.apply_op2_no_bwd(w, &Conv3dOp::plain(self.p))?),
            false => None,
        };
        let wd = dims5(w.layout(), "conv3d weight")?;
        let dw = match w.track_op() {
            true => Some(grad.apply_op2_no_bwd(
                &dy.contiguous()?,
                &Conv3dWeightGradOp {
                    p: self.p,
                    w_dims: wd,
                },
            )?),
            false => None,
        };
        Ok((ddy, dw))
    }
}

/// Weight gradient of conv3d, `(x, dy) -> dw`.
pub(crate) struct Conv3dWeightGradOp {
    pub p: Conv3dParams,
    /// Shape of the weight (the output of this op).
    pub w_dims: [usize; 5],
}

impl CustomOp2 for Conv3dWeightGradOp {
    fn name(&self) -> &'static str {
        "conv3d-weight-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xd = dims5(l1, "conv3d input")?;
        let dyd = dims5(l2, "conv3d output gradient")?;
        let wd = self.w_dims;
        let g = Geom::new(xd, wd, &self.p, [dyd[2], dyd[3], dyd[4]]);
        check_grad_dims("conv3d-weight-grad", xd, dyd, wd, self.p.groups)?;
        fn go<T: Elem>(
            g: &Geom,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "conv3d-weight-grad")?;
            let dy = slice::<T>(s2, l2, "conv3d-weight-grad")?;
            Ok(T::to_cpu_storage_owned(weight_grad(x, dy, g)))
        }
        let st = dispatch_float!(s1, "conv3d-weight-grad", go(&g, s1, l1, s2, l2))?;
        Ok((st, Shape::from(wd.to_vec())))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::conv3d_weight_grad(&self.p, self.w_dims, (s1, l1), (s2, l2))
    }
}
