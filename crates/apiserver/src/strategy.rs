//! What a create or update may change, per kind: kube-apiserver's "strategies". Status is reset on create
//! and kept on spec writes (status changes only through `/status`), `metadata.generation` starts at 1 and is
//! bumped only when something outside metadata and status changed.

use serde_json::{Value, json};

/// The per-kind write rules the registry declares.
#[derive(Clone, Copy, Debug)]
pub struct Strategy {
    /// `metadata.generation` is tracked (set to 1 on create, bumped on spec change).
    pub generation: bool,
    /// What `status` becomes on create; `None` keeps the client's (nodes register with their status).
    pub initial_status: Option<fn(&Value) -> Value>,
    /// A PUT of a missing object creates it.
    pub allow_create_on_update: bool,
    /// DELETE answers the deleted object rather than a `Status`.
    pub return_deleted_object: bool,
    /// Per-kind rules of a spec write, run on the client's object with the stored one beside it.
    pub on_update: Option<fn(&mut Value, &Value)>,
}

fn empty_status(_: &Value) -> Value {
    json!({})
}

/// The strategy of a kind, by its Kind name.
pub fn for_kind(kind: &str) -> Strategy {
    let plain = Strategy {
        generation: false,
        initial_status: None,
        allow_create_on_update: false,
        return_deleted_object: false,
        on_update: None,
    };
    match kind {
        "Pod" => Strategy {
            generation: true,
            initial_status: Some(|pod| json!({"phase": "Pending", "qosClass": qos_class(&pod["spec"])})),
            return_deleted_object: true,
            ..plain
        },
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "CronJob"
        | "ReplicationController"
        | "PodDisruptionBudget" => Strategy {
            generation: true,
            initial_status: Some(empty_status),
            ..plain
        },
        "Service" => Strategy {
            initial_status: Some(|_| json!({"loadBalancer": {}})),
            on_update: Some(drop_type_dependent_fields),
            ..plain
        },
        "Ingress" => Strategy {
            initial_status: Some(|_| json!({"loadBalancer": {}})),
            ..plain
        },
        "PersistentVolumeClaim" | "PersistentVolume" => Strategy {
            initial_status: Some(|_| json!({"phase": "Pending"})),
            ..plain
        },
        "HorizontalPodAutoscaler" | "ResourceQuota" => Strategy {
            initial_status: Some(empty_status),
            ..plain
        },
        "Namespace" => Strategy {
            initial_status: Some(|_| json!({"phase": "Active"})),
            return_deleted_object: true,
            ..plain
        },
        "Endpoints" | "Event" | "Lease" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
        | "LimitRange" => Strategy {
            allow_create_on_update: true,
            ..plain
        },
        _ => plain,
    }
}

/// The pod's QoS class, as kube-apiserver computes it on create.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        let has = |m: Option<&serde_json::Map<String, Value>>, r: &str| m.is_some_and(|m| m.contains_key(r));
        for r in ["cpu", "memory"] {
            if has(requests, r) || has(limits, r) {
                any = true;
            }
            let limit = limits.and_then(|m| m.get(r));
            let request = requests.and_then(|m| m.get(r)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Everything but metadata and status: a change here is a spec change.
fn spec_part(obj: &Value) -> Vec<(&String, &Value)> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .collect()
        })
        .unwrap_or_default()
}

/// Rules of a create: status initialised, generation 1, per-kind fields the server owns.
pub fn prepare_for_create(strategy: &Strategy, group: &str, kind: &str, obj: &mut Value) {
    if let Some(initial) = strategy.initial_status {
        obj["status"] = initial(obj);
    }
    if strategy.generation {
        obj["metadata"]["generation"] = json!(1);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("generation");
    }
    match (group, kind) {
        ("", "Namespace") => obj["spec"] = json!({"finalizers": ["kubernetes"]}),
        ("batch", "Job") => job_selector(obj),
        _ => {}
    }
}

/// A Job without `manualSelector` gets a selector on its own uid, and its template the matching labels.
fn job_selector(job: &mut Value) {
    if job["spec"]["manualSelector"] == true {
        return;
    }
    let uid = job["metadata"]["uid"].clone();
    let name = job["metadata"]["name"].clone();
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let template = &mut job["spec"]["template"];
    if !template.is_object() {
        return;
    }
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = &mut template["metadata"]["labels"];
    labels["batch.kubernetes.io/controller-uid"] = uid.clone();
    labels["batch.kubernetes.io/job-name"] = name.clone();
    labels["controller-uid"] = uid;
    labels["job-name"] = name;
}

/// Rules of a spec write (PUT/PATCH of the main resource): status kept from `old` when the kind has a status
/// subresource; generation bumped when the spec changed.
pub fn prepare_for_update(strategy: &Strategy, has_status: bool, new: &mut Value, old: &Value) {
    if has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    let old_generation = old["metadata"]["generation"].as_i64();
    if strategy.generation {
        let generation = old_generation.unwrap_or(1);
        let bumped = if spec_part(new) != spec_part(old) {
            generation + 1
        } else {
            generation
        };
        new["metadata"]["generation"] = json!(bumped);
    } else if let Some(g) = old_generation {
        new["metadata"]["generation"] = json!(g);
    }
    if let Some(on_update) = strategy.on_update {
        on_update(new, old);
    }
}

/// Whether the client left `spec.<field>` as stored: absent, null and the zero value all count as unset.
fn same_spec_field(new: &Value, old: &Value, field: &str) -> bool {
    let unset = |v: &Value| matches!(v, Value::Null) || v == "" || v == 0 || v == &json!([]);
    let (a, b) = (&new["spec"][field], &old["spec"][field]);
    a == b || unset(a) && unset(b)
}

fn drop_spec_field(obj: &mut Value, field: &str) {
    if let Some(spec) = obj["spec"].as_object_mut() {
        spec.remove(field);
    }
}

/// kube-apiserver's `dropTypeDependentFields`: when an update changes a Service's type so that a field no
/// longer applies, the field is cleared — but only if the client left it as stored, since then the server
/// (defaulting or allocation) most likely set it, and keeping it would make the new type invalid. A value the
/// client changed in the same write is kept and validated. Freed ClusterIPs/NodePorts go back to the
/// allocators after the write is stored (`admission::release_unused`).
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let needs_cluster_ip = |s: &Value| s["spec"]["type"] != "ExternalName";
    let needs_node_port = |s: &Value| matches!(s["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    let externally_accessible = |s: &Value| {
        needs_node_port(s)
            || s["spec"]["type"].as_str().unwrap_or("ClusterIP") == "ClusterIP"
                && s["spec"]["externalIPs"]
                    .as_array()
                    .is_some_and(|ips| !ips.is_empty())
    };
    let is_lb = |s: &Value| s["spec"]["type"] == "LoadBalancer";
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        // `clusterIP` and `clusterIPs` are one value in two shapes: compare the list, filled from the scalar.
        let ips = |s: &Value| match s["spec"]["clusterIPs"].as_array().filter(|a| !a.is_empty()) {
            Some(list) => Value::Array(list.clone()),
            None => match s["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty()) {
                Some(ip) => json!([ip]),
                None => json!([]),
            },
        };
        if ips(new) == ips(old) {
            drop_spec_field(new, "clusterIP");
            drop_spec_field(new, "clusterIPs");
        }
        if same_spec_field(new, old, "ipFamilies") {
            drop_spec_field(new, "ipFamilies");
        }
        if same_spec_field(new, old, "ipFamilyPolicy") {
            drop_spec_field(new, "ipFamilyPolicy");
        }
    }
    if needs_node_port(old) && !needs_node_port(new) {
        let node_ports = |s: &Value| -> Vec<Value> {
            s["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["nodePort"].clone())
                .collect()
        };
        // Only all together, as kube-apiserver: a client that set any nodePort on a ClusterIP Service
        // gets the validation error for it.
        let old_ports = node_ports(old);
        let unchanged = node_ports(new)
            .iter()
            .all(|p| p.is_null() || p == 0 || old_ports.contains(p));
        if unchanged && let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
        }
        if same_spec_field(new, old, "healthCheckNodePort") {
            drop_spec_field(new, "healthCheckNodePort");
        }
    }
    if is_lb(old) && !is_lb(new) {
        if same_spec_field(new, old, "allocateLoadBalancerNodePorts") {
            drop_spec_field(new, "allocateLoadBalancerNodePorts");
        }
        if same_spec_field(new, old, "loadBalancerClass") {
            drop_spec_field(new, "loadBalancerClass");
        }
    }
    if externally_accessible(old)
        && !externally_accessible(new)
        && same_spec_field(new, old, "externalTrafficPolicy")
    {
        drop_spec_field(new, "externalTrafficPolicy");
    }
    // The load balancer is deprovisioned asynchronously, but its address stops being the Service's now.
    if !is_lb(new) && new.get("status").is_some() {
        new["status"]["loadBalancer"] = json!({});
    }
}

/// Rules of a `/status` write: only `status` changes; everything else stays as in `old`.
pub fn prepare_for_status_update(new: &Value, old: &Value) -> Value {
    let mut merged = old.clone();
    match new.get("status") {
        Some(s) => merged["status"] = s.clone(),
        None => {
            merged.as_object_mut().map(|m| m.remove("status"));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_bumps_on_spec_change_only() {
        let s = for_kind("Deployment");
        let mut d = json!({"metadata": {"name": "w"}, "spec": {"replicas": 1}, "status": {"replicas": 5}});
        prepare_for_create(&s, "apps", "Deployment", &mut d);
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["status"], json!({}));

        let old = json!({"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut labels_only =
            json!({"metadata": {"name": "w", "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        prepare_for_update(&s, true, &mut labels_only, &old);
        assert_eq!(labels_only["metadata"]["generation"], 1);
        assert_eq!(labels_only["status"], json!({"replicas": 1}));

        let mut scaled =
            json!({"metadata": {"name": "w"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        prepare_for_update(&s, true, &mut scaled, &old);
        assert_eq!(scaled["metadata"]["generation"], 2);
        assert_eq!(
            scaled["status"],
            json!({"replicas": 1}),
            "a spec write must not change status"
        );
    }

    #[test]
    fn status_update_changes_only_status() {
        let old = json!({"metadata": {"name": "w", "generation": 2}, "spec": {"replicas": 1}});
        let new = json!({"metadata": {"name": "w", "labels": {"x": "y"}}, "spec": {"replicas": 7}, "status": {"replicas": 1}});
        let merged = prepare_for_status_update(&new, &old);
        assert_eq!(merged["spec"]["replicas"], 1);
        assert_eq!(merged["status"]["replicas"], 1);
        assert!(merged["metadata"].get("labels").is_none());
    }

    #[test]
    fn pod_create_sets_pending_and_qos() {
        let s = for_kind("Pod");
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}, "status": {"phase": "Running"}});
        prepare_for_create(&s, "", "Pod", &mut p);
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}));
        assert_eq!(qos_class(&json!({"containers": [{"name": "c"}]})), "BestEffort");
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn service_type_change_drops_what_the_old_type_needed() {
        let s = for_kind("Service");
        let old = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.5.5",
            "clusterIPs": ["10.43.5.5"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}], "healthCheckNodePort": 31000,
            "externalTrafficPolicy": "Local", "allocateLoadBalancerNodePorts": true, "loadBalancerClass": "x"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        // `kubectl patch -p '{"spec":{"type":"ClusterIP"}}'`: everything else as stored.
        let mut patched = old.clone();
        patched["spec"]["type"] = json!("ClusterIP");
        prepare_for_update(&s, true, &mut patched, &old);
        let spec = &patched["spec"];
        for gone in [
            "healthCheckNodePort",
            "externalTrafficPolicy",
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
        ] {
            assert!(spec.get(gone).is_none(), "{gone} kept: {spec}");
        }
        assert!(spec["ports"][0].get("nodePort").is_none());
        assert_eq!(spec["clusterIP"], "10.43.5.5", "a ClusterIP Service keeps its IP");
        assert_eq!(patched["status"]["loadBalancer"], json!({}));

        // A nodePort the client changed in the same write is kept, so validation can refuse it.
        let mut changed = patched.clone();
        changed["spec"] = old["spec"].clone();
        changed["spec"]["type"] = json!("ClusterIP");
        changed["spec"]["ports"][0]["nodePort"] = json!(30099);
        prepare_for_update(&s, true, &mut changed, &old);
        assert_eq!(changed["spec"]["ports"][0]["nodePort"], 30099);

        // To ExternalName: the ClusterIP and IP families go too.
        let mut external = old.clone();
        external["spec"]["type"] = json!("ExternalName");
        external["spec"]["externalName"] = json!("example.com");
        prepare_for_update(&s, true, &mut external, &old);
        for gone in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            assert!(external["spec"].get(gone).is_none(), "{gone} kept");
        }
    }

    #[test]
    fn job_gets_a_selector_on_its_uid() {
        let s = for_kind("Job");
        let mut j = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"spec": {}}}});
        prepare_for_create(&s, "batch", "Job", &mut j);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "pi");
    }
}
