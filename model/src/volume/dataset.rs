//! Finding image/label pairs on disk: Medical Segmentation Decathlon and nnU-Net folders (`dataset.json`,
//! `imagesTr/`, `labelsTr/`), BTCV (`img0001.nii.gz` / `label0001.nii.gz`, optionally in `img/` and `label/`),
//! and plain folders of `*_image.nii.gz` / `*_label.nii.gz`.

use super::io::is_nifti_path;
use super::labels::{LabelInfo, LabelTable, default_color};
use super::nifti::read_info;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which layout a dataset folder has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    /// Medical Segmentation Decathlon: `dataset.json` lists `training` pairs.
    Msd,
    /// nnU-Net v2: `dataset.json` with `channel_names`; `imagesTr/CASE_0000.nii.gz`, `labelsTr/CASE.nii.gz`.
    NnUnet,
    /// BTCV: `imgNNNN.nii.gz` with `labelNNNN.nii.gz`.
    Btcv,
    /// A folder of `CASE_image.nii.gz` with `CASE_label.nii.gz`.
    Paired,
}

/// One case: an image and, for training cases, its label map.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Case {
    /// Case identifier (file stem without the image/label markers).
    pub id: String,
    /// The image file.
    pub image: PathBuf,
    /// The label file, if there is one.
    pub label: Option<PathBuf>,
}

/// A dataset found on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The folder.
    pub root: PathBuf,
    /// Its layout.
    pub kind: DatasetKind,
    /// Cases sorted by id.
    pub cases: Vec<Case>,
    /// Label names (from `dataset.json`, BTCV's 13 organs, or empty).
    pub labels: LabelTable,
}

fn strip_nifti_ext(name: &str) -> Option<&str> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".nii.gz") {
        Some(&name[..name.len() - 7])
    } else if lower.ends_with(".nii") {
        Some(&name[..name.len() - 4])
    } else {
        None
    }
}

fn list_nifti(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list folder", e, dir))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_nifti_path(p))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("._"))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn table_from_json(labels: &serde_json::Value) -> LabelTable {
    let mut entries: Vec<LabelInfo> = Vec::new();
    if let Some(map) = labels.as_object() {
        for (k, v) in map {
            // MSD: {"1": "spleen"}; nnU-Net v2: {"spleen": 1}.
            let (value, name) = match (k.parse::<u16>(), v) {
                (Ok(n), serde_json::Value::String(s)) => (n, s.clone()),
                (_, v) if v.as_u64().is_some() => (v.as_u64().unwrap_or(0) as u16, k.clone()),
                _ => continue,
            };
            if value != 0 {
                entries.push(LabelInfo {
                    value,
                    name,
                    color: default_color(value),
                });
            }
        }
    }
    entries.sort_by_key(|l| l.value);
    LabelTable { labels: entries }
}

/// Finds the cases in `root` (any of the supported layouts).
pub fn discover(root: &Path) -> Result<Dataset> {
    if !root.is_dir() {
        return Err(Error::format("not a folder", root));
    }
    let json_path = root.join("dataset.json");
    if json_path.is_file() {
        return discover_json(root, &json_path);
    }
    // BTCV: in the folder itself or in img/ + label/ (or imagesTr/ + labelsTr/).
    for (img_dir, lab_dir) in [
        (root.to_path_buf(), root.to_path_buf()),
        (root.join("img"), root.join("label")),
        (root.join("imagesTr"), root.join("labelsTr")),
    ] {
        if !img_dir.is_dir() {
            continue;
        }
        let mut cases = Vec::new();
        for p in list_nifti(&img_dir)? {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(stem) = strip_nifti_ext(&name) else {
                continue;
            };
            let Some(num) = stem.strip_prefix("img") else {
                continue;
            };
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let label = [".nii.gz", ".nii"]
                .iter()
                .map(|e| lab_dir.join(format!("label{num}{e}")))
                .find(|p| p.is_file());
            cases.push(Case {
                id: num.to_string(),
                image: p.clone(),
                label,
            });
        }
        if !cases.is_empty() {
            return Ok(Dataset {
                root: root.to_path_buf(),
                kind: DatasetKind::Btcv,
                cases,
                labels: LabelTable::btcv(),
            });
        }
    }
    // Paired: CASE_image / CASE_label.
    let files = list_nifti(root)?;
    let mut by_id: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for p in &files {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(stem) = strip_nifti_ext(&name) else {
            continue;
        };
        if let Some(id) = stem.strip_suffix("_image") {
            by_id.entry(id.to_string()).or_default().0 = Some(p.clone());
        } else if let Some(id) = stem.strip_suffix("_label") {
            by_id.entry(id.to_string()).or_default().1 = Some(p.clone());
        }
    }
    let cases: Vec<Case> = by_id
        .into_iter()
        .filter_map(|(id, (img, lab))| {
            img.map(|image| Case {
                id,
                image,
                label: lab,
            })
        })
        .collect();
    if cases.is_empty() {
        return Err(Error::format(
            "no dataset found (no dataset.json, imgNNNN.nii.gz or *_image.nii.gz files)",
            root,
        ));
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        kind: DatasetKind::Paired,
        cases,
        labels: LabelTable::default(),
    })
}

fn discover_json(root: &Path, json_path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(json_path)
        .map_err(|e| Error::io("cannot read dataset.json", e, json_path))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(format!("invalid JSON ({e})"), json_path))?;
    let labels = json.get("labels").map(table_from_json).unwrap_or_default();
    let resolve = |rel: &str| -> PathBuf {
        let rel = rel.strip_prefix("./").unwrap_or(rel);
        root.join(rel)
    };
    if let Some(training) = json.get("training").and_then(|t| t.as_array()) {
        let mut cases = Vec::new();
        for entry in training {
            let Some(img) = entry.get("image").and_then(|v| v.as_str()) else {
                continue;
            };
            let image = resolve(img);
            let label = entry.get("label").and_then(|v| v.as_str()).map(resolve);
            let name = image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = strip_nifti_ext(&name).unwrap_or(&name).to_string();
            if !image.is_file() {
                // MSD lists `imagesTr/x.nii.gz` while some copies hold `imagesTr/x_0000.nii.gz` (nnU-Net style).
                let alt = image.with_file_name(format!("{id}_0000.nii.gz"));
                if alt.is_file() {
                    cases.push(Case {
                        id,
                        image: alt,
                        label,
                    });
                    continue;
                }
                return Err(Error::format(
                    format!("dataset.json lists a missing image ({})", image.display()),
                    json_path,
                ));
            }
            cases.push(Case { id, image, label });
        }
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        return Ok(Dataset {
            root: root.to_path_buf(),
            kind: DatasetKind::Msd,
            cases,
            labels,
        });
    }
    // nnU-Net v2: imagesTr/CASE_0000.nii.gz (first channel), labelsTr/CASE.nii.gz.
    let ending = json
        .get("file_ending")
        .and_then(|v| v.as_str())
        .unwrap_or(".nii.gz")
        .to_string();
    let img_dir = root.join("imagesTr");
    let mut cases = Vec::new();
    if img_dir.is_dir() {
        for p in list_nifti(&img_dir)? {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(stem) = strip_nifti_ext(&name) else {
                continue;
            };
            let Some(id) = stem.strip_suffix("_0000") else {
                continue;
            };
            let lab = root.join("labelsTr").join(format!("{id}{ending}"));
            cases.push(Case {
                id: id.to_string(),
                image: p.clone(),
                label: lab.is_file().then_some(lab),
            });
        }
    }
    if cases.is_empty() {
        return Err(Error::format(
            "dataset.json has no `training` list and imagesTr/ has no CASE_0000 images",
            json_path,
        ));
    }
    Ok(Dataset {
        root: root.to_path_buf(),
        kind: DatasetKind::NnUnet,
        cases,
        labels,
    })
}

/// A case whose image and label grids disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct GridMismatch {
    /// The case.
    pub id: String,
    /// What differs.
    pub msg: String,
}

/// Checks (from the headers only) that every case's label map has the image's dims and affine (within
/// `tol_mm`). Unreadable files are reported as mismatches too.
pub fn check_grids(ds: &Dataset, tol_mm: f64) -> Vec<GridMismatch> {
    let mut out = Vec::new();
    for c in &ds.cases {
        let Some(lab) = &c.label else { continue };
        match (read_info(&c.image), read_info(lab)) {
            (Ok(a), Ok(b)) => {
                if a.dims != b.dims {
                    out.push(GridMismatch {
                        id: c.id.clone(),
                        msg: format!("image dims {:?}, label dims {:?}", a.dims, b.dims),
                    });
                } else {
                    let d = a.ras_from_ijk.max_abs_diff(&b.ras_from_ijk);
                    if d > tol_mm {
                        out.push(GridMismatch {
                            id: c.id.clone(),
                            msg: format!("affines differ by {d:.4} mm"),
                        });
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => out.push(GridMismatch {
                id: c.id.clone(),
                msg: e.to_string(),
            }),
        }
    }
    out
}
