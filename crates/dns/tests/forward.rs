//! Names outside the cluster zone go to the upstream resolvers (here a second DNS server on loopback,
//! never the machine's resolver), are cached, survive a dead upstream, and large answers arrive whole over
//! TCP and truncated over UDP.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Dns, Upstream, answers, dead_upstream};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use parking_lot::RwLock;
use rkube_dns::{DnsConfig, Listeners, server};
use tokio::sync::watch;

/// Our DNS server with an empty index and these upstreams; stopped when the returned sender drops.
async fn start_dns(upstreams: Vec<SocketAddr>) -> (SocketAddr, watch::Sender<bool>) {
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.upstreams = upstreams;
    let listeners = Listeners::bind(&config.listen).await.expect("bind");
    let addr = listeners.local_addrs()[0];
    let handler = config
        .handler(Arc::new(RwLock::new(Default::default())))
        .expect("handler");
    let (tx, rx) = watch::channel(false);
    tokio::spawn(server::serve(listeners, handler, rx));
    (addr, tx)
}

#[tokio::test]
async fn forwards_outside_names_and_caches_the_answers() {
    let upstream = Upstream::start().await;
    let (dns, _stop) = start_dns(vec![upstream.addr]).await;
    let mut client = Dns::udp(dns).await;

    let m = client.query("www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&m), ["192.0.2.10"]);
    assert!(!m.metadata.authoritative, "a forwarded answer is not ours");
    assert!(m.metadata.recursion_available);
    assert_eq!(upstream.count(), 1);

    // The second time (any letter case) comes from the cache, with a TTL no longer than the cap.
    let again = client.query("WWW.Example.test.", RecordType::A).await;
    assert_eq!(answers(&again), ["192.0.2.10"]);
    assert!(again.answers[0].ttl <= 30, "ttl {}", again.answers[0].ttl);
    assert_eq!(upstream.count(), 1, "served from the cache");

    // A negative answer is passed on with the upstream's SOA, and cached too.
    let missing = client.query("missing.example.test.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        missing
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );
    let before = upstream.count();
    let missing = client.query("missing.example.test.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.count(), before, "negative answer served from the cache");

    // NODATA from upstream stays NODATA.
    let nodata = client.query("www.example.test.", RecordType::AAAA).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
}

#[tokio::test]
async fn a_dead_upstream_is_skipped() {
    let upstream = Upstream::start().await;
    let (dns, _stop) = start_dns(vec![dead_upstream(), upstream.addr]).await;
    let m = Dns::udp(dns)
        .await
        .query("www.example.test.", RecordType::A)
        .await;
    assert_eq!(answers(&m), ["192.0.2.10"]);

    let (dns, _stop2) = start_dns(vec![dead_upstream()]).await;
    let m = Dns::udp(dns)
        .await
        .query("www.example.test.", RecordType::A)
        .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn large_answers_come_whole_over_tcp_and_truncated_over_udp() {
    let upstream = Upstream::start().await;
    let (dns, _stop) = start_dns(vec![upstream.addr]).await;

    // The upstream's UDP answer is truncated at our advertised 1232 bytes; we fetch it again over TCP.
    let m = Dns::tcp(dns)
        .await
        .query("big.example.test.", RecordType::A)
        .await;
    assert_eq!(m.answers.len(), 100);
    assert!(!m.metadata.truncation);

    // Over UDP the client's own payload size limits what we send back: the TC bit says "ask over TCP".
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = hickory_proto::op::Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(hickory_proto::op::Query::query(
        common::name("big.example.test."),
        RecordType::A,
    ));
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("UDP answer in time")
        .unwrap();
    assert!(n <= 512, "a client without EDNS gets at most 512 bytes, got {n}");
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.len() < 100);
}
