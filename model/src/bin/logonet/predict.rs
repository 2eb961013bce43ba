//! `logonet predict`.

/// Arguments of `logonet predict`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet predict`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet predict` is not available in this build yet")
}
