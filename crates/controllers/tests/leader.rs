//! Two controller managers on one API server: only the Lease holder runs controllers; when it stops (releasing
//! the lease) or dies (not releasing it), the other takes over and the controllers keep working.

mod server;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rkube_controllers::ControllerOptions;
use serde_json::json;
use server::{DEADLINE, Server};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

fn options(identity: &str) -> ControllerOptions {
    ControllerOptions {
        identity: identity.into(),
        controllers: vec!["deployment".into(), "replicaset".into()],
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
        ..ControllerOptions::default()
    }
}

/// A manager that runs until the returned sender fires (a graceful stop) or the task is aborted (a crash).
fn start(client: &Client, identity: &str) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = rkube_controllers::run(client.clone(), options(identity), async {
        let _ = stopped.await;
    });
    let task = tokio::spawn(async move { run.await.expect("manager failed") });
    (stop, task)
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .get_opt("rkube-controller-manager")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn wait_for_holder(client: &Client, want: &str) {
    let start = Instant::now();
    while holder(client).await.as_deref() != Some(want) {
        assert!(
            start.elapsed() < DEADLINE,
            "{want} never took the lease (holder {:?})",
            holder(client).await
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Create a Deployment and wait until a ReplicaSet for it exists: proof that a deployment controller runs.
async fn deployment_gets_a_replica_set(client: &Client, name: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
        },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    loop {
        let rss = replica_sets
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .unwrap();
        if !rss.items.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no ReplicaSet for {name}: no controller is running"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_moves_on_release_and_on_crash() {
    let mut server = Server::start();
    let client = server.client().await;

    let (stop_a, a) = start(&client, "manager-a");
    wait_for_holder(&client, "manager-a").await;
    let (stop_b, b) = start(&client, "manager-b");
    deployment_gets_a_replica_set(&client, "first").await;
    // B keeps trying every 200 ms; a live holder renewing every 200 ms keeps the 3 s lease throughout.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(
            holder(&client).await.as_deref(),
            Some("manager-a"),
            "the lease changed hands while held"
        );
        sleep(Duration::from_millis(250)).await;
    }

    // A graceful stop releases the lease: B takes over well within a lease duration.
    let released_at = Instant::now();
    stop_a.send(()).unwrap();
    a.await.unwrap();
    wait_for_holder(&client, "manager-b").await;
    assert!(
        released_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        released_at.elapsed()
    );
    deployment_gets_a_replica_set(&client, "second").await;

    // A crash releases nothing: C waits for the lease to expire, then takes over.
    let (_stop_c, c) = start(&client, "manager-c");
    b.abort();
    let _ = b.await;
    wait_for_holder(&client, "manager-c").await;
    deployment_gets_a_replica_set(&client, "third").await;

    drop(stop_b);
    c.abort();
}
