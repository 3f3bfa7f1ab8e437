//! LoadBalancer IP announcement (proxy ARP + gratuitous ARP) between `TestNet` namespaces (root; nothing runs
//! in the host namespace). The underlay namespace plays the client on the nodes' L2 segment.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use rkube_network::testing::TestNet;
use rkube_network::{Announcer, ROUTE_PROTOCOL};

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(net: &TestNet, i: usize) -> String {
    let node = net.node(i);
    let text = stdout(
        node.command("cat")
            .arg(format!("/sys/class/net/{}/address", node.uplink)),
    );
    text.trim().to_string()
}

/// The MAC the client namespace has cached for `ip`, if any.
fn client_neigh(net: &TestNet, ip: Ipv4Addr) -> Option<String> {
    let text = stdout(Command::new("ip").args(["-n", net.underlay(), "neigh", "show", &ip.to_string()]));
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the client's kernel resolve `ip` (a ping whose ARP request we care about; the echo itself is not
/// answered because the IP is routed to `lo` on the node until a service proxy DNATs it).
fn client_resolves(net: &TestNet, ip: Ipv4Addr) {
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.underlay(),
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            &ip.to_string(),
        ])
        .output();
}

#[test]
fn lb_ip_resolves_to_the_announcing_node_moves_on_takeover_and_withdraw_cleans_up() {
    let net = TestNet::new(2).expect("test network");
    let (n1, n2) = (net.node(0), net.node(1));
    let octets = net.underlay_ip().octets();
    let lb = Ipv4Addr::new(octets[0], octets[1], octets[2], 200);
    let lb_ip = IpAddr::V4(lb);

    let a1 = n1
        .block_on(Announcer::for_node_ip(n1.ip.into()))
        .expect("uplink of node1");
    assert_eq!(a1.uplink(), "eth0");
    n1.block_on(a1.announce(lb_ip)).expect("announce on node1");
    assert_eq!(n1.block_on(a1.announced()).unwrap(), vec![lb_ip]);
    // Never bound: the IP is not a local address of the node.
    let addrs = stdout(n1.command("ip").args(["-o", "addr"]));
    assert!(
        !addrs.contains(&format!(" {lb}/")),
        "LB IP bound to an interface: {addrs}"
    );

    client_resolves(&net, lb);
    let mac1 = mac_of(&net, 0);
    wait_for(
        "the client to resolve the LB IP to node1",
        Duration::from_secs(5),
        || client_neigh(&net, lb).as_deref() == Some(mac1.as_str()),
    );

    // Takeover: node1 withdraws, node2 announces; its gratuitous ARP updates the client's cache without the
    // client asking again.
    n1.block_on(a1.withdraw(lb_ip)).expect("withdraw on node1");
    let a2 = Announcer::new(n2.uplink.clone());
    n2.block_on(a2.announce(lb_ip)).expect("announce on node2");
    let mac2 = mac_of(&net, 1);
    wait_for(
        "the gratuitous ARP to move the client to node2",
        Duration::from_secs(5),
        || client_neigh(&net, lb).as_deref() == Some(mac2.as_str()),
    );

    // sync() withdraws what is no longer ours — and only ours; withdraw is idempotent.
    let foreign = Ipv4Addr::new(octets[0], octets[1], octets[2], 222).to_string();
    assert!(
        n2.command("ip")
            .args(["neigh", "add", "proxy", &foreign, "dev", "eth0"])
            .status()
            .unwrap()
            .success()
    );
    n2.block_on(a2.sync(&[])).expect("sync to nothing");
    let proxies = stdout(n2.command("ip").args(["neigh", "show", "proxy"]));
    assert!(
        proxies.contains(&foreign),
        "sync removed a proxy entry it did not make: {proxies}"
    );
    assert!(
        n2.command("ip")
            .args(["neigh", "del", "proxy", &foreign, "dev", "eth0"])
            .status()
            .unwrap()
            .success()
    );
    n2.block_on(a2.withdraw(lb_ip)).expect("second withdraw");
    for (node, announcer) in [(n1, &a1), (n2, &a2)] {
        assert!(node.block_on(announcer.announced()).unwrap().is_empty());
        let routes = stdout(node.command("ip").args([
            "route",
            "show",
            "table",
            "all",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ]));
        assert!(
            !routes.contains(&lb.to_string()),
            "route left on {}: {routes}",
            node.netns
        );
    }
    // Nobody answers ARP for the IP any more.
    let arping = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.underlay(),
            "busybox",
            "arping",
            "-c",
            "2",
            "-w",
            "2",
            "-I",
            "br0",
        ])
        .arg(lb.to_string())
        .output()
        .unwrap();
    assert!(
        !arping.status.success(),
        "still answered: {}",
        String::from_utf8_lossy(&arping.stdout)
    );
}

#[test]
fn ipv6_is_refused_rather_than_half_announced() {
    let net = TestNet::new(1).expect("test network");
    let node = net.node(0);
    let a = Announcer::new(node.uplink.clone());
    let err = node
        .block_on(a.announce("fd00::10".parse().unwrap()))
        .expect_err("IPv6 unsupported");
    assert!(err.to_string().contains("only IPv4"), "{err}");
}
