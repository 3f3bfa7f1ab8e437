//! `rkube agent`: joins a node to a cluster (work in progress).

use clap::Args;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The API server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The node join token (the server's DIR/token).
    #[arg(long, value_name = "TOKEN")]
    token: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("rkube agent is not implemented yet (server {})", args.server)
}
