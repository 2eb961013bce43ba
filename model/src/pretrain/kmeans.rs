//! k-means pseudo-labels for pre-training: many independent mini-batch k-means clusterers on flattened 2-D
//! slices (reference `clustering/kmeans_learning.py`: scikit-learn `MiniBatchKMeans`, k-means++ init, k drawn
//! uniformly from 80..500, up to 80 clusterers used).
//!
//! Features are whole slices along the **last** spatial axis of a crop `[X, Y, Z]`: slice `s` is the X×Y plane
//! `crop[.., .., s]` flattened in C order (`x * Y + y`), so a 96³ crop gives 96 vectors of 9,216 values. CT is
//! scaled −1000..1000 HU → 0..1 (clipped) before, as in the reference transforms ([`scale_ct`]).
//!
//! Speed (see `../shared/notes/gui-stack.md`): linfa's own k-means++ is O(k² n d) and its assignment step is
//! pairwise. Here seeding is the O(k n d) k-means++ ([`kmeans_plus_plus`]) and every assignment is one GEMM,
//! `‖x‖² − 2 x·c + ‖c‖²` (candle matmul). The mini-batch update is scikit-learn's (each centre is the running
//! mean of every point ever assigned to it, counts included). [`fit_linfa`] runs the same seeding through
//! `linfa-clustering` (`KMeansInit::Precomputed`, `n_runs(1)`, mini-batches via `fit_with`); the bank uses it
//! with [`KMeansBackend::Linfa`] (`logonet pretrain --kmeans-backend linfa`). Labelling every slice is the
//! GEMM assignment with either backend.

use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use ndarray::{Array2, ArrayView2, Axis};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// Scales CT intensities like the reference's `ScaleIntensityRange(-1000..1000 -> 0..1, clip)`.
pub fn scale_ct(hu: f32) -> f32 {
    ((hu + 1000.0) / 2000.0).clamp(0.0, 1.0)
}

/// Settings of the clusterer bank; defaults follow the reference where it is affordable.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KMeansConfig {
    /// Number of independent clusterers (the paper uses 1, 20, 40 or 80).
    pub n_clusterers: usize,
    /// Smallest k (inclusive); the reference draws k uniformly from 80..500.
    pub k_min: usize,
    /// Largest k (inclusive).
    pub k_max: usize,
    /// Fraction of all slices used to fit (a fresh random subset per clusterer).
    pub subset_fraction: f64,
    /// Mini-batch size (scikit-learn's `batch_size`; the reference's 20 is far too small for GEMM speed).
    pub batch_size: usize,
    /// Passes over the subset (scikit-learn's `max_iter`).
    pub max_epochs: usize,
    /// Stop after this many mini-batches without improvement of the smoothed batch inertia (0 = never).
    pub max_no_improvement: usize,
    /// Seed of everything random (k, subsets, seeding, batches).
    pub seed: u64,
    /// Which mini-batch loop fits each clusterer (both start from the same O(k n d) k-means++ seeding).
    #[serde(default)]
    pub backend: KMeansBackend,
}

/// The mini-batch k-means loop of a clusterer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KMeansBackend {
    /// [`fit_minibatch`]: scikit-learn's update with every assignment one GEMM (the default: fast at the
    /// d = 9,216 of 96×96 slices).
    #[default]
    Gemm,
    /// [`fit_linfa`]: `linfa-clustering`'s incremental k-means (`KMeansInit::Precomputed` seeds, `n_runs(1)`,
    /// one `fit_with` per mini-batch); its pairwise assignment makes it slower at large d.
    Linfa,
}

impl std::str::FromStr for KMeansBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gemm" => Ok(Self::Gemm),
            "linfa" => Ok(Self::Linfa),
            other => Err(Error::invalid(
                "KMeansBackend",
                format!("unknown k-means backend '{other}' (gemm, linfa)"),
            )),
        }
    }
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            n_clusterers: 20,
            k_min: 80,
            k_max: 500,
            subset_fraction: 0.1,
            batch_size: 1024,
            max_epochs: 20,
            max_no_improvement: 100,
            seed: 42,
            backend: KMeansBackend::Gemm,
        }
    }
}

/// Squared norms of the rows of `x` ([n, d]).
fn row_norms2(x: ArrayView2<f32>) -> Vec<f32> {
    x.axis_iter(Axis(0))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}

fn to_tensor(x: ArrayView2<f32>) -> Result<Tensor> {
    let (n, d) = x.dim();
    let data: Vec<f32> = match x.as_slice() {
        Some(s) => s.to_vec(),
        None => x.iter().copied().collect(),
    };
    Ok(Tensor::from_vec(data, (n, d), &Device::Cpu)?)
}

/// Nearest centre and squared distance for every row of `x` ([n, d]) against `centroids` ([k, d]), by GEMM:
/// `‖x‖² − 2 x·c + ‖c‖²`, in row blocks to bound memory.
pub fn assign(x: ArrayView2<f32>, centroids: ArrayView2<f32>) -> Result<(Vec<u32>, Vec<f32>)> {
    let (n, d) = x.dim();
    let (k, dc) = centroids.dim();
    if d != dc || k == 0 {
        return Err(Error::invalid(
            "kmeans::assign",
            format!("data [{n}, {d}] vs centroids [{k}, {dc}]"),
        ));
    }
    let c = to_tensor(centroids)?; // [k, d]
    let ct = c.t()?; // [d, k]
    let c2 = row_norms2(centroids);
    let x2 = row_norms2(x);
    let mut labels = Vec::with_capacity(n);
    let mut dists = Vec::with_capacity(n);
    let block = 2048;
    for start in (0..n).step_by(block) {
        let len = block.min(n - start);
        let xb = to_tensor(x.slice(ndarray::s![start..start + len, ..]))?; // [len, d]
        let dots = xb.matmul(&ct)?.to_vec2::<f32>()?; // [len, k]
        for (i, row) in dots.iter().enumerate() {
            let mut best = (0u32, f32::INFINITY);
            for (j, &dot) in row.iter().enumerate() {
                let dist = c2[j] - 2.0 * dot;
                if dist < best.1 {
                    best = (j as u32, dist);
                }
            }
            labels.push(best.0);
            dists.push((best.1 + x2[start + i]).max(0.0));
        }
    }
    Ok((labels, dists))
}

/// k-means++ seeding in O(k n d): one distance pass per new centre, each chosen with probability
/// proportional to its squared distance to the nearest centre so far (k ≤ n distinct picks).
pub fn kmeans_plus_plus(x: ArrayView2<f32>, k: usize, rng: &mut ChaCha8Rng) -> Result<Array2<f32>> {
    let (n, d) = x.dim();
    if k == 0 || k > n {
        return Err(Error::invalid(
            "kmeans_plus_plus",
            format!("cannot pick {k} centres from {n} points"),
        ));
    }
    let mut centres = Array2::<f32>::zeros((k, d));
    let first = rng.gen_range(0..n);
    centres.row_mut(0).assign(&x.row(first));
    let dist_to = |c: ndarray::ArrayView1<f32>| -> Vec<f32> {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .map(|i| {
                x.row(i)
                    .iter()
                    .zip(c.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
            })
            .collect()
    };
    let mut min_d = dist_to(centres.row(0));
    for j in 1..k {
        let total: f64 = min_d.iter().map(|&v| v as f64).sum();
        let pick = if total <= 0.0 {
            rng.gen_range(0..n) // all points coincide with centres: any point
        } else {
            let target = rng.r#gen::<f64>() * total;
            let mut acc = 0.0;
            let mut idx = n - 1;
            for (i, &v) in min_d.iter().enumerate() {
                acc += v as f64;
                if acc >= target && v > 0.0 {
                    idx = i;
                    break;
                }
            }
            idx
        };
        centres.row_mut(j).assign(&x.row(pick));
        let dj = dist_to(centres.row(j));
        for (m, v) in min_d.iter_mut().zip(dj) {
            *m = m.min(v);
        }
    }
    Ok(centres)
}

/// One fitted clusterer.
#[derive(Clone, Debug, PartialEq)]
pub struct Clusterer {
    /// Centres, [k, d].
    pub centroids: Array2<f32>,
    /// Inertia (sum of squared distances to the nearest centre) on the fitting subset.
    pub inertia: f64,
}

impl Clusterer {
    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.centroids.nrows()
    }
    /// Nearest-centre label of every row of `x` ([n, d]).
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<u32>> {
        Ok(assign(x, self.centroids.view())?.0)
    }
}

/// Mini-batch k-means on `x` ([n, d]) with k-means++ seeding, scikit-learn's update rule (per-centre counts,
/// no reassignment, `reassignment_ratio = 0` as in the reference) and early stopping on the smoothed batch
/// inertia. Returns the clusterer with its inertia on all of `x`.
pub fn fit_minibatch(
    x: ArrayView2<f32>,
    k: usize,
    cfg: &KMeansConfig,
    rng: &mut ChaCha8Rng,
    cancel: &CancelToken,
) -> Result<Clusterer> {
    let (n, d) = x.dim();
    let mut centroids = kmeans_plus_plus(x, k, rng)?;
    let mut counts = vec![0f64; k];
    let batch = cfg.batch_size.clamp(1, n);
    let steps = (cfg.max_epochs * n).div_ceil(batch).max(1);
    let (mut ewa, mut best, mut since_best) = (None::<f64>, f64::INFINITY, 0usize);
    let mut order: Vec<usize> = (0..n).collect();
    let mut pos = n;
    for _ in 0..steps {
        cancel.check()?;
        let mut idx = Vec::with_capacity(batch);
        while idx.len() < batch {
            if pos == n {
                rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
                pos = 0;
            }
            idx.push(order[pos]);
            pos += 1;
        }
        let xb = x.select(Axis(0), &idx); // [batch, d]
        let (labels, dists) = assign(xb.view(), centroids.view())?;
        let mut sums = Array2::<f32>::zeros((k, d));
        let mut batch_counts = vec![0f64; k];
        for (row, &l) in xb.axis_iter(Axis(0)).zip(&labels) {
            let mut s = sums.row_mut(l as usize);
            s += &row;
            batch_counts[l as usize] += 1.0;
        }
        for j in 0..k {
            if batch_counts[j] == 0.0 {
                continue;
            }
            let total = counts[j] + batch_counts[j];
            let old_w = (counts[j] / total) as f32;
            let new_w = (1.0 / total) as f32;
            let sum = sums.row(j).to_owned();
            let mut c = centroids.row_mut(j);
            c.zip_mut_with(&sum, |cv, &sv| *cv = *cv * old_w + sv * new_w);
            counts[j] = total;
        }
        let batch_inertia = dists.iter().map(|&v| v as f64).sum::<f64>() / batch as f64;
        let alpha = (batch as f64 * 2.0 / (n as f64 + 1.0)).min(1.0);
        let smoothed = ewa.map_or(batch_inertia, |e| e * (1.0 - alpha) + batch_inertia * alpha);
        ewa = Some(smoothed);
        if smoothed < best {
            best = smoothed;
            since_best = 0;
        } else {
            since_best += 1;
            if cfg.max_no_improvement > 0 && since_best >= cfg.max_no_improvement {
                break;
            }
        }
    }
    let (_, dists) = assign(x, centroids.view())?;
    let inertia = dists.iter().map(|&v| v as f64).sum();
    Ok(Clusterer { centroids, inertia })
}

/// The same seeding, then `linfa-clustering`'s mini-batch k-means (`KMeansInit::Precomputed`, `n_runs(1)`,
/// one `fit_with` call per mini-batch of `cfg.batch_size` rows drawn with replacement, `cfg.max_epochs` passes'
/// worth of batches). Slower at large d (linfa's pairwise distances); [`KMeansBackend::Linfa`] selects it.
pub fn fit_linfa(
    x: ArrayView2<f32>,
    k: usize,
    cfg: &KMeansConfig,
    rng: &mut ChaCha8Rng,
    cancel: &CancelToken,
) -> Result<Clusterer> {
    use linfa::prelude::*;
    use linfa_clustering::{IncrKMeansError, KMeans, KMeansInit};
    let n = x.nrows();
    let x64 = x.mapv(|v| v as f64);
    let seeds = kmeans_plus_plus(x, k, rng)?.mapv(|v| v as f64);
    let params = KMeans::params(k)
        .init_method(KMeansInit::Precomputed(seeds))
        .n_runs(1)
        .max_n_iterations(1)
        .tolerance(1e-12);
    let batch = cfg.batch_size.clamp(1, n);
    let steps = (cfg.max_epochs * n).div_ceil(batch).max(1);
    let mut model = None;
    for _ in 0..steps {
        cancel.check()?;
        let idx: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..n)).collect();
        let ds = DatasetBase::from(x64.select(Axis(0), &idx));
        model = match params.fit_with(model, &ds) {
            Ok(m) | Err(IncrKMeansError::NotConverged(m)) => Some(m),
            Err(e) => return Err(crate::Error::invalid("kmeans::fit_linfa", e.to_string())),
        };
    }
    let model =
        model.ok_or_else(|| crate::Error::invalid("kmeans::fit_linfa", "no batch was fitted"))?;
    let centroids = model.centroids().mapv(|v| v as f32);
    let (_, dists) = assign(x, centroids.view())?;
    Ok(Clusterer {
        centroids,
        inertia: dists.iter().map(|&v| v as f64).sum(),
    })
}

/// What is saved next to the centroids.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClustererMeta {
    /// Slice size `[X, Y]` the clusterers were fitted on (d = X·Y).
    pub slice_dims: [usize; 2],
    /// k of every clusterer.
    pub ks: Vec<usize>,
    /// Inertia of every clusterer on its fitting subset.
    pub inertias: Vec<f64>,
    /// Fitting subset size of every clusterer.
    pub subset_sizes: Vec<usize>,
    /// The settings used.
    pub config: KMeansConfig,
}

/// A bank of clusterers: one pseudo-label per slice and clusterer.
#[derive(Clone, Debug, PartialEq)]
pub struct ClustererBank {
    /// The clusterers.
    pub clusterers: Vec<Clusterer>,
    /// Their description.
    pub meta: ClustererMeta,
}

impl ClustererBank {
    /// Number of clusterers (C).
    pub fn len(&self) -> usize {
        self.clusterers.len()
    }
    /// Whether the bank is empty.
    pub fn is_empty(&self) -> bool {
        self.clusterers.is_empty()
    }
    /// Largest k (the head's class size must be at least this).
    pub fn max_k(&self) -> usize {
        self.clusterers.iter().map(Clusterer::k).max().unwrap_or(0)
    }

    /// Fits `cfg.n_clusterers` clusterers on `slices` ([n, d], one flattened slice per row), each with k
    /// uniform in `k_min..=k_max` (capped at its subset size) on its own random subset of
    /// `max(1, round(subset_fraction·n))` slices. Reports one progress unit per clusterer.
    pub fn fit(
        slices: ArrayView2<f32>,
        slice_dims: [usize; 2],
        cfg: &KMeansConfig,
        progress: &dyn Progress,
        cancel: &CancelToken,
    ) -> Result<Self> {
        let (n, d) = slices.dim();
        if d != slice_dims[0] * slice_dims[1] || n == 0 {
            return Err(Error::invalid(
                "ClustererBank::fit",
                format!("slices [{n}, {d}] vs slice size {slice_dims:?}"),
            ));
        }
        if cfg.k_min == 0 || cfg.k_min > cfg.k_max || cfg.n_clusterers == 0 {
            return Err(Error::invalid(
                "ClustererBank::fit",
                format!("need 1 <= k_min <= k_max and n_clusterers >= 1, got {cfg:?}"),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let subset = ((cfg.subset_fraction * n as f64).round() as usize).clamp(1, n);
        let mut clusterers = Vec::with_capacity(cfg.n_clusterers);
        let (mut ks, mut inertias) = (Vec::new(), Vec::new());
        for c in 0..cfg.n_clusterers {
            cancel.check()?;
            let k = rng.gen_range(cfg.k_min..=cfg.k_max).min(subset);
            let idx = rand::seq::index::sample(&mut rng, n, subset).into_vec();
            let xs = slices.select(Axis(0), &idx);
            let cl = match cfg.backend {
                KMeansBackend::Gemm => fit_minibatch(xs.view(), k, cfg, &mut rng, cancel)?,
                KMeansBackend::Linfa => fit_linfa(xs.view(), k, cfg, &mut rng, cancel)?,
            };
            ks.push(k);
            inertias.push(cl.inertia);
            clusterers.push(cl);
            progress.report(ProgressEvent {
                stage: "clustering".into(),
                done: c as u64 + 1,
                total: cfg.n_clusterers as u64,
            });
        }
        let meta = ClustererMeta {
            slice_dims,
            ks,
            inertias,
            subset_sizes: vec![subset; cfg.n_clusterers],
            config: cfg.clone(),
        };
        Ok(Self { clusterers, meta })
    }

    /// Pseudo-labels of the slices along the last axis of `crops` ([B, 1, X, Y, Z]): [B, Z, C] (I64).
    pub fn targets(&self, crops: &Tensor) -> Result<Tensor> {
        let (b, ch, nx, ny, nz) = crops.dims5()?;
        if ch != 1 || [nx, ny] != self.meta.slice_dims {
            return Err(Error::invalid(
                "ClustererBank::targets",
                format!(
                    "crops {:?} do not match slices {:?} of one channel",
                    crops.dims(),
                    self.meta.slice_dims
                ),
            ));
        }
        // [B, 1, X, Y, Z] -> [B, Z, X, Y] -> [B*Z, X*Y]
        let rows = crops
            .squeeze(1)?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((b * nz, nx * ny))?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        let x = Array2::from_shape_vec((b * nz, nx * ny), flat)
            .map_err(|e| Error::invalid("ClustererBank::targets", e.to_string()))?;
        let c = self.len();
        let mut out = vec![0i64; b * nz * c];
        for (ci, cl) in self.clusterers.iter().enumerate() {
            for (row, l) in cl.predict(x.view())?.into_iter().enumerate() {
                out[row * c + ci] = l as i64;
            }
        }
        Ok(Tensor::from_vec(out, (b, nz, c), crops.device())?)
    }

    /// Writes `centroids.safetensors` (`clusterer.{i}.centroids`, [k, d] F32) and `clusterers.json` (the
    /// meta) into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create folder", e, dir))?;
        let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (i, c) in self.clusterers.iter().enumerate() {
            let data: Vec<u8> = c.centroids.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes.push((
                format!("clusterer.{i}.centroids"),
                data,
                vec![c.k(), c.centroids.ncols()],
            ));
        }
        let views = bytes
            .iter()
            .map(|(name, data, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::invalid("ClustererBank::save", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let st = safetensors::serialize(views, None)
            .map_err(|e| Error::invalid("ClustererBank::save", e.to_string()))?;
        crate::error::write_atomic(&dir.join("centroids.safetensors"), &st)?;
        let json = serde_json::to_vec_pretty(&self.meta)
            .map_err(|e| Error::invalid("ClustererBank::save", e.to_string()))?;
        crate::error::write_atomic(&dir.join("clusterers.json"), &json)
    }

    /// Reads a bank written by [`ClustererBank::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("clusterers.json");
        let text = std::fs::read(&meta_path)
            .map_err(|e| Error::io("cannot read clusterer meta", e, &meta_path))?;
        let meta: ClustererMeta = serde_json::from_slice(&text)
            .map_err(|e| Error::format(format!("invalid clusterer meta: {e}"), &meta_path))?;
        let path = dir.join("centroids.safetensors");
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::format(format!("invalid centroids file: {e}"), &path))?;
        let d = meta.slice_dims[0] * meta.slice_dims[1];
        let mut clusterers = Vec::with_capacity(meta.ks.len());
        for (i, (&k, &inertia)) in meta.ks.iter().zip(&meta.inertias).enumerate() {
            let t = tensors
                .get(&format!("clusterer.{i}.centroids"))
                .ok_or_else(|| Error::format(format!("clusterer {i} is missing"), &path))?;
            if t.dims() != [k, d] {
                return Err(Error::format(
                    format!(
                        "clusterer {i} has shape {:?}, expected [{k}, {d}]",
                        t.dims()
                    ),
                    &path,
                ));
            }
            let flat = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let centroids = Array2::from_shape_vec((k, d), flat)
                .map_err(|e| Error::format(e.to_string(), &path))?;
            clusterers.push(Clusterer { centroids, inertia });
        }
        Ok(Self { clusterers, meta })
    }
}

/// Flattened slices along the last axis of a crop stored in C order over (x, y, z): [Z, X·Y].
pub fn crop_slices(crop: &[f32], dims: [usize; 3]) -> Result<Array2<f32>> {
    let [nx, ny, nz] = dims;
    if crop.len() != nx * ny * nz {
        return Err(Error::invalid(
            "crop_slices",
            format!("{} values for size {dims:?}", crop.len()),
        ));
    }
    let mut out = Array2::<f32>::zeros((nz, nx * ny));
    for (i, &v) in crop.iter().enumerate() {
        let z = i % nz;
        let xy = i / nz;
        out[[z, xy]] = v;
    }
    Ok(out)
}
