//! Elementwise activations as custom ops: exact (erf) GELU and LeakyReLU, forward and backward in one pass
//! each, parallel over blocks.

use super::conv3d::dispatch_float;
use super::elem::{Elem, slice};
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

const BLOCK: usize = 8192;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn fwd<T: Elem>(x: &[T], act: Act) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    let half = T::from_f64(0.5);
    let one = T::from_f64(1.0);
    let r2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let zero = T::default();
    y.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(yb, xb)| match act {
            Act::Gelu => {
                for (y, &x) in yb.iter_mut().zip(xb) {
                    *y = half * x * (one + (x * r2).erf_fast());
                }
            }
            Act::Leaky(s) => {
                let s = T::from_f64(s);
                for (y, &x) in yb.iter_mut().zip(xb) {
                    *y = if x >= zero { x } else { x * s };
                }
            }
        });
    y
}

fn bwd<T: Elem>(x: &[T], g: &[T], act: Act) -> Vec<T> {
    let mut dx = vec![T::default(); x.len()];
    let half = T::from_f64(0.5);
    let one = T::from_f64(1.0);
    let r2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let c = T::from_f64(FRAC_1_SQRT_2PI);
    let zero = T::default();
    dx.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK).zip(g.par_chunks(BLOCK)))
        .for_each(|(db, (xb, gb))| match act {
            Act::Gelu => {
                for ((d, &x), &g) in db.iter_mut().zip(xb).zip(gb) {
                    let cdf = half * (one + (x * r2).erf_fast());
                    let pdf = c * (zero - half * x * x).exp_fast();
                    *d = g * (cdf + x * pdf);
                }
            }
            Act::Leaky(s) => {
                let s = T::from_f64(s);
                for ((d, &x), &g) in db.iter_mut().zip(xb).zip(gb) {
                    *d = if x >= zero { g } else { g * s };
                }
            }
        });
    dx
}

/// Activation forward op.
pub(crate) struct ActOp(pub Act);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Gelu => "gelu-erf",
            Act::Leaky(_) => "leaky-relu",
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn go<T: Elem>(act: Act, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
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
        fn go<T: Elem>(
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
