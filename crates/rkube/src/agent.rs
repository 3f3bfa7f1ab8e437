//! `rkube agent`: joins this host to a cluster as a node. Flags → [`AgentSettings`]; on first contact the
//! agent fetches the cluster CA from the server's unauthenticated `GET /cacerts` and pins it in
//! `DIR/agent/server-ca.crt` (later starts trust only that file), writes `DIR/agent/kubelet.kubeconfig`
//! (bearer token `<node-name>/<token>`, which the API server maps to `system:node:<name>`), then runs the
//! node agent ([`rkube_kubelet::run`]) until SIGTERM/SIGINT. `rkube server` embeds the same agent
//! ([`run_embedded`]) unless `--disable-agent`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

/// Node flags shared by `rkube agent` and `rkube server` (for its embedded agent).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeFlags {
    /// The address other nodes and the API server reach this node on (default: the address of the
    /// interface holding the default route).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// A registry (HOST:PORT) that may be pulled from over plain HTTP although it is not on loopback.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// The port of the kubelet HTTPS API (logs, exec, attach).
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The API server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The node join token (the server's DIR/token).
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Where the agent keeps its state (images, containers, pod volumes) under DIR/agent.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rkube")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeFlags,
    /// The cluster's pod network (the server's --cluster-cidr).
    #[arg(long, value_name = "CIDR", default_value = "10.42.0.0/16")]
    cluster_cidr: String,
}

/// Everything the agent needs, whether it runs alone or inside `rkube server`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub node_name: String,
    /// The agent's own directory (`DIR/agent`).
    pub agent_dir: PathBuf,
    pub node: NodeFlags,
    /// All nodes' pod networks together (the server's --cluster-cidr).
    pub cluster_cidr: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let node_name = args
        .node_name
        .filter(|n| !n.is_empty())
        .map_or_else(hostname, Ok)?;
    let settings = AgentSettings {
        node_name,
        agent_dir: args.data_dir.join("agent"),
        node: args.node,
        cluster_cidr: args.cluster_cidr,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&settings.agent_dir)
            .with_context(|| format!("creating {}", settings.agent_dir.display()))?;
        let ca_path = settings.agent_dir.join("server-ca.crt");
        pin_server_ca(&args.server, &ca_path).await?;
        let kubeconfig = write_kubeconfig(&settings, &args.server, &ca_path, &args.token)?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            crate::server::shutdown_signal().await;
            let _ = stop.send(true);
        });
        launch(settings, &kubeconfig, stopped).await
    })
}

/// The agent inside `rkube server`: authenticates like any other node (the server's own join token and CA),
/// so it has exactly the permissions a separate agent would have.
pub async fn run_embedded(
    settings: AgentSettings,
    server_data_dir: &Path,
    server_url: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.agent_dir)
        .with_context(|| format!("creating {}", settings.agent_dir.display()))?;
    let token_path = server_data_dir.join("token");
    let token =
        std::fs::read_to_string(&token_path).with_context(|| format!("reading {}", token_path.display()))?;
    let ca_path = settings.agent_dir.join("server-ca.crt");
    let server_ca = server_data_dir.join("tls").join("ca.crt");
    std::fs::copy(&server_ca, &ca_path)
        .with_context(|| format!("copying {} to {}", server_ca.display(), ca_path.display()))?;
    let kubeconfig = write_kubeconfig(&settings, server_url, &ca_path, token.trim())?;
    launch(settings, &kubeconfig, stop).await
}

/// Loads the agent's kubeconfig and runs the node agent until `stop`.
async fn launch(
    settings: AgentSettings,
    kubeconfig: &Path,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    start_kubelet(settings, config, stop).await
}

/// Hands the settings to the node agent library.
async fn start_kubelet(
    settings: AgentSettings,
    config: kube::Config,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let runtime = rkube_oci::runtime::RuntimeConfig {
        state_dir: settings.agent_dir.join("containers"),
        runc_root: settings.agent_dir.join("runc"),
        cgroup_parent: format!("rkube-{}", settings.node_name),
        runc: find_runc()?,
        shim: vec![
            std::env::current_exe()
                .context("locating the rkube binary for the shim")?
                .into_os_string(),
            "shim".into(),
        ],
    };
    let mut agent =
        rkube_kubelet::AgentConfig::new(config, &settings.node_name, settings.agent_dir.clone(), runtime);
    agent.node_ip = settings.node.node_ip;
    agent.kubelet_port = settings.node.kubelet_port;
    agent.insecure_registries = settings.node.insecure_registries.clone();
    agent.cluster_cidr = settings.cluster_cidr.clone();
    rkube_kubelet::run(agent, stop).await
}

/// runc from Debian's package (`/usr/sbin/runc`) or wherever `PATH` has it.
fn find_runc() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join("runc"))
        .find(|p| p.is_file())
        .context("runc is not installed (Debian package runc)")
}

/// Fetches the cluster CA from `GET <server>/cacerts` and stores it at `path`, unless a CA is pinned there
/// already: only the first contact trusts the network, as with k3s' agent without a CA hash in its token.
async fn pin_server_ca(server: &str, path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut config = kube::Config::new(server.parse().with_context(|| format!("server URL {server:?}"))?);
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config)?;
    let request = http::Request::get("/cacerts").body(Vec::new())?;
    let pem = client
        .request_text(request)
        .await
        .with_context(|| format!("fetching the cluster CA from {server}/cacerts"))?;
    anyhow::ensure!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "{server}/cacerts did not answer with a PEM certificate"
    );
    let tmp = path.with_extension("crt.tmp");
    std::fs::write(&tmp, pem.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(ca = %path.display(), "pinned the cluster CA fetched from {server}");
    Ok(())
}

/// `DIR/agent/kubelet.kubeconfig`, mode 0600: what the agent (and an admin debugging the node) connects with.
fn write_kubeconfig(
    settings: &AgentSettings,
    server: &str,
    ca: &Path,
    token: &str,
) -> anyhow::Result<PathBuf> {
    let path = settings.agent_dir.join("kubelet.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: default\n  user:\n    token: {node}/{token}\n\
         contexts:\n- name: default\n  context:\n    cluster: default\n    user: default\n\
         current-context: default\n",
        ca = ca.display(),
        node = settings.node_name,
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname")?;
    Ok(name.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: AgentArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = Wrapper::parse_from(["agent", "--server", "https://10.0.0.1:6443", "--token", "t"]).args;
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/rkube"));
        assert_eq!(args.node.kubelet_port, 10250);
        assert!(args.node.insecure_registries.is_empty());
        assert_eq!(args.node_name, None);
    }

    #[test]
    fn repeated_insecure_registries_are_kept() {
        let args = Wrapper::parse_from([
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "--token",
            "t",
            "--node-name",
            "n2",
            "--node-ip",
            "10.0.0.2",
            "--insecure-registry",
            "10.0.0.1:5000",
            "--insecure-registry",
            "reg:80",
            "--kubelet-port",
            "10350",
        ])
        .args;
        assert_eq!(args.node.insecure_registries, ["10.0.0.1:5000", "reg:80"]);
        assert_eq!(args.node.node_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(args.node.kubelet_port, 10350);
        assert_eq!(args.node_name.as_deref(), Some("n2"));
    }

    #[test]
    fn kubeconfig_names_the_node_in_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AgentSettings {
            node_name: "n1".into(),
            agent_dir: dir.path().to_path_buf(),
            node: NodeFlags::default(),
            cluster_cidr: String::new(),
        };
        let path =
            write_kubeconfig(&settings, "https://10.0.0.1:6443", Path::new("/x/ca.crt"), "s3").unwrap();
        let file = kube::config::Kubeconfig::read_from(&path).unwrap();
        assert!(file.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        assert!(std::fs::read_to_string(&path).unwrap().contains("token: n1/s3\n"));
        let cluster = file.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/x/ca.crt"));
    }
}
