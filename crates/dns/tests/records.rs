//! Every record type of the Kubernetes DNS specification, answered by our server (driven by a real
//! `rkube server`, with Services, EndpointSlices and Pods created through the API) and checked with a real
//! DNS client over UDP and TCP, plus a stub resolver using the search path a pod gets.

mod common;

use std::net::SocketAddr;

use common::{Dns, Upstream, answers, assert_negative, wait_for};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rkube_dns::{DnsConfig, Listeners};
use rkube_e2e::{Cluster, Datastore};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "dnstest";

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("valid object");
    api.create(&PostParams::default(), &obj).await.expect("create")
}

fn service(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// A slice for `service` that the endpointslice controller leaves alone (it manages only its own).
fn slice(
    name: &str,
    service: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "dns-test"}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    })
}

fn ep(ip: &str, ready: bool) -> serde_json::Value {
    json!({"addresses": [ip], "conditions": {"ready": ready}})
}

/// The test cluster's objects; returns the ClusterIP of `web`.
async fn populate(client: &Client) -> String {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(
        &namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    let web = create(
        &services,
        service(
            "web",
            json!({"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    )
    .await;
    create(
        &services,
        service(
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
    )
    .await;
    create(
        &services,
        service("empty", json!({"clusterIP": "None", "ports": [{"port": 1}]})),
    )
    .await;
    create(
        &services,
        service(
            "all",
            json!({"clusterIP": "None", "publishNotReadyAddresses": true, "ports": [{"port": 1}]}),
        ),
    )
    .await;
    create(
        &services,
        service(
            "ext",
            json!({"type": "ExternalName", "externalName": "www.example.test"}),
        ),
    )
    .await;
    create(
        &services,
        service(
            "alias",
            json!({"type": "ExternalName", "externalName": "web.dnstest.svc.cluster.local"}),
        ),
    )
    .await;
    create(
        &services,
        service("big", json!({"clusterIP": "None", "ports": [{"port": 1}]})),
    )
    .await;

    // A pod with hostname/subdomain = db, behind 10.42.0.12: its endpoint is known by its hostname.
    let pod = create(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": NS},
               "spec": {"hostname": "h1", "subdomain": "db",
                        "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    pods.patch_status(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.42.0.12", "podIPs": [{"ip": "10.42.0.12"}]}})),
    )
    .await
    .expect("pod status");
    let _ = pod;

    let db_eps = [
        json!({"addresses": ["10.42.0.11"], "hostname": "db-0", "conditions": {"ready": true}}),
        json!({"addresses": ["10.42.0.12"], "conditions": {"ready": true},
               "targetRef": {"kind": "Pod", "name": "p1", "namespace": NS}}),
        ep("10.42.0.14", true),
        ep("10.42.0.13", false),
    ];
    create(
        &slices,
        slice(
            "db-1",
            "db",
            json!(db_eps),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        ),
    )
    .await;
    create(
        &slices,
        slice(
            "all-1",
            "all",
            json!([ep("10.42.0.21", false)]),
            json!([{"port": 1}]),
        ),
    )
    .await;
    let big: Vec<_> = (1..=60).map(|i| ep(&format!("10.42.1.{i}"), true)).collect();
    create(&slices, slice("big-1", "big", json!(big), json!([{"port": 1}]))).await;

    web.spec.and_then(|s| s.cluster_ip).expect("web has a ClusterIP")
}

async fn start_dns(client: Client, upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.upstreams = vec![upstream];
    let listeners = Listeners::bind(&config.listen).await.expect("bind");
    let addr = listeners.local_addrs()[0];
    let (tx, rx) = watch::channel(false);
    tokio::spawn(rkube_dns::run_on(client, config, listeners, rx));
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_every_record_type_from_the_api() {
    let cluster = Cluster::start(Datastore::Embedded);
    let client = cluster.client().await;
    let upstream = Upstream::start().await;
    let web_ip = populate(&client).await;
    let (dns, _stop) = start_dns(client.clone(), upstream.addr).await;
    let mut udp = Dns::udp(dns).await;

    // Wait until the watches have listed and seen the last object created.
    wait_for("the index to have the big headless service", || {
        let c = Dns::udp(dns);
        async move {
            let m = c
                .await
                .query("big.dnstest.svc.cluster.local.", RecordType::A)
                .await;
            if m.answers.len() == 60 {
                Ok(())
            } else {
                Err(m.metadata.response_code)
            }
        }
    })
    .await;

    // ClusterIP service: A, authoritative, TTL 5; AAAA is NODATA.
    let m = udp.query("web.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), [web_ip.as_str()]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5);
    let m = udp
        .query("web.dnstest.svc.cluster.local.", RecordType::AAAA)
        .await;
    assert_negative(&m, ResponseCode::NoError, "AAAA of an IPv4 service");

    // SRV for a named port, with the target's address in the additional section.
    let m = udp
        .query("_http._tcp.web.dnstest.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_eq!(answers(&m), ["0 100 80 web.dnstest.svc.cluster.local."]);
    assert!(m.additionals.iter().any(|r| r.data.to_string() == web_ip));
    let m = udp
        .query("_dns._udp.web.dnstest.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_eq!(answers(&m), ["0 100 53 web.dnstest.svc.cluster.local."]);
    let m = udp
        .query("_http._udp.web.dnstest.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_negative(
        &m,
        ResponseCode::NXDomain,
        "SRV of a port with the wrong protocol",
    );

    // Headless: ready endpoints only; by hostname (own or the pod's), by dashed IP; SRV per endpoint.
    let m = udp.query("db.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["10.42.0.11", "10.42.0.12", "10.42.0.14"]);
    let m = udp
        .query("db-0.db.dnstest.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(answers(&m), ["10.42.0.11"]);
    let m = udp.query("h1.db.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["10.42.0.12"]);
    let m = udp
        .query("10-42-0-14.db.dnstest.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(answers(&m), ["10.42.0.14"]);
    let m = udp
        .query("10-42-0-13.db.dnstest.svc.cluster.local.", RecordType::A)
        .await;
    assert_negative(&m, ResponseCode::NXDomain, "a not-ready endpoint");
    let m = udp
        .query("_pg._tcp.db.dnstest.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_eq!(
        answers(&m),
        [
            "0 33 5432 10-42-0-14.db.dnstest.svc.cluster.local.",
            "0 33 5432 db-0.db.dnstest.svc.cluster.local.",
            "0 33 5432 h1.db.dnstest.svc.cluster.local.",
        ]
    );
    assert_eq!(m.additionals.len(), 3, "{:?}", m.additionals);

    // Headless with no ready endpoints: NXDOMAIN; with publishNotReadyAddresses: the not-ready one.
    let m = udp.query("empty.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_negative(&m, ResponseCode::NXDomain, "headless without endpoints");
    let m = udp.query("all.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["10.42.0.21"]);

    // PTR: a ClusterIP names its Service, an endpoint its hostname under the Service.
    let reverse = |ip: &str| {
        let mut octets: Vec<&str> = ip.split('.').collect();
        octets.reverse();
        format!("{}.in-addr.arpa.", octets.join("."))
    };
    let m = udp.query(&reverse(&web_ip), RecordType::PTR).await;
    assert_eq!(answers(&m), ["web.dnstest.svc.cluster.local."]);
    let m = udp.query(&reverse("10.42.0.11"), RecordType::PTR).await;
    assert_eq!(answers(&m), ["db-0.db.dnstest.svc.cluster.local."]);

    // ExternalName: a CNAME, chased through the upstream outside the zone and through the index inside.
    let m = udp.query("ext.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["192.0.2.10", "www.example.test."]);
    let m = udp
        .query("ext.dnstest.svc.cluster.local.", RecordType::CNAME)
        .await;
    assert_eq!(answers(&m), ["www.example.test."]);
    let m = udp.query("alias.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        answers(&m),
        [web_ip.clone(), "web.dnstest.svc.cluster.local.".to_string()]
    );
    let m = udp
        .query("_x._tcp.ext.dnstest.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_negative(&m, ResponseCode::NXDomain, "SRV below an ExternalName");

    // Pod records: a pod of that namespace with that IP.
    let m = udp
        .query("10-42-0-12.dnstest.pod.cluster.local.", RecordType::A)
        .await;
    assert_eq!(answers(&m), ["10.42.0.12"]);
    let m = udp
        .query("10-42-0-99.dnstest.pod.cluster.local.", RecordType::A)
        .await;
    assert_negative(&m, ResponseCode::NXDomain, "pod record without such a pod");

    // The schema version, the SOA and NS of the apex.
    let m = udp.query("dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(answers(&m), ["1.1.0"]);
    let m = udp.query("cluster.local.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    assert!(
        answers(&m)[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{m:?}"
    );
    assert!(m.metadata.authoritative);
    let m = udp.query("cluster.local.", RecordType::NS).await;
    assert_eq!(answers(&m), ["ns.dns.cluster.local."]);

    // NXDOMAIN: unknown service, unknown namespace, not svc/pod, too many labels.
    for name in [
        "nosuch.dnstest.svc.cluster.local.",
        "web.nosuchns.svc.cluster.local.",
        "nosuchns.svc.cluster.local.",
        "foo.cluster.local.",
        "a.b.c.web.dnstest.svc.cluster.local.",
        "www.example.test.dnstest.svc.cluster.local.",
    ] {
        let m = udp.query(name, RecordType::A).await;
        assert_negative(&m, ResponseCode::NXDomain, name);
    }
    // NODATA: names that exist without that type.
    for (name, qtype) in [
        ("dnstest.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
        ("web.dnstest.svc.cluster.local.", RecordType::TXT),
        ("db.dnstest.svc.cluster.local.", RecordType::MX),
        ("ext.dnstest.svc.cluster.local.", RecordType::SRV),
    ] {
        let m = udp.query(name, qtype).await;
        assert_negative(&m, ResponseCode::NoError, &format!("{name} {qtype}"));
    }

    // TCP answers the same; a large headless answer is truncated over plain UDP and whole over TCP.
    let mut tcp = Dns::tcp(dns).await;
    let m = tcp.query("web.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), [web_ip.as_str()]);
    let m = tcp.query("big.dnstest.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.answers.len(), 60);
    assert!(!m.metadata.truncation);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = hickory_proto::op::Message::query();
    query.add_query(hickory_proto::op::Query::query(
        common::name("big.dnstest.svc.cluster.local."),
        RecordType::A,
    ));
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert!(
        n <= 512 && m.metadata.truncation && m.answers.len() < 60,
        "{n} bytes, {:?}",
        m.metadata
    );

    // Changes show up: a deleted Service becomes NXDOMAIN, a new endpoint appears.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    wait_for("web to disappear", || {
        let c = Dns::udp(dns);
        async move {
            let m = c
                .await
                .query("web.dnstest.svc.cluster.local.", RecordType::A)
                .await;
            if m.metadata.response_code == ResponseCode::NXDomain {
                Ok(())
            } else {
                Err(answers(&m))
            }
        }
    })
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    slices
        .patch(
            "all-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [ep("10.42.0.21", false), ep("10.42.0.22", true)]})),
        )
        .await
        .expect("patch slice");
    wait_for("the new endpoint", || {
        let c = Dns::udp(dns);
        async move {
            let m = c
                .await
                .query("all.dnstest.svc.cluster.local.", RecordType::A)
                .await;
            let a = answers(&m);
            if a == ["10.42.0.21", "10.42.0.22"] {
                Ok(())
            } else {
                Err(a)
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolver_finds_services_by_short_name_and_the_outside_through_the_search_path() {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let cluster = Cluster::start(Datastore::Embedded);
    let client = cluster.client().await;
    let upstream = Upstream::start().await;
    let web_ip = populate(&client).await;
    let (dns, _stop) = start_dns(client.clone(), upstream.addr).await;

    // The resolv.conf the kubelet writes for a ClusterFirst pod in our namespace.
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": NS}, "spec": {}})).unwrap();
    let conf = rkube_dns::ResolvConf::parse(&rkube_dns::resolv_conf(&pod, &[dns.ip()], "cluster.local", ""));
    assert_eq!(conf.options, ["ndots:5"]);
    let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
    for s in &conf.searches {
        config.add_search(common::name(&format!("{s}.")));
    }
    let mut connection = ConnectionConfig::new(ProtocolConfig::Udp);
    connection.port = dns.port();
    config.add_name_server(NameServerConfig::new(dns.ip(), true, vec![connection]));
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().ndots = 5;
    builder.options_mut().cache_size = 0;
    let resolver = builder.build().expect("resolver");

    let ips = wait_for("web by its short name", || {
        let resolver = &resolver;
        async move {
            resolver
                .lookup_ip("web")
                .await
                .map(|l| l.iter().map(|ip| ip.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(ips, [web_ip.as_str()]);
    let ips: Vec<String> = resolver
        .lookup_ip("web.dnstest")
        .await
        .expect("web.dnstest")
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(ips, [web_ip]);
    // An outside name is first tried under each search domain (NXDOMAIN each), then forwarded.
    let ips: Vec<String> = resolver
        .lookup_ip("www.example.test")
        .await
        .expect("outside name")
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(ips, ["192.0.2.10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_endpoint_of_kube_dns_is_published_and_updated() {
    let cluster = Cluster::start(Datastore::Embedded);
    let client = cluster.client().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");

    rkube_dns::publish_node_endpoint(client.clone(), "node-a", "127.0.0.1".parse().unwrap())
        .await
        .expect("publish");
    let slice = slices.get("kube-dns-node-a").await.expect("slice exists");
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        rkube_dns::publish::MANAGED_BY
    );
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-a"));
    let ports: Vec<(String, String, i32)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.protocol.clone().unwrap(),
                p.port.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".into(), "UDP".into(), 53),
            ("dns-tcp".into(), "TCP".into(), 53)
        ]
    );

    // Again: nothing to change; with a new address: updated in place.
    rkube_dns::publish_node_endpoint(client.clone(), "node-a", "127.0.0.1".parse().unwrap())
        .await
        .expect("publish again");
    rkube_dns::publish_node_endpoint(client.clone(), "node-a", "127.0.0.2".parse().unwrap())
        .await
        .expect("publish a new address");
    let slice = slices.get("kube-dns-node-a").await.expect("slice exists");
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.2"]);
}
