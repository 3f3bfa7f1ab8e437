//! Namespace, ServiceAccount and node IPAM controllers against a real `rkube server`: a new namespace gets its
//! `default` ServiceAccount, a deleted namespace is emptied and then removed, a node gets a pod CIDR; the pod
//! garbage collector removes pods of missing nodes and finished pods over its threshold.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rkube_controllers::ControllerOptions;
use rkube_controllers::cluster::ClusterOptions;
use serde_json::json;
use support::{Manager, Server, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_get_a_default_account_and_are_emptied_on_deletion() {
    let mut server = Server::start();
    let client = server.client().await;

    server.kubectl(&["create", "namespace", "team"]);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    wait_for("the default ServiceAccount in team", || async {
        accounts
            .get("default")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete the default account");
    wait_for("the default ServiceAccount re-created", || async {
        let sa = accounts.get("default").await.map_err(|e| e.to_string())?;
        if sa.metadata.deletion_timestamp.is_none() {
            Ok(())
        } else {
            Err("deleting".to_string())
        }
    })
    .await;

    server.kubectl(&[
        "-n",
        "team",
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    server.kubectl(&[
        "-n",
        "team",
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
    ]);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create held configmap");
    wait_for("two pods in team", || async {
        let out = server.kubectl(&["-n", "team", "get", "pods", "-o", "name"]);
        if out.lines().count() == 2 {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    server.kubectl(&["delete", "namespace", "team", "--wait=false"]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // The held ConfigMap keeps the namespace Terminating, and the status says why.
    wait_for("the namespace to report the remaining finalizer", || async {
        let ns = namespaces.get("team").await.map_err(|e| e.to_string())?;
        let conditions = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let held = conditions.iter().any(|c| {
            c.type_ == "NamespaceFinalizersRemaining"
                && c.status == "True"
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains("example.com/hold"))
        });
        if held {
            Ok(())
        } else {
            Err(format!("{conditions:?}"))
        }
    })
    .await;
    let out = server.kubectl(&["-n", "team", "get", "all", "-o", "name"]);
    assert!(out.trim().is_empty(), "everything else in team is deleted: {out}");

    config_maps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release the held configmap");
    wait_for("the namespace removed", || async {
        match namespaces.get_opt("team").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ns) => Err(format!("{:?}", ns.status)),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs() {
    let mut server = Server::start();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["n1", "n2"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let cidrs = wait_for("both nodes with a pod CIDR", || async {
        let mut cidrs = Vec::new();
        for name in ["n1", "n2"] {
            let node = nodes.get(name).await.map_err(|e| e.to_string())?;
            let spec = node.spec.unwrap_or_default();
            match (spec.pod_cidr, spec.pod_cidrs) {
                (Some(c), Some(cs)) if cs == [c.clone()] => cidrs.push(c),
                other => return Err(format!("{name}: {other:?}")),
            }
        }
        Ok(cidrs)
    })
    .await;
    let mut sorted = cidrs.clone();
    sorted.sort();
    assert_eq!(sorted, ["10.42.0.0/24", "10.42.1.0/24"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gc_removes_orphans_and_finished_pods_over_the_threshold() {
    let mut server = Server::start();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node) in [
        ("ghost-pod", Some("ghost")),
        ("a", None),
        ("b", None),
        ("c", None),
    ] {
        let mut pod = json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        let pod: Pod = serde_json::from_value(pod).unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    for name in ["a", "b", "c"] {
        let status = json!({"status": {"phase": "Succeeded"}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("finish pod");
    }
    let _manager = Manager::start_with(
        client.clone(),
        ControllerOptions {
            controllers: vec!["podgc".into()],
            cluster: ClusterOptions {
                terminated_pod_gc_threshold: 2,
                pod_gc_period: std::time::Duration::from_millis(200),
                ..ClusterOptions::default()
            },
            ..ControllerOptions::default()
        },
    );
    wait_for("the orphan and the oldest finished pod collected", || async {
        let mut names: Vec<String> = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        if names == ["b", "c"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
}
