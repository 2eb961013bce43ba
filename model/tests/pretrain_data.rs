//! Pre-training crops: intensity scalings (the z-score matches what `logonet train --recipe mri` does) and
//! random crops with MONAI-style symmetric padding.

use logonet::pretrain::data::{self, Intensity};
use logonet::volume::ImageVolume;
use rand::SeedableRng as _;

#[test]
fn zscore_matches_the_training_recipe() {
    let values: Vec<f32> = (0..500)
        .map(|i| {
            if i % 7 == 0 {
                0.0
            } else {
                (i as f32 * 0.37).sin() * 3.0 + 5.0
            }
        })
        .collect();
    let mut ours = values.clone();
    data::scale(&mut ours, Intensity::ZScore);
    let mut img = ImageVolume::new(
        values.clone(),
        [500, 1, 1],
        logonet::volume::Affine::identity(),
    )
    .expect("volume");
    logonet::volume::transforms::z_score(&mut img, true);
    for (a, b) in ours.iter().zip(&img.data) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // zeros stay zero; the non-zero voxels have mean 0 and sd 1
    let nz: Vec<f64> = ours
        .iter()
        .zip(&values)
        .filter(|(_, v)| **v != 0.0)
        .map(|(o, _)| *o as f64)
        .collect();
    assert!(
        ours.iter()
            .zip(&values)
            .all(|(o, v)| *v != 0.0 || *o == 0.0)
    );
    let mean = nz.iter().sum::<f64>() / nz.len() as f64;
    let sd = (nz.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nz.len() as f64).sqrt();
    assert!(mean.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4, "{mean} {sd}");
}

#[test]
fn ct_and_percentile_scalings_are_bounded() {
    let mut ct = vec![-2000.0, -1000.0, 0.0, 1000.0, 3000.0];
    data::scale(&mut ct, Intensity::Ct);
    assert_eq!(ct, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
    let mut p: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    data::scale(&mut p, Intensity::Percentile);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(p[0], 0.0);
    assert_eq!(p[999], 1.0);
}

#[test]
fn crops_of_a_short_volume_are_padded_symmetrically() {
    // 10 slices along z (like ACDC), crop 4 x 4 x 16: 3 zero slices before and after the data.
    let dims = [6, 6, 10];
    let vol: Vec<f32> = (0..360).map(|i| 1.0 + i as f32).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for c in data::random_crops(dims, &vol, [4, 4, 16], 5, &mut rng) {
        for z in 0..16 {
            let slice_nonzero = (0..16).any(|xy| c.data[xy * 16 + z] != 0.0);
            assert_eq!(slice_nonzero, (3..13).contains(&z), "slice {z}");
        }
    }
}
