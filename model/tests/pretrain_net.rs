//! The pre-training networks: parity of `PREVANV4121GL` (LoGoNet-tiny trunk + `Projection2`) with fixture
//! `pretrain_head`, the ULKANet variant's shapes, loading a pre-trained trunk for fine-tuning, and a short
//! end-to-end pre-training run.

mod train_support;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use logonet::job::{CancelToken, NoProgress};
use logonet::nets::NetConfig;
use logonet::pretrain::data::Crop;
use logonet::pretrain::finetune;
use logonet::pretrain::kmeans::KMeansConfig;
use logonet::pretrain::mask::MaskConfig;
use logonet::pretrain::trainer::{self, PretrainConfig};
use logonet::pretrain::trunk::PretrainNet;
use train_support::{load_fixture as load, max_abs};

#[test]
fn logonet_pretrain_net_matches_reference() {
    let weights = load("pipeline/pretrain_head.weights.safetensors");
    let io = load("pipeline/pretrain_head.io.safetensors");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = NetConfig::from_name("logonet-tiny").unwrap();
    let net = PretrainNet::new(&cfg, [32, 32, 32], 3, 20, vb).unwrap();
    // The network's variables are exactly the reference state dict (no fusion head).
    {
        let data = vm.data().lock().unwrap();
        let mut ours: Vec<_> = data.keys().cloned().collect();
        let mut theirs: Vec<_> = weights.keys().cloned().collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
    let report = finetune::load_pretrained_trunk(&weights, &vm).unwrap();
    assert_eq!(report.dropped_head, 51);
    // load the head too (load_pretrained_trunk drops it on purpose)
    {
        let data = vm.data().lock().unwrap();
        for (k, t) in &weights {
            if k.starts_with("pre_train_proj.") {
                data[k].set(t).unwrap();
            }
        }
    }
    let x = &io["input.x"]; // [2, 1, 32, 32, 32]
    let logits = net.forward_t(x, false).unwrap();
    assert_eq!(logits.dims(), &[2, 32, 3, 20]);
    let d = max_abs(&logits, &io["output.logits"]);
    assert!(d <= 1e-4, "logits: max abs diff {d}");
    let l1 = net.forward_t(&x.narrow(0, 0, 1).unwrap(), false).unwrap();
    assert_eq!(l1.dims(), &[1, 32, 3, 20]);
    let d = max_abs(&l1.squeeze(0).unwrap(), &io["output.logits_batch1"]);
    assert!(d <= 1e-4, "logits_batch1: {d}");
}

#[test]
fn finetune_loads_trunk_and_skips_head_and_mismatches() {
    let weights = load("pipeline/pretrain_head.weights.safetensors");
    // segmentation LoGoNet-tiny with 4 classes: output layers differ in shape, fusion head is new
    let cfg = NetConfig::from_name("logonet-tiny")
        .unwrap()
        .with_out_channels(4);
    let vm = VarMap::new();
    let _net =
        logonet::nets::AnyNet::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))
            .unwrap();
    let report = finetune::load_pretrained_trunk(&weights, &vm).unwrap();
    assert_eq!(report.dropped_head, 51);
    assert!(!report.loaded.is_empty());
    assert!(
        report
            .loaded
            .iter()
            .all(|k| !k.starts_with("pre_train_proj"))
    );
    assert!(
        report.untouched.iter().any(|k| k.starts_with("conv.")),
        "fusion head is not in the checkpoint"
    );
    assert!(
        !report.shape_mismatch.is_empty(),
        "14-class output layers do not fit 4 classes"
    );
    let data = vm.data().lock().unwrap();
    for k in &report.loaded {
        assert_eq!(
            max_abs(
                &data[k].as_tensor().to_dtype(DType::F32).unwrap(),
                &weights[k].to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
    }
    // the encoder is loaded
    assert!(report.loaded.iter().any(|k| k.starts_with("van.van3d.")));
}

#[test]
fn ulkanet_pretrain_net_uses_the_concat() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = NetConfig::from_name("ulkanet-tiny").unwrap();
    let net = PretrainNet::new(&cfg, [32, 32, 32], 2, 7, vb).unwrap();
    assert_eq!(
        net.head().config().input_dim,
        14 + 8,
        "out + C/2^(S-1) channels (78 for ULKANet-S)"
    );
    let x = Tensor::randn(0f32, 1.0, (1, 1, 32, 32, 32), &Device::Cpu).unwrap();
    let y = net.forward_t(&x, false).unwrap();
    assert_eq!(y.dims(), &[1, 32, 2, 7]);
    let data = vm.data().lock().unwrap();
    assert!(data.keys().all(|k| !k.starts_with("final_conv1")));
    assert!(data.keys().any(|k| k.starts_with("pre_train_proj.conv1.0")));
    drop(data);
    let s = NetConfig::from_name("ulkanet-s").unwrap();
    let vm = VarMap::new();
    let net = PretrainNet::new(
        &s,
        [96, 96, 96],
        1,
        5,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    );
    assert_eq!(net.unwrap().head().config().input_dim, 78);
    let bad = PretrainNet::new(
        &cfg,
        [32, 32, 20],
        2,
        7,
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu),
    );
    assert!(bad.is_err());
}

#[test]
fn batch_and_crop_are_checked_before_any_work() {
    let net = NetConfig::from_name("logonet-tiny").unwrap();
    // 32³ with batch 1: one value per channel at the 1/32 bottleneck -> clear error, not a BatchNorm failure.
    let err = trainer::check_batch_shape(&net, [32; 3], 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch of 2 or more"), "{err}");
    assert!(err.contains("64³"), "{err}");
    trainer::check_batch_shape(&net, [32; 3], 2).unwrap();
    trainer::check_batch_shape(&net, [64, 32, 32], 1).unwrap();
    trainer::check_batch_shape(&net, [96; 3], 1).unwrap();
    assert!(trainer::check_batch_shape(&net, [48; 3], 2).is_err());
    assert!(trainer::check_batch_shape(&net, [32; 3], 0).is_err());
    assert_eq!(trainer::min_batch(&net, [32; 3]), 2);
    assert_eq!(trainer::min_batch(&net, [64; 3]), 1);
    assert_eq!(trainer::min_batch(&net, [96; 3]), 1);
    // pretrain() itself refuses before touching the output folder.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let crops = vec![Crop {
        dims: [32; 3],
        data: vec![0.5; 32 * 32 * 32],
    }];
    let cfg = PretrainConfig {
        net,
        crop: [32; 3],
        mask: Some(MaskConfig::default()),
        kmeans: KMeansConfig::default(),
        class_size: None,
        epochs: 1,
        batch: 1,
        time_limit_secs: None,
        optim: Default::default(),
        seed: 1,
    };
    let r = trainer::pretrain(
        &crops,
        &cfg,
        None,
        &out,
        &Device::Cpu,
        &NoProgress,
        &CancelToken::new(),
    );
    assert!(r.is_err());
    assert!(!out.exists());
}

#[test]
fn short_pretraining_run_writes_a_loadable_checkpoint() {
    let mut rng = 0u64;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 40) as f32 / (1u64 << 24) as f32
    };
    let crops: Vec<Crop> = (0..2)
        .map(|_| Crop {
            dims: [32; 3],
            data: (0..32 * 32 * 32).map(|_| next()).collect(),
        })
        .collect();
    let cfg = PretrainConfig {
        net: NetConfig::from_name("logonet-tiny").unwrap(),
        crop: [32; 3],
        mask: Some(MaskConfig::default()),
        kmeans: KMeansConfig {
            n_clusterers: 2,
            k_min: 3,
            k_max: 5,
            subset_fraction: 0.5,
            batch_size: 16,
            max_epochs: 2,
            ..KMeansConfig::default()
        },
        class_size: None,
        epochs: 1,
        batch: 2,
        time_limit_secs: None,
        optim: Default::default(),
        seed: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = trainer::pretrain(
        &crops,
        &cfg,
        None,
        dir.path(),
        &Device::Cpu,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(out.epochs.len(), 1);
    assert_eq!(out.step_losses.len(), 1, "2 crops, batch 2: one step");
    let loss = out.epochs[0].mean_loss;
    assert!(loss.is_finite() && loss > 0.0 && loss < 20.0, "loss {loss}");
    let ck = candle_core::safetensors::load(&out.checkpoint, &Device::Cpu).unwrap();
    assert!(ck.keys().any(|k| k.starts_with("pre_train_proj.")));
    assert!(ck.keys().all(|k| !k.starts_with("conv.")));
    assert!(dir.path().join("clusterers/clusterers.json").exists());
    assert!(dir.path().join("pretrain.json").exists());
    // fine-tune start: the trunk loads into a segmentation LoGoNet-tiny
    let vm = VarMap::new();
    let _seg = logonet::nets::AnyNet::new(
        &cfg.net,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let rep = finetune::load_pretrained_trunk_file(&out.checkpoint, &vm).unwrap();
    assert!(rep.shape_mismatch.is_empty());
    assert!(rep.unused.is_empty());
    let cancel = CancelToken::new();
    cancel.cancel();
    assert!(
        trainer::pretrain(
            &crops,
            &cfg,
            None,
            dir.path(),
            &Device::Cpu,
            &NoProgress,
            &cancel
        )
        .is_err()
    );
}
