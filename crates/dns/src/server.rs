//! The DNS server: hickory-server's UDP/TCP transport (framing, truncation of large UDP answers to the
//! client's payload size, connection timeouts) with our [`RequestHandler`] over the index and the forwarder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use parking_lot::RwLock;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::Error;
use crate::forward::Forwarder;
use crate::index::Index;
use crate::zone::{Outcome, Zone, resolve};

/// The index shared by the watches (writers) and the query handler (readers).
pub type SharedIndex = Arc<RwLock<Index>>;

/// Idle TCP connections are closed after this.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Bound sockets, UDP and TCP on the same addresses.
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Bind UDP and TCP on each address; for port 0, TCP takes the port UDP got.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Listeners, Error> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in addrs {
            let (u, t) = bind_pair(addr).await?;
            udp.push(u);
            tcp.push(t);
        }
        Ok(Listeners { udp, tcp })
    }

    /// The addresses actually bound (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let bind_err = |source| Error::Bind { addr, source };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        return Ok((udp, tcp));
    }
    // Port 0: a port free for both protocols; another process may take the TCP side in between, so retry.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let local = udp.local_addr().map_err(bind_err)?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

/// Answers queries from the index, forwarding what is not ours.
pub struct Handler {
    index: SharedIndex,
    zone: Zone,
    forwarder: Forwarder,
}

impl Handler {
    pub fn new(index: SharedIndex, zone: Zone, forwarder: Forwarder) -> Handler {
        Handler {
            index,
            zone,
            forwarder,
        }
    }
}

/// The records of one response, by section.
#[derive(Default)]
struct Sections {
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Handler {
    /// The response code, whether we are authoritative, and the records.
    async fn answer(&self, request: &Request) -> (ResponseCode, bool, Sections) {
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            return (ResponseCode::NotImp, false, Sections::default());
        }
        let [query] = request.queries.queries() else {
            return (ResponseCode::FormErr, false, Sections::default());
        };
        let name = query.original().name();
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return (ResponseCode::Refused, false, Sections::default());
        }
        // The read guard must be gone before any await.
        let outcome = resolve(&self.index.read(), &self.zone, name, qtype);
        match outcome {
            Outcome::Local(reply) => (
                reply.rcode,
                true,
                Sections {
                    answers: reply.answers,
                    authorities: reply.authorities,
                    additionals: reply.additionals,
                },
            ),
            Outcome::Forward => match self.forwarder.resolve(name, qtype).await {
                Ok(up) => (
                    up.rcode,
                    false,
                    Sections {
                        answers: up.answers,
                        authorities: up.authorities,
                        additionals: up.additionals,
                    },
                ),
                Err(error) => {
                    tracing::debug!(%name, %error, "forward failed");
                    (ResponseCode::ServFail, false, Sections::default())
                }
            },
            Outcome::Chase { mut answers, target } => {
                // The CNAME is ours whatever the upstream says about its target (as CoreDNS).
                if let Ok(up) = self.forwarder.resolve(&target, qtype).await {
                    answers.extend(up.answers);
                }
                (
                    ResponseCode::NoError,
                    true,
                    Sections {
                        answers,
                        ..Sections::default()
                    },
                )
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let (rcode, authoritative, sections) = self.answer(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = rcode;
        metadata.authoritative = authoritative;
        metadata.recursion_available = true;
        // Answer EDNS with EDNS; the client's payload size bounds what fits in a UDP answer.
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            sections.answers.iter(),
            sections.authorities.iter(),
            std::iter::empty(),
            sections.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending a DNS response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Serve on `listeners` until `stop` turns true (or its sender is dropped).
pub async fn serve(
    listeners: Listeners,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut server = Server::new(handler);
    for socket in listeners.udp {
        server.register_socket(socket);
    }
    for listener in listeners.tcp {
        server.register_listener(listener, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let token = server.shutdown_token().clone();
    let stopper = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        token.cancel();
    });
    let result = server.block_until_done().await;
    stopper.abort();
    result.map_err(|e| Error::Serve(e.to_string()))
}
