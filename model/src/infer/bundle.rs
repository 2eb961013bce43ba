//! Model bundles: one `.safetensors` file holding everything needed to segment a volume.
//!
//! * the tensors: the network's state dict under the reference PyTorch names (BatchNorm running statistics
//!   included, `num_batches_tracked` as I64), so a bundle is also a plain reference checkpoint;
//! * the safetensors header metadata key `logonet.bundle`: JSON [`BundleMeta`] with the architecture and its
//!   configuration, the label table (names and colours), the preprocessing recipe (orientation, target
//!   spacing, intensity transform) and the sliding-window settings.
//!
//! A directory holding `model.safetensors` is accepted wherever a bundle path is.

use super::sliding_window::SlidingWindowConfig;
use crate::nets::{AnyNet, NetConfig, checkpoint};
use crate::volume::LabelTable;
use crate::volume::orient;
use crate::volume::transforms::PreprocessConfig;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata key under which the bundle description is stored.
pub const META_KEY: &str = "logonet.bundle";
/// The current bundle format version.
pub const FORMAT_VERSION: u32 = 1;

/// Intensity normalisation applied after resampling: the volume module's (MONAI `ScaleIntensityRange`,
/// `NormalizeIntensity`, or none).
pub use crate::volume::transforms::Intensity;

/// How a volume is prepared for the network (MONAI test transforms of the reference pipeline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Target orientation axcodes ("RAS", "LPS", ...).
    pub orientation: String,
    /// Target voxel spacing in mm (MONAI `Spacingd` pixdim); `None` keeps the input spacing.
    pub spacing_mm: Option<[f64; 3]>,
    /// Intensity normalisation.
    pub intensity: Intensity,
}

impl Preprocess {
    /// The BTCV CT recipe of the paper: RAS, 1.5 × 1.5 × 2.0 mm, −175..250 HU → 0..1 clipped.
    pub fn btcv_ct() -> Self {
        Self {
            orientation: "RAS".into(),
            spacing_mm: Some([1.5, 1.5, 2.0]),
            intensity: Intensity::ScaleRange {
                a_min: -175.0,
                a_max: 250.0,
                b_min: 0.0,
                b_max: 1.0,
                clip: true,
            },
        }
    }

    /// The volume module's preprocessing chain for this recipe (no foreground crop: the whole volume is
    /// segmented).
    pub fn to_config(&self) -> Result<PreprocessConfig> {
        Ok(PreprocessConfig {
            orientation: Some(orient::parse_code(&self.orientation)?),
            spacing_mm: self.spacing_mm,
            intensity: self.intensity.clone(),
            crop_foreground: false,
        })
    }

    /// An MRI recipe: RAS, the given spacing, z-score on non-zero voxels.
    pub fn mri(spacing_mm: Option<[f64; 3]>) -> Self {
        Self {
            orientation: "RAS".into(),
            spacing_mm,
            intensity: Intensity::ZScore { nonzero: true },
        }
    }
}

/// The JSON description stored in a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Bundle format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// A short name ("LoGoNet-S BTCV").
    pub name: String,
    /// The network configuration (`{"arch": "logonet", ...}`).
    pub net: NetConfig,
    /// Label names and colours (background, value 0, not listed).
    pub labels: LabelTable,
    /// Preprocessing recipe.
    pub preprocess: Preprocess,
    /// Default sliding-window settings.
    pub sliding_window: SlidingWindowConfig,
    /// Free-form provenance (training data, source checkpoint, date).
    #[serde(default)]
    pub notes: String,
}

/// A model bundle: metadata plus the state dict (CPU tensors).
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The description.
    pub meta: BundleMeta,
    /// Tensors under the reference state-dict names.
    pub tensors: HashMap<String, Tensor>,
}

/// Resolves a bundle path: a file, or a directory containing `model.safetensors`.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    }
}

impl Bundle {
    /// Reads a bundle.
    pub fn load(path: &Path) -> Result<Self> {
        let path = resolve_path(path);
        let bytes =
            std::fs::read(&path).map_err(|e| Error::io("cannot read model bundle", e, &path))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(format!("not a safetensors file ({e})"), &path))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                Error::format(
                    format!("no '{META_KEY}' metadata: not a LoGoNet bundle"),
                    &path,
                )
            })?;
        let meta: BundleMeta = serde_json::from_str(json)
            .map_err(|e| Error::format(format!("bad bundle metadata ({e})"), &path))?;
        if meta.format_version > FORMAT_VERSION {
            return Err(Error::format(
                format!(
                    "bundle format {} is newer than this program ({FORMAT_VERSION})",
                    meta.format_version
                ),
                &path,
            ));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::format(format!("bad tensors ({e})"), &path))?;
        Ok(Self { meta, tensors })
    }

    /// Writes the bundle atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::error::write_atomic(&resolve_path(path), &bytes)
    }

    /// The bundle as safetensors bytes: a `nets::checkpoint` file (config under `logonet.config`) plus the
    /// bundle description under [`META_KEY`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_string(&self.meta)
            .map_err(|e| Error::invalid("Bundle::save", format!("cannot encode metadata: {e}")))?;
        let tensors = self
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        checkpoint::to_safetensors_bytes(
            &tensors,
            &self.meta.net,
            &HashMap::from([(META_KEY.to_string(), json)]),
        )
    }

    /// Imports a reference PyTorch state dict (`.pt/.pth` or `.safetensors`, reference key names) or one of our
    /// checkpoints as a bundle, with the architecture read from the metadata or inferred from the tensors, and
    /// the paper's BTCV CT recipe, labels and sliding-window settings (edit `meta` before saving to change them).
    pub fn import_checkpoint(path: &Path, name: &str) -> Result<Self> {
        let tensors = checkpoint::read_state_dict(path)?;
        let net = match checkpoint::read_config(path)? {
            Some(c) => c,
            None => checkpoint::infer_config(&tensors)
                .map_err(|e| Error::format(e.to_string(), path))?,
        };
        let meta = BundleMeta {
            format_version: FORMAT_VERSION,
            name: name.to_string(),
            net,
            labels: LabelTable::btcv(),
            preprocess: Preprocess::btcv_ct(),
            sliding_window: SlidingWindowConfig::default(),
            notes: format!("imported from {}", path.display()),
        };
        let bundle = Self { meta, tensors };
        // Fail now, not at inference time, if the tensors do not fit the network.
        bundle
            .build_net(&Device::Cpu)
            .map_err(|e| Error::format(e.to_string(), path))?;
        Ok(bundle)
    }

    /// Builds the network with the bundle's weights on `device` (every variable must be present).
    pub fn build_net(&self, device: &Device) -> Result<AnyNet> {
        let loaded = checkpoint::new_net(&self.meta.net, device)?;
        checkpoint::load_into_varmap(&loaded.varmap, &self.tensors, true)?;
        Ok(loaded.net)
    }

    /// Number of classes the network predicts (background included), from the label table.
    pub fn num_classes(&self) -> usize {
        self.meta
            .labels
            .labels
            .iter()
            .map(|l| l.value as usize)
            .max()
            .unwrap_or(0)
            + 1
    }
}
