//! Forwarding of names outside the zone to the node's upstream resolvers, with a cache: with `ndots:5`
//! every external lookup is tried under the search domains first, and the answers a pod gets back must not
//! cost an upstream round trip each time.
//!
//! Each query goes out on its own ephemeral UDP socket with a random ID (so an off-path spoofer has to guess
//! both), is retried on the next upstream on timeout or SERVFAIL, and over TCP when the answer is truncated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Cached answers live at most this long (the `cache 30` of Kubernetes' default Corefile).
const MAX_CACHE_TTL: u32 = 30;
/// Entries kept; when full, expired ones go, and if none had expired, everything.
const MAX_CACHE_ENTRIES: usize = 10_000;
/// The UDP payload we advertise upstream (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// An upstream's answer, as much of it as we pass on.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream resolvers are configured.
    #[error("no upstream resolvers")]
    NoUpstreams,
    /// Every upstream failed; the last failure.
    #[error("upstream {addr}: {reason}")]
    Failed { addr: SocketAddr, reason: String },
}

type Key = (String, RecordType);

/// The forwarder: upstreams in order, and the cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<Key, (Instant, Upstream)>>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `name`/`qtype`: from the cache with TTLs counted down, or from an upstream.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Upstream, ForwardError> {
        let key = (name.to_ascii().to_ascii_lowercase(), qtype);
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let answer = self.ask_upstreams(name, qtype).await?;
        self.store(key, &answer);
        Ok(answer)
    }

    fn cached(&self, key: &Key) -> Option<Upstream> {
        let mut cache = self.cache.lock();
        let (expires, answer) = cache.get(key)?;
        let now = Instant::now();
        if *expires <= now {
            cache.remove(key);
            return None;
        }
        let left = u32::try_from(expires.duration_since(now).as_secs())
            .unwrap_or(0)
            .max(1);
        let mut answer = answer.clone();
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            r.ttl = r.ttl.min(left);
        }
        Some(answer)
    }

    fn store(&self, key: Key, answer: &Upstream) {
        let ttl = match answer.rcode {
            // Positive: the smallest TTL of the answer; negative: the SOA's (RFC 2308).
            ResponseCode::NoError if !answer.answers.is_empty() => answer.answers.iter().map(|r| r.ttl).min(),
            ResponseCode::NoError | ResponseCode::NXDomain => answer.authorities.iter().map(|r| r.ttl).min(),
            _ => None,
        };
        let Some(ttl) = ttl.map(|t| t.min(MAX_CACHE_TTL)).filter(|t| *t > 0) else {
            return;
        };
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            (
                Instant::now() + Duration::from_secs(u64::from(ttl)),
                answer.clone(),
            ),
        );
    }

    async fn ask_upstreams(&self, name: &Name, qtype: RecordType) -> Result<Upstream, ForwardError> {
        let mut last = ForwardError::NoUpstreams;
        for &addr in &self.upstreams {
            match ask(addr, name, qtype).await {
                Ok(answer) if answer.rcode != ResponseCode::ServFail => return Ok(answer),
                Ok(_) => {
                    last = ForwardError::Failed {
                        addr,
                        reason: "SERVFAIL".into(),
                    }
                }
                Err(reason) => last = ForwardError::Failed { addr, reason },
            }
        }
        Err(last)
    }
}

fn query_message(name: &Name, qtype: RecordType) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    m.set_edns(edns);
    m
}

/// One exchange with one upstream: UDP, then TCP if the answer was truncated.
async fn ask(addr: SocketAddr, name: &Name, qtype: RecordType) -> Result<Upstream, String> {
    let query = query_message(name, qtype);
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_udp(addr, &bytes, &query))
        .await
        .map_err(|_| "timed out".to_string())??;
    let response = if response.metadata.truncation {
        tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_tcp(addr, &bytes, &query))
            .await
            .map_err(|_| "timed out over TCP".to_string())??
    } else {
        response
    };
    Ok(Upstream {
        rcode: response.metadata.response_code,
        answers: response.answers,
        authorities: response.authorities,
        additionals: response
            .additionals
            .into_iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .collect(),
    })
}

fn matches(query: &Message, response: &Message) -> bool {
    response.metadata.id == query.metadata.id
        && response.metadata.message_type == MessageType::Response
        && response.queries.len() == 1
        // Name equality ignores case: resolvers may randomise it (0x20) and servers echo it back.
        && response.queries[0].name() == query.queries[0].name()
        && response.queries[0].query_type() == query.queries[0].query_type()
}

async fn exchange_udp(addr: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, String> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal");
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(addr).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // Anything that is not the answer to our question (a late or forged datagram) is ignored.
        if let Ok(response) = Message::from_vec(&buf[..n])
            && matches(query, &response)
        {
            return Ok(response);
        }
    }
}

async fn exchange_tcp(addr: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    let response = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if matches(query, &response) {
        Ok(response)
    } else {
        Err("answer does not match the question".into())
    }
}
