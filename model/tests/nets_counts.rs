//! Parameter counts (exact, spec §1.10), MAC counts (thop convention, spec §1.11 and §4), state-dict names
//! and the input-size rule. Networks are built on the shape-only backend, so even LoGoNet-L costs nothing.

mod nets_support;

use logonet::Error;
use logonet::nets::checkpoint::infer_config;
use logonet::nets::flops::OpKind;
use logonet::nets::{NetConfig, SegmentationNet as _, is_trainable};
use nets_support::load;
use std::collections::BTreeSet;

fn params(name: &str) -> u64 {
    NetConfig::from_name(name).unwrap().param_count().unwrap()
}

#[test]
fn parameter_counts_match_the_reference_exactly() {
    assert_eq!(params("logonet-s"), 67_579_560);
    assert_eq!(params("ulkanet-s"), 40_256_426);
    assert_eq!(params("logonet-l"), 172_580_904);
    assert_eq!(params("ulkanet-l"), 121_226_346);
    assert_eq!(params("logonet-in-s"), 67_579_532);
    assert_eq!(params("logonet-tiny"), 983_896);
}

#[test]
fn logonet_s_parts_match_the_spec() {
    let cfg = match NetConfig::from_name("logonet-s").unwrap() {
        NetConfig::Logonet(c) => c,
        NetConfig::Ulkanet(_) => unreachable!(),
    };
    let (_, rec) = NetConfig::from_name("logonet-s")
        .unwrap()
        .build_shapes_only()
        .unwrap();
    let count = |prefix: &str| -> u64 {
        rec.vars()
            .iter()
            .filter(|v| v.name.starts_with(prefix) && is_trainable(&v.name))
            .map(|v| v.shape.iter().product::<usize>() as u64)
            .sum()
    };
    assert_eq!(count("van."), 40_345_856);
    assert_eq!(count("van0_0_0."), 3_403_520);
    assert_eq!(count("conv."), 5_544);
    assert_eq!(cfg.input_multiple(), 32);
}

/// The variable names a network asks for are exactly the keys of the reference state dict.
#[test]
fn variable_names_equal_reference_state_dict_keys() {
    for (name, fixture) in [
        ("logonet-tiny", "logonet_tiny"),
        ("ulkanet-tiny", "ulkanet_tiny"),
    ] {
        let (_, rec) = NetConfig::from_name(name)
            .unwrap()
            .build_shapes_only()
            .unwrap();
        let ours: BTreeSet<(String, Vec<usize>)> =
            rec.vars().into_iter().map(|v| (v.name, v.shape)).collect();
        let weights = load("reference", &format!("{fixture}.weights.safetensors"));
        let theirs: BTreeSet<(String, Vec<usize>)> = weights
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let missing: Vec<_> = theirs.difference(&ours).take(5).collect();
        let extra: Vec<_> = ours.difference(&theirs).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:?}, extra {extra:?}"
        );
        // And the configuration is recovered from the names and shapes alone.
        assert_eq!(
            infer_config(&weights).unwrap(),
            NetConfig::from_name(name).unwrap()
        );
    }
}

#[test]
fn logonet_s_macs_match_thop_and_the_spec_breakdown() {
    let c = NetConfig::from_name("logonet-s")
        .unwrap()
        .macs([96, 96, 96])
        .unwrap();
    let thop = c.thop_macs() as f64 / 1e9;
    let conv = c.conv_macs as f64 / 1e9;
    println!(
        "LoGoNet-S 96^3: thop {thop:.3} G, conv {conv:.3} G, norms {:.3} G",
        c.norm_ops as f64 / 1e9
    );
    assert!(
        (thop - 246.99).abs() / 246.99 < 1e-3,
        "thop MACs {thop} G, paper/thop 246.99 G"
    );
    assert!(
        (conv - 245.8).abs() / 245.8 < 1e-3,
        "conv MACs {conv} G, spec 245.8 G"
    );
    let share =
        |part: &str| c.by_part.get(part).copied().unwrap_or(0) as f64 / c.conv_macs as f64 * 100.0;
    for (part, pct) in [
        ("global decoder", 46.5),
        ("local decoder", 44.0),
        ("global encoder", 4.1),
        ("local encoder", 3.5),
        ("fusion head", 2.0),
    ] {
        assert!(
            (share(part) - pct).abs() < 0.06,
            "{part}: {:.2} % vs spec {pct} %",
            share(part)
        );
    }
    let dense3 = c.by_kind[&OpKind::DenseConv {
        kernel: 3,
        stride: 1,
    }] as f64
        / c.conv_macs as f64
        * 100.0;
    assert!((dense3 - 92.3).abs() < 0.06, "dense 3^3: {dense3:.2} %");
    // The InstanceNorm twin: 246.96 G (IN without affine counts 2 ops per element instead of 4).
    let c_in = NetConfig::from_name("logonet-in-s")
        .unwrap()
        .macs([96, 96, 96])
        .unwrap();
    let thop_in = c_in.thop_macs() as f64 / 1e9;
    assert!(
        (thop_in - 246.96).abs() / 246.96 < 1e-3,
        "LoGoNet_IN thop {thop_in} G"
    );
}

#[test]
fn ulkanet_s_conv_macs_match_the_flop_counter() {
    // torch.utils.flop_counter: 218.8 GFLOP = 2 × conv MACs.
    let c = NetConfig::from_name("ulkanet-s")
        .unwrap()
        .macs([96, 96, 96])
        .unwrap();
    let gflop = 2.0 * c.conv_macs as f64 / 1e9;
    assert!(
        (gflop - 218.8).abs() / 218.8 < 1e-3,
        "ULKANet-S {gflop} GFLOP"
    );
}

#[test]
fn bad_input_sizes_are_rejected_clearly() {
    for name in ["logonet-s", "ulkanet-s"] {
        let cfg = NetConfig::from_name(name).unwrap();
        assert!(cfg.check_input(&[1, 1, 96, 96, 96]).is_ok());
        assert!(cfg.check_input(&[1, 1, 32, 64, 96]).is_ok());
        for bad in [
            [1, 1, 48, 48, 48],
            [1, 1, 16, 16, 16],
            [1, 1, 32, 32, 48],
            [1, 1, 0, 32, 32],
        ] {
            match cfg.check_input(&bad) {
                Err(Error::InputSize { got, msg, .. }) => {
                    assert_eq!(got, bad[2..].to_vec());
                    assert!(msg.contains("multiple of 32"), "{msg}");
                }
                other => panic!("{name} {bad:?}: expected InputSize, got {other:?}"),
            }
        }
        assert!(matches!(
            cfg.check_input(&[1, 2, 32, 32, 32]),
            Err(Error::InvalidArgument { .. })
        ));
        // The networks themselves refuse too (shape-only nets are never run: the check comes first).
        let (net, _) = cfg.build_shapes_only().unwrap();
        let x = candle_core::Tensor::zeros(
            (1, 1, 48, 48, 48),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(matches!(
            net.forward_t(&x, false),
            Err(Error::InputSize { .. })
        ));
    }
    assert!(NetConfig::from_name("logonet-xl").is_err());
}
