//! The DaemonSet controller against a real `rkube server`: one pod per eligible node (a NoSchedule-tainted node
//! is skipped), a new node gets its pod, `kubectl set image` rolls every pod over, `kubectl rollout status`
//! sees it finish and `kubectl rollout history` lists both revisions.
//!
//! No scheduler or node agent runs here: the test binds each pod to the node its required node affinity names
//! (through `pods/binding`, as the scheduler would) and marks it Running and Ready through `pods/status`.

mod support;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{Server, wait_for};

/// The node named by a pod's `metadata.name` node affinity (what the DaemonSet controller sets).
fn affinity_node(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Plays scheduler and kubelet: binds daemon pods to their node, makes bound pods Ready, removes deleted pods.
async fn fake_scheduler_and_kubelet(client: Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut ip = 1u32;
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = pods.delete(&name, &DeleteParams::default().grace_period(0)).await;
            continue;
        }
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        match bound {
            None => {
                if let Some(node) = affinity_node(&pod) {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
                    let _ = pods
                        .create_subresource::<_, serde_json::Value>(
                            "binding",
                            &name,
                            &PostParams::default(),
                            &binding,
                        )
                        .await;
                }
            }
            Some(_) if !rkube_controllers::pod::is_ready(&pod) => {
                ip += 1;
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = json!({"status": {"phase": "Running", "podIP": format!("10.42.9.{}", ip % 250),
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
            Some(_) => {}
        }
    }
}

async fn create_node(client: &Client, name: &str, taint: bool) {
    let mut node = json!({"metadata": {"name": name}});
    if taint {
        node["spec"] = json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
    }
    let node: Node = serde_json::from_value(node).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

/// (node, image) of every live daemon pod, sorted.
async fn placement(client: &Client) -> Result<Vec<(String, String)>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let spec = p.spec.clone().unwrap_or_default();
            let node = spec
                .node_name
                .clone()
                .or_else(|| affinity_node(p))
                .unwrap_or_default();
            (node, spec.containers[0].image.clone().unwrap_or_default())
        })
        .collect();
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_pod_on_every_eligible_node_rolled_by_set_image() {
    let mut server = Server::start();
    let client = server.client().await;
    for (name, taint) in [("n1", false), ("n2", false), ("db", true)] {
        create_node(&client, name, taint).await;
    }
    let kubelet = tokio::spawn(fake_scheduler_and_kubelet(client.clone()));

    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:v1"}]}},
        },
    }))
    .unwrap();
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    daemon_sets
        .create(&PostParams::default(), &ds)
        .await
        .expect("create daemonset");

    let v1 = |nodes: &[&str]| -> Vec<(String, String)> {
        nodes
            .iter()
            .map(|n| (n.to_string(), "agent:v1".to_string()))
            .collect()
    };
    wait_for("one pod on n1 and n2, none on the tainted node", || async {
        let p = placement(&client).await?;
        if p == v1(&["n1", "n2"]) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    wait_for("status: 2 desired, 2 ready", || async {
        let s = daemon_sets
            .get("agent")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if s.desired_number_scheduled == 2 && s.number_ready == 2 && s.number_available == Some(2) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;

    create_node(&client, "n3", false).await;
    wait_for("a pod on the new node", || async {
        let p = placement(&client).await?;
        if p == v1(&["n1", "n2", "n3"]) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;

    server.kubectl(&["set", "image", "daemonset/agent", "agent=agent:v2"]);
    let out = server.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let p = placement(&client).await.unwrap();
    let v2: Vec<(String, String)> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| (n.to_string(), "agent:v2".to_string()))
        .collect();
    assert_eq!(p, v2);
    let s = daemon_sets.get("agent").await.unwrap().status.unwrap();
    assert_eq!(s.updated_number_scheduled, Some(3));
    wait_for("two revisions in the rollout history", || async {
        let out = server.kubectl(&["rollout", "history", "daemonset/agent"]);
        let revisions: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.parse::<u32>().is_ok())
            .collect();
        if revisions == ["1", "2"] { Ok(()) } else { Err(out) }
    })
    .await;
    assert_eq!(s.number_misscheduled, 0);
    kubelet.abort();
}
