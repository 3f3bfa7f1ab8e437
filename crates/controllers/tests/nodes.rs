//! The node lifecycle controller against a real `rkube server`, with a short grace period: a node whose Lease
//! stops being renewed goes Unknown and gets the unreachable NoExecute taint, a pod tolerating it for one second
//! is evicted while one tolerating it forever stays, a node that keeps its Lease fresh is untouched, and the
//! taint goes away when the silent node reports again.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{Server, wait_for};

async fn register_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    report_ready(client, name).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
}

fn now_micro() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// What the kubelet does on every status update: Ready=True with a fresh heartbeat.
async fn report_ready(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("report node status");
}

/// Renew the node's Lease every 300 ms for as long as the task runs (the kubelet's heartbeat).
fn heartbeat(client: Client, name: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tick.tick().await;
            let patch = json!({"spec": {"renewTime": now_micro()}});
            let _ = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    })
}

async fn create_pod(client: &Client, name: &str, node: &str, toleration_seconds: Option<i64>) {
    let mut toleration = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute"});
    if let Some(s) = toleration_seconds {
        toleration["tolerationSeconds"] = json!(s);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": [toleration],
            "containers": [{"name": "c", "image": "nginx"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

fn unreachable_no_execute(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_its_pods_evicted_and_recovery_untaints_it() {
    // The server's own controller manager runs the node lifecycle controller with this grace period.
    let mut server = Server::start_with(&["--node-monitor-grace-period", "3s"]);
    let client = server.client().await;
    register_node(&client, "alive").await;
    register_node(&client, "silent").await;
    let alive_beat = heartbeat(client.clone(), "alive");
    create_pod(&client, "victim", "silent", Some(1)).await;
    create_pod(&client, "patient", "silent", None).await;
    create_pod(&client, "safe", "alive", Some(1)).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for(
        "the silent node Unknown and tainted unreachable:NoExecute",
        || async {
            let node = nodes.get("silent").await.map_err(|e| e.to_string())?;
            let conditions = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let ready = conditions.iter().find(|c| c.type_ == "Ready").cloned();
            let unknown = ready.as_ref().is_some_and(|c| {
                c.status == "Unknown" && c.message.as_deref() == Some("Kubelet stopped posting node status.")
            });
            if unknown && unreachable_no_execute(&node) {
                Ok(())
            } else {
                Err(format!("{ready:?} {:?}", node.spec.and_then(|s| s.taints)))
            }
        },
    )
    .await;

    wait_for("the victim evicted after its 1 s toleration", || async {
        match pods.get_opt("victim").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) if p.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let patient = pods.get("patient").await.expect("the patient pod stays");
    assert!(
        patient.metadata.deletion_timestamp.is_none(),
        "a pod tolerating forever is kept"
    );
    let safe = pods.get("safe").await.expect("the pod on the live node stays");
    assert!(safe.metadata.deletion_timestamp.is_none());
    let alive = nodes.get("alive").await.unwrap();
    assert!(
        !unreachable_no_execute(&alive),
        "the heartbeating node is not tainted"
    );

    let events: Api<Event> = Api::all(client.clone());
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "TaintManagerEviction"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "NodeNotReady"), "{reasons:?}");

    let silent_beat = heartbeat(client.clone(), "silent");
    report_ready(&client, "silent").await;
    wait_for("the recovered node untainted", || async {
        let node = nodes.get("silent").await.map_err(|e| e.to_string())?;
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if taints.is_empty() {
            Ok(())
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    alive_beat.abort();
    silent_beat.abort();
}
