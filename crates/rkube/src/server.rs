//! `rkube server`: flags → [`rkube_apiserver::server::ServerConfig`], then run until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use rkube_apiserver::server::ServerConfig;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where the server keeps its state: db/, tls/, kubeconfig.yaml, token.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rkube")]
    data_dir: PathBuf,
    /// Address to serve the Kubernetes API on (HTTPS); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// sqlite://PATH for the embedded store (default DIR/db/state.db), or http://host:port[,…] for etcd.
    #[arg(long, value_name = "URL")]
    datastore_endpoint: Option<String>,
    /// Do not run a node agent in the server process.
    #[arg(long)]
    disable_agent: bool,
    /// Pod network; each node gets a /24 from it.
    #[arg(long, value_name = "CIDR", default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Service ClusterIPs; the first address is the `kubernetes` Service.
    #[arg(long, value_name = "CIDR", default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// How long a node may go without a heartbeat before it is marked NotReady.
    #[arg(long, value_name = "DUR", default_value = "50s", value_parser = crate::duration::parse)]
    node_monitor_grace_period: std::time::Duration,
    /// How long pods tolerate a NotReady or unreachable node before they are evicted.
    #[arg(long, value_name = "N", default_value_t = 300)]
    default_not_ready_toleration_seconds: u64,
    /// Addresses for LoadBalancer Services: CIDR or A-B range, repeatable or comma-separated. Without it a
    /// LoadBalancer's ingress is the Ready nodes' InternalIPs.
    #[arg(long, value_name = "CIDR|A-B", value_delimiter = ',', value_parser = lb_pool_entry)]
    lb_ip_pool: Vec<String>,
    /// The embedded node agent's flags.
    #[command(flatten)]
    node: crate::agent::NodeFlags,
}

impl ServerArgs {
    fn into_config(self) -> ServerConfig {
        let defaults = ServerConfig::default();
        ServerConfig {
            data_dir: self.data_dir,
            listen: self.listen,
            datastore_endpoint: self.datastore_endpoint,
            disable_agent: self.disable_agent,
            cluster_cidr: self.cluster_cidr,
            service_cidr: self.service_cidr,
            node_name: self
                .node_name
                .filter(|n| !n.is_empty())
                .unwrap_or(defaults.node_name.clone()),
            node_monitor_grace_period: self.node_monitor_grace_period,
            default_not_ready_toleration_seconds: self.default_not_ready_toleration_seconds,
            lb_ip_pool: self.lb_ip_pool,
            ..defaults
        }
    }
}

/// One `--lb-ip-pool` entry, checked as the LoadBalancer controller will read it.
fn lb_pool_entry(entry: &str) -> Result<String, String> {
    rkube_controllers::servicelb::Pool::parse(&[entry]).map_err(|e| e.to_string())?;
    Ok(entry.trim().to_string())
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let node = args.node.clone();
    let config = args.into_config();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // One stop signal for everything in the process: the control-plane components stop first (their
        // watches end), then the API server drains.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let components = tokio::spawn(crate::components::run(config.clone(), node, stopped));
        let result = rkube_apiserver::server::run(config, async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await;
        components.abort();
        result
    })
}

/// Resolves on the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = Wrapper::parse_from(["server"]).args.into_config();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/rkube"));
        assert_eq!(config.listen, "0.0.0.0:6443".parse().unwrap());
        assert_eq!(config.datastore_endpoint, None);
        assert_eq!(config.service_cidr, "10.43.0.0/16");
        assert_eq!(config.cluster_cidr, "10.42.0.0/16");
        assert_eq!(
            config.node_monitor_grace_period,
            std::time::Duration::from_secs(50)
        );
        assert_eq!(config.default_not_ready_toleration_seconds, 300);
        assert!(config.lb_ip_pool.is_empty());
    }

    #[test]
    fn lb_ip_pool_is_repeatable_and_checked() {
        let config = Wrapper::parse_from([
            "server",
            "--lb-ip-pool",
            "192.168.1.240/28,10.0.0.5-10.0.0.9",
            "--lb-ip-pool",
            "fd00::/120",
        ])
        .args
        .into_config();
        assert_eq!(
            config.lb_ip_pool,
            ["192.168.1.240/28", "10.0.0.5-10.0.0.9", "fd00::/120"]
        );
        let bad = Wrapper::try_parse_from(["server", "--lb-ip-pool", "10.0.0.9-10.0.0.1"]);
        let err = bad.err().expect("a backwards range is refused").to_string();
        assert!(err.contains("invalid LoadBalancer IP pool entry"), "{err}");
    }

    #[test]
    fn flags_are_passed_through() {
        let config = Wrapper::parse_from([
            "server",
            "--data-dir",
            "/tmp/d",
            "--listen",
            "127.0.0.1:0",
            "--datastore-endpoint",
            "http://127.0.0.1:2379",
            "--disable-agent",
            "--node-name",
            "n1",
            "--node-monitor-grace-period",
            "1m",
            "--default-not-ready-toleration-seconds",
            "30",
        ])
        .args
        .into_config();
        assert_eq!(config.listen.port(), 0);
        assert!(config.disable_agent);
        assert_eq!(config.node_name, "n1");
        assert_eq!(
            config.node_monitor_grace_period,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(config.default_not_ready_toleration_seconds, 30);
        assert_eq!(
            config.datastore_endpoint.as_deref(),
            Some("http://127.0.0.1:2379")
        );
    }
}
