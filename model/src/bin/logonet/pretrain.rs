//! `logonet pretrain`.

/// Arguments of `logonet pretrain`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet pretrain`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet pretrain` is not available in this build yet")
}
