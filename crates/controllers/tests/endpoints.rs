//! The EndpointSlice and Endpoints controllers against a real `rkube server`: a Service's slices and Endpoints
//! list the IPs of the pods it selects with their readiness, follow readiness changes set through
//! `pods/status`, and drop deleted pods.

mod support;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{Server, wait_for};

async fn create_pod(client: &Client, name: &str, port: i32) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx",
            "ports": [{"name": "http", "containerPort": port}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Play the kubelet: give the pod an IP and a Ready condition.
async fn set_status(client: &Client, name: &str, ip: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status = if ready { "True" } else { "False" };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch pod status");
}

/// (ip, ready, port) of every endpoint in the Service's slices, sorted.
async fn slice_view(client: &Client) -> Result<Vec<(String, bool, i32)>, String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .map_err(|e| e.to_string())?;
    let mut view = Vec::new();
    for s in &list.items {
        let port = s.ports.iter().flatten().find_map(|p| p.port).unwrap_or(0);
        for e in &s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            view.push((e.addresses[0].clone(), ready, port));
        }
    }
    view.sort();
    Ok(view)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_and_endpoints_follow_pod_readiness() {
    let mut server = Server::start();
    let client = server.client().await;

    // Pods are bound from the start, so the server's scheduler leaves their status alone.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");

    create_pod(&client, "a", 8080).await;
    create_pod(&client, "b", 9090).await;
    create_pod(&client, "no-ip", 8080).await;
    set_status(&client, "a", "10.42.0.10", true).await;
    set_status(&client, "b", "10.42.0.11", false).await;

    let want = vec![
        ("10.42.0.10".to_string(), true, 8080),
        ("10.42.0.11".to_string(), false, 9090),
    ];
    wait_for("slices listing both pods with their own ports", || async {
        let view = slice_view(&client).await?;
        if view == want {
            Ok(())
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    for s in &list.items {
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid)),
            ("Service", svc.metadata.uid.as_ref())
        );
        let pod_ref = s.endpoints[0].target_ref.as_ref().unwrap();
        assert_eq!(pod_ref.kind.as_deref(), Some("Pod"));
    }

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    wait_for("Endpoints with a ready and a not-ready address", || async {
        let ep = endpoints.get("web").await.map_err(|e| e.to_string())?;
        let subsets = ep.subsets.clone().unwrap_or_default();
        let ready: Vec<&str> = subsets
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .map(|a| a.ip.as_str())
            .collect();
        let not_ready: Vec<&str> = subsets
            .iter()
            .flat_map(|s| s.not_ready_addresses.iter().flatten())
            .map(|a| a.ip.as_str())
            .collect();
        if ready == ["10.42.0.10"] && not_ready == ["10.42.0.11"] {
            Ok(())
        } else {
            Err(format!("{subsets:?}"))
        }
    })
    .await;

    set_status(&client, "b", "10.42.0.11", true).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("a", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod a");
    wait_for("b ready and a gone", || async {
        let view = slice_view(&client).await?;
        if view == [("10.42.0.11".to_string(), true, 9090)] {
            Ok(())
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await;

    wait_for("kubectl to show only b's address in the Endpoints", || async {
        let out = server.kubectl(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        if out.trim() == "10.42.0.11" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    wait_for("slices and Endpoints removed with the Service", || async {
        let view = slice_view(&client).await?;
        let ep = endpoints.get_opt("web").await.map_err(|e| e.to_string())?;
        if view.is_empty() && ep.is_none() {
            Ok(())
        } else {
            Err(format!("{view:?} {ep:?}"))
        }
    })
    .await;
}
