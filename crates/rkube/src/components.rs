//! The components that `rkube server` runs beside the API server: the controller manager, the scheduler
//! and (unless `--disable-agent`) a node agent. They share the process but not its memory: each reaches the API server the way any other
//! client does, over HTTPS with the admin kubeconfig the server writes, so each could run elsewhere unchanged.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rkube_apiserver::server::ServerConfig;
use tokio::sync::watch;

/// How long a component waits before starting again after it failed.
const RESTART_BACKOFF: Duration = Duration::from_secs(2);

/// Waits for the API server to be ready, then runs every component until `stop` turns true. A component that
/// fails is logged and started again, as a supervisor would restart kube-controller-manager.
pub async fn run(config: ServerConfig, node: crate::agent::NodeFlags, stop: watch::Receiver<bool>) {
    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    let client = tokio::select! {
        client = wait_for_api(&kubeconfig) => client,
        _ = stopped(stop.clone()) => return,
    };

    let controllers = {
        let client = client.clone();
        let stop = stop.clone();
        let options = rkube_controllers::ControllerOptions {
            cluster: rkube_controllers::cluster::ClusterOptions {
                cluster_cidr: config.cluster_cidr.clone(),
                node_monitor_grace_period: config.node_monitor_grace_period,
                lb_ip_pool: config.lb_ip_pool.clone(),
                ..Default::default()
            },
            identity: format!("{}_{}", config.node_name, std::process::id()),
            ..Default::default()
        };
        supervise("controller manager", stop.clone(), move || {
            rkube_controllers::run(client.clone(), options.clone(), stopped(stop.clone()))
        })
    };
    let scheduler = {
        let stop = stop.clone();
        supervise("scheduler", stop.clone(), move || {
            rkube_scheduler::run(
                client.clone(),
                rkube_scheduler::SchedulerOptions::default(),
                stopped(stop.clone()),
            )
        })
    };
    let agent = async {
        if config.disable_agent {
            return;
        }
        let Some(server_url) = server_url(&kubeconfig) else {
            tracing::error!(kubeconfig = %kubeconfig.display(), "no server URL in the kubeconfig; no node agent");
            return;
        };
        let settings = crate::agent::AgentSettings {
            node_name: config.node_name.clone(),
            agent_dir: config.data_dir.join("agent"),
            node,
            cluster_cidr: config.cluster_cidr.clone(),
        };
        let data_dir = config.data_dir.clone();
        supervise("node agent", stop.clone(), || {
            crate::agent::run_embedded(settings.clone(), &data_dir, &server_url, stop.clone())
        })
        .await
    };
    tokio::join!(controllers, scheduler, agent);
}

/// The `server:` line of the kubeconfig the API server wrote (its real port, on loopback).
fn server_url(kubeconfig: &Path) -> Option<String> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
}

/// Runs `start()` until `stop` turns true, starting it again after a pause when it ends with an error.
async fn supervise<F, Fut, E>(name: &str, stop: watch::Receiver<bool>, start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        let result = start().await;
        if *stop.borrow() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!(component = name, "stopped on its own; starting it again"),
            Err(e) => tracing::error!(
                component = name,
                error = format!("{e:#}"),
                "failed; starting it again"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_BACKOFF) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A client for the API server, once the server has written its kubeconfig and answers `/readyz`.
async fn wait_for_api(kubeconfig: &Path) -> kube::Client {
    let mut delay = Duration::from_millis(20);
    loop {
        match ready_client(kubeconfig).await {
            Ok(client) => return client,
            Err(e) => tracing::debug!(error = %e, "API server not ready yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

async fn ready_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let answer = client.request_text(request).await?;
    anyhow::ensure!(answer.trim() == "ok", "/readyz answered {answer:?}");
    Ok(client)
}
