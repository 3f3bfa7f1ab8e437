//! The write-time checks between decoding and storing: unknown fields (from the OpenAPI schemas), value
//! validation, managed-field tracking, and Service ClusterIP/NodePort allocation.
//!
//! Allocation follows kube-apiserver: a Service gets its ClusterIP (or the one it asked for, if free) and
//! NodePorts when created, keeps them across updates that do not mention them, and gives them back when it
//! is deleted or stops needing them. What an attempt allocated is returned as an `Allocation`, released
//! again if that attempt is not the one stored (a failed create, a retried update).

use std::collections::BTreeSet;
use std::net::IpAddr;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::ApiState;
use crate::alloc::{IpAllocator, PortAllocator};
use crate::registry::Kind;
use crate::request::Params;
use crate::status::{ApiError, Cause};

/// `spec.foo`-style paths of fields the kind's schema does not define.
pub(crate) fn unknown_fields(state: &ApiState, kind: &Kind, obj: &Value) -> Vec<String> {
    state
        .openapi
        .unknown_fields(kind.group, kind.version, kind.kind, obj)
        .into_iter()
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// Value validation (the object's shape was already checked by decoding it into its type): 422 Invalid.
pub(crate) fn validate(kind: &Kind, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let errors = crate::validation::validate(kind.group, kind.kind, obj, old);
    if errors.is_empty() {
        return Ok(());
    }
    let causes = errors
        .into_iter()
        .map(|e| Cause {
            reason: e.reason.to_string(),
            field: e.field,
            message: e.message,
        })
        .collect();
    Err(crate::rest::invalid(kind, obj, causes))
}

/// The schema of a kind for strategic merge patch and apply.
pub(crate) fn schema<'a>(state: &'a ApiState, kind: &Kind) -> Option<rkube_patch::SchemaNode<'a>> {
    let name = state
        .openapi
        .definition_name(kind.group, kind.version, kind.kind)?;
    rkube_patch::SchemaNode::for_definition(state.openapi.components(), name)
}

/// Records a write by `fieldManager` in `metadata.managedFields` (writes without a manager are not
/// tracked: field ownership only matters between named managers, and tracking costs every write).
pub(crate) fn track_managed_fields(
    state: &ApiState,
    kind: &Kind,
    old: Option<&Value>,
    new: &mut Value,
    params: &Params,
) {
    if let Some(manager) = params.field_manager.as_deref().filter(|m| !m.is_empty()) {
        rkube_patch::apply::track_update(old, new, manager, schema(state, kind), &crate::rest::now());
    }
}

/// Server-side apply of `applied` over `live` as `params.field_manager`; conflicts are 409.
pub(crate) fn server_side_apply(
    state: &ApiState,
    kind: &Kind,
    live: Option<&Value>,
    applied: &Value,
    params: &Params,
) -> Result<Value, ApiError> {
    let manager = params
        .field_manager
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "meta.k8s.io",
                "PatchOptions",
                "",
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )
        })?;
    rkube_patch::apply::server_side_apply(
        live,
        applied,
        manager,
        params.force,
        schema(state, kind),
        &crate::rest::now(),
    )
    .map_err(|e| match e {
        rkube_patch::apply::ApplyError::Conflict(conflicts) => ApiError::ApplyConflict {
            message: rkube_patch::apply::ApplyError::Conflict(conflicts.clone()).to_string(),
            causes: conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict".into(),
                    field: c.field.clone(),
                    message: format!("conflict with {}", c.manager_description()),
                })
                .collect(),
        },
        rkube_patch::apply::ApplyError::Invalid(msg) => ApiError::BadRequest(msg),
    })
}

/// The ClusterIP and NodePort allocators, rebuilt from the stored Services at start.
pub(crate) struct ServiceAllocators {
    ips: IpAllocator,
    ports: PortAllocator,
}

impl ServiceAllocators {
    pub fn new(service_cidr: &str, node_ports: std::ops::RangeInclusive<u16>) -> Result<Self, String> {
        let ips = IpAllocator::new(service_cidr).map_err(|e| e.to_string())?;
        Ok(ServiceAllocators {
            ips,
            ports: PortAllocator::new(node_ports),
        })
    }

    /// Marks what a stored Service holds as taken.
    pub fn restore(&mut self, service: &Value) {
        let (ips, ports) = held(service);
        for ip in ips {
            let _ = self.ips.allocate(ip);
        }
        for port in ports {
            let _ = self.ports.allocate(port);
        }
    }
}

/// The ClusterIPs and NodePorts a Service holds.
fn held(service: &Value) -> (BTreeSet<IpAddr>, BTreeSet<u16>) {
    let spec = &service["spec"];
    let mut ips: BTreeSet<IpAddr> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.as_str()?.parse().ok())
        .collect();
    if let Some(ip) = spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok()) {
        ips.insert(ip);
    }
    let ports = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()))
        .collect();
    (ips, ports)
}

/// What one attempt allocated.
#[derive(Default, Debug)]
#[must_use]
pub(crate) struct Allocation {
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl Allocation {
    pub fn release(self, state: &ApiState) {
        if self.ips.is_empty() && self.ports.is_empty() {
            return;
        }
        let mut a = state.services.lock();
        for ip in self.ips {
            a.ips.release(ip);
        }
        for port in self.ports {
            a.ports.release(port);
        }
    }
}

fn needs_cluster_ip(service: &Value) -> bool {
    service["spec"]["type"] != "ExternalName" && service["spec"]["clusterIP"] != "None"
}

fn needs_node_ports(service: &Value) -> bool {
    matches!(
        service["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

/// Allocates what a Service being created (`old` None) or updated needs, refusing taken addresses with 422.
pub(crate) fn allocate(
    state: &ApiState,
    kind: &Kind,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Allocation, ApiError> {
    let mut allocation = Allocation::default();
    if !(kind.group.is_empty() && kind.kind == "Service") {
        return Ok(allocation);
    }
    let result = allocate_service(&state.services, kind, obj, old, &mut allocation);
    if result.is_err() {
        std::mem::take(&mut allocation).release(state);
    }
    result.map(|()| allocation)
}

fn allocate_service(
    allocators: &Mutex<ServiceAllocators>,
    kind: &Kind,
    obj: &mut Value,
    old: Option<&Value>,
    allocation: &mut Allocation,
) -> Result<(), ApiError> {
    let invalid = |obj: &Value, field: &str, msg: String| {
        crate::rest::invalid(
            kind,
            obj,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                field: field.into(),
                message: msg,
            }],
        )
    };
    let mut a = allocators.lock();
    if obj["spec"]["type"] == "ExternalName" {
        return Ok(());
    }
    if obj["spec"]["clusterIP"] == "None" || obj["spec"]["clusterIPs"][0] == "None" {
        obj["spec"]["clusterIP"] = json!("None");
        obj["spec"]["clusterIPs"] = json!(["None"]);
    } else {
        let old_ip = old
            .filter(|o| needs_cluster_ip(o))
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(String::from);
        let requested = obj["spec"]["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| obj["spec"]["clusterIPs"][0].as_str().filter(|s| !s.is_empty()))
            .map(String::from);
        let ip = match (requested, old_ip) {
            (None, Some(old_ip)) => old_ip,
            (Some(req), Some(old_ip)) if req == old_ip => old_ip,
            (Some(req), _) => {
                let field = "spec.clusterIPs";
                let ip: IpAddr = req.parse().map_err(|_| {
                    invalid(
                        obj,
                        field,
                        format!("Invalid value: []string{{\"{req}\"}}: must be a valid IP address"),
                    )
                })?;
                a.ips.allocate(ip).map_err(|e| {
                    let msg =
                        format!("Invalid value: []string{{\"{req}\"}}: failed to allocate IP {req}: {e}");
                    invalid(obj, field, msg)
                })?;
                allocation.ips.push(ip);
                req
            }
            (None, None) => {
                let ip = a
                    .ips
                    .allocate_next()
                    .map_err(|e| ApiError::Internal(format!("failed to allocate a serviceIP: {e}")))?;
                allocation.ips.push(ip);
                ip.to_string()
            }
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
    if !needs_node_ports(obj) {
        if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
            for p in ports {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
        }
        return Ok(());
    }
    let old_ports: Vec<(i64, String, u16)> = old
        .filter(|o| needs_node_ports(o))
        .and_then(|o| o["spec"]["ports"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let node_port = u16::try_from(p["nodePort"].as_u64()?).ok()?;
            Some((
                p["port"].as_i64()?,
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                node_port,
            ))
        })
        .collect();
    let count = obj["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
    for i in 0..count {
        let port = &obj["spec"]["ports"][i];
        let requested = port["nodePort"].as_u64().filter(|n| *n != 0);
        let key = (
            port["port"].as_i64().unwrap_or(0),
            port["protocol"].as_str().unwrap_or("TCP").to_string(),
        );
        let kept = old_ports
            .iter()
            .find(|(p, proto, _)| (*p, proto.clone()) == key)
            .map(|(_, _, n)| *n);
        let node_port = match (requested, kept) {
            (None, Some(kept)) => kept,
            (Some(req), _) if old_ports.iter().any(|(_, _, n)| u64::from(*n) == req) => req as u16,
            (Some(req), _) => {
                let field = format!("spec.ports[{i}].nodePort");
                let req16 = u16::try_from(req).unwrap_or(0);
                a.ports
                    .allocate(req16)
                    .map_err(|e| invalid(obj, &field, format!("Invalid value: {req}: {e}")))?;
                allocation.ports.push(req16);
                req16
            }
            (None, None) => {
                let p = a
                    .ports
                    .allocate_next()
                    .map_err(|e| ApiError::Internal(format!("failed to allocate a nodePort: {e}")))?;
                allocation.ports.push(p);
                p
            }
        };
        obj["spec"]["ports"][i]["nodePort"] = json!(node_port);
    }
    Ok(())
}

/// After an update is stored: gives back what `old` held and `new` no longer does.
pub(crate) fn release_unused(state: &ApiState, kind: &Kind, old: &Value, new: &Value) {
    if !(kind.group.is_empty() && kind.kind == "Service") {
        return;
    }
    let (old_ips, old_ports) = held(old);
    let (new_ips, new_ports) = held(new);
    let mut a = state.services.lock();
    for ip in old_ips.difference(&new_ips) {
        a.ips.release(*ip);
    }
    for port in old_ports.difference(&new_ports) {
        a.ports.release(*port);
    }
}

/// Gives back what a deleted object held.
pub(crate) fn release(state: &ApiState, kind: &Kind, obj: &Value) {
    release_unused(state, kind, obj, &json!({}));
}

/// Kubernetes' DefaultTolerationSeconds admission: a new pod that does not tolerate the
/// `node.kubernetes.io/not-ready` / `unreachable` NoExecute taints gets tolerations for them, bounded by the
/// server's `--default-not-ready-toleration-seconds`, so pods leave a lost node after that long.
pub(crate) fn default_tolerations(state: &ApiState, kind: &Kind, obj: &mut Value) {
    if !kind.group.is_empty() || kind.kind != "Pod" {
        return;
    }
    let seconds = state.options().default_not_ready_toleration_seconds;
    let spec = &mut obj["spec"];
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = serde_json::json!([]);
    }
    let Some(tolerations) = spec["tolerations"].as_array_mut() else {
        return;
    };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = tolerations.iter().any(|t| {
            (t["key"] == key || t.get("key").is_none() && t["operator"] == "Exists")
                && (t.get("effect").is_none() || t["effect"] == "NoExecute")
        });
        if !present {
            tolerations.push(serde_json::json!({
                "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn allocators() -> Mutex<ServiceAllocators> {
        Mutex::new(ServiceAllocators::new("10.43.0.0/16", 30000..=32767).unwrap())
    }

    #[test]
    fn services_get_unique_ips_and_node_ports() {
        let registry = Registry::builtin();
        let kind = registry.get("", "v1", "services").unwrap();
        let a = allocators();
        let mut s1 = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let mut got = Allocation::default();
        allocate_service(&a, kind, &mut s1, None, &mut got).unwrap();
        let ip = s1["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_eq!(s1["spec"]["clusterIPs"], json!([ip]));
        let np = s1["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));

        let mut dup = json!({"metadata": {"name": "b"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        let err = allocate_service(&a, kind, &mut dup, None, &mut Allocation::default()).unwrap_err();
        assert!(
            err.to_string().contains("provided IP is already allocated"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("The Service \"b\" is invalid: spec.clusterIPs: Invalid value"),
            "{err}"
        );

        let mut dns = json!({"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}});
        allocate_service(&a, kind, &mut dns, None, &mut Allocation::default()).unwrap();
        assert_eq!(dns["spec"]["clusterIP"], "10.43.0.10");

        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        allocate_service(&a, kind, &mut headless, None, &mut Allocation::default()).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let mut external =
            json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.com"}});
        allocate_service(&a, kind, &mut external, None, &mut Allocation::default()).unwrap();
        assert!(external["spec"].get("clusterIP").is_none());

        // An update that does not mention the IP or node port keeps them.
        let mut update = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let mut again = Allocation::default();
        allocate_service(&a, kind, &mut update, Some(&s1), &mut again).unwrap();
        assert_eq!(update["spec"]["clusterIP"], s1["spec"]["clusterIP"]);
        assert_eq!(
            update["spec"]["ports"][0]["nodePort"],
            s1["spec"]["ports"][0]["nodePort"]
        );
        assert!(again.ips.is_empty() && again.ports.is_empty());
    }
}
