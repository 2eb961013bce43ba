//! `logonet inspect`.

/// Arguments of `logonet inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet inspect`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet inspect` is not available in this build yet")
}
