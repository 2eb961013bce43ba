//! A small network must overfit a synthetic phantom: the full trainer (loader thread, DiceCE, AdamW, validation
//! with a sliding window) on two 32³ phantoms (12 × 12 × 7.5 mm voxels) must reach a training Dice above 0.9
//! on every label (background, spleen, kidneys, liver; `OF_SPLEEN=0` leaves the spleen in the background).
//! Initialisation ([`Trainer::seed_init`]) and batches are seeded, so the run is reproducible on one machine.
//!
//! The network is a **3-stage ULKANet** (dims 8/16/32, `OF_STAGES=4` gives ULKANet-tiny), AdamW at a constant
//! lr 1e-2, 400 steps. It PASSES (2026-11-23 07:05 UTC, one thread, load 2-3: 203 s; spleen 0.943, kidneys
//! 0.958, liver 0.936, background 0.996) but is `#[ignore]`d: it takes 3-4 minutes, and small-organ learning
//! is threshold-like (the spleen jumps from 0 to 0.7 between steps 150 and 200), so a different thread count or
//! CPU could land on the other side of 0.9.
//!
//! Diagnosis that led here (figures printed by this test): the training path is right — Dice from one
//! eval-mode pass equals the sliding-window validation, train-mode (batch statistics) Dice is within a few
//! points of eval mode, crops are the whole volume with no augmentation so image and label cannot drift apart.
//! The spleen's windowed intensity (0.530) is the liver's (0.548) within 1.5 noise sd (0.012), so only
//! position separates them. ULKANet-tiny (4 stages) has a 1³ bottleneck at a 32³ input, where BatchNorm over
//! a batch of two maps every channel to ±1 in training: after 200-300 steps its spleen Dice stays 0. With 3
//! stages the bottleneck is 2³, and the spleen is learned after ~200 steps (3-stage, 200 steps: spleen 0.72,
//! kidneys 0.75; 3-stage with 16/32/64 channels, 200 steps: spleen 0, kidneys 0.97). A warm-up cosine
//! schedule (`OF_COSINE=1`) lowers the rate before the spleen is found: spleen 0 after 400 steps.

mod train_support;

use candle_core::{Device, Tensor};
use logonet::job::CancelToken;
use logonet::nets::{NetConfig, SegmentationNet as _};
use logonet::train::trainer::{ScheduleKind, TrainConfig, TrainEvent, Trainer, dice_per_label};
use logonet::train::{AdamWConfig, AugmentConfig, LoaderConfig, Sample};
use std::sync::Arc;
use train_support::{env_or, label_counts, phantom_sample, phantom_sample_labels};

/// Per-label Dice of the argmax of one forward pass over all `cases` at once (no sliding window).
fn direct_dice(t: &Trainer, cases: &[Sample], train_mode: bool) -> Vec<Vec<Option<f64>>> {
    direct_pass(t, cases, train_mode)
        .iter()
        .zip(cases)
        .map(|(p, c)| dice_per_label(p, &c.label, t.net_config().out_channels()))
        .collect()
}

/// Voxel counts `[truth][prediction]` over all cases (eval mode, one pass).
fn confusion(t: &Trainer, cases: &[Sample]) -> Vec<Vec<usize>> {
    let classes = t.net_config().out_channels();
    let mut m = vec![vec![0usize; classes]; classes];
    for (p, c) in direct_pass(t, cases, false).iter().zip(cases) {
        for (&a, &b) in p.iter().zip(&c.label) {
            m[b as usize][a as usize] += 1;
        }
    }
    m
}

/// The argmax label maps of one forward pass over all `cases` at once.
fn direct_pass(t: &Trainer, cases: &[Sample], train_mode: bool) -> Vec<Vec<u16>> {
    let [x, y, z] = cases[0].dims;
    let image: Vec<f32> = cases.iter().flat_map(|c| c.image.iter().copied()).collect();
    let input = Tensor::from_vec(image, (cases.len(), 1, x, y, z), &Device::Cpu).unwrap();
    let logits = t.net().forward_t(&input, train_mode).unwrap(); // [N, C, X, Y, Z]
    let pred = logits.argmax(1).unwrap(); // [N, X, Y, Z]
    cases
        .iter()
        .enumerate()
        .map(|(i, _)| {
            pred.get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u32>()
                .unwrap()
                .into_iter()
                .map(|v| v as u16)
                .collect()
        })
        .collect()
}

#[test]
#[ignore = "passes in 3-4 min (400 steps); not in CI because small-organ learning is threshold-like, see the module doc; run: cargo test -p logonet --test train_overfit -- --ignored --nocapture"]
fn tiny_ulkanet_overfits_the_phantom() {
    let dim: usize = env_or("OF_DIM", 32);
    let spleen = env_or("OF_SPLEEN", 1u8) == 1;
    let classes = if spleen { 4 } else { 3 };
    let cases: Vec<Sample> = (0..env_or("OF_VOLS", 2u64))
        .map(|s| {
            if spleen {
                phantom_sample(3 + s, [dim; 3])
            } else {
                // 0 background (spleen included), 1 kidneys, 2 liver.
                phantom_sample_labels(3 + s, [dim; 3], |l| match l {
                    2 | 3 => 1,
                    6 => 2,
                    _ => 0,
                })
            }
        })
        .collect();
    for sample in &cases {
        let counts = label_counts(sample, classes);
        let means: Vec<f32> = (0..classes as u16)
            .map(|c| {
                let v: Vec<f32> = sample
                    .label
                    .iter()
                    .zip(&sample.image)
                    .filter(|(l, _)| **l == c)
                    .map(|(_, &x)| x)
                    .collect();
                v.iter().sum::<f32>() / v.len().max(1) as f32
            })
            .collect();
        eprintln!("voxels per label {counts:?}, mean image per label {means:?}");
        assert!(counts.iter().all(|&n| n > 20), "{counts:?}");
    }
    let epochs: usize = env_or("OF_EPOCHS", 400);
    let crop: usize = env_or("OF_CROP", dim);
    let net = match env_or("OF_STAGES", 3usize) {
        4 => NetConfig::from_name(&env_or("OF_NET", "ulkanet-tiny".to_string())).unwrap(),
        s => {
            // A shallower ULKANet: at 32³ its deepest stage is 2³ instead of 1³.
            let c0: usize = env_or("OF_C0", 8);
            NetConfig::Ulkanet(logonet::nets::ulkanet::Config {
                embed_dims: (0..s).map(|i| c0 << i).collect(),
                depths: vec![1; s],
                mlp_ratios: [8, 8, 4, 4][..s].to_vec(),
                ..logonet::nets::ulkanet::Config::tiny()
            })
        }
    }
    .with_out_channels(classes);
    let cfg = TrainConfig {
        epochs,
        schedule: if env_or("OF_COSINE", 0u8) == 1 {
            ScheduleKind::WarmupCosine
        } else {
            ScheduleKind::Constant
        },
        warmup_epochs: env_or("OF_WARMUP", 20),
        optimizer: AdamWConfig {
            lr: env_or("OF_LR", 1e-2),
            ..Default::default()
        },
        loader: LoaderConfig {
            batch_volumes: cases.len(),
            augment: AugmentConfig {
                crop_size: [crop; 3],
                num_samples: env_or("OF_SAMPLES", 1),
                ..Default::default()
            }
            .crops_only(),
            seed: 1,
            workers: 1,
            prefetch: 2,
            steps_per_epoch: Some(1),
        },
        val_every: env_or("OF_VAL", 50),
        sliding_window: logonet::infer::SlidingWindowConfig {
            roi_size: [crop; 3],
            ..Default::default()
        },
        checkpoint_every: 0,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(&net, cfg, &Device::Cpu).unwrap();
    assert!(t.seed_init(5).unwrap() > 10);
    let (tx, rx) = crossbeam_channel::unbounded();
    let train = Arc::new(cases.clone());
    let mut best_calls = 0;
    let mut save_best = |_: &Trainer, _: usize| {
        best_calls += 1;
        Ok(())
    };
    let t0 = std::time::Instant::now();
    t.run(
        Arc::clone(&train),
        &cases,
        dir.path(),
        &tx,
        &CancelToken::new(),
        &mut save_best,
    )
    .unwrap();
    drop(tx);
    let events: Vec<TrainEvent> = rx.iter().collect();
    let losses: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    for e in &events {
        if let TrainEvent::Validation {
            epoch, per_label, ..
        } = e
        {
            eprintln!(
                "epoch {epoch}: loss {:.4}, validation Dice {per_label:.3?}",
                losses[*epoch]
            );
        }
    }
    eprintln!(
        "{:.1} s; loss first {:.4} last {:.4}",
        t0.elapsed().as_secs_f64(),
        losses[0],
        losses[epochs - 1]
    );
    let v = t.validate(&cases, &CancelToken::new()).unwrap();
    eprintln!(
        "train Dice per label (sliding window, eval mode) {:.3?}",
        v.per_label
    );
    eprintln!(
        "eval mode, one pass: {:.3?}",
        direct_dice(&t, &cases, false)
    );
    eprintln!("confusion [truth][prediction]: {:?}", confusion(&t, &cases));
    eprintln!(
        "train mode (batch statistics), one pass: {:.3?}",
        direct_dice(&t, &cases, true)
    );
    assert_eq!(losses.len(), epochs);
    assert!(losses[epochs - 1] < 0.5 * losses[0]);
    for (c, d) in v.per_label.iter().enumerate() {
        let d = d.unwrap();
        assert!(
            d > 0.9,
            "label {c}: train Dice {d} <= 0.9 ({:?})",
            v.per_label
        );
    }
    assert!(best_calls >= 1);
}
