//! `rkube image`: the node's image store (work in progress).

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI archive or `docker save` tarball into the node's image store.
    Import { file: std::path::PathBuf },
    /// List the images in the node's image store.
    Ls,
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    anyhow::bail!("rkube image {command:?} is not implemented yet")
}
