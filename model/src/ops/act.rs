//! Elementwise activations as custom ops: exact (erf) GELU and LeakyReLU, forward and backward in one pass
//! each, parallel over blocks.
//!
//! The f32 GELU kernels evaluate `Φ(x) = ½(1 + erf(x/√2))` with the Abramowitz-Stegun 7.1.26 form
//! `erf(a) = 1 − t·P(t)·e^{−a²}`, `t = 1/(1 + p·a)` (absolute error below 1.5e-7, the same formula as
//! PyTorch's vectorised `erf`), branch-free so that LLVM turns the loops into AVX-512 code. The backward shares
//! the one `e^{−x²/2}` between `Φ` and the density `φ`: `d/dx x·Φ(x) = Φ(x) + x·φ(x)`.

use super::conv3d::dispatch_float;
use super::elem::{Elem, exp_f32, out_buf, slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Which activation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act {
    /// `x·Φ(x)` with the error function.
    Gelu,
    /// `x` for `x ≥ 0`, `slope·x` otherwise.
    Leaky(f64),
}

/// Elements per rayon task (64 KiB of f32: big enough to amortise scheduling, small enough to balance).
const BLOCK: usize = 16384;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `(Φ(x), e^{−x²/2})` for f32, branch-free.
#[inline(always)]
fn phi_f32(x: f32) -> (f32, f32) {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = exp_f32(-a * a);
    // ½·erfc(|x|/√2) = ½·poly·e; Φ(x) = 1 − that for x ≥ 0, that for x < 0.
    let h = 0.5 * poly * e;
    let cdf = if x >= 0.0 { 1.0 - h } else { h };
    (cdf, e)
}

/// Per-dtype slice kernels: a vectorised f32 path, a plain f64 path (finite-difference tests).
pub(crate) trait ActElem: Elem {
    fn gelu_fwd(x: &[Self], y: &mut [Self]);
    fn gelu_bwd(x: &[Self], g: &[Self], d: &mut [Self]);
}

impl ActElem for f32 {
    #[inline(never)]
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected.
            unsafe { gelu_avx512::fwd(x, y) };
            return;
        }
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * phi_f32(x).0;
        }
    }
    #[inline(never)]
    fn gelu_bwd(x: &[f32], g: &[f32], d: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected.
            unsafe { gelu_avx512::bwd(x, g, d) };
            return;
        }
        let c = FRAC_1_SQRT_2PI as f32;
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            let (cdf, e) = phi_f32(x);
            *d = g * (cdf + x * c * e);
        }
    }
}

/// The f32 GELU kernels with AVX-512 intrinsics: the formula of [`phi_f32`] on 16 lanes with FMAs,
/// `1/(1 + p·a)` as `vrcp14ps` plus one Newton step (relative error about 2⁻²⁸ instead of a 16-cycle divide)
/// and `2ⁿ` by `vscalefps`; the row tail through masked loads and stores. (LLVM vectorises the scalar loops
/// with 256-bit vectors, separate multiplies and adds, and a divide.)
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod gelu_avx512 {
    use super::FRAC_1_SQRT_2PI;
    use std::arch::x86_64::*;

    /// `(Φ(x), e^{−x²/2})` on 16 lanes.
    #[inline(always)]
    unsafe fn phi(x: __m512) -> (__m512, __m512) {
        let one = _mm512_set1_ps(1.0);
        let a = _mm512_mul_ps(
            _mm512_abs_ps(x),
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        );
        let den = _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), a, one);
        let r = _mm512_rcp14_ps(den);
        // One Newton step: t = r·(2 − den·r).
        let t = _mm512_mul_ps(r, _mm512_fnmadd_ps(den, r, _mm512_set1_ps(2.0)));
        let mut p = _mm512_fmadd_ps(t, _mm512_set1_ps(1.061_405_4), _mm512_set1_ps(-1.453_152_1));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421_413_8));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284_496_72));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254_829_6));
        p = _mm512_mul_ps(p, t);
        // e^{−a²}: the Cephes polynomial of `elem::exp_f32`, 2ⁿ by vscalefps.
        let z = _mm512_max_ps(
            _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a),
            _mm512_set1_ps(-87.3),
        );
        let n =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                z,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let rr = _mm512_fmadd_ps(
            n,
            _mm512_set1_ps(2.121_944_4e-4),
            _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), z),
        );
        let mut q = _mm512_fmadd_ps(
            _mm512_set1_ps(1.987_569_2e-4),
            rr,
            _mm512_set1_ps(1.398_199_9e-3),
        );
        q = _mm512_fmadd_ps(q, rr, _mm512_set1_ps(8.333_452e-3));
        q = _mm512_fmadd_ps(q, rr, _mm512_set1_ps(4.166_579_6e-2));
        q = _mm512_fmadd_ps(q, rr, _mm512_set1_ps(1.666_666_5e-1));
        q = _mm512_fmadd_ps(q, rr, _mm512_set1_ps(5e-1));
        let e = _mm512_scalef_ps(
            _mm512_fmadd_ps(_mm512_mul_ps(q, rr), rr, _mm512_add_ps(rr, one)),
            n,
        );
        // ½·erfc(|x|/√2) = ½·poly·e; Φ(x) = 1 − that for x ≥ 0, that for x < 0.
        let h = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), p), e);
        let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
        (_mm512_mask_blend_ps(pos, h, _mm512_sub_ps(one, h)), e)
    }

    /// Lane mask of the last `n < 16` elements.
    #[inline(always)]
    fn tail(n: usize) -> u16 {
        ((1u32 << n) - 1) as u16
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fwd(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_ps(xp.add(i));
            _mm512_storeu_ps(yp.add(i), _mm512_mul_ps(v, phi(v).0));
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            let v = _mm512_maskz_loadu_ps(m, xp.add(i));
            _mm512_mask_storeu_ps(yp.add(i), m, _mm512_mul_ps(v, phi(v).0));
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bwd(x: &[f32], g: &[f32], d: &mut [f32]) {
        let n = x.len().min(g.len()).min(d.len());
        let (xp, gp, dp) = (x.as_ptr(), g.as_ptr(), d.as_mut_ptr());
        let c = _mm512_set1_ps(FRAC_1_SQRT_2PI as f32);
        let one = |v: __m512, gv: __m512| {
            let (cdf, e) = phi(v);
            _mm512_mul_ps(gv, _mm512_fmadd_ps(_mm512_mul_ps(v, c), e, cdf))
        };
        let mut i = 0;
        while i + 16 <= n {
            let (v, gv) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(gp.add(i)));
            _mm512_storeu_ps(dp.add(i), one(v, gv));
            i += 16;
        }
        if i < n {
            let m = tail(n - i);
            let (v, gv) = (
                _mm512_maskz_loadu_ps(m, xp.add(i)),
                _mm512_maskz_loadu_ps(m, gp.add(i)),
            );
            _mm512_mask_storeu_ps(dp.add(i), m, one(v, gv));
        }
    }
}

impl ActElem for f64 {
    fn gelu_fwd(x: &[f64], y: &mut [f64]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = 0.5 * x * (1.0 + (x * std::f64::consts::FRAC_1_SQRT_2).erf_fast());
        }
    }
    fn gelu_bwd(x: &[f64], g: &[f64], d: &mut [f64]) {
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            let cdf = 0.5 * (1.0 + (x * std::f64::consts::FRAC_1_SQRT_2).erf_fast());
            let pdf = FRAC_1_SQRT_2PI * (-0.5 * x * x).exp();
            *d = g * (cdf + x * pdf);
        }
    }
}

fn fwd<T: ActElem>(x: &[T], act: Act) -> Vec<T> {
    let mut y = out_buf::<T>(x.len());
    y.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(yb, xb)| match act {
            Act::Gelu => T::gelu_fwd(xb, yb),
            Act::Leaky(s) => {
                let s = T::from_f64(s);
                let zero = T::default();
                for (y, &x) in yb.iter_mut().zip(xb) {
                    *y = if x >= zero { x } else { x * s };
                }
            }
        });
    y
}

fn bwd<T: ActElem>(x: &[T], g: &[T], act: Act) -> Vec<T> {
    let mut dx = out_buf::<T>(x.len());
    dx.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK).zip(g.par_chunks(BLOCK)))
        .for_each(|(db, (xb, gb))| match act {
            Act::Gelu => T::gelu_bwd(xb, gb, db),
            Act::Leaky(s) => {
                let s = T::from_f64(s);
                let zero = T::default();
                for ((d, &x), &g) in db.iter_mut().zip(xb).zip(gb) {
                    *d = if x >= zero { g } else { g * s };
                }
            }
        });
    dx
}

/// Applies `act` in place to `s` (the epilogue of the fused conv + activation): the same per-element
/// functions as the activation ops ([`ActElem::gelu_fwd`], the LeakyReLU select), through a small stack
/// buffer for GELU so that no allocation is made. Call it on data that is still in cache.
pub(crate) fn apply_inplace<T: ActElem>(s: &mut [T], act: Act) {
    match act {
        Act::Gelu => {
            let mut tmp = [T::default(); 256];
            for seg in s.chunks_mut(256) {
                let t = &mut tmp[..seg.len()];
                t.copy_from_slice(seg);
                T::gelu_fwd(t, seg);
            }
        }
        Act::Leaky(sl) => {
            let sl = T::from_f64(sl);
            let zero = T::default();
            for v in s.iter_mut() {
                if *v < zero {
                    *v *= sl;
                }
            }
        }
    }
}

/// Activation forward op.
#[derive(Clone)]
pub(crate) struct ActOp(pub Act);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Gelu => "gelu-erf",
            Act::Leaky(_) => "leaky-relu",
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: ActElem>(act: Act, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(fwd(
                slice::<T>(s, l, "activation")?,
                act,
            )))
        }
        let st = dispatch_float!(s, "activation", go(self.0, s, l))?;
        Ok((st, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &ActBwdOp(self.0),
        )?))
    }
}

/// Activation backward op `(x, grad) → dx`.
struct ActBwdOp(Act);

impl CustomOp2 for ActBwdOp {
    fn name(&self) -> &'static str {
        "activation-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: ActElem>(
            act: Act,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "activation-bwd")?;
            let g = slice::<T>(s2, l2, "activation-bwd")?;
            if x.len() != g.len() {
                candle_core::bail!("activation-bwd: {} vs {} elements", x.len(), g.len());
            }
            Ok(T::to_cpu_storage_owned(bwd(x, g, act)))
        }
        let st = dispatch_float!(s1, "activation-bwd", go(self.0, s1, l1, s2, l2))?;
        Ok((st, l1.shape().clone()))
    }
}
