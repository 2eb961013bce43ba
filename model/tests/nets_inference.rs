//! The inference form (`InferenceNet`: BatchNorm folded, no autograd graph, split convs instead of
//! concatenations) against the reference fixtures (1e-4) and against the layer-by-layer eval forward with
//! non-trivial BatchNorm statistics (1e-5 relative to the output scale).

mod nets_support;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use logonet::nets::checkpoint::new_net;
use logonet::nets::{
    AnyNet, InferenceNet, Logonet, NetConfig, SegmentationNet as _, Ulkanet, logonet as lg, ulkanet,
};
use nets_support::{assert_close, max_abs_diff, reference};

fn vb(w: std::collections::HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(w, DType::F32, &Device::Cpu)
}

#[test]
fn inference_ulkanet_tiny_matches_reference() {
    let (w, io) = reference("ulkanet_tiny");
    let net = Ulkanet::new(&ulkanet::Config::tiny(), vb(w)).unwrap();
    let inf = InferenceNet::from_ulkanet(&net).unwrap();
    let y = inf.forward(&io["input.x"]).unwrap();
    assert_close("ulkanet_tiny folded", &y, &io["output.logits"], 1e-4);
    let g = net.forward_graph(&io["input.x"], false).unwrap();
    assert_close("ulkanet_tiny folded vs graph", &y, &g, 1e-5);
}

#[test]
fn inference_logonet_tiny_matches_reference() {
    let (w, io) = reference("logonet_tiny");
    let net = Logonet::new(&lg::Config::tiny(), vb(w)).unwrap();
    let inf = InferenceNet::from_logonet(&net).unwrap();
    let y = inf.forward(&io["input.x"]).unwrap();
    assert_close("logonet_tiny folded", &y, &io["output.logits"], 1e-4);
    assert!(
        !y.track_op(),
        "inference output must not carry an autograd graph"
    );
    assert_eq!(
        inf.net_config(),
        NetConfig::from_name("logonet-tiny").unwrap()
    );
    assert!(inf.forward_t(&io["input.x"], true).is_err());
}

/// Random weights plus a few train-mode passes (so every BatchNorm has non-default running statistics),
/// then folded vs layer-by-layer, on a Var-backed network.
fn folded_matches_graph(name: &str, cfg: NetConfig, input: [usize; 5]) {
    let cfg = cfg.with_out_channels(5);
    let loaded = new_net(&cfg, &Device::Cpu).unwrap();
    // Train-mode passes on a batch of 2 (BatchNorm needs more than one value per channel at 1³).
    let train_shape = [2, input[1], input[2], input[3], input[4]];
    for _ in 0..2 {
        let x = Tensor::randn(0f32, 1.0, train_shape.as_slice(), &Device::Cpu)
            .unwrap()
            .affine(3.0, 1.0)
            .unwrap();
        loaded.net.forward_t(&x, true).unwrap();
    }
    let x = Tensor::randn(0f32, 1.0, input.as_slice(), &Device::Cpu).unwrap();
    let graph = match &loaded.net {
        AnyNet::Ulkanet(n) => n.forward_graph(&x, false).unwrap(),
        AnyNet::Logonet(n) => n.forward_graph(&x, false).unwrap(),
    };
    let inf = InferenceNet::new(&loaded.net).unwrap();
    let y = inf.forward(&x).unwrap();
    let scale = graph
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let d = max_abs_diff(&y, &graph);
    println!("{name}: max abs diff {d:.3e}, output scale {scale:.3e}");
    assert!(scale > 0.0);
    assert!(
        d <= 1e-5 * scale.max(1.0),
        "{name}: {d:e} vs scale {scale:e}"
    );
    // The trait's eval forward is the folded one.
    let z = loaded.net.forward_t(&x, false).unwrap();
    assert!(max_abs_diff(&y, &z) <= 1e-6 * scale.max(1.0));
}

#[test]
fn folded_ulkanet_matches_layer_by_layer_with_running_stats() {
    let cfg = NetConfig::from_name("ulkanet-tiny").unwrap();
    folded_matches_graph("ulkanet-tiny", cfg, [2, 1, 32, 32, 64]);
}

#[test]
fn folded_logonet_matches_layer_by_layer_with_running_stats() {
    let cfg = NetConfig::from_name("logonet-tiny").unwrap();
    folded_matches_graph("logonet-tiny", cfg, [1, 1, 32, 32, 32]);
}

#[test]
fn folded_logonet_instance_norm_matches_layer_by_layer() {
    let mut c = lg::Config::tiny();
    c.fusion_norm = lg::FusionNorm::Instance;
    folded_matches_graph("logonet-in-tiny", NetConfig::Logonet(c), [1, 1, 32, 32, 32]);
}

#[test]
fn inference_rejects_bad_input_sizes() {
    let loaded = new_net(&NetConfig::from_name("logonet-tiny").unwrap(), &Device::Cpu).unwrap();
    let inf = InferenceNet::new(&loaded.net).unwrap();
    let x = Tensor::zeros((1, 1, 32, 32, 48), DType::F32, &Device::Cpu).unwrap();
    let err = inf.forward(&x).err().unwrap().to_string();
    assert!(err.contains("multiple of 32"), "{err}");
}
