//! Deterministic test values from a 64-bit LCG (no dependency, failures reproduce), shared by the op and
//! training-step tests through `mod lcg_support;`.
#![allow(dead_code)]

/// `n` values `u` in `[0, 1)` (53 bits each) from `seed`.
fn units(n: usize, seed: u64) -> impl Iterator<Item = f64> {
    let step = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut s = step(seed);
    (0..n).map(move |_| {
        s = step(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// `n` values in `[-1, 1)`.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    units(n, seed).map(|u| u * 2.0 - 1.0).collect()
}

/// `n` values in `[lo, hi)`.
pub fn lcg(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    units(n, seed).map(|u| lo + (hi - lo) * u).collect()
}
