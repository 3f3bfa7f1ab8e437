//! The pod manager (work in progress).

use crate::AgentConfig;

pub(crate) async fn run_agent(
    config: AgentConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _ = (config, stop);
    anyhow::bail!("the node agent is not wired yet")
}
