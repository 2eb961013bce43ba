//! `logonet bench ...`: benchmarks (timings are measured here, never in tests).

#[path = "bench_infer.rs"]
mod bench_infer;
#[path = "bench_load.rs"]
mod bench_load;
#[path = "bench_ops.rs"]
mod bench_ops;
#[path = "bench_train.rs"]
mod bench_train;

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// GFLOP/s of each 3D op on the shapes LoGoNet uses, forward and backward.
    Ops(OpsArgs),
    /// Forward time and peak memory of a whole network on one window.
    Model(crate::bench_model::ModelArgs),
    /// Reading a large .nii.gz: decompression, decoding and reordering.
    Load(bench_load::LoadArgs),
    /// Whole-volume sliding-window inference: windows/s and peak RSS.
    Infer(bench_infer::InferArgs),
    /// One training step (forward, DiceCE, backward, AdamW): time and peak RSS.
    Train(bench_train::TrainArgs),
}

/// Arguments of `logonet bench ops`.
#[derive(clap::Args, Debug)]
pub struct OpsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timed repetitions per measurement (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ops(a) => bench_ops::run(&a),
        BenchCommand::Model(a) => crate::bench_model::run(a),
        BenchCommand::Load(a) => bench_load::run(a),
        BenchCommand::Infer(a) => bench_infer::run(a),
        BenchCommand::Train(a) => bench_train::run(a),
    }
}
