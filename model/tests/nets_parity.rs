//! Parity of every network level with the reference PyTorch modules (`tests/fixtures/reference`, eval mode):
//! max abs diff <= 1e-4 on all six fixtures, including LoGoNet's intermediate tensors.

mod nets_support;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use logonet::nets::van3d::{AttentionModule3D, Block3D, SpatialAttention3D, Van3d};
use logonet::nets::{Logonet, Ulkanet, logonet as lg, ulkanet};
use nets_support::{assert_close, reference};

const TOL: f64 = 1e-4;

fn vb(w: std::collections::HashMap<String, candle_core::Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(w, DType::F32, &Device::Cpu)
}

#[test]
fn lka_matches_reference() {
    let (w, io) = reference("lka");
    let m = AttentionModule3D::new(vb(w), 8).unwrap();
    let y = m.forward_t(&io["input.x"], false).unwrap();
    assert_close("lka", &y, &io["output.y"], TOL);
}

#[test]
fn spatial_attention_matches_reference() {
    let (w, io) = reference("spatial_attention");
    let m = SpatialAttention3D::new(vb(w), 8).unwrap();
    let y = m.forward_t(&io["input.x"], false).unwrap();
    assert_close("spatial_attention", &y, &io["output.y"], TOL);
}

#[test]
fn block3d_matches_reference_tokens() {
    let (w, io) = reference("block3d");
    let m = Block3D::new(vb(w), 8, 4).unwrap();
    let dhw: Vec<i64> = io["input.dhw"].to_vec1().unwrap();
    let dhw = [dhw[0] as usize, dhw[1] as usize, dhw[2] as usize];
    let y = m.forward_tokens(&io["input.tokens"], dhw, false).unwrap();
    assert_close("block3d", &y, &io["output.tokens"], TOL);
}

#[test]
fn van3d_encoder_matches_reference_non_cubic() {
    let (w, io) = reference("van3d_encoder");
    let m = Van3d::new(vb(w), 1, &[8, 16, 32, 64], &[8, 8, 4, 4], &[1, 1, 1, 1]).unwrap();
    let outs = m.forward_t(&io["input.x"], false).unwrap();
    assert_eq!(outs.len(), 4);
    for (i, o) in outs.iter().enumerate() {
        assert_close(
            &format!("van3d stage{}", i + 1),
            o,
            &io[&format!("output.stage{}", i + 1)],
            TOL,
        );
    }
}

#[test]
fn ulkanet_tiny_matches_reference() {
    let (w, io) = reference("ulkanet_tiny");
    let net = Ulkanet::new(&ulkanet::Config::tiny(), vb(w)).unwrap();
    let y = net.forward_t(&io["input.x"], false).unwrap();
    assert_close("ulkanet_tiny logits", &y, &io["output.logits"], TOL);
}

#[test]
fn logonet_tiny_matches_reference_with_intermediates() {
    let (w, io) = reference("logonet_tiny");
    let net = Logonet::new(&lg::Config::tiny(), vb(w)).unwrap();
    let parts = net.forward_parts(&io["input.x"], false).unwrap();
    assert_close(
        "logonet global_out",
        &parts.global,
        &io["output.global_out"],
        TOL,
    );
    assert_close(
        "logonet local_reassembled",
        &parts.local,
        &io["output.local_reassembled"],
        TOL,
    );
    // (i, j, k) order with k fastest: van0_0_0 is part 0, van1_0_1 is part 4 + 0 + 1 = 5.
    assert_close(
        "logonet local_000_out",
        &parts.local_parts[0],
        &io["output.local_000_out"],
        TOL,
    );
    assert_close(
        "logonet local_101_out",
        &parts.local_parts[5],
        &io["output.local_101_out"],
        TOL,
    );
    assert_close("logonet logits", &parts.logits, &io["output.logits"], TOL);
}
