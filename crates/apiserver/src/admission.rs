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

/// Where kube-apiserver's ServiceAccount admission mounts the API credentials in every container.
pub(crate) const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Kubernetes' ServiceAccount admission for a new pod: the account must exist (see below), and unless
/// `automountServiceAccountToken: false` (on the pod, else on the account) the pod gets the projected
/// `kube-api-access-<random>` volume (bound token, cluster CA, namespace) mounted read-only at
/// [`SERVICE_ACCOUNT_MOUNT_PATH`] in every container and init container that mounts nothing there.
///
/// kube-apiserver refuses a pod whose account is missing. The `default` account, though, is created by the
/// serviceaccount controller moments after its namespace, and scripts (and our tests) create pods right
/// after `kubectl create namespace`; kube-apiserver users see that race as a refusal they retry. We accept a
/// pod for a missing `default` account instead (with the automount default) and refuse only a missing
/// account the pod names itself, as kube-apiserver does.
pub(crate) async fn service_account(state: &ApiState, kind: &Kind, obj: &mut Value) -> Result<(), ApiError> {
    if !kind.group.is_empty() || kind.kind != "Pod" {
        return Ok(());
    }
    // Mirror pods (static pods of a kubelet) are never given an account's credentials.
    if obj["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() {
        return Ok(());
    }
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let account = obj["spec"]["serviceAccountName"]
        .as_str()
        .filter(|a| !a.is_empty())
        .unwrap_or("default")
        .to_string();
    let accounts = state
        .registry
        .get("", "v1", "serviceaccounts")
        .expect("serviceaccounts are always served");
    let key = crate::rest::object_key(Some(&namespace), &account);
    let found = crate::rest::read(state, accounts, &key).await?;
    if found.is_none() && account != "default" {
        return Err(ApiError::Forbidden {
            resource: kind.group_resource(),
            name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            message: format!(
                "error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
        });
    }
    let account_automount = found
        .as_ref()
        .and_then(|sa| sa.value["automountServiceAccountToken"].as_bool());
    mount_service_account_token(
        obj,
        account_automount,
        &crate::rest::generate_name("kube-api-access-"),
    );
    Ok(())
}

/// The pure part of [`service_account`]: adds the token volume and its mounts (`volume_name` is used unless
/// the pod already has a `kube-api-access-*` volume).
fn mount_service_account_token(pod: &mut Value, account_automount: Option<bool>, volume_name: &str) {
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or(account_automount)
        .unwrap_or(true);
    if !automount || !pod["spec"].is_object() {
        return;
    }
    let spec = &mut pod["spec"];
    let existing = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(String::from);
    let name = existing.clone().unwrap_or_else(|| volume_name.to_string());
    let mut needed = false;
    for key in ["initContainers", "containers"] {
        // `get_mut`, not `spec[key]`: indexing would store `initContainers: null`, which a later update
        // without it would count as a spec change.
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounted = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SERVICE_ACCOUNT_MOUNT_PATH);
            if mounted {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}));
            }
            needed = true;
        }
    }
    if existing.is_some() || !needed {
        return;
    }
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.push(json!({
            "name": name,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [
                        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                    ]}}
                ],
                "defaultMode": 420
            }
        }));
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

    fn pod(extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "app", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "own", "image": "busybox", "volumeMounts": [
                    {"name": "mine", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "mine", "emptyDir": {}}]}});
        if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        p
    }

    fn mounts(pod: &Value, key: &str, i: usize) -> Vec<(String, String)> {
        pod["spec"][key][i]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn pods_get_the_api_access_volume_in_containers_without_their_own_mount() {
        let mut p = pod(json!({}));
        mount_service_account_token(&mut p, None, "kube-api-access-b7x2q");
        let volume = &p["spec"]["volumes"][2];
        assert_eq!(volume["name"], "kube-api-access-b7x2q");
        assert_eq!(volume["projected"]["defaultMode"], 420);
        let sources = &volume["projected"]["sources"];
        assert_eq!(
            sources[0]["serviceAccountToken"],
            json!({"expirationSeconds": 3607, "path": "token"})
        );
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[1]["configMap"]["items"],
            json!([{"key": "ca.crt", "path": "ca.crt"}])
        );
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let sa = (
            "kube-api-access-b7x2q".to_string(),
            SERVICE_ACCOUNT_MOUNT_PATH.to_string(),
        );
        assert_eq!(mounts(&p, "initContainers", 0), std::slice::from_ref(&sa));
        assert_eq!(
            mounts(&p, "containers", 0),
            [("data".into(), "/data".into()), sa.clone()]
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][1]["readOnly"], true);
        assert_eq!(
            mounts(&p, "containers", 1),
            [("mine".to_string(), SERVICE_ACCOUNT_MOUNT_PATH.to_string())],
            "a container with its own mount there keeps it"
        );
    }

    #[test]
    fn absent_container_lists_stay_absent() {
        let mut p = json!({"spec": {"containers": [{"name": "app", "image": "busybox"}]}});
        mount_service_account_token(&mut p, None, "kube-api-access-b7x2q");
        assert!(p["spec"].get("initContainers").is_none(), "{p}");
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            SERVICE_ACCOUNT_MOUNT_PATH
        );
    }

    #[test]
    fn automount_false_on_the_pod_or_the_account_adds_nothing() {
        let original = pod(json!({"automountServiceAccountToken": false}));
        let mut p = original.clone();
        mount_service_account_token(&mut p, Some(true), "kube-api-access-b7x2q");
        assert_eq!(p, original, "the pod's false wins over the account's true");

        let original = pod(json!({}));
        let mut p = original.clone();
        mount_service_account_token(&mut p, Some(false), "kube-api-access-b7x2q");
        assert_eq!(p, original);

        let mut p = pod(json!({"automountServiceAccountToken": true}));
        mount_service_account_token(&mut p, Some(false), "kube-api-access-b7x2q");
        assert_eq!(
            p["spec"]["volumes"].as_array().unwrap().len(),
            3,
            "the pod's true wins"
        );
    }

    #[test]
    fn an_existing_api_access_volume_is_reused_and_not_duplicated() {
        let mut p = pod(json!({}));
        mount_service_account_token(&mut p, None, "kube-api-access-first");
        let once = p.clone();
        mount_service_account_token(&mut p, None, "kube-api-access-other");
        assert_eq!(p, once);
    }
}
