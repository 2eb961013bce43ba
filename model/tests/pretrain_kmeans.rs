//! k-means pseudo-labels: GEMM assignment vs brute force, k-means++ seeding, mini-batch fitting on separable
//! blobs, the linfa path, targets along the last axis, save/load and cancellation.

use candle_core::{Device, Tensor};
use logonet::job::{CancelToken, NoProgress};
use logonet::pretrain::kmeans::{self, ClustererBank, KMeansBackend, KMeansConfig};
use ndarray::Array2;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// `n` points in `d` dims around `k` well-separated centres; returns (points, true labels).
fn blobs(n: usize, d: usize, k: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..k)
        .map(|_| (0..d).map(|_| rng.gen_range(-10.0..10.0)).collect())
        .collect();
    let mut x = Array2::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        labels.push(c);
        for j in 0..d {
            x[[i, j]] = centres[c][j] + rng.gen_range(-0.5..0.5);
        }
    }
    (x, labels)
}

fn brute(x: &Array2<f32>, c: &Array2<f32>) -> Vec<u32> {
    x.outer_iter()
        .map(|r| {
            let mut best = (0, f32::INFINITY);
            for (j, cr) in c.outer_iter().enumerate() {
                let d: f32 = r
                    .iter()
                    .zip(cr.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                if d < best.1 {
                    best = (j as u32, d);
                }
            }
            best.0
        })
        .collect()
}

#[test]
fn gemm_assignment_equals_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = Array2::from_shape_fn((300, 64), |_| rng.gen_range(0.0f32..1.0));
    let c = Array2::from_shape_fn((17, 64), |_| rng.gen_range(0.0f32..1.0));
    let (labels, dists) = kmeans::assign(x.view(), c.view()).unwrap();
    let want = brute(&x, &c);
    let agree = labels.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(
        agree >= 299,
        "{agree} of 300 agree (ties in f32 may differ)"
    );
    for (i, &l) in labels.iter().enumerate() {
        let d: f32 = x
            .row(i)
            .iter()
            .zip(c.row(l as usize).iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        assert!((d - dists[i]).abs() < 1e-3 * d.max(1.0));
    }
    assert!(kmeans::assign(x.view(), Array2::<f32>::zeros((3, 5)).view()).is_err());
}

#[test]
fn minibatch_recovers_separated_blobs() {
    let (x, truth) = blobs(2000, 50, 10, 5);
    let cfg = KMeansConfig {
        batch_size: 256,
        max_epochs: 10,
        ..KMeansConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cl = kmeans::fit_minibatch(x.view(), 10, &cfg, &mut rng, &CancelToken::new()).unwrap();
    let labels = cl.predict(x.view()).unwrap();
    // Each true cluster maps to one label: the clustering is a relabelling of the truth.
    let mut map = std::collections::HashMap::new();
    for (&t, &l) in truth.iter().zip(&labels) {
        assert_eq!(*map.entry(t).or_insert(l), l, "true cluster {t} split");
    }
    assert_eq!(map.len(), 10);
    let distinct: std::collections::HashSet<_> = map.values().collect();
    assert_eq!(distinct.len(), 10, "two true clusters merged");
    // inertia ≈ n · d · Var(U(-0.5,0.5)) = 2000 · 50 / 12
    let optimum = 2000.0 * 50.0 / 12.0;
    assert!(
        cl.inertia < 1.1 * optimum,
        "inertia {} vs {optimum}",
        cl.inertia
    );
}

#[test]
fn kmeans_plus_plus_picks_distinct_points() {
    let (x, _) = blobs(500, 8, 5, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let c = kmeans::kmeans_plus_plus(x.view(), 5, &mut rng).unwrap();
    // with separated blobs, ++ seeding lands one centre in each blob
    let labels = brute(&c, &c);
    assert_eq!(labels, vec![0, 1, 2, 3, 4]);
    let (lx, _) = kmeans::assign(x.view(), c.view()).unwrap();
    let used: std::collections::HashSet<_> = lx.into_iter().collect();
    assert_eq!(used.len(), 5, "each seed got its own blob");
    assert!(kmeans::kmeans_plus_plus(x.view(), 501, &mut rng).is_err());
}

#[test]
fn linfa_path_fits_too() {
    let (x, _) = blobs(400, 10, 4, 11);
    let cfg = KMeansConfig {
        batch_size: 100,
        max_epochs: 2,
        ..KMeansConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let a = kmeans::fit_linfa(x.view(), 4, &cfg, &mut rng, &CancelToken::new()).unwrap();
    let optimum = 400.0 * 10.0 / 12.0;
    assert!(a.inertia < 1.2 * optimum, "linfa inertia {}", a.inertia);
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert!(kmeans::fit_linfa(x.view(), 4, &cfg, &mut rng, &cancelled).is_err());
}

/// The bank fits through either backend: on separated blobs both reach the optimum within a few percent, and
/// the backend is part of the saved configuration (older files without it read as `gemm`).
#[test]
fn bank_backends_agree_on_blobs() {
    let (x, _) = blobs(600, 12, 5, 21);
    let base = KMeansConfig {
        n_clusterers: 2,
        k_min: 5,
        k_max: 5,
        subset_fraction: 1.0,
        batch_size: 128,
        max_epochs: 5,
        seed: 3,
        ..KMeansConfig::default()
    };
    let fit = |backend| {
        let cfg = KMeansConfig {
            backend,
            ..base.clone()
        };
        ClustererBank::fit(x.view(), [3, 4], &cfg, &NoProgress, &CancelToken::new()).unwrap()
    };
    let gemm = fit(KMeansBackend::Gemm);
    let linfa = fit(KMeansBackend::Linfa);
    let optimum = 600.0 * 12.0 / 12.0;
    for (g, l) in gemm.meta.inertias.iter().zip(&linfa.meta.inertias) {
        assert!(
            *g < 1.1 * optimum && *l < 1.1 * optimum,
            "gemm {g}, linfa {l}"
        );
    }
    assert_eq!(linfa.meta.config.backend, KMeansBackend::Linfa);
    let json = serde_json::to_value(&linfa.meta.config).unwrap();
    assert_eq!(json["backend"], "linfa");
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("backend");
    let back: KMeansConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.backend, KMeansBackend::Gemm);
    assert_eq!(
        "LINFA".parse::<KMeansBackend>().unwrap(),
        KMeansBackend::Linfa
    );
    assert!("sklearn".parse::<KMeansBackend>().is_err());
}

#[test]
fn bank_targets_save_load_and_cancel() {
    // 4 crops of 16x16x8: every slice along the last axis is one of 3 patterns (+ noise).
    let (nx, ny, nz) = (16, 16, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let patterns: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..nx * ny).map(|_| rng.gen_range(0.0..1.0)).collect())
        .collect();
    let mut crops = vec![0f32; 4 * nx * ny * nz];
    let mut truth = vec![0usize; 4 * nz];
    for b in 0..4 {
        for z in 0..nz {
            let p = (b + z) % 3;
            truth[b * nz + z] = p;
            for xy in 0..nx * ny {
                crops[b * nx * ny * nz + xy * nz + z] =
                    patterns[p][xy] + rng.gen_range(-0.01..0.01);
            }
        }
    }
    let t = Tensor::from_vec(crops.clone(), (4, 1, nx, ny, nz), &Device::Cpu).unwrap();
    let mut all = Vec::new();
    for b in 0..4 {
        all.push(
            kmeans::crop_slices(
                &crops[b * nx * ny * nz..(b + 1) * nx * ny * nz],
                [nx, ny, nz],
            )
            .unwrap(),
        );
    }
    let slices = ndarray::concatenate(
        ndarray::Axis(0),
        &all.iter().map(|a| a.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let cfg = KMeansConfig {
        n_clusterers: 2,
        k_min: 3,
        k_max: 3,
        subset_fraction: 1.0,
        batch_size: 16,
        max_epochs: 5,
        ..KMeansConfig::default()
    };
    let events = std::sync::Mutex::new(Vec::new());
    let progress = |e: logonet::job::ProgressEvent| events.lock().unwrap().push(e.done);
    let bank = ClustererBank::fit(
        slices.view(),
        [nx, ny],
        &cfg,
        &progress,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(*events.lock().unwrap(), vec![1, 2]);
    let targets = bank.targets(&t).unwrap();
    assert_eq!(targets.dims(), &[4, nz, 2]);
    let tv = targets.to_vec3::<i64>().unwrap();
    #[allow(clippy::needless_range_loop)] // c indexes the innermost axis of a nested Vec
    for c in 0..2 {
        let mut map = std::collections::HashMap::new();
        for b in 0..4 {
            for z in 0..nz {
                assert_eq!(
                    *map.entry(truth[b * nz + z]).or_insert(tv[b][z][c]),
                    tv[b][z][c]
                );
            }
        }
        assert_eq!(
            map.values().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }
    let dir = tempfile::tempdir().unwrap();
    bank.save(dir.path()).unwrap();
    let back = ClustererBank::load(dir.path()).unwrap();
    assert_eq!(back, bank);
    assert!(ClustererBank::load(&dir.path().join("missing")).is_err());

    let cancel = CancelToken::new();
    cancel.cancel();
    assert!(matches!(
        ClustererBank::fit(slices.view(), [nx, ny], &cfg, &NoProgress, &cancel),
        Err(logonet::Error::Cancelled)
    ));
    // k is capped at the subset size
    let big = KMeansConfig {
        k_min: 80,
        k_max: 80,
        n_clusterers: 1,
        ..cfg
    };
    let b2 = ClustererBank::fit(
        slices.view(),
        [nx, ny],
        &big,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(b2.meta.ks, vec![32]);
}
