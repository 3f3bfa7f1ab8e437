//! Run the controller manager against any cluster, for trying controllers by hand with kubectl:
//!
//! ```text
//! cargo run -p rkube-controllers --example controller_manager -- DIR/kubeconfig.yaml [CONTROLLER…]
//! ```
//! (`rkube server` will run the same [`rkube_controllers::run`] in-process.) Ctrl-C stops it and releases the
//! lease.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rkube_controllers::ControllerOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: controller_manager KUBECONFIG [CONTROLLER…]")?;
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let mut options = ControllerOptions::default();
    let controllers: Vec<String> = args.collect();
    if !controllers.is_empty() {
        options.controllers = controllers;
    }
    rkube_controllers::run(client, options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
