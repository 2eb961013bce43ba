//! `logonet train`.

/// Arguments of `logonet train`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet train`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet train` is not available in this build yet")
}
