//! `Projection2` parity against fixture `pretrain_head` (head alone, fed with the trunk output recorded by the
//! `logonet_tiny` reference fixture), plus shape and training-mode checks.

mod train_support;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use logonet::pretrain::head::{Projection2, Projection2Config};
use train_support::{load_fixture as load, max_abs};

fn fixture_head() -> Projection2 {
    let weights = load("pipeline/pretrain_head.weights.safetensors");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let cfg = Projection2Config {
        input_dim: 14,
        dims: [32, 32, 32],
        cluster_num: 3,
        class_size: 20,
    };
    Projection2::new(cfg, vb.pp("pre_train_proj")).unwrap()
}

#[test]
fn head_matches_reference_on_item0() {
    let head = fixture_head();
    let tiny = load("reference/logonet_tiny.io.safetensors");
    let io = load("pipeline/pretrain_head.io.safetensors");
    // trunk(x) = global + reassembled locals (no fusion head)
    let trunk = (&tiny["output.global_out"] + &tiny["output.local_reassembled"]).unwrap(); // [1, 14, 32, 32, 32]
    let dbg = head.forward_debug(&trunk, false).unwrap();
    for (name, got) in [
        ("conv1_out", &dbg.conv1_out),
        ("conv2_out", &dbg.conv2_out),
        ("conv3_out", &dbg.conv3_out),
        ("conv4_out", &dbg.conv4_out),
    ] {
        let d = max_abs(got, &io[&format!("inter_item0.{name}")]);
        assert!(d <= 1e-4, "{name}: max abs diff {d}");
    }
    let logits = head.forward(&trunk, false).unwrap();
    assert_eq!(
        logits.dims(),
        &[1, 32, 3, 20],
        "always [B, Z, C, K], even with B = 1"
    );
    let d = max_abs(&logits.squeeze(0).unwrap(), &io["output.logits_batch1"]);
    assert!(d <= 1e-4, "logits_batch1: {d}");
    let d = max_abs(
        &logits.squeeze(0).unwrap(),
        &io["output.logits"].get(0).unwrap(),
    );
    assert!(d <= 1e-4, "logits[0]: {d}");
    assert!(
        logits
            .flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            >= 0.0
    );
}

#[test]
fn fresh_head_shapes_and_training_mode_updates_running_stats() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = Projection2Config {
        input_dim: 4,
        dims: [16, 8, 8],
        cluster_num: 1,
        class_size: 5,
    };
    let head = Projection2::new(cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 4, 16, 8, 8), &Device::Cpu).unwrap();
    let y = head.forward(&x, true).unwrap();
    assert_eq!(y.dims(), &[2, 8, 1, 5], "C = 1 keeps its axis");
    let data = vm.data().lock().unwrap();
    let rm = data["conv1.1.running_mean"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        rm.iter().any(|&v| v != 0.0),
        "running mean was updated: {rm:?}"
    );
    let n = data["conv1.1.num_batches_tracked"]
        .as_tensor()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(n, 1.0);
    drop(data);
    let bad = Tensor::zeros((1, 4, 16, 8, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(head.forward(&bad, false).is_err());
    let small = Projection2Config {
        input_dim: 4,
        dims: [8, 8, 8],
        cluster_num: 1,
        class_size: 5,
    };
    assert!(
        Projection2::new(
            small,
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)
        )
        .is_err()
    );
}
