//! `rkube simulate-nodes`: flags → [`rkube_sim::SimOptions`], then simulate the nodes until SIGTERM/SIGINT.
//! Killed, the nodes just go silent (the node lifecycle controller marks them NotReady).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimulateNodesArgs {
    /// Kubeconfig of the cluster to register the nodes with (its current context).
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// How many nodes: <prefix>-0 … <prefix>-<N-1>.
    #[arg(long, value_name = "N")]
    count: usize,
    /// CPU capacity of each node.
    #[arg(long, value_name = "N", default_value = "32")]
    cpu: String,
    /// Memory capacity of each node (a Kubernetes quantity).
    #[arg(long, value_name = "QTY", default_value = "256Gi")]
    memory: String,
    /// Pods each node can hold.
    #[arg(long, value_name = "N", default_value_t = 110)]
    pods: u32,
    /// Node names start with this.
    #[arg(long, value_name = "P", default_value = "sim")]
    name_prefix: String,
}

impl SimulateNodesArgs {
    fn into_options(self) -> rkube_sim::SimOptions {
        rkube_sim::SimOptions {
            count: self.count,
            name_prefix: self.name_prefix,
            cpu: self.cpu,
            memory: self.memory,
            pods: self.pods,
            ..Default::default()
        }
    }
}

pub fn run(args: SimulateNodesArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        rkube_sim::run(client, args.into_options(), shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateNodesArgs,
    }

    #[test]
    fn flags_become_options_with_defaults() {
        let cli = Cli::parse_from(["x", "--kubeconfig", "k.yaml", "--count", "3", "--memory", "8Gi"]);
        let o = cli.args.into_options();
        assert_eq!((o.count, o.name_prefix.as_str()), (3, "sim"));
        assert_eq!((o.cpu.as_str(), o.memory.as_str(), o.pods), ("32", "8Gi", 110));
    }
}
