//! `logonet`: the command line of LoGoNet Studio. It only parses arguments and calls the library.

mod bench;
mod bench_model;
mod check;
mod convert;
mod device;
mod eval;
mod info;
mod inspect;
mod phantom;
mod predict;
mod pretrain;
mod progress;
mod train;

use clap::{Parser, Subcommand};

/// Keeps freed activation buffers for the next layer and window (`logonet::alloc`).
#[global_allocator]
static ALLOC: logonet::alloc::BlockCache = logonet::alloc::BlockCache::new();

/// LoGoNet Studio command line: inspect and convert CT/MRI volumes, segment them with LoGoNet, evaluate,
/// train, pre-train and benchmark.
#[derive(Parser, Debug)]
#[command(name = "logonet", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parameter and multiply-add counts of a model or bundle.
    Info(info::Args),
    /// Benchmarks: 3D ops, model forward, whole-volume inference, training step, loading.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Dimensions, spacing, affine, orientation, intensity range and labels of a NIfTI file or DICOM folder.
    Inspect(inspect::Args),
    /// Convert a DICOM folder or NIfTI file to NIfTI, optionally reoriented and resampled.
    Convert(convert::Args),
    /// Write the synthetic abdominal CT phantom and its 13-organ label map.
    Phantom(phantom::Args),
    /// Segment a volume (NIfTI file, DICOM folder, or a folder of volumes) with a model bundle.
    Predict(predict::Args),
    /// Compare a prediction with the ground truth: Dice, HD95, surface Dice and volumes per label.
    Eval(eval::Args),
    /// Train or fine-tune a segmentation network and write a model bundle.
    Train(train::Args),
    /// Masked self-supervised pre-training with k-means pseudo-labels.
    Pretrain(pretrain::Args),
    /// Self-checks: parity with the reference fixtures on a chosen device (CPU or CUDA).
    #[command(subcommand)]
    Check(check::CheckCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => info::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Phantom(a) => phantom::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Train(a) => train::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Check(c) => check::run(c),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
