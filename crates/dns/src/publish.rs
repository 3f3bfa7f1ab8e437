//! The node's own endpoint of the `kube-dns` Service: a selector-less Service gets its endpoints from
//! whoever writes its EndpointSlices, and each node agent writes one for its own DNS listener, so that
//! `internalTrafficPolicy: Local` sends a node's pods to their node's DNS.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::Error;
use crate::index::SERVICE_NAME_LABEL;

/// The Service the slices belong to.
pub const KUBE_DNS_SERVICE: &str = "kube-dns";
/// Where the Service and the slices live.
pub const KUBE_DNS_NAMESPACE: &str = "kube-system";
/// Who manages a slice; the endpointslice controller only touches slices labelled with its own value.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "rkube-dns.rkube.io";

/// How long [`publish`] keeps trying.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);

/// The slice name for a node.
pub fn slice_name(node_name: &str) -> String {
    format!("{KUBE_DNS_SERVICE}-{node_name}")
}

/// The slice `node_name` publishes: its IP, ports dns/53 UDP and dns-tcp/53 TCP.
///
/// It has no owner reference to the Node on purpose: a Node deleted and registered again (new UID) would
/// have the garbage collector delete the slice of a node whose agent published it once and goes on
/// serving. A stale slice of a node that is gone is harmless: with `internalTrafficPolicy: Local` each node
/// only uses its own.
pub fn node_slice(node_name: &str, node_ip: IpAddr) -> EndpointSlice {
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), KUBE_DNS_SERVICE.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    let port = |name: &str, protocol: &str| EndpointPort {
        name: Some(name.into()),
        port: Some(53),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(node_name)),
            namespace: Some(KUBE_DNS_NAMESPACE.into()),
            labels: Some(labels),
            ..Default::default()
        },
        address_type: if node_ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![node_ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(node_name.into()),
            ..Default::default()
        }],
        ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
    }
}

/// Create or update this node's slice, retrying with backoff for up to [`PUBLISH_DEADLINE`] (the agent
/// may start before the API server answers).
pub async fn publish(client: Client, node_name: &str, node_ip: IpAddr) -> Result<(), Error> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match publish_once(client.clone(), node_name, node_ip).await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() + delay > PUBLISH_DEADLINE => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "publishing the kube-dns endpoint; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn publish_once(client: Client, node_name: &str, node_ip: IpAddr) -> Result<(), Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client, KUBE_DNS_NAMESPACE);
    let mut desired = node_slice(node_name, node_ip);
    let name = slice_name(node_name);
    match api.get_opt(&name).await? {
        None => match api.create(&PostParams::default(), &desired).await {
            Ok(_) => Ok(()),
            // Created concurrently (an agent restarting): update it instead.
            Err(kube::Error::Api(e)) if e.code == 409 => replace(&api, &name, desired).await,
            Err(e) => Err(e.into()),
        },
        Some(existing) => {
            if existing.endpoints == desired.endpoints
                && existing.ports == desired.ports
                && existing.address_type == desired.address_type
                && existing.metadata.labels == desired.metadata.labels
            {
                return Ok(());
            }
            desired.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &desired).await?;
            Ok(())
        }
    }
}

async fn replace(api: &Api<EndpointSlice>, name: &str, mut desired: EndpointSlice) -> Result<(), Error> {
    let existing = api.get(name).await?;
    desired.metadata.resource_version = existing.metadata.resource_version;
    api.replace(name, &PostParams::default(), &desired).await?;
    Ok(())
}
