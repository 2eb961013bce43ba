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
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * phi_f32(x).0;
        }
    }
    #[inline(never)]
    fn gelu_bwd(x: &[f32], g: &[f32], d: &mut [f32]) {
        let c = FRAC_1_SQRT_2PI as f32;
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            let (cdf, e) = phi_f32(x);
            *d = g * (cdf + x * c * e);
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
