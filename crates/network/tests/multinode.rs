//! host-gw routing between node namespaces made by `TestNet` (root; nothing runs in the host namespace).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rkube_network::routes::RouteOp;
use rkube_network::testing::{PeerEchoServer, TestNet, TestNode, netns_path, tcp_read};
use rkube_network::{
    Announcer, CniNetwork, NodeNetConfig, PodNetRequest, PodNetwork, ROUTE_PROTOCOL, RouteSync,
};

const TIMEOUT: Duration = Duration::from_secs(5);
const CLUSTER_CIDR: &str = "10.42.0.0/16";
const SERVICE_CIDR: &str = "10.43.0.0/16";

struct Pod {
    netns: PathBuf,
    ip: IpAddr,
}

fn start_pod(net: &TestNet, node: &TestNode, k: usize, data: &Path) -> (CniNetwork, Pod) {
    let pod_cidr = format!("10.42.{k}.0/24");
    let config = NodeNetConfig {
        data_dir: data.join(format!("node{k}")),
        node_name: format!("node{k}"),
        pod_cidr,
        cluster_cidr: CLUSTER_CIDR.into(),
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
    };
    let cni = node.run(|| CniNetwork::new(config)).expect("cni");
    let netns = netns_path(&net.add_netns(&format!("pod{k}")).unwrap());
    let req = PodNetRequest {
        sandbox_id: format!("sandbox{k}"),
        netns: netns.clone(),
        pod_namespace: "default".into(),
        pod_name: format!("pod{k}"),
        pod_uid: format!("uid{k}"),
        port_mappings: vec![],
    };
    let status = node.block_on(cni.add(&req)).expect("CNI ADD");
    (
        cni,
        Pod {
            netns,
            ip: status.ips[0],
        },
    )
}

fn our_routes(node: &TestNode) -> String {
    let out = node
        .command("ip")
        .args(["route", "show", "proto", &ROUTE_PROTOCOL.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_reach_pods_on_other_nodes_with_their_own_ip_and_stale_routes_go_away() {
    let net = TestNet::new(2).expect("test network");
    let (n1, n2) = (net.node(0), net.node(1));
    let data = tempfile::tempdir().unwrap();
    let (_cni1, pod1) = start_pod(&net, n1, 1, data.path());
    let (_cni2, pod2) = start_pod(&net, n2, 2, data.path());

    let sync1 = RouteSync::new(&[CLUSTER_CIDR.to_string()])
        .unwrap()
        .with_local_fallbacks(&[SERVICE_CIDR.to_string()])
        .unwrap();
    let sync2 = sync1.clone();
    let ops = n1
        .block_on(sync1.sync(&[("10.42.2.0/24".into(), n2.ip.into())]))
        .expect("sync node1");
    assert_eq!(ops.len(), 1, "{ops:?}");
    n2.block_on(sync2.sync(&[("10.42.1.0/24".into(), n1.ip.into())]))
        .expect("sync node2");
    assert!(
        our_routes(n1).contains(&format!("10.42.2.0/24 via {}", n2.ip)),
        "{}",
        our_routes(n1)
    );
    // A second sync with the same peers changes nothing.
    assert!(
        n1.block_on(sync1.sync(&[("10.42.2.0/24".into(), n2.ip.into())]))
            .unwrap()
            .is_empty()
    );

    let server = PeerEchoServer::start(&pod2.netns, "0.0.0.0:0".parse().unwrap()).unwrap();
    let to = SocketAddr::new(pod2.ip, server.addr().port());
    let seen = tcp_read(&pod1.netns, to, TIMEOUT).expect("pod1 reaches pod2 across nodes");
    assert!(
        seen.starts_with(&format!("{}:", pod1.ip)),
        "pod2 saw {seen:?}, not pod1's own IP {}",
        pod1.ip
    );

    // A node cut off the underlay is unreachable until it is plugged back in.
    net.disconnect(1).unwrap();
    assert!(
        tcp_read(&pod1.netns, to, Duration::from_secs(1)).is_err(),
        "reached a cut-off node"
    );
    net.reconnect(1).unwrap();
    let seen = tcp_read(&pod1.netns, to, TIMEOUT).expect("pod2 reachable again after reconnect");
    assert!(seen.starts_with(&format!("{}:", pod1.ip)), "{seen:?}");

    // An announced LoadBalancer IP (a /32 via lo with our protocol number) is not a host-gw route to prune.
    let announcer = Announcer::new(n1.uplink.clone());
    let lb: IpAddr = "10.44.0.7".parse().unwrap();
    n1.block_on(announcer.announce(lb)).unwrap();

    // Node 2 leaves: its route is removed and traffic to its pods fails fast on the unreachable fallback
    // instead of leaving through the default route.
    let ops = n1.block_on(sync1.sync(&[])).expect("sync without peers");
    let dst = rkube_network::routes::parse_cidr("10.42.2.0/24").unwrap();
    assert_eq!(
        ops,
        vec![RouteOp::Delete {
            dst,
            via: n2.ip.into()
        }]
    );
    assert!(
        !our_routes(n1).contains("10.42.2.0/24 via"),
        "stale route left: {}",
        our_routes(n1)
    );
    let left = our_routes(n1);
    assert!(left.contains("unreachable 10.42.0.0/16"), "{left}");
    assert!(left.contains("10.43.0.0/16 dev lo"), "{left}");
    assert!(
        left.contains("10.44.0.7 dev lo"),
        "sync removed the announced IP's route: {left}"
    );
    let err = tcp_read(&pod1.netns, to, TIMEOUT).expect_err("pod2 must be unreachable without the route");
    assert_ne!(
        err.kind(),
        std::io::ErrorKind::TimedOut,
        "should fail fast, got {err}"
    );

    // clear() removes our unicast routes and nothing else.
    n2.block_on(sync2.clear()).unwrap();
    let left = our_routes(n2);
    assert!(!left.contains(" via "), "{left}");
    let main = n2
        .command("ip")
        .args(["route", "show", "default"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&main.stdout).contains(&net.underlay_ip().to_string()));
}
