//! Checkpoints: our safetensors format (config in the metadata, atomic write, round trip), loading reference
//! state dicts without knowing the configuration, `module.` prefixes, and strict loading errors.

mod nets_support;

use candle_core::{DType, Device, Tensor};
use logonet::nets::checkpoint::{
    CONFIG_KEY, infer_config, load_into_varmap, load_net, new_net, read_config, read_state_dict,
    save, to_safetensors_bytes,
};
use logonet::nets::{NetConfig, SegmentationNet as _};
use nets_support::{assert_close, fixture, reference};
use std::collections::{BTreeMap, HashMap};

#[test]
fn reference_state_dict_loads_without_a_config() {
    let path = fixture("reference", "ulkanet_tiny.weights.safetensors");
    assert_eq!(read_config(&path).unwrap(), None);
    let loaded = load_net(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, NetConfig::from_name("ulkanet-tiny").unwrap());
    let (_, io) = reference("ulkanet_tiny");
    let y = loaded.net.forward_t(&io["input.x"], false).unwrap();
    assert_close("ulkanet_tiny via load_net", &y, &io["output.logits"], 1e-4);
}

#[test]
fn own_checkpoint_round_trips_with_config_in_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let cfg = NetConfig::from_name("logonet-tiny")
        .unwrap()
        .with_out_channels(3);
    let a = new_net(&cfg, &Device::Cpu).unwrap();
    // One train-mode forward so the running statistics differ from their defaults.
    let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32, 32), &Device::Cpu).unwrap();
    a.net.forward_t(&x, true).unwrap();
    save(&path, &a.varmap, &cfg).unwrap();
    assert_eq!(read_config(&path).unwrap(), Some(cfg.clone()));
    let raw = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&raw).unwrap();
    assert!(meta.metadata().as_ref().unwrap().contains_key(CONFIG_KEY));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let b = load_net(&path, &Device::Cpu).unwrap();
    assert_eq!(b.config, cfg);
    let nbt = b.varmap.data().lock().unwrap()["conv.1.num_batches_tracked"]
        .as_tensor()
        .to_scalar::<i64>()
        .unwrap();
    assert_eq!(nbt, 1);
    let x = Tensor::randn(0f32, 1.0, (1, 1, 32, 32, 32), &Device::Cpu).unwrap();
    let ya = a.net.forward_t(&x, false).unwrap();
    let yb = b.net.forward_t(&x, false).unwrap();
    assert_eq!(ya.dims(), [1, 3, 32, 32, 32]);
    assert_close("round trip", &ya, &yb, 0.0);
}

#[test]
fn module_prefix_is_stripped_and_strict_loading_reports_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = reference("ulkanet_tiny");
    let prefixed: BTreeMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let cfg = infer_config(&w).unwrap();
    let path = dir.path().join("ddp.safetensors");
    std::fs::write(
        &path,
        to_safetensors_bytes(&prefixed, &cfg, &HashMap::new()).unwrap(),
    )
    .unwrap();
    let back = read_state_dict(&path).unwrap();
    assert_eq!(back.len(), w.len());
    assert!(back.contains_key("van3d.norm1.weight"));

    // Wrong model for these weights: a LoGoNet cannot take ULKANet tensors.
    let other = new_net(&NetConfig::from_name("logonet-tiny").unwrap(), &Device::Cpu).unwrap();
    assert!(load_into_varmap(&other.varmap, &back, true).is_err());
    let report = load_into_varmap(&other.varmap, &HashMap::new(), false).unwrap();
    assert_eq!(report.loaded, 0);
    assert!(!report.missing.is_empty());
    // A shape mismatch is always an error.
    let mut bad = back.clone();
    bad.insert(
        "van3d.norm1.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let u = new_net(&cfg, &Device::Cpu).unwrap();
    assert!(load_into_varmap(&u.varmap, &bad, false).is_err());
    // Garbage files give a format error naming the path.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = load_net(&junk, &Device::Cpu).err().unwrap().to_string();
    assert!(err.ends_with(&junk.display().to_string()), "{err}");
}
