//! Helpers for `--bench-frames`: summary statistics and CPU time per thread of this process.

use std::collections::BTreeMap;

/// Frame-time target: 60 frames a second.
pub const TARGET_MS: f64 = 16.0;

/// Mean, median, p95, p99 and max of a sample, ms (sorts it).
pub fn stats(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "mean {mean:.2} ms, median {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pick(0.5),
        pick(0.95),
        pick(0.99),
        pick(1.0)
    )
}

/// Fraction of the samples strictly under `limit_ms` (0 for an empty sample).
pub fn fraction_under(v: &[f64], limit_ms: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().filter(|&&x| x < limit_ms).count() as f64 / v.len() as f64
}

/// CPU time of the calling thread in ms, from `/proc/thread-self/schedstat` (Linux); `None` elsewhere.
pub fn thread_cpu_ms() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    parse_schedstat_ms(&s)
}

fn parse_schedstat_ms(s: &str) -> Option<f64> {
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-6)
}

/// CPU time (ms) of every thread of this process, by thread id, with the thread's name (Linux; empty
/// elsewhere). Threads that end between two snapshots drop out of the difference.
pub fn process_threads_cpu_ms() -> BTreeMap<u32, (String, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Some(ms) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .as_deref()
            .and_then(parse_schedstat_ms)
        {
            out.insert(tid, (name, ms));
        }
    }
    out
}

/// CPU ms per frame by thread name between two snapshots, summed over threads of the same name, largest
/// first; the total of all threads comes first as "all threads".
pub fn cpu_per_frame_by_thread(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
    frames: usize,
) -> Vec<(String, f64)> {
    let frames = frames.max(1) as f64;
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, ms)) in after {
        let start = before.get(tid).map_or(0.0, |(_, b)| *b);
        let used = ms - start;
        if used > 0.0 {
            // llvmpipe-0, llvmpipe-1, ... are listed one by one; numbered job threads are not.
            *by_name.entry(name.clone()).or_default() += used / frames;
        }
    }
    let total: f64 = by_name.values().sum();
    let mut rows: Vec<(String, f64)> = by_name.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.insert(0, ("all threads".into(), total));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_pick_quantiles_and_fraction() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = stats(&mut v);
        assert!(s.contains("median 51.00 ms"), "{s}");
        assert!(s.contains("p95 95.00 ms"), "{s}");
        assert!(s.contains("p99 99.00 ms"), "{s}");
        assert!(s.contains("max 100.00 ms"), "{s}");
        assert_eq!(fraction_under(&v, 16.0), 0.15);
        assert_eq!(fraction_under(&[], 16.0), 0.0);
        assert_eq!(stats(&mut []), "no samples");
    }

    #[test]
    fn cpu_by_thread_sums_names_and_skips_idle_threads() {
        let mut before = BTreeMap::new();
        before.insert(1, ("main".to_string(), 100.0));
        before.insert(2, ("worker".to_string(), 10.0));
        before.insert(3, ("idle".to_string(), 5.0));
        let mut after = before.clone();
        after.insert(1, ("main".to_string(), 150.0));
        after.insert(2, ("worker".to_string(), 30.0));
        after.insert(4, ("worker".to_string(), 20.0));
        let rows = cpu_per_frame_by_thread(&before, &after, 10);
        assert_eq!(
            rows,
            vec![
                ("all threads".to_string(), 9.0),
                ("main".to_string(), 5.0),
                ("worker".to_string(), 4.0),
            ]
        );
    }

    #[test]
    fn this_thread_has_cpu_time_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(thread_cpu_ms().is_some());
            assert!(!process_threads_cpu_ms().is_empty());
        }
    }
}
