//! Augmentation and the batch loader: numpy `rot90`/`flip` semantics, MONAI crop-centre correction and
//! pos/neg sampling, determinism, and the background loader's ordering.

use logonet::train::augment::{self, AugmentConfig, Sample, correct_crop_center};
use logonet::train::data::{Loader, LoaderConfig, make_batch};
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A [nx, ny, nz] sample whose image value encodes its position (i*100 + j*10 + k) and label = image as u16.
fn coded(dims: [usize; 3]) -> Sample {
    let mut image = Vec::new();
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                image.push((i * 100 + j * 10 + k) as f32);
            }
        }
    }
    let label = image.iter().map(|&v| v as u16).collect();
    Sample::new(image, label, 1, dims).unwrap()
}

#[test]
fn rot90_matches_numpy() {
    // m = [[0, 1, 2], [3, 4, 5]] (nx 2, ny 3, nz 1); values below are np.rot90(m, k).
    let m = Sample::new(
        (0..6).map(|v| v as f32).collect(),
        (0..6).collect(),
        1,
        [2, 3, 1],
    )
    .unwrap();
    let expect: [(usize, [usize; 3], [f32; 6]); 3] = [
        (1, [3, 2, 1], [2., 5., 1., 4., 0., 3.]),
        (2, [2, 3, 1], [5., 4., 3., 2., 1., 0.]),
        (3, [3, 2, 1], [3., 0., 4., 1., 5., 2.]),
    ];
    for (k, dims, values) in expect {
        let mut s = m.clone();
        s.rot90(k);
        assert_eq!(s.dims, dims, "k={k}");
        assert_eq!(s.image, values, "k={k}");
        assert_eq!(
            s.label,
            values.iter().map(|&v| v as u16).collect::<Vec<_>>(),
            "label k={k}"
        );
    }
    let mut s = coded([3, 4, 2]);
    for _ in 0..4 {
        s.rot90(1);
    }
    assert_eq!(s, coded([3, 4, 2]));
}

#[test]
fn flips_reverse_one_axis() {
    let base = coded([2, 3, 4]);
    for axis in 0..3 {
        let mut s = base.clone();
        s.flip(axis);
        // Voxel (0,0,0) now holds the value from the far end of `axis`.
        let want = [100.0, 20.0, 3.0][axis];
        assert_eq!(s.image[0], want, "axis {axis}");
        s.flip(axis);
        assert_eq!(s, base);
    }
}

#[test]
fn crop_centres_are_corrected_as_monai() {
    // shape 100, size 96: valid centres 48..=52.
    assert_eq!(
        correct_crop_center([0, 99, 50], [96; 3], [100; 3]),
        [48, 52, 50]
    );
    // shape equal to the size: the only centre is 48.
    assert_eq!(
        correct_crop_center([10, 90, 48], [96; 3], [96; 3]),
        [48, 48, 48]
    );
    // odd size 5 in 9: valid 2..=6 (valid_end = uint16(10 - 2.5) = 7).
    assert_eq!(correct_crop_center([0, 8, 4], [5; 3], [9; 3]), [2, 6, 4]);
}

#[test]
fn crops_are_centred_on_foreground_or_background() {
    // A 40³ volume with a small foreground cube; image 1 everywhere except an "air" slab (0) at i < 5.
    let dims = [40, 40, 40];
    let n = 40 * 40 * 40;
    let mut image = vec![1f32; n];
    let mut label = vec![0u16; n];
    for i in 0..40 {
        for j in 0..40 {
            for k in 0..40 {
                let v = (i * 40 + j) * 40 + k;
                if i < 5 {
                    image[v] = 0.0;
                }
                if (20..23).contains(&i) && (20..23).contains(&j) && (30..33).contains(&k) {
                    label[v] = 3;
                }
            }
        }
    }
    let s = Sample::new(image, label, 1, dims).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let pos_only = AugmentConfig {
        crop_size: [8; 3],
        neg: 0.0,
        num_samples: 20,
        ..Default::default()
    }
    .crops_only();
    for c in augment::rand_crop_by_pos_neg_label(&s, &pos_only, &mut rng).unwrap() {
        assert_eq!(c.dims, [8; 3]);
        // Centre voxel (4, 4, 4) of the crop is foreground.
        assert_eq!(c.label[(4 * 8 + 4) * 8 + 4], 3);
    }
    let neg_only = AugmentConfig {
        pos: 0.0,
        neg: 1.0,
        ..pos_only.clone()
    };
    for c in augment::rand_crop_by_pos_neg_label(&s, &neg_only, &mut rng).unwrap() {
        let centre = (4 * 8 + 4) * 8 + 4;
        assert_eq!(c.label[centre], 0);
        // Never centred in the air slab (image <= threshold) unless moved there by the border correction.
        assert!(c.image[centre] > 0.0);
    }
    // pos = neg = 1: both kinds appear.
    let both = AugmentConfig {
        pos: 1.0,
        neg: 1.0,
        num_samples: 200,
        ..pos_only
    };
    let crops = augment::rand_crop_by_pos_neg_label(&s, &both, &mut rng).unwrap();
    let fg = crops
        .iter()
        .filter(|c| c.label[(4 * 8 + 4) * 8 + 4] == 3)
        .count();
    assert!((60..140).contains(&fg), "{fg} of 200 foreground-centred");
}

#[test]
fn small_volumes_are_padded_and_crops_stay_inside() {
    let s = coded([6, 12, 3]);
    let cfg = AugmentConfig {
        crop_size: [8, 8, 8],
        num_samples: 4,
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let crops = augment::random_crops(&s, &cfg, &mut rng).unwrap();
    assert_eq!(crops.len(), 4);
    for c in crops {
        assert_eq!(c.dims, [8, 8, 8]);
        assert_eq!(c.image.len(), 512);
    }
    let p = s.pad_to([8, 8, 8]);
    assert_eq!(p.dims, [8, 12, 8]);
    // diff 2 in x (1 before), 5 in z (2 before): voxel (1, 0, 2) of the padded volume is (0, 0, 0).
    assert_eq!(p.image[98], 0.0); // (1 * 12 + 0) * 8 + 2
    assert_eq!(p.image[107], 11.0); // (1, 1, 3) <- original (0, 1, 1)
}

#[test]
fn batches_are_deterministic_and_loader_keeps_order() {
    let cases: Vec<Sample> = (0..5).map(|i| coded([10 + i, 12, 11])).collect();
    let cfg = LoaderConfig {
        batch_volumes: 2,
        augment: AugmentConfig {
            crop_size: [8, 8, 8],
            num_samples: 3,
            ..Default::default()
        },
        seed: 42,
        workers: 3,
        prefetch: 1,
        steps_per_epoch: None,
    };
    let a = make_batch(&cases, &cfg, 1, 2).unwrap();
    let b = make_batch(&cases, &cfg, 1, 2).unwrap();
    assert_eq!(a.image, b.image);
    assert_eq!(
        a.shape,
        [3, 1, 8, 8, 8],
        "last batch of 5 volumes holds 1 volume × 3 crops"
    );
    let c = make_batch(&cases, &cfg, 2, 2).unwrap();
    assert_ne!(a.image, c.image, "another epoch draws other crops");

    let shared = Arc::new(cases.clone());
    let mut loader = Loader::new(Arc::clone(&shared), cfg.clone(), 1).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    for g in 0..7 {
        let got = loader.next_batch().unwrap();
        let (epoch, index) = (1 + g / 3, g % 3);
        assert_eq!((got.epoch, got.index), (epoch, index));
        assert_eq!(
            got.image,
            make_batch(&cases, &cfg, epoch, index).unwrap().image
        );
    }
    drop(loader); // must not hang
}
