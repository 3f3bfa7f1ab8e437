//! CNI pod network on a node namespace made by `TestNet` (root; nothing runs in the host namespace).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rkube_network::testing::{PeerEchoServer, TestNet, TestNode, netns_path, tcp_read};
use rkube_network::{
    CniNetwork, NodeNetConfig, PodNetRequest, PodNetwork, PortMapping, bridge_name, network_name,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn node_config(data_dir: &Path, node_name: &str, pod_cidr: &str) -> NodeNetConfig {
    NodeNetConfig {
        data_dir: data_dir.to_path_buf(),
        node_name: node_name.into(),
        pod_cidr: pod_cidr.into(),
        cluster_cidr: "10.42.0.0/16".into(),
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
    }
}

fn pod_request(id: &str, netns: &Path, port_mappings: Vec<PortMapping>) -> PodNetRequest {
    PodNetRequest {
        sandbox_id: id.into(),
        netns: netns.to_path_buf(),
        pod_namespace: "default".into(),
        pod_name: format!("pod-{id}"),
        pod_uid: format!("uid-{id}"),
        port_mappings,
    }
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Interfaces enslaved to the node's pod bridge (one host-side veth per attached pod).
fn bridge_ports(node: &TestNode, bridge: &str) -> Vec<String> {
    let text = output(node.command("ip").args(["-o", "link", "show", "master", bridge]));
    text.lines()
        .filter_map(|l| Some(l.split(':').nth(1)?.trim().split('@').next()?.to_string()))
        .collect()
}

fn in_cidr(ip: IpAddr, prefix: [u8; 3]) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == prefix)
}

#[test]
fn pod_gets_an_ip_from_the_node_cidr_reachable_from_the_node_and_del_releases_it() {
    let net = TestNet::new(1).expect("test network");
    let node = net.node(0);
    let data = tempfile::tempdir().unwrap();
    let pod_ns = net.add_netns("p1").unwrap();
    let req = pod_request("sandbox1", &netns_path(&pod_ns), vec![]);
    let cni = node
        .run(|| CniNetwork::new(node_config(data.path(), "node1", "10.42.1.0/24")))
        .expect("cni");

    let status = node.block_on(cni.add(&req)).expect("CNI ADD");
    assert_eq!(status.ips.len(), 1, "{status:?}");
    let pod_ip = status.ips[0];
    assert!(
        in_cidr(pod_ip, [10, 42, 1]),
        "pod IP {pod_ip} outside the node's pod CIDR"
    );
    assert_eq!(status.gateway, Some("10.42.1.1".parse().unwrap()));
    // The pod's own view agrees with the result.
    let addrs = output(Command::new("ip").args(["-n", &pod_ns, "-o", "-4", "addr", "show", "eth0"]));
    assert!(addrs.contains(&format!("{pod_ip}/24")), "{addrs}");

    // Reachable from the node: the pod sees the node's bridge address as the client.
    let server = PeerEchoServer::start(&netns_path(&pod_ns), "0.0.0.0:0".parse().unwrap()).unwrap();
    let to = SocketAddr::new(pod_ip, server.addr().port());
    let seen = tcp_read(&node.netns_path(), to, TIMEOUT).expect("node reaches pod");
    assert!(seen.starts_with("10.42.1.1:"), "pod saw {seen:?}");
    drop(server);

    let bridge = bridge_name("node1");
    assert_eq!(bridge_ports(node, &bridge).len(), 1);
    let lease = data
        .path()
        .join("cni/ipam")
        .join(network_name("node1"))
        .join(pod_ip.to_string());
    assert!(lease.exists(), "host-local lease {} missing", lease.display());
    assert_eq!(node.run(|| cni.cached_attachments()).unwrap(), vec![req.clone()]);

    node.block_on(cni.del(&req)).expect("CNI DEL");
    assert!(!lease.exists(), "DEL did not release {pod_ip}");
    assert!(
        bridge_ports(node, &bridge).is_empty(),
        "DEL left a veth on the bridge"
    );
    assert!(cni.cached_attachments().unwrap().is_empty());
    let links = output(Command::new("ip").args(["-n", &pod_ns, "-o", "link"]));
    assert!(!links.contains("eth0"), "pod still has eth0: {links}");
    node.block_on(cni.del(&req)).expect("DEL is idempotent");

    // The released IP is handed out again, and DEL after the netns is gone still releases it.
    let pod2_ns = net.add_netns("p2").unwrap();
    let req2 = pod_request("sandbox2", &netns_path(&pod2_ns), vec![]);
    let status2 = node.block_on(cni.add(&req2)).expect("second ADD");
    let lease2 = lease.with_file_name(status2.ips[0].to_string());
    assert!(lease2.exists());
    net.remove_netns(&pod2_ns);
    node.block_on(cni.del(&req2))
        .expect("DEL after the netns is gone");
    assert!(!lease2.exists(), "DEL without netns did not release the IP");

    // Same when only a plain file is left where the namespace was mounted.
    let pod3_ns = net.add_netns("p3").unwrap();
    let req3 = pod_request("sandbox3", &netns_path(&pod3_ns), vec![]);
    let status3 = node.block_on(cni.add(&req3)).expect("third ADD");
    let lease3 = lease.with_file_name(status3.ips[0].to_string());
    net.remove_netns(&pod3_ns);
    let leftover = data.path().join("leftover-netns-file");
    std::fs::write(&leftover, b"").unwrap();
    let req3 = PodNetRequest {
        netns: leftover,
        ..req3
    };
    node.block_on(cni.del(&req3))
        .expect("DEL with a stale netns file");
    assert!(
        !lease3.exists(),
        "DEL with a stale netns file did not release the IP"
    );
}

#[test]
fn host_port_reaches_the_pod_through_portmap_and_del_removes_the_mapping() {
    let net = TestNet::new(1).expect("test network");
    let node = net.node(0);
    let data = tempfile::tempdir().unwrap();
    let pod_ns = net.add_netns("hp").unwrap();
    let cni = node
        .run(|| CniNetwork::new(node_config(data.path(), "hp-node", "10.42.7.0/24")))
        .expect("cni");
    let server = PeerEchoServer::start(&netns_path(&pod_ns), "0.0.0.0:0".parse().unwrap()).unwrap();
    let host_port = 30_080;
    let mapping = PortMapping {
        host_port,
        container_port: server.addr().port(),
        protocol: "TCP".into(),
        host_ip: String::new(),
    };
    let req = pod_request("hostport1", &netns_path(&pod_ns), vec![mapping]);
    let status = node.block_on(cni.add(&req)).expect("CNI ADD with a hostPort");
    assert!(in_cidr(status.ips[0], [10, 42, 7]));

    // A client on the underlay (outside the node) reaches nodeIP:hostPort and lands in the pod.
    let to = SocketAddr::new(node.ip.into(), host_port);
    let underlay = netns_path(net.underlay());
    let seen = tcp_read(&underlay, to, TIMEOUT).expect("hostPort reaches the pod");
    assert!(
        seen.starts_with(&format!("{}:", net.underlay_ip())),
        "pod saw {seen:?}"
    );

    // Hairpin: the pod reaches itself through its own hostPort (bridge port in hairpin mode + portmap SNAT).
    let seen = tcp_read(&netns_path(&pod_ns), to, TIMEOUT).expect("pod reaches its own hostPort");
    assert!(!seen.is_empty());

    node.block_on(cni.del(&req)).expect("CNI DEL");
    let rules = output(node.command("iptables").args(["-t", "nat", "-S"]));
    assert!(
        !rules.contains(&format!("--dport {host_port}")),
        "portmap left its DNAT rule:\n{rules}"
    );
    assert!(
        tcp_read(&underlay, to, Duration::from_secs(2)).is_err(),
        "hostPort still answers after DEL"
    );
}

#[test]
fn new_sets_up_the_node_namespace_and_keeps_state_under_the_data_dir() {
    let net = TestNet::new(1).expect("test network");
    let node = net.node(0);
    let data = tempfile::tempdir().unwrap();
    let cni = node
        .run(|| CniNetwork::new(node_config(data.path(), "node-a", "10.42.3.0/24")))
        .expect("cni");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("cni/net.d/10-rkube.conflist")).unwrap())
            .unwrap();
    assert_eq!(&written, cni.conflist());
    assert_eq!(written["name"], network_name("node-a"));
    let routes = output(node.command("ip").args(["route", "show", "10.42.0.0/16"]));
    assert!(
        routes.contains("unreachable 10.42.0.0/16"),
        "no unreachable fallback: {routes}"
    );
    let forward = output(node.command("cat").arg("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(forward.trim(), "1");
    // An invalid pod CIDR is refused before anything is written.
    let bad = node.run(|| CniNetwork::new(node_config(data.path(), "node-b", "10.42.300.0/24")));
    assert!(bad.is_err());
}

#[test]
fn concurrent_adds_on_a_fresh_node_get_distinct_ips_and_all_release() {
    const PODS: usize = 12;
    let net = TestNet::new(1).expect("test network");
    let node = net.node(0);
    let data = tempfile::tempdir().unwrap();
    let cni = node
        .run(|| CniNetwork::new(node_config(data.path(), "busy", "10.42.9.0/24")))
        .expect("cni");
    let requests: Vec<PodNetRequest> = (0..PODS)
        .map(|i| {
            pod_request(
                &format!("c{i}"),
                &netns_path(&net.add_netns(&format!("c{i}")).unwrap()),
                vec![],
            )
        })
        .collect();

    // All at once, as the pod workers do when many pods land on a node (the bridge does not exist yet).
    let results = node.block_on(futures::future::join_all(requests.iter().map(|r| cni.add(r))));
    let mut ips: Vec<IpAddr> = results
        .into_iter()
        .map(|r| r.expect("concurrent ADD").ips[0])
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), PODS, "duplicate pod IPs: {ips:?}");
    assert_eq!(bridge_ports(node, &bridge_name("busy")).len(), PODS);

    let deleted = node.block_on(futures::future::join_all(requests.iter().map(|r| cni.del(r))));
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let leases = std::fs::read_dir(data.path().join("cni/ipam").join(network_name("busy"))).unwrap();
    let left: Vec<String> = leases
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    assert!(left.is_empty(), "leases left after DEL: {left:?}");
    assert!(bridge_ports(node, &bridge_name("busy")).is_empty());
}
