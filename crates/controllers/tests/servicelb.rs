//! The LoadBalancer controller against a real `rkube server`: addresses from `--lb-ip-pool` (lowest free,
//! requested ones honoured, none twice, a Warning when the pool is exhausted, released on delete and when a
//! Service stops being a LoadBalancer, kept across a server restart), and without a pool the Ready nodes'
//! InternalIPs, following node readiness. The pool and node addresses are from TEST-NET-1 (192.0.2.0/24): no
//! traffic is sent to them.

mod support;

use k8s_openapi::api::core::v1::{Event, Node, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{Server, wait_for};

async fn create_lb(client: &Client, name: &str, extra: Value) {
    let mut svc = json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]},
    });
    for (section, fields) in extra.as_object().into_iter().flatten() {
        for (k, v) in fields.as_object().into_iter().flatten() {
            svc[section][k] = v.clone();
        }
    }
    let svc: Service = serde_json::from_value(svc).unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

/// (ip, ipMode) of the Service's ingress.
async fn ingress(client: &Client, name: &str) -> Vec<(String, String)> {
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("get service");
    svc.status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.ip.unwrap_or_default(), i.ip_mode.unwrap_or_default()))
        .collect()
}

async fn wait_ingress(client: &Client, name: &str, ips: &[&str]) {
    let want: Vec<(String, String)> = ips.iter().map(|ip| (ip.to_string(), "VIP".to_string())).collect();
    wait_for(&format!("{name}'s ingress to be {ips:?}"), || async {
        let got = ingress(client, name).await;
        if got == want { Ok(()) } else { Err(got) }
    })
    .await;
}

/// The EXTERNAL-IP column of `kubectl get svc NAME`.
fn external_ip(server: &Server, name: &str) -> String {
    let out = server.kubectl(&["get", "svc", name]);
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}: {out}"));
    row.split_whitespace().nth(3).unwrap().to_string()
}

const POOL: &[&str] = &["--lb-ip-pool", "192.0.2.10-192.0.2.11"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_addresses_are_allocated_released_and_survive_a_restart() {
    let mut server = Server::start_with(POOL);
    let client = server.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");

    create_lb(&client, "a", json!({})).await;
    wait_ingress(&client, "a", &["192.0.2.10"]).await;
    assert_eq!(external_ip(&server, "a"), "192.0.2.10");

    create_lb(
        &client,
        "b",
        json!({"metadata": {"annotations": {"rkube.io/loadBalancerIPs": "192.0.2.11"}}}),
    )
    .await;
    wait_ingress(&client, "b", &["192.0.2.11"]).await;

    // The pool is exhausted: c waits with a Warning, and kubectl shows it pending.
    create_lb(&client, "c", json!({})).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let warning = wait_for("an AllocationFailed event for c", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("c")
                    && e.reason.as_deref() == Some("AllocationFailed")
            })
            .ok_or_else(|| "no event yet".to_string())
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.message.unwrap_or_default().contains("no available IPs"));
    assert_eq!(ingress(&client, "c").await, []);
    assert_eq!(external_ip(&server, "c"), "<pending>");

    // A Service of another LoadBalancer implementation is left alone.
    create_lb(
        &client,
        "classed",
        json!({"spec": {"loadBalancerClass": "example.com/other"}}),
    )
    .await;

    // Deleting a frees its address for the waiting c.
    services
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    wait_ingress(&client, "c", &["192.0.2.10"]).await;

    // b stops being a LoadBalancer: its ingress goes and its address is free again.
    // (Kubernetes drops the nodePorts and externalTrafficPolicy of a type change itself; rkube's API server
    // does not yet, so the patch clears them as clients of older Kubernetes versions had to.)
    let to_cluster_ip = json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null,
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
    services
        .patch("b", &PatchParams::default(), &Patch::Merge(&to_cluster_ip))
        .await
        .expect("make b a ClusterIP service");
    wait_ingress(&client, "b", &[]).await;

    // After a restart the allocator is rebuilt from the statuses. The pool grows a lower address, .9: a
    // controller that forgot c's .10 would give c the lowest free address; it keeps .10, and d gets .9.
    server.restart_with(&["--lb-ip-pool", "192.0.2.9-192.0.2.11"]);
    let client = server.client().await;
    create_lb(&client, "d", json!({})).await;
    wait_ingress(&client, "d", &["192.0.2.9"]).await;
    assert_eq!(
        ingress(&client, "c").await,
        [("192.0.2.10".to_string(), "VIP".to_string())]
    );
    assert_eq!(
        ingress(&client, "classed").await,
        [],
        "a classed Service got an address"
    );

    // A request for a taken address is refused; when its holder goes, the request is honoured.
    create_lb(&client, "e", json!({"spec": {"loadBalancerIP": "192.0.2.10"}})).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    wait_for("an AllocationFailed event for e", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let found = list.items.iter().any(|e| {
            e.involved_object.name.as_deref() == Some("e")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("already allocated to default/c"))
        });
        if found {
            Ok(())
        } else {
            Err(format!("{} events, none for e", list.items.len()))
        }
    })
    .await;
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    wait_ingress(&client, "e", &["192.0.2.10"]).await;
}

async fn set_node(client: &Client, name: &str, ip: &str, ready: bool) {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await.expect("get node").is_none() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
            "reason": "Test", "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch node status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pool_the_ingress_follows_the_ready_nodes() {
    let mut server = Server::start();
    let client = server.client().await;
    set_node(&client, "n1", "192.0.2.1", true).await;
    set_node(&client, "n2", "192.0.2.2", true).await;
    create_lb(&client, "web", json!({})).await;
    wait_ingress(&client, "web", &["192.0.2.1", "192.0.2.2"]).await;
    assert_eq!(external_ip(&server, "web"), "192.0.2.1,192.0.2.2");

    set_node(&client, "n2", "192.0.2.2", false).await;
    wait_ingress(&client, "web", &["192.0.2.1"]).await;
    set_node(&client, "n3", "192.0.2.3", true).await;
    wait_ingress(&client, "web", &["192.0.2.1", "192.0.2.3"]).await;
}
