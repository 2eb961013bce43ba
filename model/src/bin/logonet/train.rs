//! `logonet train`: train or fine-tune a segmentation network on a labelled dataset folder and write a model
//! bundle. The defaults are the reference's BTCV recipe (AdamW 1e-4 / 1e-5, warm-up cosine 50 / 5000 epochs,
//! 2 volumes × 5 crops of 96³ per step, validation every epoch with a 96³ sliding window).

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use logonet::infer::{Bundle, BundleMeta, Preprocess, bundle::FORMAT_VERSION};
use logonet::job::CancelToken;
use logonet::nets::NetConfig;
use logonet::train::checkpoint::{self, Checkpoint};
use logonet::train::data::prepare_case;
use logonet::train::trainer::{ScheduleKind, TrainConfig, TrainEvent, Trainer};
use logonet::train::{AugmentConfig, LoaderConfig, Sample};
use logonet::volume::LabelTable;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `logonet train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset folder (MSD/nnU-Net `dataset.json`, BTCV `img*/label*`, or `*_image`/`*_label` pairs).
    #[arg(long)]
    pub data: PathBuf,
    /// Network: logonet-tiny, logonet-s, logonet-l, ulkanet-tiny, ulkanet-s, ulkanet-l (or `tiny` = logonet-tiny).
    #[arg(long, default_value = "logonet-s")]
    pub model: String,
    /// Output folder: model.safetensors (bundle), checkpoint.safetensors, train_log.jsonl, train_log.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Epochs (reference 5000).
    #[arg(long, default_value_t = 5000)]
    pub epochs: usize,
    /// Warm-up epochs of the warm-up cosine schedule (reference 50).
    #[arg(long, default_value_t = 50)]
    pub warmup_epochs: usize,
    /// Learning-rate schedule: warmup-cosine, or constant (the reference's fine-tuning `--lrschedule none`).
    #[arg(long, default_value = "warmup-cosine")]
    pub schedule: String,
    /// Volumes per step (reference 2 for LoGoNet-S).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Random crops per volume (reference 5).
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Crop and sliding-window size: `N` (a cube, reference 96) or `X,Y,Z` (X = Y when rotations are on);
    /// each a multiple of the network's input multiple (32 for the presets). Smaller volumes are zero-padded.
    #[arg(long, default_value = "96")]
    pub crop: String,
    /// Learning rate (reference 1e-4; 2e-4 for fine-tuning).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// AdamW weight decay (reference 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f64,
    /// Validate every N epochs (0 = never).
    #[arg(long, default_value_t = 1)]
    pub val_every: usize,
    /// Validation cases held out from the end of the case list (when --val-data is not given).
    #[arg(long, default_value_t = 1)]
    pub val_cases: usize,
    /// A separate labelled dataset folder for validation (then --data is used whole for training).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Wall-clock budget in minutes: stop at the end of the first epoch past it (checkpoint written; the
    /// bundle is the best validated model, or the last weights).
    #[arg(long)]
    pub time_limit_min: Option<f64>,
    /// Turn the random flips, rotations and intensity changes off (crops only).
    #[arg(long)]
    pub no_augment: bool,
    /// Optimizer steps per epoch (default: one pass over the training volumes).
    #[arg(long)]
    pub steps_per_epoch: Option<usize>,
    /// Continue the run in --out from its checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Fine-tune from a model bundle, a reference state dict, a `logonet pretrain` checkpoint (its projection
    /// head `pre_train_proj.*` is dropped) or a `logonet train` checkpoint (.safetensors, or a folder holding
    /// one); tensors whose shape differs (the output head when the class count changes) are re-initialised.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Freeze every weight loaded with --init (the reference's `--freeze yes`).
    #[arg(long)]
    pub freeze: bool,
    /// Number of classes including background (default: largest label value in the data + 1).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Preprocessing: ct (RAS, 1.5×1.5×2 mm, −175..250 HU → 0..1) or mri (RAS, native spacing, z-score).
    #[arg(long, default_value = "ct")]
    pub recipe: String,
    /// Target voxel spacing in mm overriding the recipe's (e.g. `--spacing 3 3 2.5` for a small, fast model).
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"])]
    pub spacing: Option<Vec<f64>>,
    /// Seed of initialisation-independent randomness (crops, augmentation, case order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed the network's random initialisation too (reproducible runs; default: unseeded).
    #[arg(long)]
    pub init_seed: Option<u64>,
    /// Background loader threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Train on CUDA device N (needs a `cuda` build).
    #[arg(long)]
    pub cuda: Option<usize>,
}

fn device(cuda: Option<usize>) -> anyhow::Result<candle_core::Device> {
    Ok(match cuda {
        Some(i) => candle_core::Device::new_cuda(i).context("cannot open the CUDA device")?,
        None => candle_core::Device::Cpu,
    })
}

fn recipe(name: &str) -> anyhow::Result<Preprocess> {
    Ok(match name {
        "ct" => Preprocess::btcv_ct(),
        "mri" => Preprocess::mri(None),
        other => anyhow::bail!("unknown --recipe '{other}' (ct or mri)"),
    })
}

/// Loads and preprocesses the labelled cases of a dataset folder, with their label table.
fn load_folder(dir: &Path, recipe: &Preprocess) -> anyhow::Result<(Vec<Sample>, LabelTable)> {
    let ds = logonet::volume::dataset::discover(dir)?;
    let labelled: Vec<_> = ds.cases.iter().filter(|c| c.label.is_some()).collect();
    anyhow::ensure!(
        !labelled.is_empty(),
        "no labelled case found in {}",
        dir.display()
    );
    let bar = ProgressBar::new(labelled.len() as u64);
    bar.set_message(format!("preprocessing {}", dir.display()));
    let mut samples = Vec::with_capacity(labelled.len());
    for case in &labelled {
        let image = logonet::volume::io::load_image(&case.image)?;
        let label_path = case.label.as_ref().context("label")?;
        let label = logonet::volume::io::load_labels(label_path)?;
        samples.push(
            prepare_case(&image, &label, recipe).with_context(|| format!("case {}", case.id))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((samples, ds.labels))
}

/// Loads and preprocesses the dataset: (train, validation, label table).
fn load_cases(
    args: &Args,
    recipe: &Preprocess,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>, LabelTable)> {
    let (mut samples, labels) = load_folder(&args.data, recipe)?;
    if let Some(v) = &args.val_data {
        let (val, _) = load_folder(v, recipe)?;
        return Ok((samples, val, labels));
    }
    let n_val = if samples.len() > 1 && args.val_every > 0 {
        args.val_cases.min(samples.len() - 1)
    } else {
        0
    };
    let val = samples.split_off(samples.len() - n_val);
    Ok((samples, val, labels))
}

/// `N` or `X,Y,Z`.
fn parse_crop(s: &str) -> anyhow::Result<[usize; 3]> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--crop '{s}' is not N or X,Y,Z"))?;
    match v.as_slice() {
        [n] if *n > 0 => Ok([*n; 3]),
        [x, y, z] if *x > 0 && *y > 0 && *z > 0 => Ok([*x, *y, *z]),
        _ => anyhow::bail!("--crop '{s}' is not N or X,Y,Z (positive)"),
    }
}

/// Writes the bundle of the trainer's current weights.
fn write_bundle(
    t: &Trainer,
    path: &Path,
    labels: &LabelTable,
    recipe: &Preprocess,
    notes: String,
) -> anyhow::Result<()> {
    let meta = BundleMeta {
        format_version: FORMAT_VERSION,
        name: format!("{} (logonet train)", t.net_config().describe()),
        net: t.net_config().clone(),
        labels: labels.clone(),
        preprocess: recipe.clone(),
        sliding_window: t.config().sliding_window.clone(),
        notes,
    };
    let tensors = checkpoint::state_dict(t.varmap())?;
    Bundle { meta, tensors }.save(path)?;
    Ok(())
}

/// Prints a line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}

/// Runs `logonet train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dev = device(args.cuda)?;
    let mut recipe = recipe(&args.recipe)?;
    if let Some(s) = &args.spacing {
        anyhow::ensure!(
            s.len() == 3 && s.iter().all(|&d| d.is_finite() && d > 0.0),
            "--spacing needs three positive values, got {s:?}"
        );
        recipe.spacing_mm = Some([s[0], s[1], s[2]]);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let (train, val, mut labels) = load_cases(&args, &recipe)?;
    let max_label = train
        .iter()
        .chain(&val)
        .flat_map(|s| s.label.iter())
        .copied()
        .max()
        .unwrap_or(0) as usize;
    let classes = args.classes.unwrap_or(max_label + 1);
    anyhow::ensure!(
        classes > max_label,
        "--classes {classes} but the data has label {max_label}"
    );
    if labels.labels.is_empty() {
        labels = if classes == 14 {
            LabelTable::btcv()
        } else {
            LabelTable::numbered(classes as u16 - 1)
        };
    }

    let crop = parse_crop(&args.crop)?;
    let ckpt_path = args.out.join("checkpoint.safetensors");
    let mut notes = Vec::new();
    let mut trainer = if args.resume {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        let mut t = Trainer::resume(&ckpt, &dev)?;
        t.set_epochs(args.epochs);
        notes.push(format!(
            "resumed at epoch {} from {}",
            t.next_epoch(),
            ckpt_path.display()
        ));
        t
    } else {
        let net = NetConfig::from_name(&args.model)?
            .with_out_channels(classes)
            .with_in_channels(1);
        let multiple = net.input_multiple();
        anyhow::ensure!(
            crop.iter().all(|c| c % multiple == 0),
            "--crop {crop:?}: every size must be a multiple of {multiple} for {}",
            net.describe()
        );
        anyhow::ensure!(
            args.no_augment || crop[0] == crop[1],
            "--crop {crop:?}: rotations in the (X, Y) plane need X = Y (or --no-augment)"
        );
        let schedule = match args.schedule.as_str() {
            "warmup-cosine" | "warmup_cosine" => ScheduleKind::WarmupCosine,
            "constant" | "none" => ScheduleKind::Constant,
            other => anyhow::bail!("unknown --schedule '{other}' (warmup-cosine or constant)"),
        };
        let cfg = TrainConfig {
            epochs: args.epochs,
            warmup_epochs: args.warmup_epochs,
            schedule,
            optimizer: logonet::train::AdamWConfig {
                lr: args.lr,
                weight_decay: args.weight_decay,
                ..Default::default()
            },
            loader: LoaderConfig {
                batch_volumes: args.batch,
                augment: {
                    let a = AugmentConfig {
                        crop_size: crop,
                        num_samples: args.samples,
                        ..Default::default()
                    };
                    if args.no_augment { a.crops_only() } else { a }
                },
                seed: args.seed,
                workers: args.workers,
                prefetch: 2,
                steps_per_epoch: args.steps_per_epoch,
            },
            val_every: args.val_every,
            sliding_window: logonet::infer::SlidingWindowConfig {
                roi_size: crop,
                ..Default::default()
            },
            freeze_loaded: args.freeze,
            ..Default::default()
        };
        let mut t = Trainer::new(&net, cfg, &dev)?;
        if let Some(seed) = args.init_seed {
            t.seed_init(seed)?;
        }
        notes.push(format!(
            "{} training / {} validation cases, crop {crop:?}",
            train.len(),
            val.len()
        ));
        if let Some(init) = &args.init {
            let w = checkpoint::read_initial_weights(init)?;
            let (weights, what) = (w.tensors, w.source);
            let (report, note) = t
                .init_from(&weights)
                .with_context(|| format!("--init {}", init.display()))?;
            notes.push(format!(
                "initialised {} of {} network tensors from the {what} {}",
                report.loaded.len(),
                report.loaded.len() + report.missing.len() + report.shape_mismatch.len(),
                init.display()
            ));
            notes.extend(note);
            if !report.unused.is_empty() {
                notes.push(format!(
                    "{} tensors of {} are not in the network (ignored), e.g. {}",
                    report.unused.len(),
                    init.display(),
                    report
                        .unused
                        .iter()
                        .take(4)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if args.freeze {
                notes.push(format!("{} loaded tensors frozen", report.loaded.len()));
            }
        }
        t
    };

    if let Some(m) = args.time_limit_min {
        anyhow::ensure!(
            m.is_finite() && m > 0.0,
            "--time-limit-min must be positive"
        );
        trainer.set_deadline(Some(started + std::time::Duration::from_secs_f64(m * 60.0)));
    }

    // The trainer runs on its own thread; this one draws progress and writes the logs.
    let (tx, rx) = crossbeam_channel::unbounded::<TrainEvent>();
    for n in notes {
        let _ = tx.send(TrainEvent::Note { message: n });
    }
    let cancel = CancelToken::new();
    let out = args.out.clone();
    let (labels_t, recipe_t) = (labels.clone(), recipe.clone());
    let worker = std::thread::spawn(move || -> anyhow::Result<Trainer> {
        let best_path = out.join("best_model.safetensors");
        let mut save_best = |t: &Trainer, epoch: usize| -> logonet::Result<()> {
            write_bundle(
                t,
                &best_path,
                &labels_t,
                &recipe_t,
                format!("best validation Dice at epoch {epoch}"),
            )
            .map_err(|e| logonet::Error::Checkpoint {
                msg: format!("{e:#}"),
            })
        };
        trainer.run(Arc::new(train), &val, &out, &tx, &cancel, &mut save_best)?;
        Ok(trainer)
    });

    let jsonl_path = args.out.join("train_log.jsonl");
    let csv_path = args.out.join("train_log.csv");
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("cannot open {}", p.display()))
    };
    let mut jsonl = open(&jsonl_path)?;
    let csv_new = !csv_path.exists();
    let mut csv = open(&csv_path)?;
    if csv_new {
        writeln!(
            csv,
            "event,epoch,step,global_step,loss,lr,step_secs,mean_dice"
        )?;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>28} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut steps_per_epoch = 0;
    for ev in rx {
        writeln!(jsonl, "{}", serde_json::to_string(&ev)?)?;
        match &ev {
            TrainEvent::Started {
                net,
                trainable_params,
                start_epoch,
                epochs,
                steps_per_epoch: s,
                cases,
            } => {
                steps_per_epoch = *s;
                bar.set_length(((epochs - start_epoch) * s) as u64);
                say(
                    &bar,
                    format!(
                        "{net}: {trainable_params} trainable parameters, {} train / {} validation cases, {s} steps per epoch",
                        cases.0, cases.1
                    ),
                );
            }
            TrainEvent::Note { message } => say(&bar, message),
            TrainEvent::Step {
                epoch,
                step,
                global_step,
                loss,
                lr,
                step_secs,
                ..
            } => {
                writeln!(
                    csv,
                    "step,{epoch},{step},{global_step},{loss},{lr},{step_secs},"
                )?;
                bar.inc(1);
                bar.set_message(format!("epoch {epoch} loss {loss:.4} lr {lr:.2e}"));
                let _ = steps_per_epoch;
            }
            TrainEvent::Epoch {
                epoch,
                mean_loss,
                lr,
                secs,
            } => {
                writeln!(csv, "epoch,{epoch},,,{mean_loss},{lr},,")?;
                if bar.is_hidden() {
                    eprintln!("epoch {epoch}: mean loss {mean_loss:.4}, lr {lr:.2e}, {secs:.1} s");
                }
            }
            TrainEvent::Validation {
                epoch,
                mean_dice,
                best,
                ..
            } => {
                writeln!(csv, "validation,{epoch},,,,,,{mean_dice}")?;
                say(
                    &bar,
                    format!(
                        "epoch {epoch}: validation Dice {mean_dice:.4}{}",
                        if *best { " (best)" } else { "" }
                    ),
                );
            }
            TrainEvent::Saved { .. } => {}
            TrainEvent::Finished { best, epochs } => {
                say(
                    &bar,
                    match best {
                        Some((d, e)) => format!(
                            "finished {epochs} epochs; best validation Dice {d:.4} at epoch {e}"
                        ),
                        None => format!("finished {epochs} epochs"),
                    },
                );
            }
        }
    }
    bar.finish_and_clear();
    let trainer = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the training thread panicked"))??;

    let model_path = args.out.join("model.safetensors");
    let best_path = args.out.join("best_model.safetensors");
    if best_path.exists() {
        std::fs::copy(&best_path, &model_path)
            .with_context(|| format!("cannot write {}", model_path.display()))?;
    } else {
        write_bundle(
            &trainer,
            &model_path,
            &labels,
            &recipe,
            format!("last epoch {}", trainer.next_epoch()),
        )?;
    }
    eprintln!("wrote {}", model_path.display());
    Ok(())
}
