//! PyTorch `.pt`/`.pth` state dicts (`torch.save` zip format; fixtures written by
//! `scripts/make_pt_fixture.py` from the reference safetensors weights): the tensors read back bit-exact,
//! the `{"state_dict": ...}` wrapper and `module.` prefixes of the reference trainer are handled, the
//! configuration is inferred, and the loaded LoGoNet reproduces the reference output.

mod nets_support;

use candle_core::Device;
use logonet::nets::checkpoint::{config_of, load_net, read_config, read_state_dict};
use logonet::nets::{NetConfig, SegmentationNet as _};
use nets_support::{assert_close, fixture, load, max_abs_diff, reference};

fn assert_same_tensors(what: &str, pt: &std::path::Path, st: &str) {
    let from_pt = read_state_dict(pt).unwrap();
    let from_st = load("reference", st);
    assert_eq!(from_pt.len(), from_st.len(), "{what}: tensor count");
    for (k, v) in &from_st {
        let p = from_pt
            .get(k)
            .unwrap_or_else(|| panic!("{what}: {k} missing from the .pt"));
        assert_eq!(p.dtype(), v.dtype(), "{what}: dtype of {k}");
        assert_eq!(p.dims(), v.dims(), "{what}: shape of {k}");
        if v.dtype() == candle_core::DType::I64 {
            assert_eq!(
                p.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
                v.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
                "{what}: {k}"
            );
        } else {
            assert_eq!(max_abs_diff(p, v), 0.0, "{what}: values of {k}");
        }
    }
}

#[test]
fn wrapped_ddp_pt_reads_the_same_tensors_as_safetensors() {
    let pt = fixture("reference", "logonet_tiny.weights.pt");
    assert_same_tensors("logonet_tiny.pt", &pt, "logonet_tiny.weights.safetensors");
}

#[test]
fn plain_pth_state_dict_reads_the_same_tensors() {
    let pth = fixture("reference", "lka.weights.pth");
    assert_same_tensors("lka.pth", &pth, "lka.weights.safetensors");
}

#[test]
fn logonet_from_pt_matches_reference_output() {
    let pt = fixture("reference", "logonet_tiny.weights.pt");
    assert_eq!(read_config(&pt).unwrap(), None);
    let cfg = config_of(&pt).unwrap();
    assert_eq!(cfg, NetConfig::from_name("logonet-tiny").unwrap());
    let loaded = load_net(&pt, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, cfg);
    let (_, io) = reference("logonet_tiny");
    let y = loaded.net.forward_t(&io["input.x"], false).unwrap();
    assert_close("logonet_tiny from .pt", &y, &io["output.logits"], 1e-4);
}

#[test]
fn truncated_pt_is_a_format_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fixture("reference", "lka.weights.pth")).unwrap();
    let bad = dir.path().join("broken.pth");
    std::fs::write(&bad, &src[..src.len() / 2]).unwrap();
    let err = load_net(&bad, &Device::Cpu).err().unwrap().to_string();
    assert!(err.ends_with(&bad.display().to_string()), "{err}");
    let missing = dir.path().join("absent.pt");
    assert!(read_state_dict(&missing).is_err());
}
