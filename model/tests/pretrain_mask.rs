//! Slice-sequence masking: exact replay of the reference's recorded draws (fixture `pretrain_head`) and
//! statistics of the seeded source against the analytic expectations.

use candle_core::{DType, Device, Tensor};
use logonet::pretrain::mask::{self, MaskConfig, PATCH_SIZES, RecordedDraws, SeededDraws};
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pipeline/pretrain_head.io.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture pretrain_head.io")
}

fn recorded(io: &HashMap<String, Tensor>, b: usize) -> RecordedDraws {
    let ints = |k: &str| -> Vec<usize> {
        io[&format!("mask.b{b}.{k}")]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as usize)
            .collect()
    };
    let uniforms = io[&format!("mask.b{b}.draw_uniforms")]
        .to_vec1::<f64>()
        .unwrap();
    RecordedDraws::new(ints("draw_anchors"), ints("draw_patch_sizes"), uniforms)
}

#[test]
fn replays_reference_masks_exactly() {
    let io = fixture();
    let cfg = MaskConfig::default();
    for b in 0..2 {
        let mut draws = recorded(&io, b);
        let m = mask::create_mask(&cfg, [32, 32, 32], &mut draws).unwrap();
        assert!(
            draws.exhausted(),
            "sample {b}: not every recorded draw was consumed"
        );
        let want = io[&format!("mask.b{b}.mask")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want_vec = io[&format!("mask.b{b}.mask_vector")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(m.mask, want, "sample {b}: mask");
        assert_eq!(m.mask_vector, want_vec, "sample {b}: mask vector");
        let frac = m.masked_fraction();
        let expected = [0.286, 0.280][b];
        assert!(
            (frac - expected).abs() < 5e-4,
            "sample {b}: masked fraction {frac}"
        );
    }
    let m0 = mask::create_mask(&cfg, [32, 32, 32], &mut recorded(&io, 0)).unwrap();
    assert_eq!(m0.anchors, vec![5, 10, 11]);
}

#[test]
fn apply_mask_multiplies_every_channel() {
    let io = fixture();
    let x = Tensor::ones((2, 3, 32, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let cfg = MaskConfig::default();
    let masks: Vec<_> = (0..2)
        .map(|b| mask::create_mask(&cfg, [32, 32, 32], &mut recorded(&io, b)).unwrap())
        .collect();
    let (masked, v) = mask::apply_masks(&x, &masks).unwrap();
    assert_eq!(masked.dims(), &[2, 3, 32, 32, 32]);
    assert_eq!(v.dims(), &[2, 32]);
    for b in 0..2 {
        let want = io[&format!("mask.b{b}.mask")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for c in 0..3 {
            let got = masked
                .get(b)
                .unwrap()
                .get(c)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got, want, "sample {b} channel {c}");
        }
        let want_vec = io[&format!("mask.b{b}.mask_vector")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v.get(b).unwrap().to_vec1::<f32>().unwrap(), want_vec);
    }
}

#[test]
fn patch_larger_than_slice_zeroes_whole_slice_and_remainders_stay() {
    let cfg = MaskConfig {
        phi_1: 0.5,
        phi_2: 1.0,
        mask_length: 1,
    };
    // 2 slices, 1 anchor (slice 1), patch 4 on a 10x6 slice: tiles cover 8x4, remainders kept.
    let mut d = RecordedDraws::new(vec![1], vec![4], vec![0.0, 0.0]);
    let m = mask::create_mask(&cfg, [10, 6, 2], &mut d).unwrap();
    assert!(d.exhausted());
    for x in 0..10 {
        for y in 0..6 {
            let want = if x < 8 && y < 4 { 0.0 } else { 1.0 };
            assert_eq!(m.mask[(x * 6 + y) * 2 + 1], want, "({x},{y})");
            assert_eq!(m.mask[(x * 6 + y) * 2], 1.0);
        }
    }
    let mut d = RecordedDraws::new(vec![0], vec![96], vec![]);
    let m = mask::create_mask(&cfg, [10, 6, 2], &mut d).unwrap();
    assert_eq!(m.mask_vector, vec![1.0, 0.0]);
    assert_eq!(m.masked_fraction(), 0.5);
}

#[test]
fn seeded_statistics_match_analytic_expectations() {
    let cfg = MaskConfig::default();
    let dims = [96, 96, 96];
    let n = 400;
    let mut draws = SeededDraws::new(1234);
    let (mut frac, mut slices, mut visits) = (0.0, 0.0, 0.0);
    let mut window_lengths = vec![0usize; cfg.mask_length + 1];
    let mut patch_counts = vec![0usize; PATCH_SIZES.len()];
    for _ in 0..n {
        let m = mask::create_mask(&cfg, dims, &mut draws).unwrap();
        assert_eq!(m.anchors.len(), 9);
        let mut sorted = m.anchors.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9, "anchors must be distinct");
        frac += m.masked_fraction();
        slices += m.mask_vector.iter().sum::<f32>() as f64;
        for &a in &m.anchors {
            let len = cfg.mask_length.min(a + 1);
            window_lengths[len] += 1;
            visits += len as f64;
        }
        for p in m.slice_patch_size.iter().flatten() {
            patch_counts[PATCH_SIZES.iter().position(|q| q == p).unwrap()] += 1;
        }
        // every masked voxel lies in a marked slice
        for (i, &v) in m.mask.iter().enumerate() {
            if v == 0.0 {
                assert_eq!(m.mask_vector[i % 96], 1.0);
            }
        }
    }
    let nf = n as f64;
    let want_frac = mask::expected::masked_voxel_fraction(&cfg, [96, 96], 96);
    let want_slices = mask::expected::masked_slices(&cfg, 96);
    let want_visits = mask::expected::visits(&cfg, 96);
    assert!(
        (frac / nf - want_frac).abs() < 0.01,
        "masked fraction {} vs {want_frac}",
        frac / nf
    );
    assert!(
        (slices / nf - want_slices).abs() < 0.5,
        "masked slices {} vs {want_slices}",
        slices / nf
    );
    assert!(
        (visits / nf - want_visits).abs() < 0.3,
        "visits {} vs {want_visits}",
        visits / nf
    );
    // Window lengths: 1..4 only for anchors 0..3 (each prob 1/96), else 5.
    let total_anchors = (9 * n) as f64;
    let p_full = window_lengths[5] as f64 / total_anchors;
    assert!(
        (p_full - 92.0 / 96.0).abs() < 0.015,
        "full windows {p_full}"
    );
    // Patch sizes of masked slices: uniform over 7 (chi-square, 6 dof, 99.9 % quantile 22.46).
    let total: usize = patch_counts.iter().sum();
    let e = total as f64 / 7.0;
    let chi2: f64 = patch_counts
        .iter()
        .map(|&c| (c as f64 - e).powi(2) / e)
        .sum();
    assert!(
        chi2 < 22.46,
        "patch size counts {patch_counts:?}, chi2 {chi2}"
    );
    // Sanity of the analytic numbers themselves (9 anchors, 5-slice windows on 96 slices).
    assert!(want_slices > 35.0 && want_slices < 45.0, "{want_slices}");
    assert!((want_frac - 0.7 * want_slices / 96.0).abs() < 1e-12);
}

#[test]
fn config_edge_cases() {
    let mut d = SeededDraws::new(0);
    let cfg = MaskConfig {
        phi_1: 0.0,
        ..MaskConfig::default()
    };
    let m = mask::create_mask(&cfg, [8, 8, 8], &mut d).unwrap();
    assert_eq!(m.masked_fraction(), 0.0);
    assert!(mask::create_mask(&MaskConfig { phi_2: 1.5, ..cfg }, [8, 8, 8], &mut d).is_err());
    assert!(
        mask::create_mask(
            &MaskConfig {
                mask_length: 0,
                ..cfg
            },
            [8, 8, 8],
            &mut d
        )
        .is_err()
    );
    assert!(mask::create_mask(&cfg, [0, 8, 8], &mut d).is_err());
    let mut short = RecordedDraws::new(vec![3], vec![], vec![]);
    assert!(mask::create_mask(&MaskConfig { phi_1: 0.2, ..cfg }, [8, 8, 8], &mut short).is_err());
}
