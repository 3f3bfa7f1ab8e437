//! `rkube_proxy::run` against a real `rkube server` (rkube-e2e's `Cluster`; needs `target/debug/rkube`:
//! `cargo build -p rkube --bin rkube`) and a test-made node namespace: Services and EndpointSlices written
//! through the API show up as working (and then changed, then removed) service addresses. Run as root.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use rkube_e2e::{Cluster, Datastore};
use rkube_proxy::ProxyConfig;
use support::objects::{service, slice};
use support::{Net, POD_PORT};
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);

/// Poll `check` (a connection attempt from the node namespace) until it returns true, within the deadline.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_written_through_the_api_become_working_addresses() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let net = Net::new(&["pod-a", "pod-b"]);
    let cluster = Cluster::start(Datastore::Embedded);
    let client = cluster.client().await;

    let mut config = ProxyConfig::new("node-a", vec![net.node_ip.into()], "10.42.0.0/16", "10.43.0.0/16");
    config.tools = net.tools();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let proxy = tokio::spawn(rkube_proxy::run(client.clone(), config, stop));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let created = services
        .create(&PostParams::default(), &service("web", "", 80, "TCP"))
        .await
        .expect("service");
    let ip: Ipv4Addr = created
        .spec
        .unwrap()
        .cluster_ip
        .unwrap()
        .parse()
        .expect("an IPv4 ClusterIP");
    let to = SocketAddrV4::new(ip, 80);
    let mut first = slice("web", "1", POD_PORT.into(), "TCP", &[("10.42.0.10", "node-a")]);
    first
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("endpointslice.kubernetes.io/managed-by".into(), "test".into());
    slices
        .create(&PostParams::default(), &first)
        .await
        .expect("slice");
    eventually("the ClusterIP answers from pod-a", || {
        net.fetch(&net.node, to).is_ok_and(|a| a == "pod-a")
    })
    .await;

    let mut moved = slices.get("web-1").await.expect("get slice");
    moved.endpoints[0].addresses = vec!["10.42.0.11".into()];
    slices
        .replace("web-1", &PostParams::default(), &moved)
        .await
        .expect("update slice");
    eventually("the ClusterIP follows the endpoint to pod-b", || {
        net.fetch(&net.node, to).is_ok_and(|a| a == "pod-b")
    })
    .await;

    slices
        .delete("web-1", &DeleteParams::default())
        .await
        .expect("delete slice");
    eventually("no endpoints: refused", || {
        net.fetch(&net.node, to)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;

    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("proxy stops")
        .expect("join")
        .expect("run ok");
}
