//! Traffic through the compiled rules, inside network namespaces this test makes (run as root):
//! a node namespace holding the `ip rkube` table, pods on its bridge, and an outside client namespace.
//! The proxy's compiler and `nft -f` are driven directly, without an API server.

mod support;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddrV4;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_proxy::{Kernel, Model, NodeInfo, Ruleset, compile, diff};
use support::objects::{node_port, service, slice};
use support::{Net, POD_PORT};

const CLUSTER_IP: &str = "10.43.0.20";
const NODE_NAME: &str = "node-a";

fn model(net: &Net, services: Vec<Service>, slices: Vec<EndpointSlice>) -> Model {
    let mut model = Model::new(NodeInfo {
        table: "rkube".into(),
        node_name: NODE_NAME.into(),
        node_ips: vec![net.node_ip],
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        service_cidr: Some("10.43.0.0/16".parse().unwrap()),
    });
    for svc in services {
        model.apply_service(svc);
    }
    for s in slices {
        model.apply_slice(s);
    }
    model
}

fn cluster_ip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLUSTER_IP.parse().unwrap(), port)
}

fn answers(net: &Net, from: &str, to: SocketAddrV4, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            net.fetch(from, to)
                .unwrap_or_else(|e| panic!("{from} → {to}: {e}"))
        })
        .collect()
}

#[test]
fn cluster_ip_spreads_connections_over_both_endpoints() {
    let net = Net::new(&["pod-a", "pod-b"]);
    let m = model(
        &net,
        vec![service("web", CLUSTER_IP, 80, "TCP")],
        vec![slice(
            "web",
            "1",
            POD_PORT.into(),
            "TCP",
            &[("10.42.0.10", NODE_NAME), ("10.42.0.11", NODE_NAME)],
        )],
    );
    net.tools()
        .apply(&compile(&m))
        .expect("nft accepts the compiled table");
    let seen: BTreeSet<String> = answers(&net, &net.node, cluster_ip(80), 40).into_iter().collect();
    assert_eq!(seen, BTreeSet::from(["pod-a".to_string(), "pod-b".to_string()]));
}

#[test]
fn node_port_answers_a_client_in_another_namespace() {
    let net = Net::new(&["pod-a"]);
    let svc = node_port(service("web", CLUSTER_IP, 80, "TCP"), 30080, "Cluster");
    let m = model(
        &net,
        vec![svc],
        vec![slice(
            "web",
            "1",
            POD_PORT.into(),
            "TCP",
            &[("10.42.0.10", NODE_NAME)],
        )],
    );
    net.tools().apply(&compile(&m)).expect("apply");
    let to = SocketAddrV4::new(net.node_ip, 30080);
    assert_eq!(net.fetch(&net.up, to).expect("NodePort from outside"), "pod-a");
    // The node itself reaches its NodePort too (output hook).
    assert_eq!(net.fetch(&net.node, to).expect("NodePort from the node"), "pod-a");
}

#[test]
fn a_service_without_endpoints_refuses_connections() {
    let net = Net::new(&[]);
    let m = model(&net, vec![service("web", CLUSTER_IP, 80, "TCP")], vec![]);
    net.tools().apply(&compile(&m)).expect("apply");
    let err = net
        .fetch(&net.node, cluster_ip(80))
        .expect_err("nothing should answer");
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "rejected, not dropped: {err}"
    );
    // An undefined port of a live ClusterIP is rejected as well.
    let err = net.fetch(&net.node, cluster_ip(81)).expect_err("undefined port");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn external_traffic_policy_local_sends_outside_clients_to_local_endpoints_only() {
    let net = Net::new(&["pod-local", "pod-remote"]);
    let svc = node_port(service("web", CLUSTER_IP, 80, "TCP"), 30081, "Local");
    let eps = [("10.42.0.10", NODE_NAME), ("10.42.0.11", "node-b")];
    let m = model(
        &net,
        vec![svc.clone()],
        vec![slice("web", "1", POD_PORT.into(), "TCP", &eps)],
    );
    net.tools().apply(&compile(&m)).expect("apply");
    let to = SocketAddrV4::new(net.node_ip, 30081);
    let outside: BTreeSet<String> = answers(&net, &net.up, to, 20).into_iter().collect();
    assert_eq!(outside, BTreeSet::from(["pod-local".to_string()]));
    // The node's own traffic still uses every endpoint.
    let inside: BTreeSet<String> = answers(&net, &net.node, cluster_ip(80), 40).into_iter().collect();
    assert_eq!(inside.len(), 2, "{inside:?}");

    // Without a local endpoint outside clients get nothing (dropped), the node still gets an answer.
    let m = model(
        &net,
        vec![svc],
        vec![slice("web", "1", POD_PORT.into(), "TCP", &eps[1..])],
    );
    net.tools().apply(&compile(&m)).expect("apply");
    let err = net.fetch(&net.up, to).expect_err("no local endpoint");
    assert_ne!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "dropped, not rejected: {err}"
    );
    assert_eq!(net.fetch(&net.node, to).expect("from the node"), "pod-remote");
}

#[test]
fn client_ip_session_affinity_sticks_to_one_endpoint() {
    let net = Net::new(&["pod-a", "pod-b"]);
    let mut svc = service("web", CLUSTER_IP, 80, "TCP");
    let spec = svc.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(600),
        }),
    });
    let eps = [("10.42.0.10", NODE_NAME), ("10.42.0.11", NODE_NAME)];
    let m = model(
        &net,
        vec![svc],
        vec![slice("web", "1", POD_PORT.into(), "TCP", &eps)],
    );
    net.tools().apply(&compile(&m)).expect("apply");
    let seen: BTreeSet<String> = answers(&net, &net.node, cluster_ip(80), 20).into_iter().collect();
    assert_eq!(seen.len(), 1, "affinity broken: {seen:?}");
}

#[test]
fn a_rejected_transaction_leaves_the_previous_rules_in_place() {
    let net = Net::new(&["pod-a"]);
    let m = model(
        &net,
        vec![service("web", CLUSTER_IP, 80, "TCP")],
        vec![slice(
            "web",
            "1",
            POD_PORT.into(),
            "TCP",
            &[("10.42.0.10", NODE_NAME)],
        )],
    );
    let tools = net.tools();
    tools.apply(&compile(&m)).expect("apply");
    let before = tools.nft_output(&["list", "table", "ip", "rkube"]).expect("list");

    // A full sync of an empty model whose last line is broken: nothing of it may land.
    let broken = format!(
        "{}add rule ip rkube services this is not a rule\n",
        compile(&model(&net, vec![], vec![]))
    );
    let err = tools.apply(&broken).expect_err("nft must refuse the script");
    assert!(err.to_string().contains("nft rejected"), "{err}");
    assert_eq!(
        tools.nft_output(&["list", "table", "ip", "rkube"]).expect("list"),
        before
    );
    assert_eq!(
        net.fetch(&net.node, cluster_ip(80))
            .expect("old rules still work"),
        "pod-a"
    );
}

#[test]
fn incremental_updates_apply_in_the_kernel_and_stale_chains_go_later() {
    let net = Net::new(&["pod-a", "pod-b"]);
    let tools = net.tools();
    let one = model(
        &net,
        vec![service("web", CLUSTER_IP, 80, "TCP")],
        vec![slice(
            "web",
            "1",
            POD_PORT.into(),
            "TCP",
            &[("10.42.0.10", NODE_NAME)],
        )],
    );
    let applied = Ruleset::from_model(&one);
    tools.apply(&applied.render_full()).expect("full");
    assert_eq!(
        net.fetch(&net.node, cluster_ip(80)).expect("one endpoint"),
        "pod-a"
    );

    let two = model(
        &net,
        vec![
            service("web", CLUSTER_IP, 80, "TCP"),
            service("api", "10.43.0.21", 81, "TCP"),
        ],
        vec![
            slice(
                "web",
                "1",
                POD_PORT.into(),
                "TCP",
                &[("10.42.0.10", NODE_NAME), ("10.42.0.11", NODE_NAME)],
            ),
            slice("api", "1", POD_PORT.into(), "TCP", &[("10.42.0.11", NODE_NAME)]),
        ],
    );
    let next = Ruleset::from_model(&two);
    tools
        .apply(&diff(&applied, &next, &[]).script)
        .expect("incremental add");
    let seen: BTreeSet<String> = answers(&net, &net.node, cluster_ip(80), 40).into_iter().collect();
    assert_eq!(seen.len(), 2);
    let api = SocketAddrV4::new("10.43.0.21".parse().unwrap(), 81);
    assert_eq!(net.fetch(&net.node, api).expect("new service"), "pod-b");

    // The api Service goes: its address is an unallocated part of the service CIDR now (dropped); its chains
    // are flushed now and deleted by a later transaction.
    let update = diff(&next, &applied, &[]);
    tools.apply(&update.script).expect("incremental delete");
    net.fetch(&net.node, api).expect_err("deleted service");
    assert!(
        tools
            .nft_output(&["list", "table", "ip", "rkube"])
            .unwrap()
            .contains("chain svc-default/api/tcp/81")
    );
    let later = diff(&applied, &applied, &update.flushed);
    tools.apply(&later.script).expect("stale deletion");
    let table = tools.nft_output(&["list", "table", "ip", "rkube"]).unwrap();
    assert!(!table.contains("default/api/"), "{table}");
    assert_eq!(
        net.fetch(&net.node, cluster_ip(80)).expect("web unaffected"),
        "pod-a"
    );
}

#[test]
fn pods_are_masqueraded_leaving_the_cluster_and_hairpin_reaches_the_pod_itself() {
    let mut net = Net::new(&["pod-a"]);
    let up = net.up.clone();
    net.serve_peer_address(&up, 9000);
    let m = model(
        &net,
        vec![service("web", CLUSTER_IP, 80, "TCP")],
        vec![slice(
            "web",
            "1",
            POD_PORT.into(),
            "TCP",
            &[("10.42.0.10", NODE_NAME)],
        )],
    );
    net.tools().apply(&compile(&m)).expect("apply");
    let pod = net.pods[0].netns.clone();
    let outside = SocketAddrV4::new(net.up_ip, 9000);
    assert_eq!(
        net.fetch(&pod, outside).expect("pod → outside"),
        net.node_ip.to_string()
    );
    assert_eq!(
        net.fetch(&pod, cluster_ip(80)).expect("pod → its own service"),
        "pod-a"
    );
}

#[test]
fn udp_flows_move_to_the_new_endpoint_once_conntrack_is_flushed() {
    let net = Net::new(&["pod-a", "pod-b"]);
    let tools = net.tools();
    let udp = |ep: &str| {
        model(
            &net,
            vec![service("dns", CLUSTER_IP, 53, "UDP")],
            vec![slice("dns", "1", POD_PORT.into(), "UDP", &[(ep, NODE_NAME)])],
        )
    };
    let before = Ruleset::from_model(&udp("10.42.0.10"));
    tools.apply(&before.render_full()).expect("full");
    // One client socket: the same 5-tuple, so the kernel would keep using its conntrack entry.
    let socket = support::in_netns(&net.node, || {
        std::net::UdpSocket::bind("0.0.0.0:0").expect("bind")
    });
    let to = SocketAddrV4::new(CLUSTER_IP.parse().unwrap(), 53);
    assert_eq!(Net::ask_udp(&socket, to).expect("udp to pod-a"), "pod-a");

    let after = Ruleset::from_model(&udp("10.42.0.11"));
    let update = diff(&before, &after, &[]);
    assert!(
        !update.conntrack.is_empty(),
        "a UDP endpoint went away: its flows must be flushed"
    );
    tools.apply(&update.script).expect("incremental");
    for flush in &update.conntrack {
        tools
            .flush_conntrack(flush)
            .expect("conntrack -D (install the conntrack package: scripts/deps)");
    }
    assert_eq!(Net::ask_udp(&socket, to).expect("udp to pod-b"), "pod-b");
}

#[test]
fn load_balancer_ip_answers_allowed_sources_only() {
    let net = Net::new(&["pod-a"]);
    // The outside namespace routes the LB address to the node, as the announcing node's proxy ARP would.
    let lb_ip = "192.0.2.10";
    support::ip_in(&net.up, &["route", "add", lb_ip, "via", &net.node_ip.to_string()]);
    let lb = |ranges: &[String]| {
        let mut svc = node_port(service("web", CLUSTER_IP, 80, "TCP"), 30082, "Cluster");
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.load_balancer_source_ranges = Some(ranges.to_vec());
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(lb_ip.into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        model(
            &net,
            vec![svc],
            vec![slice(
                "web",
                "1",
                POD_PORT.into(),
                "TCP",
                &[("10.42.0.10", NODE_NAME)],
            )],
        )
    };
    let to = SocketAddrV4::new(lb_ip.parse().unwrap(), 80);
    net.tools()
        .apply(&compile(&lb(&[format!("{}/32", net.up_ip)])))
        .expect("apply");
    assert_eq!(net.fetch(&net.up, to).expect("allowed source"), "pod-a");

    net.tools()
        .apply(&compile(&lb(&["10.0.0.0/8".to_string()])))
        .expect("apply");
    net.fetch(&net.up, to)
        .expect_err("a source outside loadBalancerSourceRanges is dropped");
    // NodePorts are not limited by the source ranges.
    assert_eq!(
        net.fetch(&net.up, SocketAddrV4::new(net.node_ip, 30082))
            .expect("NodePort"),
        "pod-a"
    );
}
