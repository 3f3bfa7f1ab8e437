//! The data-path tests' network: `rkube_network::testing::TestNet` with one node (its underlay namespace
//! doubles as the outside client) plus pods of our own on a bridge in the node:
//!
//! ```text
//!  underlay (outside client)     node                                      pods <prefix>-p0, -p1, …
//!  br0 172.31.R.254/24 ═══ eth0 172.31.R.1/24, default via .254
//!                          cni0 10.42.0.1/24 ══════════ veth ══════════ eth0 10.42.0.1x/24, default via .1
//! ```
//! Nothing is created in the host namespace: pod links are made inside the node namespace with the peer put
//! straight into the pod's. TCP and UDP servers in the pods answer with the pod's name. Dropping [`Net`] stops
//! the servers; TestNet then deletes every namespace (and with them all links and nft tables).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
pub const POD_PORT: u16 = 8080;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -n <netns> <args…>`.
pub fn ip_in(netns: &str, args: &[&str]) {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all);
}

/// Runs `f` on a fresh thread inside the namespace `netns`; sockets it creates stay in that namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

pub struct Net {
    pub node: String,
    /// The underlay namespace: the "outside" client, on the node's L2 segment.
    pub up: String,
    pub node_ip: Ipv4Addr,
    pub up_ip: Ipv4Addr,
    pub pods: Vec<Pod>,
    servers: Vec<Server>,
    /// Last field: dropped after the servers are told to stop; deletes every namespace.
    testnet: rkube_network::testing::TestNet,
}

pub struct Pod {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Net {
    /// The node, the outside client and one pod per name (`10.42.0.10`, `.11`, …), each serving its name.
    pub fn new(pod_names: &[&str]) -> Net {
        assert!(
            Command::new("nft").arg("--version").output().is_ok(),
            "nft is missing: run scripts/deps"
        );
        let testnet = rkube_network::testing::TestNet::new(1)
            .unwrap_or_else(|e| panic!("test network (the data-path tests need root): {e}"));
        let node = testnet.node(0).netns.clone();
        let mut net = Net {
            node: node.clone(),
            up: testnet.underlay().to_string(),
            node_ip: testnet.node(0).ip,
            up_ip: testnet.underlay_ip(),
            pods: Vec::new(),
            servers: Vec::new(),
            testnet,
        };
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", "10.42.0.1/24", "dev", "cni0"]);
        ip(&["-n", &node, "link", "set", "cni0", "up"]);
        in_netns(&node, || {
            // Pod → ClusterIP → pod on the same bridge needs bridged frames to pass the IP hooks.
            let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1");
        });
        for (i, name) in pod_names.iter().enumerate() {
            let netns = net.testnet.add_netns(&format!("p{i}")).expect("pod netns");
            let pod_ip = Ipv4Addr::new(10, 42, 0, 10 + i as u8);
            let host_if = format!("veth{i}");
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            ip(&["-n", &node, "link", "set", &host_if, "master", "cni0", "up"]);
            ip(&[
                "-n",
                &node,
                "link",
                "set",
                &host_if,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{pod_ip}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "route", "add", "default", "via", "10.42.0.1"]);
            net.servers.push(Server::start(&netns, name));
            net.servers.push(Server::start_udp(&netns, name));
            net.pods.push(Pod {
                name: name.to_string(),
                netns,
                ip: pod_ip,
            });
        }
        net
    }

    /// `ip netns exec <node> nft`/`conntrack` for the proxy.
    pub fn tools(&self) -> rkube_proxy::NftCli {
        rkube_proxy::NftCli::in_netns(&self.node)
    }

    /// Open a TCP connection from `netns` and read what the server says.
    pub fn fetch(&self, netns: &str, to: SocketAddrV4) -> std::io::Result<String> {
        in_netns(netns, || {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), CLIENT_TIMEOUT)?;
            stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
    }

    /// Send one datagram from `socket` (bound in some namespace) to `to` and return the answer.
    pub fn ask_udp(socket: &UdpSocket, to: SocketAddrV4) -> std::io::Result<String> {
        socket.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        socket.send_to(b"who", to)?;
        let mut buf = [0u8; 256];
        let (n, _) = socket.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// A server in `netns` that answers every connection with the client's address.
    pub fn serve_peer_address(&mut self, netns: &str, port: u16) {
        self.servers.push(Server::start_with(
            netns,
            port,
            Arc::new(|peer: SocketAddr| peer.ip().to_string()),
        ));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for server in &self.servers {
            server.stop.store(true, Ordering::SeqCst);
        }
    }
}

struct Server {
    stop: Arc<AtomicBool>,
}

type Answer = Arc<dyn Fn(SocketAddr) -> String + Send + Sync>;

impl Server {
    fn start(netns: &str, name: &str) -> Server {
        let name = name.to_string();
        Server::start_with(netns, POD_PORT, Arc::new(move |_| name.clone()))
    }

    /// Answers every datagram on `POD_PORT`/udp with the pod's name.
    fn start_udp(netns: &str, name: &str) -> Server {
        let socket = in_netns(netns, || {
            UdpSocket::bind(("0.0.0.0", POD_PORT)).expect("bind udp")
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(name.as_bytes(), peer);
                }
            }
        });
        Server { stop }
    }

    fn start_with(netns: &str, port: u16, answer: Answer) -> Server {
        let listener = in_netns(netns, || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(answer(peer).as_bytes());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5)); // poll interval of the accept loop
                    }
                    Err(_) => return,
                }
            }
        });
        Server { stop }
    }
}

pub mod objects {
    //! Services and EndpointSlices as the API server would hand them to the proxy.
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
    use kube::api::ObjectMeta;
    use rkube_proxy::model::SERVICE_NAME_LABEL;

    pub fn service(name: &str, cluster_ip: &str, port: i32, protocol: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(vec![ServicePort {
                    name: Some("p".into()),
                    port,
                    protocol: Some(protocol.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn node_port(mut svc: Service, node_port: i32, policy: &str) -> Service {
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some(policy.into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(node_port);
        svc
    }

    /// A slice with ready endpoints `(ip, node name)` on `port`.
    pub fn slice(
        service: &str,
        suffix: &str,
        port: i32,
        protocol: &str,
        endpoints: &[(&str, &str)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{service}-{suffix}")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some("p".into()),
                port: Some(port),
                protocol: Some(protocol.into()),
                ..Default::default()
            }]),
            endpoints: endpoints
                .iter()
                .map(|(ip, node)| Endpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }
}
