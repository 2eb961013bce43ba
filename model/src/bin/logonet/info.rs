//! `logonet info`.

/// Arguments of `logonet info`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet info`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet info` is not available in this build yet")
}
