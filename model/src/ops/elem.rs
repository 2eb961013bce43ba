//! Element types of the CPU kernels (f32 for speed, f64 for finite-difference tests) and small helpers shared
//! by the custom ops: contiguous slice access, raw shared pointers for disjoint parallel writes, fast `exp`/`erf`.

use candle_core::{CpuStorage, Layout, WithDType};

/// A float the CPU kernels run on: `f32` or `f64`.
pub(crate) trait Elem: WithDType + Default {
    /// The error function (f32: Abramowitz-Stegun 7.1.26, absolute error below 1.5e-7).
    fn erf_fast(self) -> Self;
}

impl Elem for f64 {
    #[inline]
    fn erf_fast(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
}

impl Elem for f32 {
    #[inline]
    fn erf_fast(self) -> Self {
        erf_f32(self)
    }
}

/// Branch-free `e^x` for f32 (Cephes polynomial on `[-ln2/2, ln2/2]`, exponent by bit manipulation). No
/// float-to-int conversion (Rust's saturating `as i32` would not vectorise): `2^n` is built from the bits of
/// `n + 127 + 2^23`, whose low mantissa bits hold the biased exponent.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // n ∈ [-126, 127] after the clamp, so n + 127 ∈ [1, 254] is exact in the mantissa of 2^23 + (n + 127).
    let bits = (n + (127.0 + 8_388_608.0)).to_bits() << 23;
    y * f32::from_bits(bits)
}

/// `erf(x)` for f32 (Abramowitz-Stegun 7.1.26), branch-free.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp_f32(-a * a);
    e.copysign(x)
}

/// The contiguous slice of `storage` described by `layout`, or an error for strided layouts.
pub(crate) fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let all = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("{op}: expects a contiguous input"),
    }
}

/// A raw pointer that may be shared between rayon tasks that write disjoint ranges.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: users only write disjoint elements from different tasks (documented at each use).
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The raw pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    /// `madvise(2)` from the C library that `std` already links.
    fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: std::ffi::c_int)
    -> std::ffi::c_int;
}

/// A zeroed buffer of `n` elements for a kernel's output. `vec![0; n]` is `calloc`: big blocks come as fresh,
/// untouched zero pages from the kernel. On Linux, blocks of 4 MiB or more are then marked for transparent huge
/// pages (`MADV_HUGEPAGE`) before the first write: a 113 MB output otherwise takes ~28 000 4-KiB page faults,
/// about 0.1 CPU-seconds of kernel time, as much as the kernel's own work.
pub(crate) fn out_buf<T: WithDType + Default>(n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 4 << 20 {
            const PAGE: usize = 4096;
            let p = v.as_mut_ptr() as usize;
            let start = p.next_multiple_of(PAGE);
            let len = (p + bytes - start) / PAGE * PAGE;
            // SAFETY: [start, start + len) lies inside the allocation owned by `v`; MADV_HUGEPAGE (14) only
            // changes how the kernel backs these pages, never their contents. A failure is harmless (ignored).
            unsafe {
                madvise(start as *mut std::ffi::c_void, len, 14);
            }
        }
    }
    v
}

/// Number of rayon threads.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
