//! A global allocator for the binaries that keeps freed large blocks for reuse.
//!
//! A network's forward pass allocates and frees its activations layer after layer: tens to hundreds of MB
//! each (a 64-channel 96³ map is 226 MB). glibc serves such blocks with `mmap` and returns them with
//! `munmap`, so every layer of every window paid page faults and the kernel's zeroing again (13 % of a
//! LoGoNet-S forward, `perf` in docs/PERFORMANCE.md). [`BlockCache`] rounds blocks of at least 1 MiB up
//! to one of 8 size classes per power of two (at most 12.5 % slack) and keeps up to
//! [`BlockCache::CACHE_BYTES`] of freed blocks per class for the next request of that class; a sliding
//! window inference repeats the same sequence of sizes, so after the first window it allocates nothing
//! from the kernel. Smaller blocks and over-aligned requests go straight to [`System`].
//!
//! Use it in a binary with
//! `#[global_allocator] static ALLOC: logonet::alloc::BlockCache = logonet::alloc::BlockCache::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Smallest block that is cached (1 MiB).
const MIN_SHIFT: u32 = 20;
/// Size classes per power of two.
const STEPS: usize = 8;
/// Powers of two covered: 1 MiB .. 64 GiB.
const OCTAVES: usize = 16;
const NCLASS: usize = OCTAVES * STEPS;
/// Cached blocks per class.
const SLOTS: usize = 16;
/// Alignment of every cached block (a cache line; enough for AVX-512 loads).
const ALIGN: usize = 64;

/// The class of a request of `size` bytes: `(index, rounded size)`, or `None` when it is not cached.
fn class_of(size: usize) -> Option<(usize, usize)> {
    if size < 1 << MIN_SHIFT {
        return None;
    }
    let oct = usize::BITS - 1 - size.leading_zeros();
    let step = 1usize << (oct - STEPS.trailing_zeros());
    let bytes = size.div_ceil(step).checked_mul(step)?;
    let (oct, m) = if bytes == 1usize << (oct + 1) {
        (oct + 1, STEPS)
    } else {
        (oct, bytes / step)
    };
    let idx = (oct - MIN_SHIFT) as usize * STEPS + (m - STEPS);
    (idx < NCLASS).then_some((idx, bytes))
}

struct Cache {
    /// Freed blocks per class (addresses; `0` = empty slot).
    slots: [[usize; SLOTS]; NCLASS],
    /// Filled slots per class.
    count: [usize; NCLASS],
    /// Bytes held in all classes.
    bytes: usize,
}

/// Global allocator: [`System`] plus a cache of freed blocks of 1 MiB and more (module docs).
pub struct BlockCache {
    cache: Mutex<Cache>,
}

impl BlockCache {
    /// Most bytes of freed blocks kept at a time; a block freed beyond it goes back to the system.
    pub const CACHE_BYTES: usize = 1 << 30;

    /// An empty cache (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            cache: Mutex::new(Cache {
                slots: [[0; SLOTS]; NCLASS],
                count: [0; NCLASS],
                bytes: 0,
            }),
        }
    }

    /// Bytes of freed blocks held now.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.bytes)
    }

    /// Frees every cached block (e.g. after a job, to give the memory back).
    pub fn release(&self) {
        if let Ok(mut c) = self.cache.lock() {
            for idx in 0..NCLASS {
                let Some(bytes) = class_bytes(idx) else {
                    continue;
                };
                for s in 0..c.count[idx] {
                    let p = std::mem::replace(&mut c.slots[idx][s], 0);
                    // SAFETY: every cached address came from `System.alloc` with this class's size and
                    // ALIGN (see `alloc`), and is owned by the cache alone.
                    unsafe {
                        System.dealloc(
                            p as *mut u8,
                            Layout::from_size_align_unchecked(bytes, ALIGN),
                        )
                    };
                }
                c.count[idx] = 0;
            }
            c.bytes = 0;
        }
    }

    fn take(&self, idx: usize, bytes: usize) -> Option<*mut u8> {
        let mut c = self.cache.lock().ok()?;
        let n = c.count[idx];
        if n == 0 {
            return None;
        }
        let p = std::mem::replace(&mut c.slots[idx][n - 1], 0);
        c.count[idx] = n - 1;
        c.bytes -= bytes;
        Some(p as *mut u8)
    }

    /// Keeps `p` if there is room; `false` when the caller must free it.
    fn keep(&self, idx: usize, bytes: usize, p: *mut u8) -> bool {
        let Ok(mut c) = self.cache.lock() else {
            return false;
        };
        let n = c.count[idx];
        if n == SLOTS || c.bytes + bytes > Self::CACHE_BYTES {
            return false;
        }
        c.slots[idx][n] = p as usize;
        c.count[idx] = n + 1;
        c.bytes += bytes;
        true
    }
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Rounded size of class `idx`.
fn class_bytes(idx: usize) -> Option<usize> {
    let oct = MIN_SHIFT as usize + idx / STEPS;
    let m = STEPS + idx % STEPS;
    let step = 1usize.checked_shl((oct - STEPS.trailing_zeros() as usize) as u32)?;
    m.checked_mul(step)
}

/// The cached class of `layout`, when it has one (large enough, alignment at most [`ALIGN`]).
fn cached(layout: Layout) -> Option<(usize, usize)> {
    if layout.align() > ALIGN {
        return None;
    }
    class_of(layout.size())
}

// SAFETY: large blocks are allocated by `System` with their class's rounded size and ALIGN, and freed or
// cached with that same layout (the class is a function of the request's size, which `dealloc` and
// `realloc` receive unchanged); a cached block is handed to one caller at a time (taken under the lock).
// Everything else is `System`'s.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match cached(layout) {
            Some((idx, bytes)) => match self.take(idx, bytes) {
                Some(p) => p,
                // SAFETY: non-zero size (at least 1 MiB), valid power-of-two alignment.
                None => unsafe { System.alloc(Layout::from_size_align_unchecked(bytes, ALIGN)) },
            },
            // SAFETY: the caller's layout, as the trait requires.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match cached(layout) {
            Some((idx, bytes)) => match self.take(idx, bytes) {
                Some(p) => {
                    // SAFETY: a cached block holds `bytes >= layout.size()` writable bytes.
                    unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                    p
                }
                // SAFETY: as in `alloc`; fresh pages from the system are already zero.
                None => unsafe {
                    System.alloc_zeroed(Layout::from_size_align_unchecked(bytes, ALIGN))
                },
            },
            // SAFETY: the caller's layout.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match cached(layout) {
            Some((idx, bytes)) => {
                if !self.keep(idx, bytes, ptr) {
                    // SAFETY: `ptr` was allocated by `System` with this rounded layout (`alloc`).
                    unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(bytes, ALIGN)) }
                }
            }
            // SAFETY: allocated by `System` with `layout`.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = cached(layout);
        // SAFETY: the trait guarantees `new_size` with `layout.align()` forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = cached(new_layout);
        match (old, new) {
            // Same class: the block already holds the rounded size.
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            // SAFETY: both small: `System` owns the block with `layout`.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: allocate, copy the bytes both layouts hold, free the old block through
                // `dealloc`, which knows how it was allocated.
                unsafe {
                    let p = self.alloc(new_layout);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_an_eighth_and_are_consistent() {
        assert_eq!(class_of((1 << 20) - 1), None);
        let mut last = (0, 0);
        for size in (1usize << 20..1 << 26).step_by(4093) {
            let (idx, bytes) = class_of(size).expect("cached size");
            assert!(
                bytes >= size && bytes - size <= size / 8,
                "{size} -> {bytes}"
            );
            assert_eq!(class_bytes(idx), Some(bytes), "class {idx}");
            assert!(idx >= last.0 && bytes >= last.1);
            last = (idx, bytes);
        }
        assert_eq!(class_of(1 << 20), Some((0, 1 << 20)));
        assert_eq!(class_of((1 << 20) + 1), Some((1, (1 << 20) + (1 << 17))));
        assert_eq!(class_of(1 << 21), Some((STEPS, 1 << 21)));
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn freed_blocks_are_reused_zeroed_when_asked_and_released() {
        let a = BlockCache::new();
        let l = Layout::from_size_align(3 << 20, 64).expect("layout");
        // SAFETY: every pointer is used within its layout and freed once with it.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, l.size());
            a.dealloc(p, l);
            assert_eq!(a.cached_bytes(), 3 << 20);
            // The same request gets the freed block back, zeroed when asked.
            let q = a.alloc_zeroed(l);
            assert_eq!(q, p, "the freed block is handed out again");
            assert!(
                std::slice::from_raw_parts(q, l.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            assert_eq!(a.cached_bytes(), 0);
            // Growing within the class keeps the block; growing past it moves the bytes.
            *q = 42;
            let r = a.realloc(q, l, (3 << 20) + 1000);
            assert_ne!(r, q, "3 MiB + 1000 is the next class (3.25 MiB)");
            assert_eq!(*r, 42);
            let l2 = Layout::from_size_align((3 << 20) + 1000, 64).expect("layout");
            let s = a.realloc(r, l2, (3 << 20) + 2000);
            assert_eq!(s, r, "same class");
            a.dealloc(
                s,
                Layout::from_size_align((3 << 20) + 2000, 64).expect("layout"),
            );
            // Small and over-aligned requests are the system's.
            let small = Layout::from_size_align(4096, 8).expect("layout");
            let t = a.alloc(small);
            a.dealloc(t, small);
            let big_align = Layout::from_size_align(2 << 20, 4096).expect("layout");
            let u = a.alloc(big_align);
            assert_eq!(u as usize % 4096, 0);
            a.dealloc(u, big_align);
            assert_eq!(
                a.cached_bytes(),
                (3 << 20) + (3 << 20) + (1 << 18),
                "the 3 MiB block freed by the first realloc and the 3.25 MiB one"
            );
        }
        a.release();
        assert_eq!(a.cached_bytes(), 0);
    }
}
