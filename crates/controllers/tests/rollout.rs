//! The controllers as `rkube server` runs them (in-process, leader-elected, over HTTPS): a Deployment rolls out,
//! a `set image` rolls forward, `kubectl rollout undo` rolls back to revision 3 — checked with kube-rs and the
//! real kubectl.
//!
//! No node agent runs here: the test plays the kubelet by marking pods Running and Ready through
//! `pods/status`. Needs `target/debug/rkube` (`cargo build -p rkube --bin rkube`).

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{DEADLINE, Server};
use tokio::time::{Instant, sleep};

/// Plays the kubelet for every pod: Running and Ready (with an IP) as soon as it appears; a pod being deleted
/// is removed at once.
async fn fake_kubelet(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default()).boxed();
    let mut next_ip = 1u32;
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let ready = rkube_controllers::pod::is_ready(&pod);
        if ready {
            continue;
        }
        next_ip += 1;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": format!("10.42.0.{}", next_ip % 250 + 2),
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
        }});
        let _ = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await;
    }
}

/// Wait until `check` holds for the Deployment, or fail with its last state.
async fn wait_for_deployment(
    api: &Api<Deployment>,
    what: &str,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < DEADLINE {
        if let Ok(d) = api.get("web").await {
            if check(&d) {
                return d;
            }
            last = Some(d);
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {:#?}", last.map(|d| d.status));
}

fn rolled_out(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
}

fn revision(rs: &ReplicaSet) -> Option<&str> {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .map(String::as_str)
}

fn image(rs: &ReplicaSet) -> String {
    let t = rs.spec.as_ref().unwrap().template.as_ref().unwrap();
    t.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_forward_and_back() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut server = Server::start();
    let client = server.client().await;
    let kubelet = tokio::spawn(fake_kubelet(client.clone()));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    let d = wait_for_deployment(&deployments, "the first rollout", rolled_out).await;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let rss = replica_sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 1);
    let hash = rss[0].labels()["pod-template-hash"].clone();
    assert_eq!(rss[0].name_any(), format!("web-{hash}"));
    let owned = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(owned.len(), 4);
    for p in &owned {
        assert!(
            p.name_any().starts_with(&format!("web-{hash}-")),
            "generateName <rs>-: {}",
            p.name_any()
        );
        assert_eq!(p.labels()["pod-template-hash"], hash);
        assert_eq!(p.owner_references()[0].uid, rss[0].uid().unwrap());
    }
    let status = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        status.contains("deployment \"web\" successfully rolled out"),
        "{status}"
    );

    // The server's controller manager leads through the Lease.
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get("rkube-controller-manager")
        .await
        .unwrap();
    assert!(lease.spec.unwrap().holder_identity.is_some_and(|h| !h.is_empty()));

    // A relabeled pod is released and replaced.
    let victim = owned[0].name_any();
    let relabel = json!({"metadata": {"labels": {"app": "debug"}}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let released = pods.get(&victim).await.unwrap();
        let matching = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let live = matching
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        if released.owner_references().is_empty() && live == 4 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "relabeled pod not released/replaced");
        sleep(Duration::from_millis(100)).await;
    }
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();

    // `kubectl set image` → revision 2.
    server.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.26"]);
    let status = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let d = wait_for_deployment(&deployments, "the set-image rollout", |d| {
        d.metadata.generation == Some(2) && rolled_out(d)
    })
    .await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");
    let rss = replica_sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 2);
    let v1 = rss.iter().find(|rs| image(rs) == "nginx:1.25").unwrap();
    let v2 = rss.iter().find(|rs| image(rs) == "nginx:1.26").unwrap();
    assert_eq!(revision(v2), Some("2"));
    assert_eq!(v1.spec.as_ref().unwrap().replicas, Some(0));
    let history = server.kubectl(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(revisions.ends_with(&["1", "2"]), "{history}");

    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let scaled: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message.clone())
        .collect();
    let first = format!("Scaled up replica set {} from 0 to 4", v1.name_any());
    let surge = format!("Scaled up replica set {} from 0 to 1", v2.name_any());
    assert!(scaled.contains(&first) && scaled.contains(&surge), "{scaled:?}");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulCreate")
                && e.involved_object.kind.as_deref() == Some("ReplicaSet")),
        "the ReplicaSet controller records its creations"
    );

    // `kubectl rollout undo` → back to 1.25, as revision 3 of the same ReplicaSet.
    server.kubectl(&["rollout", "undo", "deployment/web"]);
    let d = wait_for_deployment(&deployments, "the rollback", |d| {
        d.metadata.generation == Some(3) && rolled_out(d)
    })
    .await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");
    let rss = replica_sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 2, "the old ReplicaSet is reused, not copied");
    let v1 = rss.iter().find(|rs| image(rs) == "nginx:1.25").unwrap();
    assert_eq!(revision(v1), Some("3"));
    assert_eq!(v1.annotations()["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(v1.spec.as_ref().unwrap().replicas, Some(4));
    let history = server.kubectl(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(revisions.ends_with(&["2", "3"]), "{history}");

    kubelet.abort();
}
