//! A small network must overfit a synthetic phantom: the full trainer (loader thread, DiceCE, AdamW, validation
//! with a sliding window) on a 32³ phantom with three organs must reach a training Dice above 0.9 on every
//! organ. Initialisation ([`Trainer::seed_init`]) and crops are seeded, so the run is reproducible.

use logonet::job::CancelToken;
use logonet::nets::NetConfig;
use logonet::train::trainer::{ScheduleKind, TrainConfig, TrainEvent, Trainer};
use logonet::train::{AdamWConfig, AugmentConfig, LoaderConfig, Sample};
use logonet::volume::phantom::{PhantomConfig, phantom};
use std::sync::Arc;

/// The 32³ phantom (12×12×7.5 mm voxels: the whole 384×384×240 mm field of view) windowed to 0..1
/// (−175..250 HU), labels reduced to 0 background, 1 spleen, 2 kidneys, 3 liver (the rest background).
fn phantom_sample(seed: u64) -> Sample {
    let (img, lab) = phantom(&PhantomConfig {
        dims: [32, 32, 32],
        spacing_mm: [12.0, 12.0, 7.5],
        seed,
        noise_hu: 5.0,
    });
    let image: Vec<f32> = img
        .data
        .iter()
        .map(|&hu| ((hu + 175.0) / 425.0).clamp(0.0, 1.0))
        .collect();
    let label: Vec<u16> = lab
        .data
        .iter()
        .map(|&l| match l {
            1 => 1,
            2 | 3 => 2,
            6 => 3,
            _ => 0,
        })
        .collect();
    Sample::new(image, label, 1, img.dims).unwrap()
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[test]
#[ignore = "FAILS as of 2026-11-23 02:58 UTC: after 100 steps Dice liver 0.79-0.86, kidneys 0-0.32, spleen 0; needs more steps or another setup (OF_EPOCHS, OF_LR, OF_NET env vars)"]
fn tiny_ulkanet_overfits_the_phantom() {
    let dev = candle_core::Device::Cpu;
    // Two phantoms per step (BatchNorm needs more than one value per channel at the 1³ bottleneck).
    let cases: Vec<Sample> = (0..env_or("OF_VOLS", 2u64))
        .map(|s| phantom_sample(3 + s))
        .collect();
    for sample in &cases {
        let counts: Vec<usize> = (0..4)
            .map(|c| sample.label.iter().filter(|&&l| l == c).count())
            .collect();
        eprintln!("voxels per label {counts:?}");
        assert!(counts.iter().all(|&n| n > 20), "{counts:?}");
    }
    let epochs: usize = env_or("OF_EPOCHS", 100);
    let net = NetConfig::from_name(&env_or("OF_NET", "ulkanet-tiny".to_string()))
        .unwrap()
        .with_out_channels(4);
    let cfg = TrainConfig {
        epochs,
        schedule: ScheduleKind::Constant,
        optimizer: AdamWConfig {
            lr: env_or("OF_LR", 5e-3),
            ..Default::default()
        },
        loader: LoaderConfig {
            batch_volumes: cases.len(),
            augment: AugmentConfig {
                crop_size: [32; 3],
                num_samples: env_or("OF_SAMPLES", 1),
                ..Default::default()
            }
            .crops_only(),
            seed: 1,
            workers: 1,
            prefetch: 2,
            steps_per_epoch: Some(1),
        },
        val_every: env_or("OF_VAL", 25),
        sliding_window: logonet::infer::SlidingWindowConfig {
            roi_size: [32; 3],
            ..Default::default()
        },
        checkpoint_every: 0,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(&net, cfg, &dev).unwrap();
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
    let dice: Vec<Vec<Option<f64>>> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Validation { per_label, .. } => Some(per_label.clone()),
            _ => None,
        })
        .collect();
    eprintln!(
        "{:.1} s; loss first {:.4} last {:.4}; validation Dice {dice:?}",
        t0.elapsed().as_secs_f64(),
        losses[0],
        losses[epochs - 1]
    );
    assert_eq!(losses.len(), epochs);
    assert!(losses[epochs - 1] < 0.5 * losses[0]);
    let v = t.validate(&cases, &CancelToken::new()).unwrap();
    eprintln!("train Dice per label {:?}", v.per_label);
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
