//! Resume, fine-tuning and seeding of the trainer on a tiny ULKANet and a 32³ phantom:
//! * a run cancelled in the middle of an epoch and resumed from its checkpoint ends with exactly the weights,
//!   optimizer moments and best Dice of an uninterrupted run (augmentation on, validation every 2 epochs);
//! * a time limit stops at an epoch boundary with a checkpoint;
//! * fine-tuning with another class count loads the trunk, re-initialises the head and says so; a
//!   pre-training checkpoint's projection head is dropped;
//! * the seeded initialisation is reproducible and covers every random tensor.

mod train_support;

use candle_core::{Device, Tensor};
use logonet::job::CancelToken;
use logonet::nets::NetConfig;
use logonet::train::checkpoint::{self, Checkpoint};
use logonet::train::trainer::{ScheduleKind, TrainConfig, TrainEvent, Trainer};
use logonet::train::{AdamWConfig, AugmentConfig, LoaderConfig};
use std::collections::HashMap;
use std::sync::Arc;
use train_support::max_diff_maps as max_diff;

/// The 32³ phantom (12×12×7.5 mm voxels).
fn phantom_sample(seed: u64) -> logonet::train::Sample {
    train_support::phantom_sample(seed, [32; 3])
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        warmup_epochs: 2,
        schedule: ScheduleKind::WarmupCosine,
        optimizer: AdamWConfig {
            lr: 3e-3,
            ..Default::default()
        },
        loader: LoaderConfig {
            batch_volumes: 1,
            augment: AugmentConfig {
                crop_size: [32; 3],
                num_samples: 2,
                // Augmentation on, often, so that resuming must reproduce its random draws.
                flip_prob: 0.5,
                rot90_prob: 0.5,
                scale_prob: 0.5,
                shift_prob: 0.5,
                ..Default::default()
            },
            seed: 11,
            workers: 2,
            prefetch: 1,
            steps_per_epoch: Some(2),
        },
        val_every: 2,
        sliding_window: logonet::infer::SlidingWindowConfig {
            roi_size: [32; 3],
            ..Default::default()
        },
        checkpoint_every: 1,
        ..Default::default()
    }
}

fn net(classes: usize) -> NetConfig {
    NetConfig::from_name("ulkanet-tiny")
        .unwrap()
        .with_out_channels(classes)
}

fn no_best(_: &Trainer, _: usize) -> logonet::Result<()> {
    Ok(())
}

#[test]
fn resume_after_a_cancel_mid_epoch_matches_an_uninterrupted_run() {
    let dev = Device::Cpu;
    let sample = phantom_sample(2);
    let train = Arc::new(vec![sample.clone(), phantom_sample(4)]);
    let val = vec![sample];
    // Three steps per epoch: the cancel below arrives asynchronously after step 0 of epoch 2, and the
    // margin of a whole step keeps it inside that epoch.
    let mut cfg = config(4);
    cfg.loader.steps_per_epoch = Some(3);
    let mut a = Trainer::new(&net(4), cfg, &dev).unwrap();
    a.seed_init(3).unwrap();
    let start = a.checkpoint().unwrap();

    // Uninterrupted.
    let dir_a = tempfile::tempdir().unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    a.run(
        Arc::clone(&train),
        &val,
        dir_a.path(),
        &tx,
        &CancelToken::new(),
        &mut no_best,
    )
    .unwrap();

    // The same start, cancelled after the first step of epoch 2 (of 0..4).
    let dir_b = tempfile::tempdir().unwrap();
    let mut b = Trainer::resume(&start, &dev).unwrap();
    let cancel = CancelToken::new();
    let (tx, rx) = crossbeam_channel::unbounded::<TrainEvent>();
    let watcher = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            for e in rx {
                if matches!(
                    e,
                    TrainEvent::Step {
                        epoch: 2,
                        step: 0,
                        ..
                    }
                ) {
                    cancel.cancel();
                }
            }
        })
    };
    let r = b.run(
        Arc::clone(&train),
        &val,
        dir_b.path(),
        &tx,
        &cancel,
        &mut no_best,
    );
    drop(tx);
    watcher.join().unwrap();
    assert!(
        matches!(r, Err(logonet::Error::Cancelled)),
        "expected a cancelled run, got {r:?}"
    );
    drop(b);

    // Resume from the file, as `logonet train --resume` does.
    let ckpt = Checkpoint::load(&dir_b.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.meta.next_epoch, 2);
    assert_eq!(ckpt.meta.global_step, 6);
    let mut c = Trainer::resume(&ckpt, &dev).unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    c.run(
        Arc::clone(&train),
        &val,
        dir_b.path(),
        &tx,
        &CancelToken::new(),
        &mut no_best,
    )
    .unwrap();

    let (ca, cc) = (a.checkpoint().unwrap(), c.checkpoint().unwrap());
    assert_eq!(cc.meta.next_epoch, 4);
    assert_eq!(ca.meta.global_step, cc.meta.global_step);
    assert_eq!(ca.meta.schedule, cc.meta.schedule);
    let (dm, dopt) = (
        max_diff(&ca.model, &cc.model),
        max_diff(&ca.optimizer, &cc.optimizer),
    );
    eprintln!("resumed vs uninterrupted: weights {dm:e}, optimizer state {dopt:e}");
    assert!(dm <= 1e-6 && dopt <= 1e-6, "{dm} / {dopt}");
    let (ba, bc) = (ca.meta.best.unwrap(), cc.meta.best.unwrap());
    assert_eq!(ba.1, bc.1);
    assert!((ba.0 - bc.0).abs() < 1e-9);
    // The weights did change during the run.
    assert!(max_diff(&start.model, &ca.model) > 1e-3);
}

#[test]
fn a_time_limit_stops_at_an_epoch_boundary_with_a_checkpoint() {
    let dev = Device::Cpu;
    let train = Arc::new(vec![phantom_sample(1)]);
    let mut t = Trainer::new(&net(4), config(50), &dev).unwrap();
    t.set_deadline(Some(std::time::Instant::now()));
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    t.run(
        train,
        &[],
        dir.path(),
        &tx,
        &CancelToken::new(),
        &mut no_best,
    )
    .unwrap();
    drop(tx);
    let events: Vec<TrainEvent> = rx.iter().collect();
    assert_eq!(t.next_epoch(), 1);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrainEvent::Note { message } if message.contains("time limit")))
    );
    assert!(matches!(
        events.last(),
        Some(TrainEvent::Finished { epochs: 1, .. })
    ));
    let ckpt = Checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.meta.next_epoch, 1);
}

#[test]
fn finetuning_with_another_class_count_reinitialises_the_head() {
    let dev = Device::Cpu;
    let mut src = Trainer::new(&net(14), config(4), &dev).unwrap();
    src.seed_init(1).unwrap();
    let weights = checkpoint::state_dict(src.varmap()).unwrap();

    // A pre-training checkpoint: the trunk plus a projection head, as a plain safetensors file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pretrain.safetensors");
    let mut file = weights.clone();
    file.insert(
        "pre_train_proj.0.weight".into(),
        Tensor::zeros((8, 4), candle_core::DType::F32, &dev).unwrap(),
    );
    file.insert(
        "pre_train_proj.0.bias".into(),
        Tensor::zeros(8, candle_core::DType::F32, &dev).unwrap(),
    );
    candle_core::safetensors::save(&file, &path).unwrap();
    let init = checkpoint::read_initial_weights(&path).unwrap();
    assert_eq!(init.dropped_head, 2);
    assert!(init.source.contains("pre-training"), "{}", init.source);
    assert_eq!(init.tensors.len(), weights.len());

    let mut dst = Trainer::new(&net(4), config(4), &dev).unwrap();
    dst.seed_init(2).unwrap();
    let fresh = checkpoint::state_dict(dst.varmap()).unwrap();
    let (report, note) = dst.init_from(&init.tensors).unwrap();
    let note = note.expect("a note about the re-initialised head");
    eprintln!("{note}");
    assert!(note.contains("re-initialised"));
    assert!(!report.shape_mismatch.is_empty());
    assert!(report.missing.is_empty());
    let after = checkpoint::state_dict(dst.varmap()).unwrap();
    // Every tensor whose shape differs is the class-dependent head, left as initialised; the rest is loaded.
    for name in &report.shape_mismatch {
        assert_eq!(
            fresh[name].dims()[0],
            4,
            "{name} is not a 4-class head tensor"
        );
        assert_eq!(
            max_diff(
                &HashMap::from([(name.clone(), fresh[name].clone())]),
                &HashMap::from([(name.clone(), after[name].clone())])
            ),
            0.0
        );
    }
    for name in &report.loaded {
        let d = max_diff(
            &HashMap::from([(name.clone(), weights[name].clone())]),
            &HashMap::from([(name.clone(), after[name].clone())]),
        );
        assert_eq!(d, 0.0, "{name} not loaded");
    }
    assert_eq!(
        report.loaded.len() + report.shape_mismatch.len(),
        fresh.len()
    );

    // The same class count: everything is loaded, no note.
    let mut same = Trainer::new(&net(14), config(4), &dev).unwrap();
    let (report, note) = same.init_from(&weights).unwrap();
    assert!(note.is_none() && report.shape_mismatch.is_empty() && report.missing.is_empty());
    assert_eq!(
        max_diff(&weights, &checkpoint::state_dict(same.varmap()).unwrap()),
        0.0
    );
}

#[test]
fn seeded_initialisation_is_reproducible_and_complete() {
    let dev = Device::Cpu;
    let draw = |seed: u64| {
        let mut t = Trainer::new(&net(4), config(4), &dev).unwrap();
        t.seed_init(seed).unwrap();
        checkpoint::state_dict(t.varmap()).unwrap()
    };
    let (a, b, c) = (draw(7), draw(7), draw(8));
    // Every tensor is identical for the same seed: none is left to candle's unseeded RNG.
    assert_eq!(max_diff(&a, &b), 0.0);
    assert!(max_diff(&a, &c) > 0.0);
}

/// Regression: a checkpoint is a snapshot. `detach()` and a CPU → CPU `to_device` share the variables'
/// storage, which AdamW and BatchNorm overwrite in place; the state dict used to alias it, so a checkpoint
/// taken before training followed the live weights (the resume test then restarted from the *trained*
/// weights: `num_batches_tracked` off by 8, moments by 0.12).
#[test]
fn a_checkpoint_does_not_follow_later_training() {
    let dev = Device::Cpu;
    let sample = phantom_sample(2);
    let mut t = Trainer::new(&net(4), config(4), &dev).unwrap();
    t.seed_init(3).unwrap();
    let image = Tensor::from_slice(&sample.image, (1, 1, 32, 32, 32), &dev).unwrap();
    let label: Vec<u32> = sample.label.iter().map(|&v| v as u32).collect();
    let label = Tensor::from_vec(label, (1, 1, 32, 32, 32), &dev).unwrap();
    // Two volumes: BatchNorm needs more than one value per channel at the 1³ bottleneck.
    let image = Tensor::cat(&[&image, &image.flip(&[2]).unwrap()], 0).unwrap();
    let label = Tensor::cat(&[&label, &label.flip(&[2]).unwrap()], 0).unwrap();
    t.train_step(&image, &label).unwrap();
    let snap = t.checkpoint().unwrap();
    // Deep copies taken by value, to compare against after more training.
    let frozen: HashMap<String, Tensor> = snap
        .model
        .iter()
        .chain(&snap.optimizer)
        .map(|(k, v)| (k.clone(), v.copy().unwrap()))
        .collect();
    t.train_step(&image, &label).unwrap();
    let later = t.checkpoint().unwrap();
    let snap_all: HashMap<String, Tensor> = snap
        .model
        .iter()
        .chain(&snap.optimizer)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(max_diff(&snap_all, &frozen), 0.0, "the snapshot changed");
    assert!(
        max_diff(&snap.model, &later.model) > 0.0,
        "the step changed nothing"
    );
    let name = snap
        .model
        .keys()
        .filter(|k| k.ends_with("num_batches_tracked"))
        .min()
        .expect("a BatchNorm")
        .clone();
    let nbt = |c: &Checkpoint| c.model[&name].to_scalar::<i64>().unwrap();
    assert_eq!((nbt(&snap), nbt(&later)), (1, 2));
}
