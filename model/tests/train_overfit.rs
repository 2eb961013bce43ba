//! A small network must overfit the synthetic phantom: the full trainer (loader threads, AdamW, schedule,
//! validation with sliding windows, checkpoint, resume) on a 40×40×32 phantom with five labels.
//! Slow on 2 cores (minutes): `cargo test -p logonet --test train_overfit -- --ignored`.

use logonet::job::CancelToken;
use logonet::nets::NetConfig;
use logonet::train::checkpoint::Checkpoint;
use logonet::train::trainer::{ScheduleKind, TrainConfig, TrainEvent, Trainer};
use logonet::train::{AdamWConfig, AugmentConfig, LoaderConfig, Sample};
use logonet::volume::phantom::{PhantomConfig, phantom};
use std::sync::Arc;

/// The phantom with intensities windowed to 0..1 (−175..250 HU) and labels reduced to
/// 0 background, 1 spleen, 2 kidneys, 3 liver, 4 aorta/IVC (the rest background).
fn phantom_sample(seed: u64) -> Sample {
    let (img, lab) = phantom(&PhantomConfig {
        dims: [40, 40, 32],
        spacing_mm: [9.0, 7.0, 7.5],
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
            8 | 9 => 4,
            _ => 0,
        })
        .collect();
    Sample::new(image, label, 1, img.dims).unwrap()
}

#[test]
#[ignore = "trains for minutes on 2 cores; run with --ignored"]
fn tiny_logonet_overfits_the_phantom() {
    let dev = candle_core::Device::Cpu;
    let sample = phantom_sample(3);
    let net = NetConfig::from_name("logonet-tiny")
        .unwrap()
        .with_out_channels(5);
    let cfg = TrainConfig {
        epochs: 120,
        schedule: ScheduleKind::Constant,
        optimizer: AdamWConfig {
            lr: 3e-3,
            ..Default::default()
        },
        loader: LoaderConfig {
            batch_volumes: 1,
            augment: AugmentConfig {
                crop_size: [32; 3],
                num_samples: 2,
                ..Default::default()
            }
            .crops_only(),
            seed: 1,
            workers: 1,
            prefetch: 2,
            steps_per_epoch: Some(1),
        },
        val_every: 40,
        sliding_window: logonet::infer::SlidingWindowConfig {
            roi_size: [32; 3],
            ..Default::default()
        },
        checkpoint_every: 40,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(&net, cfg, &dev).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let train = Arc::new(vec![sample.clone()]);
    let mut best_calls = 0;
    let mut save_best = |_: &Trainer, _: usize| {
        best_calls += 1;
        Ok(())
    };
    t.run(
        Arc::clone(&train),
        std::slice::from_ref(&sample),
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
        .filter_map(|e| {
            if let TrainEvent::Step { loss, .. } = e {
                Some(*loss)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(losses.len(), 120);
    let dice: Vec<f64> = events
        .iter()
        .filter_map(|e| {
            if let TrainEvent::Validation { mean_dice, .. } = e {
                Some(*mean_dice)
            } else {
                None
            }
        })
        .collect();
    eprintln!(
        "loss first {:.4} last {:.4}; validation Dice {dice:?}",
        losses[0], losses[119]
    );
    assert!(
        losses[119] < 0.5 * losses[0],
        "loss did not fall: {} -> {}",
        losses[0],
        losses[119]
    );
    let v = t
        .validate(std::slice::from_ref(&sample), &CancelToken::new())
        .unwrap();
    eprintln!("train Dice per label {:?}", v.per_label);
    assert!(v.mean > 0.9, "train Dice {} <= 0.9", v.mean);
    assert!(best_calls >= 1);

    // Resume: the checkpoint restores weights, optimizer and schedule; one more epoch runs from epoch 120.
    let ckpt = Checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.meta.next_epoch, 120);
    let mut r = Trainer::resume(&ckpt, &dev).unwrap();
    let v2 = r
        .validate(std::slice::from_ref(&sample), &CancelToken::new())
        .unwrap();
    assert!(
        (v2.mean - v.mean).abs() < 1e-9,
        "resumed weights differ: {} vs {}",
        v2.mean,
        v.mean
    );
    r.set_epochs(121);
    let (tx, rx) = crossbeam_channel::unbounded();
    r.run(
        train,
        &[],
        dir.path(),
        &tx,
        &CancelToken::new(),
        &mut |_: &Trainer, _| Ok(()),
    )
    .unwrap();
    drop(tx);
    assert_eq!(
        rx.iter()
            .filter(|e| matches!(e, TrainEvent::Step { .. }))
            .count(),
        1
    );
    assert_eq!(r.next_epoch(), 121);
}
