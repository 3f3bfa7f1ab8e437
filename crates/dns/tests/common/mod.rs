//! Shared by the DNS integration tests: a DNS client (hickory's) against our server, a second DNS server
//! on loopback playing the upstream, and waiting on a condition with a deadline. The real `rkube server`
//! comes from rkube-e2e's `Cluster` (needs `target/debug/rkube`: `cargo build -p rkube --bin rkube`).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::{Time, TokioRuntimeProvider};
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::{Instant, sleep};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Poll `probe` until it returns `Ok`, or panic after [`DEADLINE`] with `what` and the last observation.
pub async fn wait_for<T, O: std::fmt::Debug, Fut: Future<Output = Result<T, O>>>(
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > DEADLINE => {
                panic!("timed out waiting for {what}; last seen: {last:?}")
            }
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

/// A DNS client (hickory's) talking to `server` over UDP or TCP.
pub struct Dns {
    client: Client<TokioRuntimeProvider>,
}

impl Dns {
    pub async fn udp(server: SocketAddr) -> Dns {
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(5)))
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        Dns { client }
    }

    pub async fn tcp(server: SocketAddr) -> Dns {
        let (stream, sender) = TcpClientStream::new(
            server,
            None,
            Some(Duration::from_secs(5)),
            TokioRuntimeProvider::default(),
        );
        let stream = tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(bg);
        Dns { client }
    }

    /// The whole response message.
    pub async fn query(&mut self, qname: &str, qtype: RecordType) -> Message {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.query(name(qname), DNSClass::IN, qtype),
        )
        .await
        .unwrap_or_else(|_| panic!("{qname} {qtype}: no answer in time"))
        .unwrap_or_else(|e| panic!("{qname} {qtype}: {e}"));
        response.into_message()
    }
}

/// The answer section's data, as text, sorted (`10.43.0.12`, `web.default.svc.cluster.local.`, `0 100 80 x.`).
pub fn answers(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

/// `NOERROR`/`NXDOMAIN` with no answer and the zone's SOA in the authority section, authoritative.
pub fn assert_negative(m: &Message, rcode: ResponseCode, what: &str) {
    assert_eq!(m.metadata.response_code, rcode, "{what}: {m:?}");
    assert!(m.answers.is_empty(), "{what}: answers {:?}", m.answers);
    assert!(m.metadata.authoritative, "{what}: not authoritative");
    assert!(
        m.authorities.iter().any(|r| r.record_type() == RecordType::SOA),
        "{what}: no SOA in authority: {:?}",
        m.authorities
    );
}

/// The upstream resolver of the tests: `example.test` with `www` → 192.0.2.10, `big` → 100 A records
/// (too many for a UDP answer), everything else NXDOMAIN with an SOA; counts the queries it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    _stop: StopOnDrop,
}

/// Stops a server task when dropped.
struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

struct UpstreamHandler {
    queries: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl RequestHandler for UpstreamHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut handle: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let query = &request.queries.queries()[0];
        let qname = query.original().name().clone();
        let lower = qname.to_ascii().to_ascii_lowercase();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let mut answers = Vec::new();
        let mut authorities = Vec::new();
        let a = |ip: Ipv4Addr| Record::from_rdata(qname.clone(), 300, RData::A(A(ip)));
        match (lower.as_str(), query.query_type()) {
            ("www.example.test.", RecordType::A) => answers.push(a(Ipv4Addr::new(192, 0, 2, 10))),
            ("big.example.test.", RecordType::A) => {
                answers.extend((1..=100).map(|i| a(Ipv4Addr::new(198, 51, 100, i))));
            }
            ("www.example.test." | "big.example.test.", _) => {}
            _ => metadata.response_code = ResponseCode::NXDomain,
        }
        if answers.is_empty() {
            let soa = SOA::new(
                name("ns.example.test."),
                name("admin.example.test."),
                1,
                60,
                60,
                60,
                60,
            );
            authorities.push(Record::from_rdata(name("example.test."), 60, RData::SOA(soa)));
        }
        let edns = request.edns.clone();
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        handle.send_response(response).await.expect("upstream reply")
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let queries = Arc::new(AtomicUsize::new(0));
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("addr")).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let mut server = Server::new(UpstreamHandler {
            queries: queries.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = server.shutdown_token().clone();
        tokio::spawn(async move {
            let _ = rx.await;
            token.cancel();
            let _ = server.block_until_done().await;
        });
        Upstream {
            addr,
            queries,
            _stop: StopOnDrop(Some(tx)),
        }
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// A loopback UDP port nothing listens on (an upstream that is down).
pub fn dead_upstream() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    drop(socket);
    addr
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn is_response(m: &Message) -> bool {
    m.metadata.message_type == MessageType::Response
}
