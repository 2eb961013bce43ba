//! Weights in and out.
//!
//! * Reference state dicts: `.safetensors` or PyTorch `.pt/.pth/.ckpt/.bin` (read with
//!   `candle_core::pickle`; a `{"state_dict": ...}` wrapper as written by the reference trainer and the
//!   `module.` prefix of DDP models are handled). Keys are the reference's, e.g.
//!   `van.van3d.block1.0.attn.spatial_gating_unit.conv_spatial.weight`.
//! * Our checkpoints: safetensors holding every variable of the network's `VarMap` (parameters and BatchNorm
//!   buffers) with the network's [`NetConfig`] as JSON in the metadata key [`CONFIG_KEY`], written atomically.
//! * [`load_net`] builds the right network from either, without knowing the configuration in advance (from
//!   the metadata, or inferred from the tensor names and shapes of a reference state dict).

use super::{AnyNet, NetConfig, logonet, ulkanet};
use crate::error::write_atomic;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// safetensors metadata key holding the network configuration as JSON.
pub const CONFIG_KEY: &str = "logonet.config";
/// safetensors metadata key naming the writer.
pub const FORMAT_KEY: &str = "format";
/// Value of [`FORMAT_KEY`] in our checkpoints.
pub const FORMAT_VALUE: &str = "logonet-studio/1";

fn is_pickle(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("pt" | "pth" | "ckpt" | "bin" | "tar")
    )
}

/// Reads a state dict (safetensors or PyTorch pickle) onto the CPU, with `module.` prefixes removed.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let raw: Vec<(String, Tensor)> = if is_pickle(path) {
        if !path.is_file() {
            return Err(Error::io(
                "cannot read checkpoint",
                std::io::Error::from(std::io::ErrorKind::NotFound),
                path,
            ));
        }
        match candle_core::pickle::read_all_with_key(path, Some("state_dict")) {
            Ok(v) if !v.is_empty() => v,
            _ => candle_core::pickle::read_all(path).map_err(|e| {
                Error::format(format!("not a readable PyTorch state dict ({e})"), path)
            })?,
        }
    } else {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io("cannot read checkpoint", e, path))?;
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::format(format!("not a safetensors file ({e})"), path))?
            .into_iter()
            .collect()
    };
    if raw.is_empty() {
        return Err(Error::format("no tensors found", path));
    }
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let mut k = k.as_str();
            while let Some(rest) = k.strip_prefix("module.") {
                k = rest;
            }
            (k.to_string(), v)
        })
        .collect())
}

/// The network configuration stored in one of our safetensors checkpoints, `None` for files without one
/// (e.g. a converted reference state dict).
pub fn read_config(path: &Path) -> Result<Option<NetConfig>> {
    if is_pickle(path) {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read checkpoint", e, path))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(format!("not a safetensors file ({e})"), path))?;
    match meta.metadata().as_ref().and_then(|m| m.get(CONFIG_KEY)) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
            Error::format(
                format!("invalid model configuration in the metadata ({e})"),
                path,
            )
        }),
    }
}

/// (in_channels, embed_dims, depths, mlp_ratios) of an encoder.
type EncoderShape = (usize, Vec<usize>, Vec<usize>, Vec<usize>);

/// Infers the configuration of a reference (or our) state dict from its key names and tensor shapes.
pub fn infer_config(tensors: &HashMap<String, Tensor>) -> Result<NetConfig> {
    let dims = |k: &str| tensors.get(k).map(|t| t.dims().to_vec());
    let encoder = |p: &str| -> Result<EncoderShape> {
        let mut embed = Vec::new();
        let mut depths = Vec::new();
        let mut mlp = Vec::new();
        let mut in_c = 0;
        let mut n = 1;
        while let Some(w) = dims(&format!("{p}van3d.patch_embed{n}.proj.weight")) {
            if n == 1 {
                in_c = w[1];
            }
            embed.push(w[0]);
            let mut j = 0;
            while tensors.contains_key(&format!("{p}van3d.block{n}.{j}.norm1.weight")) {
                j += 1;
            }
            depths.push(j);
            let hidden = dims(&format!("{p}van3d.block{n}.0.mlp.fc1.weight"))
                .map(|d| d[0])
                .unwrap_or(0);
            mlp.push(hidden.checked_div(w[0]).unwrap_or(0));
            n += 1;
        }
        if embed.is_empty() {
            return Err(Error::Checkpoint {
                msg: format!(
                    "no '{p}van3d.patch_embed1.proj.weight': not a LoGoNet/ULKANet state dict"
                ),
            });
        }
        Ok((in_c, embed, depths, mlp))
    };
    if let Some(w) = dims("conv.3.weight") {
        let (in_channels, embed_dims, depths, mlp_ratios) = encoder("van.")?;
        let mut patch_count = 0;
        while tensors
            .keys()
            .any(|k| k.starts_with(&format!("van{patch_count}_0_0.")))
        {
            patch_count += 1;
        }
        let mut local_stages = 0;
        while tensors.contains_key(&format!(
            "van0_0_0.van3d.patch_embed{}.proj.weight",
            local_stages + 1
        )) {
            local_stages += 1;
        }
        let fusion_norm = if tensors.contains_key("conv.1.running_mean") {
            logonet::FusionNorm::Batch
        } else {
            logonet::FusionNorm::Instance
        };
        return Ok(NetConfig::Logonet(logonet::Config {
            in_channels,
            out_channels: w[0],
            embed_dims,
            depths,
            mlp_ratios,
            patch_count,
            local_stages,
            fusion_norm,
        }));
    }
    if let Some(w) = dims("final_conv1.6.weight") {
        let (in_channels, embed_dims, depths, mlp_ratios) = encoder("")?;
        return Ok(NetConfig::Ulkanet(ulkanet::Config {
            in_channels,
            out_channels: w[0],
            embed_dims,
            depths,
            mlp_ratios,
        }));
    }
    Err(Error::Checkpoint {
        msg: "neither 'conv.3.weight' (LoGoNet) nor 'final_conv1.6.weight' (ULKANet) found: not a known state dict"
            .to_string(),
    })
}

/// The configuration of a checkpoint: from its metadata, or inferred from a reference state dict.
pub fn config_of(path: &Path) -> Result<NetConfig> {
    match read_config(path)? {
        Some(c) => Ok(c),
        None => {
            infer_config(&read_state_dict(path)?).map_err(|e| Error::format(e.to_string(), path))
        }
    }
}

/// What [`load_into_varmap`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables set from the file.
    pub loaded: usize,
    /// Variables of the network absent from the file (kept at their current values).
    pub missing: Vec<String>,
    /// Tensors in the file the network does not have (ignored).
    pub unexpected: Vec<String>,
}

/// Copies `tensors` into the variables of `varmap` with the same names (converted to each variable's dtype
/// and device). Shape mismatches are errors; with `strict`, so are missing (other than
/// `num_batches_tracked`) and unexpected names.
pub fn load_into_varmap(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    strict: bool,
) -> Result<LoadReport> {
    let data = varmap.data().lock().map_err(|_| Error::Checkpoint {
        msg: "variable map lock poisoned".into(),
    })?;
    let mut report = LoadReport::default();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        match tensors.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) => {
                if t.dims() != var.dims() {
                    return Err(Error::Checkpoint {
                        msg: format!(
                            "shape mismatch for {name}: file {:?}, network {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    });
                }
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                report.loaded += 1;
            }
        }
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    if strict {
        let missing: Vec<&String> = report
            .missing
            .iter()
            .filter(|m| !m.ends_with("num_batches_tracked"))
            .collect();
        if !missing.is_empty() || !report.unexpected.is_empty() {
            let show = |v: Vec<&String>| {
                v.iter()
                    .take(5)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::Checkpoint {
                msg: format!(
                    "{} missing ({}) and {} unexpected ({}) tensors",
                    missing.len(),
                    show(missing.clone()),
                    report.unexpected.len(),
                    show(report.unexpected.iter().collect())
                ),
            });
        }
    }
    Ok(report)
}

/// A network together with its variables.
pub struct LoadedNet {
    /// The configuration (from the metadata or inferred).
    pub config: NetConfig,
    /// The network.
    pub net: AnyNet,
    /// Its variables (parameters and BatchNorm buffers), e.g. for training or saving.
    pub varmap: VarMap,
}

/// Builds a fresh network for `cfg` on `device` (F32, PyTorch default initialisation) with its `VarMap`.
pub fn new_net(cfg: &NetConfig, device: &Device) -> Result<LoadedNet> {
    let varmap = VarMap::new();
    let net = AnyNet::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    Ok(LoadedNet {
        config: cfg.clone(),
        net,
        varmap,
    })
}

/// Loads a checkpoint of ours or a reference state dict and builds the matching network on `device`.
/// Every variable of the network must be in the file.
pub fn load_net(path: &Path, device: &Device) -> Result<LoadedNet> {
    let tensors = read_state_dict(path)?;
    let config = match read_config(path)? {
        Some(c) => c,
        None => infer_config(&tensors).map_err(|e| Error::format(e.to_string(), path))?,
    };
    let loaded = new_net(&config, device)
        .map_err(|e| Error::format(format!("invalid model ({e})"), path))?;
    load_into_varmap(&loaded.varmap, &tensors, true)
        .map_err(|e| Error::format(e.to_string(), path))?;
    Ok(loaded)
}

/// A tensor's bytes in safetensors form.
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw_tensor(t: &Tensor) -> Result<RawTensor> {
    use safetensors::Dtype as S;
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    let (dtype, data) = match t.dtype() {
        DType::F32 => (
            S::F32,
            flat.to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            S::F64,
            flat.to_vec1::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            S::I64,
            flat.to_vec1::<i64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::U32 => (
            S::U32,
            flat.to_vec1::<u32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::U8 => (S::U8, flat.to_vec1::<u8>()?),
        DType::BF16 => (
            S::BF16,
            flat.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            S::F16,
            flat.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        other => {
            return Err(Error::invalid(
                "checkpoint::save",
                format!("unsupported dtype {other:?}"),
            ));
        }
    };
    Ok(RawTensor {
        dtype,
        shape: t.dims().to_vec(),
        data,
    })
}

/// Serialises named tensors to safetensors bytes with `cfg` (and `extra` entries) in the metadata.
pub fn to_safetensors_bytes(
    tensors: &BTreeMap<String, Tensor>,
    cfg: &NetConfig,
    extra: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let raw = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), raw_tensor(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut meta = extra.clone();
    meta.insert(FORMAT_KEY.to_string(), FORMAT_VALUE.to_string());
    meta.insert(
        CONFIG_KEY.to_string(),
        serde_json::to_string(cfg)
            .map_err(|e| Error::invalid("checkpoint::save", e.to_string()))?,
    );
    safetensors::serialize(raw.iter().map(|(k, r)| (k.as_str(), r)), Some(meta))
        .map_err(|e| Error::invalid("checkpoint::save", e.to_string()))
}

/// Saves every variable of `varmap` (parameters and BatchNorm buffers) with `cfg` in the metadata,
/// atomically, to `path`.
pub fn save(path: &Path, varmap: &VarMap, cfg: &NetConfig) -> Result<()> {
    save_with_metadata(path, varmap, cfg, &HashMap::new())
}

/// [`save`] with additional metadata entries (e.g. label names, training epoch).
pub fn save_with_metadata(
    path: &Path,
    varmap: &VarMap,
    cfg: &NetConfig,
    extra: &HashMap<String, String>,
) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = {
        let data = varmap.data().lock().map_err(|_| Error::Checkpoint {
            msg: "variable map lock poisoned".into(),
        })?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let bytes = to_safetensors_bytes(&tensors, cfg, extra)?;
    write_atomic(path, &bytes)
}
