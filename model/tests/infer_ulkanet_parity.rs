//! Full parity of sliding-window inference with MONAI on tiny ULKANet
//! (`tests/fixtures/pipeline/sliding_window.io.safetensors`, weights `../reference/ulkanet_tiny`):
//! input [1,1,48,56,12], roi 32³, sw_batch_size 4, three blend/overlap settings; tolerance 1e-5.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use logonet::infer::{Blend, SlidingWindowConfig, sliding_window_inference};
use logonet::job::{CancelToken, NoProgress};
use logonet::nets::{Ulkanet, ulkanet};

fn fixtures() -> (std::collections::HashMap<String, Tensor>, Ulkanet) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let io = candle_core::safetensors::load(
        format!("{root}/pipeline/sliding_window.io.safetensors"),
        &Device::Cpu,
    )
    .expect("io fixture");
    let w = candle_core::safetensors::load(
        format!("{root}/reference/ulkanet_tiny.weights.safetensors"),
        &Device::Cpu,
    )
    .expect("weights");
    let vb = VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
    let net = Ulkanet::new(&ulkanet::Config::tiny(), vb).expect("ulkanet tiny");
    (io, net)
}

#[test]
fn sliding_window_matches_monai_on_tiny_ulkanet() {
    let (io, net) = fixtures();
    let x = &io["input.x"];
    for (key, overlap, blend) in [
        ("constant_ov050", 0.5, Blend::Constant),
        (
            "gaussian_ov050",
            0.5,
            Blend::Gaussian { sigma_scale: 0.125 },
        ),
        ("constant_ov025", 0.25, Blend::Constant),
    ] {
        let cfg = SlidingWindowConfig {
            roi_size: [32, 32, 32],
            overlap,
            sw_batch_size: 4,
            blend,
            padding_value: 0.0,
            tta_mirror: false,
        };
        let got = sliding_window_inference(
            x,
            &cfg,
            |b: &Tensor| net.forward_t(b, false),
            &NoProgress,
            &CancelToken::new(),
        )
        .expect("inference");
        let want = &io[&format!("output.{key}")];
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-5, "{key}: max abs diff {diff}");
    }
}
