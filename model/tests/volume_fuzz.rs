//! Deterministic mutation fuzzing of the NIfTI header/decoder and of DICOM series assembly (stable Rust, no
//! cargo-fuzz): valid inputs are generated, mutated (bit flips, truncation, header fields overwritten with extreme
//! values, random dims / datatypes / vox_offset, broken lengths, mixed or duplicated slices) and fed to the
//! readers. Every input must give `Ok` (a consistent volume) or a `logonet::Error` — never a panic — and no single
//! allocation may exceed [`ALLOC_LIMIT`] (a header must not drive an absurd allocation; a tracking global allocator
//! checks it).
//!
//! Bounded: each target runs `LOGONET_FUZZ_ITERS` cases (default 3000 NIfTI, 300 DICOM) or `LOGONET_FUZZ_SECS`
//! seconds (default 15), whichever comes first. Case `n` is reproducible from its seed (printed on failure); set
//! `LOGONET_FUZZ_SEED` to start elsewhere. The regression tests at the end are inputs the fuzzer found.

#![allow(clippy::needless_range_loop)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use logonet::volume::dicom::{load_dicom_image, load_series, scan_series};
use logonet::volume::nifti::{self, NiftiType, ReadOptions, WriteOptions};
use logonet::volume::{Affine, ImageVolume, Volume};

// ---------------------------------------------------------------------------------------------------------------
// Allocation tracking

/// Largest single allocation a fuzz case may make (the generated inputs are < 1 MB).
const ALLOC_LIMIT: usize = 256 << 20;
/// Requests above this are refused outright (so a fallible allocation fails and the case is reported, instead of
/// the machine being asked for gigabytes).
const ALLOC_REFUSE: usize = 2 << 30;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);
/// Set while a campaign runs: panics (on any thread, e.g. rayon workers) are recorded with where they happened.
static FUZZING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Where the first over-limit allocation (or panic) of the current case came from.
static WHERE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

thread_local! {
    static IN_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic hook that records panics of fuzzing threads and leaves every other thread to the default hook.
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.load(Ordering::Relaxed) {
                default_hook(info);
                return;
            }
            if IN_HOOK.with(|c| c.replace(true)) {
                return;
            }
            if let Ok(mut w) = WHERE.lock() {
                *w = format!(
                    "{} | {}",
                    info.location().map(|l| l.to_string()).unwrap_or_default(),
                    short_backtrace()
                );
            }
            IN_HOOK.with(|c| c.set(false));
        }));
    });
}

/// The frames of the current backtrace that belong to logonet or the DICOM/NIfTI crates.
fn short_backtrace() -> String {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let lines: Vec<&str> = bt.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim();
        if (l.contains("logonet")
            || l.contains("dicom")
            || l.contains("nifti")
            || l.contains("jpeg"))
            && !l.starts_with("at ")
        {
            let at = lines.get(i + 1).map(|s| s.trim()).unwrap_or("");
            out.push(format!("{l} {at}"));
        }
        if out.len() >= 8 {
            break;
        }
    }
    out.join(" | ")
}

/// Records a backtrace for the first over-limit allocation of a case (re-entrancy guarded).
fn record_big(size: usize) {
    if size <= ALLOC_LIMIT || IN_HOOK.with(|c| c.replace(true)) {
        return;
    }
    if let Ok(mut w) = WHERE.try_lock()
        && w.is_empty()
    {
        *w = format!("{size} bytes: {}", short_backtrace());
    }
    IN_HOOK.with(|c| c.set(false));
}

struct Tracking;

fn note_size(size: usize) -> bool {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    if size > ALLOC_LIMIT {
        record_big(size);
    }
    if size > ALLOC_REFUSE {
        // An infallible allocation of this size aborts the process: say which case did it first (no heap here).
        let mut buf = [0u8; 96];
        let msg = b"volume_fuzz: refused an absurd allocation in case with seed ";
        let mut n = msg.len();
        buf[..n].copy_from_slice(msg);
        let mut seed = CURRENT_SEED.load(Ordering::Relaxed);
        let mut digits = [0u8; 20];
        let mut d = 0;
        loop {
            digits[d] = b'0' + (seed % 10) as u8;
            d += 1;
            seed /= 10;
            if seed == 0 {
                break;
            }
        }
        for i in (0..d).rev() {
            buf[n] = digits[i];
            n += 1;
        }
        buf[n] = b'\n';
        let _ = std::io::stderr().write_all(&buf[..=n]);
        return false;
    }
    true
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note_size(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note_size(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note_size(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------------------------
// Deterministic randomness and the campaign driver

/// SplitMix64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the campaign saw.
#[derive(Default)]
struct Tally {
    cases: usize,
    ok: usize,
    errors: std::collections::BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn error(&mut self, msg: &str) {
        // Group by the message's first words (the path and numbers vary).
        let key: String = msg
            .split(|c: char| c == ':' || c == '(' || c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(60)
            .collect();
        *self.errors.entry(key).or_default() += 1;
    }

    fn report(&self, target: &str, elapsed: Duration) {
        eprintln!(
            "{target}: {} cases in {:.1} s: {} Ok, {} errors, {} failures",
            self.cases,
            elapsed.as_secs_f64(),
            self.ok,
            self.cases - self.ok - self.failures.len(),
            self.failures.len()
        );
        let mut kinds: Vec<_> = self.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds.iter().take(12) {
            eprintln!("  {n:>6}  {k}");
        }
        assert!(
            self.failures.is_empty(),
            "{target}: {} failing cases, first: {:#?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }
}

/// Serialises the tests that read the allocation records.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` and returns its result with the largest single allocation made meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

/// Runs `case(seed)` for the configured number of cases or time, catching panics and checking allocations.
fn campaign(
    target: &str,
    default_iters: usize,
    seed_base: u64,
    mut case: impl FnMut(u64) -> Result<bool, String>,
) -> Tally {
    let iters = env_usize("LOGONET_FUZZ_ITERS", default_iters);
    let secs = env_usize("LOGONET_FUZZ_SECS", 15);
    let start_seed = std::env::var("LOGONET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(seed_base);
    let t0 = Instant::now();
    let mut tally = Tally::default();
    // One campaign at a time: the allocation and panic records are process-wide.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install_hook();
    FUZZING.store(true, Ordering::Relaxed);
    for n in 0..iters as u64 {
        if t0.elapsed() > Duration::from_secs(secs as u64) {
            break;
        }
        let seed = start_seed.wrapping_add(n);
        CURRENT_SEED.store(seed, Ordering::Relaxed);
        LARGEST.store(0, Ordering::Relaxed);
        if let Ok(mut w) = WHERE.lock() {
            w.clear();
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| case(seed)));
        tally.cases += 1;
        let largest = LARGEST.load(Ordering::Relaxed);
        let place = WHERE.lock().map(|w| w.clone()).unwrap_or_default();
        match outcome {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tally
                    .failures
                    .push(format!("seed {seed}: panicked: {msg} at {place}"));
            }
            Ok(Err(msg)) => tally.failures.push(format!("seed {seed}: {msg}")),
            Ok(Ok(ok)) => {
                if largest > ALLOC_LIMIT {
                    tally.failures.push(format!(
                        "seed {seed}: allocated {largest} bytes at once (limit {ALLOC_LIMIT}) at {place}"
                    ));
                } else if ok {
                    tally.ok += 1;
                }
            }
        }
    }
    FUZZING.store(false, Ordering::Relaxed);
    tally.report(target, t0.elapsed());
    tally
}

// ---------------------------------------------------------------------------------------------------------------
// NIfTI

/// The datatypes the writer produces (64-bit integers reach the reader through the datatype mutation).
const NIFTI_TYPES: [NiftiType; 8] = [
    NiftiType::Uint8,
    NiftiType::Int8,
    NiftiType::Uint16,
    NiftiType::Int16,
    NiftiType::Uint32,
    NiftiType::Int32,
    NiftiType::Float32,
    NiftiType::Float64,
];

/// A valid, uncompressed NIfTI-1 file of a small random volume (oblique affine, random datatype).
fn valid_nifti(rng: &mut Rng) -> Vec<u8> {
    let dims = [1 + rng.below(9), 1 + rng.below(7), 1 + rng.below(6)];
    let n = dims[0] * dims[1] * dims[2];
    let data: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 20.0).collect();
    let (s, c) = (0.3f64.sin(), 0.3f64.cos());
    let aff = Affine([
        [0.8 * c, -0.8 * s, 0.0, -10.0],
        [0.8 * s, 0.8 * c, 0.0, 5.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    let vol = ImageVolume::new(data, dims, aff).expect("generated volume");
    let t = *rng.pick(&NIFTI_TYPES);
    let t = if matches!(t, NiftiType::Uint8 | NiftiType::Uint16 | NiftiType::Uint32) {
        NiftiType::Int16 // the generated data has negative values
    } else {
        t
    };
    nifti::encode_image(
        &vol,
        &WriteOptions {
            datatype: Some(t),
            ..WriteOptions::default()
        },
        false,
    )
    .expect("encode")
}

/// (offset, size, is_float) of the header fields worth overwriting.
const NIFTI_FIELDS: [(usize, usize, bool); 22] = [
    (0, 4, false),   // sizeof_hdr
    (40, 2, false),  // dim[0]
    (42, 2, false),  // dim[1]
    (44, 2, false),  // dim[2]
    (46, 2, false),  // dim[3]
    (48, 2, false),  // dim[4]
    (50, 2, false),  // dim[5]
    (70, 2, false),  // datatype
    (72, 2, false),  // bitpix
    (76, 4, true),   // pixdim[0] (qfac)
    (80, 4, true),   // pixdim[1]
    (84, 4, true),   // pixdim[2]
    (88, 4, true),   // pixdim[3]
    (108, 4, true),  // vox_offset
    (112, 4, true),  // scl_slope
    (116, 4, true),  // scl_inter
    (252, 2, false), // qform_code
    (254, 2, false), // sform_code
    (256, 4, true),  // quatern_b
    (264, 4, true),  // quatern_d
    (280, 4, true),  // srow_x[0]
    (312, 4, true),  // srow_z[0]
];

const EXTREME_F32: [f32; 14] = [
    0.0,
    -0.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    -f32::MAX,
    1e-38,
    -1.0,
    1.0,
    352.0,
    352.5,
    1e9,
    3e9,
];
const EXTREME_I16: [i16; 12] = [0, -1, 1, 2, 3, 4, 7, 8, 16, i16::MAX, i16::MIN, 2048];

fn mutate_nifti(rng: &mut Rng, mut b: Vec<u8>) -> (Vec<u8>, Vec<String>) {
    let mut log = Vec::new();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 | 1 => {
                // bit flip, mostly in the header
                if b.is_empty() {
                    continue;
                }
                let at = if rng.chance(75) {
                    rng.below(b.len().min(352))
                } else {
                    rng.below(b.len())
                };
                let bit = rng.below(8);
                b[at] ^= 1 << bit;
                log.push(format!("flip byte {at} bit {bit}"));
            }
            2 | 3 => {
                // a header field set to an extreme value
                let (off, size, float) = *rng.pick(&NIFTI_FIELDS);
                if off + size > b.len() {
                    continue;
                }
                if float {
                    let v = *rng.pick(&EXTREME_F32);
                    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
                    log.push(format!("field @{off} = {v}"));
                } else if size == 2 {
                    let v = *rng.pick(&EXTREME_I16);
                    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
                    log.push(format!("field @{off} = {v}"));
                } else {
                    let v = *rng.pick(&[0i32, 540, 348i32.swap_bytes(), -1, i32::MAX]);
                    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
                    log.push(format!("field @{off} = {v}"));
                }
            }
            4 => {
                // random dims (up to 7-D), possibly huge
                if b.len() < 56 {
                    continue;
                }
                let nd = rng.below(9) as i16;
                b[40..42].copy_from_slice(&nd.to_le_bytes());
                for a in 1..8 {
                    let d: i16 = if rng.chance(20) {
                        *rng.pick(&EXTREME_I16)
                    } else {
                        1 + rng.below(12) as i16
                    };
                    b[40 + 2 * a..42 + 2 * a].copy_from_slice(&d.to_le_bytes());
                }
                log.push(format!("dims {:?}", &b[40..56]));
            }
            5 => {
                // random datatype code and bitpix
                if b.len() < 74 {
                    continue;
                }
                let code: i16 = *rng.pick(&[
                    2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 0,
                    1, 3, -4,
                ]);
                let bitpix: i16 = *rng.pick(&[8, 16, 32, 64, 128, 0, -8]);
                b[70..72].copy_from_slice(&code.to_le_bytes());
                b[72..74].copy_from_slice(&bitpix.to_le_bytes());
                log.push(format!("datatype {code} bitpix {bitpix}"));
            }
            6 => {
                // random vox_offset
                if b.len() < 112 {
                    continue;
                }
                let v = if rng.chance(50) {
                    rng.below(2000) as f32
                } else {
                    *rng.pick(&EXTREME_F32)
                };
                b[108..112].copy_from_slice(&v.to_le_bytes());
                log.push(format!("vox_offset {v}"));
            }
            7 => {
                // truncation
                let at = rng.below(b.len() + 1);
                b.truncate(at);
                log.push(format!("truncate to {at}"));
            }
            _ => {
                // appended garbage or a duplicated chunk
                let n = rng.below(300);
                let extra: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.extend_from_slice(&extra);
                log.push(format!("append {n} bytes"));
            }
        }
    }
    (b, log)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Checks one decoded NIfTI result; `Err(text)` is a fuzz failure.
fn check_nifti<T>(
    r: logonet::Result<nifti::NiftiImage<T>>,
    tally: &mut Tally,
) -> Result<bool, String> {
    match r {
        Ok(img) => {
            let v: &Volume<T> = &img.volume;
            let n = v.dims.iter().product::<usize>();
            if n != v.data.len() || n == 0 {
                return Err(format!(
                    "Ok with {} voxels for dims {:?}",
                    v.data.len(),
                    v.dims
                ));
            }
            if !v.ras_from_ijk.is_valid() {
                return Err(format!("Ok with an invalid affine {:?}", v.ras_from_ijk));
            }
            Ok(true)
        }
        Err(e) => {
            let msg = e.to_string();
            if msg.is_empty() {
                return Err("empty error message".into());
            }
            tally.error(&msg);
            Ok(false)
        }
    }
}

#[test]
fn fuzz_nifti_header_and_decoder() {
    let path = Path::new("fuzz.nii");
    let mut tally_errors = Tally::default();
    let tally = campaign("NIfTI", 3000, 1, |seed| {
        let mut rng = Rng(seed);
        let valid = valid_nifti(&mut rng);
        let (mutated, _log) = mutate_nifti(&mut rng, valid);
        let bytes = match rng.below(4) {
            0 => gzip(&mutated),
            1 => {
                // corrupt the compressed stream itself
                let mut g = gzip(&mutated);
                let (g2, _) = mutate_nifti(&mut rng, std::mem::take(&mut g));
                g2
            }
            _ => mutated,
        };
        let opts = ReadOptions {
            frame: if rng.chance(80) { 0 } else { rng.below(4) },
            ..ReadOptions::default()
        };
        let a = check_nifti(nifti::decode_image(&bytes, path, &opts), &mut tally_errors)?;
        let b = check_nifti(nifti::decode_labels(&bytes, path, &opts), &mut tally_errors)?;
        Ok(a || b)
    });
    for (k, n) in &tally_errors.errors {
        eprintln!("  NIfTI error kind {n:>6}  {k}");
    }
    // The campaign must reach both outcomes, or it is not testing anything.
    assert!(
        tally.ok > tally.cases / 50,
        "too few valid cases: {}",
        tally.ok
    );
    assert!(tally_errors.errors.values().sum::<usize>() > tally.cases / 4);
}

// ---------------------------------------------------------------------------------------------------------------
// DICOM: a byte-level writer for small explicit-VR little-endian files

/// One data element of a generated DICOM file.
#[derive(Clone, Debug)]
enum Elem {
    /// (group, element, VR, value bytes)
    Value(u16, u16, [u8; 2], Vec<u8>),
    /// A sequence of items (each a list of elements), undefined lengths.
    Seq(u16, u16, Vec<Vec<Elem>>),
}

fn text(g: u16, e: u16, vr: &str, s: &str) -> Elem {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == "UI" { 0 } else { b' ' });
    }
    Elem::Value(g, e, [vr.as_bytes()[0], vr.as_bytes()[1]], v)
}

fn us(g: u16, e: u16, v: u16) -> Elem {
    Elem::Value(g, e, *b"US", v.to_le_bytes().to_vec())
}

fn ds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect::<Vec<_>>()
        .join("\\")
}

fn tag_of(e: &Elem) -> (u16, u16) {
    match e {
        Elem::Value(g, el, _, _) | Elem::Seq(g, el, _) => (*g, *el),
    }
}

fn write_elems(out: &mut Vec<u8>, elems: &[Elem]) {
    let mut sorted: Vec<&Elem> = elems.iter().collect();
    sorted.sort_by_key(|e| tag_of(e));
    for e in sorted {
        match e {
            Elem::Value(g, el, vr, v) => {
                out.extend_from_slice(&g.to_le_bytes());
                out.extend_from_slice(&el.to_le_bytes());
                out.extend_from_slice(vr);
                if matches!(vr, b"OB" | b"OW" | b"UN" | b"UT" | b"SQ") {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                } else {
                    out.extend_from_slice(&(v.len() as u16).to_le_bytes());
                }
                out.extend_from_slice(v);
            }
            Elem::Seq(g, el, items) => {
                out.extend_from_slice(&g.to_le_bytes());
                out.extend_from_slice(&el.to_le_bytes());
                out.extend_from_slice(b"SQ\0\0");
                out.extend_from_slice(&u32::MAX.to_le_bytes());
                for item in items {
                    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
                    out.extend_from_slice(&u32::MAX.to_le_bytes());
                    write_elems(out, item);
                    out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
                }
                out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            }
        }
    }
}

/// A Part-10 file: preamble, "DICM", file meta (explicit VR LE) and the data set.
fn dicom_file(sop_class: &str, sop_instance: &str, ts: &str, elems: &[Elem]) -> Vec<u8> {
    let mut meta_body = Vec::new();
    write_elems(
        &mut meta_body,
        &[
            Elem::Value(0x0002, 0x0001, *b"OB", vec![0, 1]),
            text(0x0002, 0x0002, "UI", sop_class),
            text(0x0002, 0x0003, "UI", sop_instance),
            text(0x0002, 0x0010, "UI", ts),
            text(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.9.7433.1"),
        ],
    );
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00]);
    out.extend_from_slice(b"UL");
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&(meta_body.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_body);
    write_elems(&mut out, elems);
    out
}

const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const ENHANCED_CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// A generated series: the slices' elements, and the expected volume (voxels sorted along the normal).
struct GenSeries {
    /// One element list per file.
    files: Vec<Vec<Elem>>,
    /// Expected dims, voxels (C order over column, row, slice) and LPS geometry of the first sorted slice.
    dims: [usize; 3],
    expected: Vec<f32>,
    /// Expected RAS affine.
    ras_from_ijk: Affine,
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Geometry shared by the generators: an oblique orientation, pixel spacing, slice step and origin.
struct Geo {
    row: [f64; 3],
    col: [f64; 3],
    spacing: [f64; 2],
    step: f64,
    origin: [f64; 3],
}

fn geo(rng: &mut Rng) -> Geo {
    let t = (rng.below(60) as f64 - 30.0).to_radians();
    Geo {
        row: [t.cos(), t.sin(), 0.0],
        col: [0.0, 0.0, -1.0], // coronal-ish slices, tilted
        spacing: [0.5 + rng.below(4) as f64 * 0.25, 0.75],
        step: 1.0 + rng.below(3) as f64,
        origin: [-20.0, 13.5, 40.0],
    }
}

impl Geo {
    fn normal(&self) -> [f64; 3] {
        cross(self.row, self.col)
    }
    fn position(&self, k: usize) -> [f64; 3] {
        let n = self.normal();
        std::array::from_fn(|a| self.origin[a] + k as f64 * self.step * n[a])
    }
    fn ras(&self) -> Affine {
        let n = self.normal();
        let mut m = [[0.0; 4]; 4];
        for a in 0..3 {
            m[a][0] = self.row[a] * self.spacing[1];
            m[a][1] = self.col[a] * self.spacing[0];
            m[a][2] = n[a] * self.step;
            m[a][3] = self.origin[a];
        }
        for c in 0..4 {
            m[0][c] = -m[0][c];
            m[1][c] = -m[1][c];
        }
        m[3][3] = 1.0;
        Affine(m)
    }
}

/// Raw stored value of pixel (row, col) of slice k (sorted order).
fn raw_pixel(k: usize, r: usize, c: usize) -> i16 {
    (k as i16) * 100 + (r as i16) * 10 + c as i16 - 50
}

/// A classic series: one file per slice, shuffled, with rescale slope 2 and intercept -1000.
fn classic_series(rng: &mut Rng) -> GenSeries {
    let (rows, cols, n) = (3 + rng.below(4), 2 + rng.below(5), 2 + rng.below(5));
    let g = geo(rng);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let files = order
        .iter()
        .enumerate()
        .map(|(file_no, &k)| {
            let px: Vec<u8> = (0..rows * cols)
                .flat_map(|p| raw_pixel(k, p / cols, p % cols).to_le_bytes())
                .collect();
            vec![
                text(0x0008, 0x0016, "UI", CT_STORAGE),
                text(0x0008, 0x0018, "UI", &format!("1.2.3.4.{file_no}")),
                text(0x0008, 0x0060, "CS", "CT"),
                text(0x0008, 0x103E, "LO", "fuzz"),
                text(0x0018, 0x0050, "DS", &ds(&[g.step])),
                text(0x0020, 0x000D, "UI", "1.2.3"),
                text(0x0020, 0x000E, "UI", "1.2.3.1"),
                text(0x0020, 0x0011, "IS", "7"),
                text(0x0020, 0x0013, "IS", &format!("{}", n - file_no)),
                text(0x0020, 0x0032, "DS", &ds(&g.position(k))),
                text(
                    0x0020,
                    0x0037,
                    "DS",
                    &ds(&[g.row[0], g.row[1], g.row[2], g.col[0], g.col[1], g.col[2]]),
                ),
                text(0x0020, 0x0052, "UI", "1.2.3.9"),
                us(0x0028, 0x0002, 1),
                text(0x0028, 0x0004, "CS", "MONOCHROME2"),
                us(0x0028, 0x0010, rows as u16),
                us(0x0028, 0x0011, cols as u16),
                text(0x0028, 0x0030, "DS", &ds(&g.spacing)),
                us(0x0028, 0x0100, 16),
                us(0x0028, 0x0101, 16),
                us(0x0028, 0x0102, 15),
                us(0x0028, 0x0103, 1),
                text(0x0028, 0x1052, "DS", "-1000"),
                text(0x0028, 0x1053, "DS", "2"),
                Elem::Value(0x7FE0, 0x0010, *b"OW", px),
            ]
        })
        .collect();
    let mut expected = vec![0f32; rows * cols * n];
    for i in 0..cols {
        for j in 0..rows {
            for k in 0..n {
                expected[(i * rows + j) * n + k] = raw_pixel(k, j, i) as f32 * 2.0 - 1000.0;
            }
        }
    }
    GenSeries {
        files,
        dims: [cols, rows, n],
        expected,
        ras_from_ijk: g.ras(),
    }
}

/// An enhanced multi-frame CT: frames stored in shuffled order, each placed by its PlanePositionSequence, with the
/// orientation, pixel measures and rescale in the shared functional groups.
fn enhanced_series(rng: &mut Rng) -> GenSeries {
    let (rows, cols, n) = (3 + rng.below(4), 2 + rng.below(5), 2 + rng.below(5));
    let g = geo(rng);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let px: Vec<u8> = order
        .iter()
        .flat_map(|&k| {
            (0..rows * cols).flat_map(move |p| raw_pixel(k, p / cols, p % cols).to_le_bytes())
        })
        .collect();
    let shared = vec![
        Elem::Seq(
            0x0020,
            0x9116,
            vec![vec![text(
                0x0020,
                0x0037,
                "DS",
                &ds(&[g.row[0], g.row[1], g.row[2], g.col[0], g.col[1], g.col[2]]),
            )]],
        ),
        Elem::Seq(
            0x0028,
            0x9110,
            vec![vec![
                text(0x0018, 0x0050, "DS", &ds(&[g.step])),
                text(0x0028, 0x0030, "DS", &ds(&g.spacing)),
            ]],
        ),
        Elem::Seq(
            0x0028,
            0x9145,
            vec![vec![
                text(0x0028, 0x1052, "DS", "-1000"),
                text(0x0028, 0x1053, "DS", "2"),
            ]],
        ),
    ];
    let per_frame: Vec<Vec<Elem>> = order
        .iter()
        .map(|&k| {
            vec![Elem::Seq(
                0x0020,
                0x9113,
                vec![vec![text(0x0020, 0x0032, "DS", &ds(&g.position(k)))]],
            )]
        })
        .collect();
    let file = vec![
        text(0x0008, 0x0016, "UI", ENHANCED_CT_STORAGE),
        text(0x0008, 0x0018, "UI", "1.2.3.4.99"),
        text(0x0008, 0x0060, "CS", "CT"),
        text(0x0020, 0x000D, "UI", "1.2.3"),
        text(0x0020, 0x000E, "UI", "1.2.3.2"),
        text(0x0020, 0x0052, "UI", "1.2.3.9"),
        us(0x0028, 0x0002, 1),
        text(0x0028, 0x0004, "CS", "MONOCHROME2"),
        text(0x0028, 0x0008, "IS", &n.to_string()),
        us(0x0028, 0x0010, rows as u16),
        us(0x0028, 0x0011, cols as u16),
        us(0x0028, 0x0100, 16),
        us(0x0028, 0x0101, 16),
        us(0x0028, 0x0102, 15),
        us(0x0028, 0x0103, 1),
        Elem::Seq(0x5200, 0x9229, vec![shared]),
        Elem::Seq(0x5200, 0x9230, per_frame),
        Elem::Value(0x7FE0, 0x0010, *b"OW", px),
    ];
    let mut expected = vec![0f32; rows * cols * n];
    for i in 0..cols {
        for j in 0..rows {
            for k in 0..n {
                expected[(i * rows + j) * n + k] = raw_pixel(k, j, i) as f32 * 2.0 - 1000.0;
            }
        }
    }
    GenSeries {
        files: vec![file],
        dims: [cols, rows, n],
        expected,
        ras_from_ijk: g.ras(),
    }
}

fn write_series(dir: &Path, files: &[Vec<u8>]) -> Vec<PathBuf> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    files
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("f{i:03}.dcm"));
            std::fs::write(&p, b).expect("write DICOM");
            p
        })
        .collect()
}

fn encode_files(s: &GenSeries) -> Vec<Vec<u8>> {
    s.files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let class = if s.files.len() == 1 && f.iter().any(|e| tag_of(e) == (0x5200, 0x9230)) {
                ENHANCED_CT_STORAGE
            } else {
                CT_STORAGE
            };
            dicom_file(class, &format!("1.2.3.4.{i}"), EXPLICIT_LE, f)
        })
        .collect()
}

fn assert_matches(v: &ImageVolume, s: &GenSeries) {
    assert_eq!(v.dims, s.dims);
    assert_eq!(v.data, s.expected);
    assert!(
        v.ras_from_ijk.max_abs_diff(&s.ras_from_ijk) < 1e-5,
        "ours {:?}\nexpected {:?}",
        v.ras_from_ijk,
        s.ras_from_ijk
    );
}

#[test]
fn generated_classic_and_enhanced_series_load_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    for seed in 0..20 {
        let mut rng = Rng(seed);
        for s in [classic_series(&mut rng), enhanced_series(&mut rng)] {
            write_series(dir.path(), &encode_files(&s));
            let found = scan_series(dir.path()).expect("scan");
            assert_eq!(found.len(), 1, "{found:#?}");
            let (v, warnings) = load_series(&found[0]).expect("load");
            assert_matches(&v, &s);
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
}

/// Values worth writing into header fields of a generated slice.
const EXTREME_TEXT: [&str; 16] = [
    "",
    "0",
    "-1",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "99999999",
    "4294967296",
    "0\\0",
    "NaN\\NaN\\NaN",
    "0\\0\\0\\0\\0\\0",
    "1\\0\\0\\1\\0\\0",
    "1e39\\1e39\\1e39",
    "abc",
    "1\\2",
];

/// Replaces the value of `tag` wherever it occurs (also inside sequences).
fn set_value(elems: &mut [Elem], tag: (u16, u16), value: &[u8]) -> bool {
    let mut hit = false;
    for e in elems.iter_mut() {
        match e {
            Elem::Value(g, el, _, v) if (*g, *el) == tag => {
                *v = value.to_vec();
                hit = true;
            }
            Elem::Seq(_, _, items) => {
                for item in items {
                    hit |= set_value(item, tag, value);
                }
            }
            _ => {}
        }
    }
    hit
}

const TEXT_TAGS: [(u16, u16); 8] = [
    (0x0020, 0x0032), // ImagePositionPatient
    (0x0020, 0x0037), // ImageOrientationPatient
    (0x0028, 0x0030), // PixelSpacing
    (0x0018, 0x0050), // SliceThickness
    (0x0028, 0x1052), // RescaleIntercept
    (0x0028, 0x1053), // RescaleSlope
    (0x0028, 0x0008), // NumberOfFrames
    (0x0020, 0x000E), // SeriesInstanceUID
];
const US_TAGS: [(u16, u16); 7] = [
    (0x0028, 0x0010), // Rows
    (0x0028, 0x0011), // Columns
    (0x0028, 0x0100), // BitsAllocated
    (0x0028, 0x0101), // BitsStored
    (0x0028, 0x0102), // HighBit
    (0x0028, 0x0103), // PixelRepresentation
    (0x0028, 0x0002), // SamplesPerPixel
];
const TRANSFER_SYNTAXES: [&str; 8] = [
    "1.2.840.10008.1.2",      // implicit VR LE (the bytes are explicit: garbage)
    "1.2.840.10008.1.2.2",    // explicit VR BE
    "1.2.840.10008.1.2.1.99", // deflated
    "1.2.840.10008.1.2.4.50", // JPEG baseline
    "1.2.840.10008.1.2.4.90", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE
    "1.2.840.10008.1.2.4.80", // JPEG-LS
    "1.2.3.4.5",              // unknown
];

/// Mutates a generated series at the element level (then, sometimes, at the byte level).
fn mutate_series(rng: &mut Rng, s: &mut GenSeries) -> Vec<Vec<u8>> {
    let nfiles = s.files.len();
    let mut ts_override: Vec<Option<&str>> = vec![None; nfiles];
    for _ in 0..1 + rng.below(3) {
        let f = rng.below(nfiles);
        match rng.below(8) {
            0 | 1 => {
                let tag = *rng.pick(&TEXT_TAGS);
                let mut v = rng.pick(&EXTREME_TEXT).as_bytes().to_vec();
                if v.len() % 2 == 1 {
                    v.push(b' ');
                }
                set_value(&mut s.files[f], tag, &v);
            }
            2 | 3 => {
                let tag = *rng.pick(&US_TAGS);
                let v: u16 = *rng.pick(&[0, 1, 3, 7, 8, 12, 32, 64, 255, 65535]);
                set_value(&mut s.files[f], tag, &v.to_le_bytes());
            }
            4 => {
                // drop an element (pixel data, geometry, frame count, functional groups, ...)
                let len = s.files[f].len();
                s.files[f].remove(rng.below(len));
            }
            5 => {
                // a duplicated slice (same position twice) or a file from another series
                if rng.chance(50) {
                    let copy = s.files[f].clone();
                    s.files.push(copy);
                    ts_override.push(None);
                } else {
                    let mut other = s.files[f].clone();
                    set_value(&mut other, (0x0028, 0x0010), &9u16.to_le_bytes());
                    s.files.push(other);
                    ts_override.push(None);
                }
            }
            6 => {
                ts_override[f] = Some(*rng.pick(&TRANSFER_SYNTAXES));
            }
            _ => {
                // pixel data cut short or padded
                let px = s.files[f].iter_mut().find_map(|e| match e {
                    Elem::Value(0x7FE0, 0x0010, _, v) => Some(v),
                    _ => None,
                });
                if let Some(v) = px {
                    let n = rng.below(v.len() + 8) & !1;
                    v.resize(n, 0x5A);
                }
            }
        }
    }
    let mut out: Vec<Vec<u8>> = s
        .files
        .iter()
        .zip(&ts_override)
        .enumerate()
        .map(|(i, (f, ts))| {
            dicom_file(
                CT_STORAGE,
                &format!("1.2.3.4.{i}"),
                ts.unwrap_or(EXPLICIT_LE),
                f,
            )
        })
        .collect();
    // Byte-level damage: flips, truncation, a length field blown up.
    if rng.chance(40) {
        let f = rng.below(out.len());
        let b = &mut out[f];
        match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let at = rng.below(b.len() + 1);
                b.truncate(at);
            }
            _ => {
                // the 4-byte length of the pixel data element (or a random 4 bytes) set to an extreme value
                let at = b
                    .windows(4)
                    .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
                    .map(|p| p + 8)
                    .unwrap_or_else(|| rng.below(b.len().saturating_sub(4)));
                let v: u32 = *rng.pick(&[0, 1, 0xFFFF_FFFF, 0x7FFF_FFFF, 0xFFFF_FFF0]);
                if at + 4 <= b.len() {
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

#[test]
fn fuzz_dicom_series_assembly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut errors = Tally::default();
    let tally = campaign("DICOM", 300, 1_000_000, |seed| {
        let mut rng = Rng(seed);
        let mut s = if rng.chance(60) {
            classic_series(&mut rng)
        } else {
            enhanced_series(&mut rng)
        };
        let files = mutate_series(&mut rng, &mut s);
        write_series(dir.path(), &files);
        let mut any_ok = false;
        match scan_series(dir.path()) {
            Err(e) => errors.error(&e.to_string()),
            Ok(found) => {
                for info in &found {
                    match load_series(info) {
                        Ok((v, _)) => {
                            let n = v.dims.iter().product::<usize>();
                            if n != v.data.len() || n == 0 {
                                return Err(format!(
                                    "Ok with {} voxels for {:?}",
                                    v.data.len(),
                                    v.dims
                                ));
                            }
                            if !v.ras_from_ijk.0.iter().flatten().all(|x| x.is_finite()) {
                                return Err(format!(
                                    "Ok with a non-finite affine {:?}",
                                    v.ras_from_ijk
                                ));
                            }
                            any_ok = true;
                        }
                        Err(e) => errors.error(&e.to_string()),
                    }
                }
            }
        }
        if let Err(e) = load_dicom_image(dir.path()) {
            errors.error(&e.to_string());
        }
        Ok(any_ok)
    });
    for (k, n) in &errors.errors {
        eprintln!("  DICOM error kind {n:>6}  {k}");
    }
    assert!(
        tally.ok > tally.cases / 20,
        "too few valid cases: {}",
        tally.ok
    );
    assert!(errors.errors.values().sum::<usize>() > tally.cases / 4);
}

#[test]
fn multiframe_without_functional_groups_is_stacked_in_stored_order_with_a_warning() {
    let mut rng = Rng(7);
    let mut s = enhanced_series(&mut rng);
    let [cols, rows, n] = s.dims;
    let file = &mut s.files[0];
    file.retain(|e| tag_of(e).0 != 0x5200);
    file.push(text(0x0018, 0x0088, "DS", "1.5"));
    // The first raw value of each stored frame.
    let px = file
        .iter()
        .find_map(|e| match e {
            Elem::Value(0x7FE0, 0x0010, _, v) => Some(v.clone()),
            _ => None,
        })
        .expect("pixel data");
    let firsts: Vec<f32> = (0..n)
        .map(|f| i16::from_le_bytes([px[2 * f * rows * cols], px[2 * f * rows * cols + 1]]) as f32)
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    write_series(dir.path(), &encode_files(&s));
    let found = scan_series(dir.path()).expect("scan");
    let (v, warnings) = load_series(&found[0]).expect("load");
    assert_eq!(v.dims, [cols, rows, n]);
    assert_eq!(v.spacing_mm(), [1.0, 1.0, 1.5]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("without per-frame functional groups")
                && w.contains("identity orientation")),
        "{warnings:?}"
    );
    for (k, want) in firsts.iter().enumerate() {
        assert_eq!(v.get(0, 0, k), Some(*want), "frame {k}");
    }
}

#[test]
fn multiframe_frames_at_one_position_are_a_clear_error() {
    let mut rng = Rng(3);
    let mut s = enhanced_series(&mut rng);
    // Every frame at the same place: echoes or time points of one slice, not a volume.
    set_value(&mut s.files[0], (0x0020, 0x0032), b"1\\2\\3 ");
    let dir = tempfile::tempdir().expect("temp dir");
    write_series(dir.path(), &encode_files(&s));
    let found = scan_series(dir.path()).expect("scan");
    let msg = load_series(&found[0]).unwrap_err().to_string();
    assert!(msg.contains("share a position"), "{msg}");
    assert!(
        msg.ends_with(&*dir.path().to_string_lossy()),
        "path last: {msg}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Regressions: inputs the fuzzer found

/// Found by `fuzz_dicom_series_assembly` (seeds 1000019, 1000050, ...): a corrupt length field made the DICOM
/// parser reserve and zero-fill up to 4 GiB for a file of a few hundred bytes. Now refused before parsing.
#[test]
fn regression_dicom_length_past_the_end_is_refused_without_allocating() {
    let mut rng = Rng(11);
    let s = classic_series(&mut rng);
    let mut files = encode_files(&s);
    let b = &mut files[0];
    let at = b
        .windows(4)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .expect("pixel data")
        + 8;
    b[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_series(dir.path(), &files);
    let (r, largest) = largest_allocation(|| load_dicom_image(&paths[0]));
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("claims 4294967280 bytes"), "{msg}");
    assert!(
        msg.ends_with(&*paths[0].to_string_lossy()),
        "path last: {msg}"
    );
    assert!(largest < ALLOC_LIMIT, "{largest} bytes allocated");
    // A length inside a sequence item, in an enhanced file, too.
    let s = enhanced_series(&mut rng);
    let mut files = encode_files(&s);
    let b = &mut files[0];
    let at = b
        .windows(4)
        .position(|w| w == [0x20, 0x00, 0x32, 0x00]) // ImagePositionPatient (in PlanePositionSequence)
        .expect("IPP")
        + 6;
    b[at..at + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let paths = write_series(dir.path(), &files);
    let msg = scan_series(dir.path())
        .and_then(|_| load_dicom_image(&paths[0]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("claims 65520 bytes") || msg.contains("no DICOM image series"),
        "{msg}"
    );
}

/// Found by `fuzz_dicom_series_assembly` (seed 1000021): BitsStored larger than 32 made the pixel decoder's
/// lookup table shift overflow (a panic in debug builds, garbage in release). Now a format error.
#[test]
fn regression_dicom_bits_stored_out_of_range_is_an_error() {
    let mut rng = Rng(5);
    let mut s = classic_series(&mut rng);
    for f in &mut s.files {
        set_value(f, (0x0028, 0x0101), &64u16.to_le_bytes());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    write_series(dir.path(), &encode_files(&s));
    let msg = load_dicom_image(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("invalid pixel layout") && msg.contains("BitsStored 64"),
        "{msg}"
    );
}

/// A `.nii.gz` whose header asks for far more voxel data than the compressed bytes can inflate to is refused
/// before anything is allocated or inflated (deflate expands at most ~1032:1).
#[test]
fn regression_nifti_gz_header_larger_than_deflate_allows_is_refused_early() {
    let mut rng = Rng(1);
    let mut b = valid_nifti(&mut rng);
    // 2000 x 2000 x 250 float64: 1e9 voxels (under the 2^30 cap), 8 GB of data in a file of a few hundred bytes.
    for (a, d) in [2000i16, 2000, 250].iter().enumerate() {
        b[42 + 2 * a..44 + 2 * a].copy_from_slice(&d.to_le_bytes());
    }
    b[40..42].copy_from_slice(&3i16.to_le_bytes());
    b[70..72].copy_from_slice(&64i16.to_le_bytes()); // float64
    b[72..74].copy_from_slice(&64i16.to_le_bytes());
    let gz = gzip(&b);
    let (r, largest) = largest_allocation(|| {
        nifti::decode_image(&gz, Path::new("big.nii.gz"), &ReadOptions::default())
    });
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("compressed bytes cannot hold"), "{msg}");
    assert!(largest < ALLOC_LIMIT, "{largest} bytes allocated");
}
