//! `logonet bench ...`: benchmarks (timings are measured here, never in tests).

#[path = "bench_ops.rs"]
mod bench_ops;

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// GFLOP/s of each 3D op on the shapes LoGoNet uses, forward and backward.
    Ops(OpsArgs),
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
    }
}
