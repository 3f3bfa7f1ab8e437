//! Server-side printing: the `Table` columns and cells kube-apiserver returns for `kubectl get`.
//!
//! kubectl has no client-side printers for built-in kinds any more: what it shows under NAME, READY,
//! STATUS … is exactly what [`column_definitions`] and [`row_cells`] produce. Both follow kube-apiserver's
//! `pkg/printers/internalversion` printers column for column (priority 1 = only with `-o wide`; the server
//! always sends every column and kubectl hides the wide ones). Objects arrive as stored JSON, so every
//! accessor tolerates missing fields the way Go's zero values do.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The `columnDefinitions` of a `Table` for one kind; unknown kinds get Name and Age.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    columns(group, kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// One `Table` row's cells for `obj`, in [`column_definitions`] order. `now` decides every Age.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let o = Obj { v: obj, now };
    match (group, kind) {
        ("", "Pod") => pod_cells(&o),
        ("", "Service") => service_cells(&o),
        ("", "Endpoints") => vec![o.name(), formatted_endpoints(obj).into(), o.age()],
        ("", "Node") => node_cells(&o),
        ("", "Namespace") => vec![o.name(), o.str("/status/phase").into(), o.age()],
        ("", "Event") | ("events.k8s.io", "Event") => event_cells(&o, group == "events.k8s.io"),
        ("", "ConfigMap") => {
            let n = o.len("/data") + o.len("/binaryData");
            vec![o.name(), n.into(), o.age()]
        }
        ("", "Secret") => vec![o.name(), o.str("/type").into(), o.len("/data").into(), o.age()],
        ("", "ServiceAccount") => vec![o.name(), o.len("/secrets").into(), o.age()],
        ("", "PersistentVolumeClaim") => pvc_cells(&o),
        ("", "PersistentVolume") => pv_cells(&o),
        ("", "ResourceQuota") => vec![
            o.name(),
            o.age(),
            quota_summary(obj, false),
            quota_summary(obj, true),
        ],
        ("", "ReplicationController") => vec![
            o.name(),
            o.int("/spec/replicas").into(),
            o.int("/status/replicas").into(),
            o.int("/status/readyReplicas").into(),
            o.age(),
            o.containers().into(),
            o.images().into(),
            label_map_string(obj.pointer("/spec/selector")).into(),
        ],
        ("apps", "Deployment") => vec![
            o.name(),
            format!("{}/{}", o.int("/status/readyReplicas"), o.int("/spec/replicas")).into(),
            o.int("/status/updatedReplicas").into(),
            o.int("/status/availableReplicas").into(),
            o.age(),
            o.containers().into(),
            o.images().into(),
            label_selector_string(obj.pointer("/spec/selector")).into(),
        ],
        ("apps", "ReplicaSet") => vec![
            o.name(),
            o.int("/spec/replicas").into(),
            o.int("/status/replicas").into(),
            o.int("/status/readyReplicas").into(),
            o.age(),
            o.containers().into(),
            o.images().into(),
            label_selector_string(obj.pointer("/spec/selector")).into(),
        ],
        ("apps", "DaemonSet") => vec![
            o.name(),
            o.int("/status/desiredNumberScheduled").into(),
            o.int("/status/currentNumberScheduled").into(),
            o.int("/status/numberReady").into(),
            o.int("/status/updatedNumberScheduled").into(),
            o.int("/status/numberAvailable").into(),
            label_map_string(obj.pointer("/spec/template/spec/nodeSelector")).into(),
            o.age(),
            o.containers().into(),
            o.images().into(),
            label_selector_string(obj.pointer("/spec/selector")).into(),
        ],
        ("apps", "StatefulSet") => vec![
            o.name(),
            format!("{}/{}", o.int("/status/readyReplicas"), o.int("/spec/replicas")).into(),
            o.age(),
            o.containers().into(),
            o.images().into(),
        ],
        ("apps", "ControllerRevision") => {
            let controller = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("controller") == Some(&Value::Bool(true)))
                })
                .map(|r| {
                    let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
                    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
                    let resource = kind.to_lowercase();
                    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                    if group.is_empty() {
                        format!("{resource}/{name}")
                    } else {
                        format!("{resource}.{group}/{name}")
                    }
                })
                .unwrap_or_else(|| "<none>".to_string());
            vec![o.name(), controller.into(), o.int("/revision").into(), o.age()]
        }
        ("batch", "Job") => job_cells(&o),
        ("batch", "CronJob") => cronjob_cells(&o),
        ("coordination.k8s.io", "Lease") => vec![o.name(), o.str("/spec/holderIdentity").into(), o.age()],
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice_cells(&o),
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => {
            vec![o.name(), o.created_at()]
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => binding_cells(&o),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => vec![o.name(), o.created_at()],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            o.name(),
            o.int("/value").into(),
            obj.get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .into(),
            o.age(),
            o.str_or("/preemptionPolicy", "<none>").into(),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            o.name(),
            int_or_string(obj.pointer("/spec/minAvailable")).into(),
            int_or_string(obj.pointer("/spec/maxUnavailable")).into(),
            o.int("/status/disruptionsAllowed").into(),
            o.age(),
        ],
        ("storage.k8s.io", "StorageClass") => {
            let mut name = o.str("/metadata/name");
            let default = obj.pointer("/metadata/annotations").is_some_and(|a| {
                [
                    "storageclass.kubernetes.io/is-default-class",
                    "storageclass.beta.kubernetes.io/is-default-class",
                ]
                .iter()
                .any(|k| a.get(*k).and_then(Value::as_str) == Some("true"))
            });
            if default {
                name.push_str(" (default)");
            }
            vec![
                name.into(),
                o.str("/provisioner").into(),
                o.str_or("/reclaimPolicy", "Delete").into(),
                o.str_or("/volumeBindingMode", "Immediate").into(),
                obj.get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .into(),
                o.age(),
            ]
        }
        ("", "PodTemplate") => {
            let t = |suffix: &str| -> String {
                array(obj, "/template/spec/containers")
                    .iter()
                    .map(|c| s(c, suffix))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                o.name(),
                t("/name").into(),
                t("/image").into(),
                label_map_string(obj.pointer("/template/metadata/labels")).into(),
            ]
        }
        ("", "LimitRange") => vec![o.name(), o.created_at()],
        ("autoscaling", "HorizontalPodAutoscaler") => hpa_cells(&o),
        ("networking.k8s.io", "Ingress") => ingress_cells(&o),
        ("networking.k8s.io", "IngressClass") => {
            let params = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
                None => "<none>".to_string(),
                Some(p) => {
                    let kind = match s(p, "/apiGroup") {
                        "" => s(p, "/kind").to_string(),
                        group => format!("{}.{group}", s(p, "/kind")),
                    };
                    format!("{kind}/{}", s(p, "/name"))
                }
            };
            vec![o.name(), o.str("/spec/controller").into(), params.into(), o.age()]
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            vec![
                o.name(),
                label_selector_string(obj.pointer("/spec/podSelector")).into(),
                o.age(),
            ]
        }
        ("node.k8s.io", "RuntimeClass") => vec![o.name(), o.str("/handler").into(), o.age()],
        ("storage.k8s.io", "CSINode") => vec![o.name(), o.len("/spec/drivers").into(), o.age()],
        ("storage.k8s.io", "VolumeAttachment") => vec![
            o.name(),
            o.str("/spec/attacher").into(),
            o.str("/spec/source/persistentVolumeName").into(),
            o.str("/spec/nodeName").into(),
            obj.pointer("/status/attached")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .into(),
            o.age(),
        ],
        ("storage.k8s.io", "CSIDriver") => {
            let flag = |p: &str, default: bool| {
                Value::from(obj.pointer(p).and_then(Value::as_bool).unwrap_or(default))
            };
            let audiences: Vec<&str> = array(obj, "/spec/tokenRequests")
                .iter()
                .map(|t| s(t, "/audience"))
                .collect();
            let modes: Vec<&str> = array(obj, "/spec/volumeLifecycleModes")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![
                o.name(),
                flag("/spec/attachRequired", true),
                flag("/spec/podInfoOnMount", false),
                flag("/spec/storageCapacity", false),
                if audiences.is_empty() {
                    "<unset>".to_string()
                } else {
                    audiences.join(",")
                }
                .into(),
                flag("/spec/requiresRepublish", false),
                if modes.is_empty() {
                    "Persistent".to_string()
                } else {
                    modes.join(",")
                }
                .into(),
                o.age(),
            ]
        }
        _ => vec![o.name(), o.age()],
    }
}

/// Formats a duration like Kubernetes' `duration.HumanDuration`: precise while small, coarser as it grows
/// (`45s`, `3m2s`, `25m`, `5h3m`, `2d3h`, `10d`, `3y45d`).
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        let years = hours / 24 / 365;
        return if days == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{days}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A label selector (`metav1.LabelSelector` JSON) as `FormatLabelSelector` prints it: requirements sorted
/// by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; `<none>` when it selects everything or nothing.
pub fn label_selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return "<none>".to_string();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            values.sort_unstable();
            values.dedup();
            let text = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => return "<error>".to_string(),
            };
            requirements.push((key.to_string(), text));
        }
    }
    // Go's sort is not stable, but requirements on one key are rare; a stable sort keeps output repeatable.
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    if requirements.is_empty() {
        return "<none>".to_string();
    }
    requirements
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// A plain label map as `labels.FormatLabels` prints it: `k=v` sorted by key, or `<none>`.
pub fn label_map_string(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some \
                  resources may allow a client to request the generation of an appropriate name automatically.",
    priority: 0,
};
const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
const CONTAINERS: Column = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide(
    "Selector",
    "string",
    "Label selector over the objects this one manages.",
);
const CREATED_AT: Column = Column {
    name: "Created At",
    kind: "date",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
};

fn columns(group: &str, kind: &str) -> Vec<Column> {
    match (group, kind) {
        ("", "Pod") => vec![
            NAME,
            col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last \
                 container in this pod has restarted.",
            ),
            AGE,
            wide("IP", "string", "The IP address assigned to the pod."),
            wide("Node", "string", "The name of the node the pod is assigned to."),
            wide(
                "Nominated Node",
                "string",
                "The node the scheduler nominated for preemption.",
            ),
            wide(
                "Readiness Gates",
                "string",
                "Readiness gates whose conditions are true, of all gates.",
            ),
        ],
        ("", "Service") => vec![
            NAME,
            col("Type", "string", "How the service is exposed."),
            col(
                "Cluster-IP",
                "string",
                "The IP address of the service, assigned by the master.",
            ),
            col("External-IP", "string", "The external IPs of the service."),
            col("Port(s)", "string", "The ports exposed by the service."),
            AGE,
            wide(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching.",
            ),
        ],
        ("", "Endpoints") => {
            vec![
                NAME,
                col(
                    "Endpoints",
                    "string",
                    "The endpoints (address:port) of the service.",
                ),
                AGE,
            ]
        }
        ("", "Node") => vec![
            NAME,
            col("Status", "string", "The status of the node."),
            col("Roles", "string", "The roles of the node."),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "The node's first InternalIP address."),
            wide("External-IP", "string", "The node's first ExternalIP address."),
            wide(
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release.",
            ),
            wide(
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r'.",
            ),
            wide(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node.",
            ),
        ],
        ("", "Namespace") => vec![NAME, col("Status", "string", "The status of the namespace."), AGE],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            col(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            col("Type", "string", "Type of this event (Normal, Warning)."),
            col(
                "Reason",
                "string",
                "A short, machine understandable string for the event's transition.",
            ),
            col("Object", "string", "The object that this event is about."),
            wide(
                "Subobject",
                "string",
                "The field path of the part of the object that triggered the event.",
            ),
            wide("Source", "string", "The component reporting this event."),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            wide(
                "First Seen",
                "string",
                "The time at which the event was first recorded.",
            ),
            wide("Count", "string", "The number of times this event has occurred."),
            Column { priority: 1, ..NAME },
        ],
        ("", "ConfigMap") => vec![NAME, col("Data", "integer", "Number of data entries."), AGE],
        ("", "Secret") => vec![
            NAME,
            col(
                "Type",
                "string",
                "Used to facilitate programmatic handling of secret data.",
            ),
            col("Data", "integer", "Number of data entries."),
            AGE,
        ],
        ("", "ServiceAccount") => {
            vec![
                NAME,
                col(
                    "Secrets",
                    "integer",
                    "Number of secrets listed by the service account.",
                ),
                AGE,
            ]
        }
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            col("Status", "string", "Phase of the claim."),
            col(
                "Volume",
                "string",
                "The binding reference to the PersistentVolume backing this claim.",
            ),
            col(
                "Capacity",
                "string",
                "The actual resources of the underlying volume.",
            ),
            col("Access Modes", "string", "The access modes the volume has."),
            col(
                "StorageClass",
                "string",
                "The name of the StorageClass required by the claim.",
            ),
            col(
                "VolumeAttributesClass",
                "string",
                "The VolumeAttributesClass used by the claim.",
            ),
            AGE,
            wide(
                "VolumeMode",
                "string",
                "What type of volume is required by the claim.",
            ),
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            col("Capacity", "string", "The capacity of the volume."),
            col("Access Modes", "string", "The access modes of the volume."),
            col(
                "Reclaim Policy",
                "string",
                "What happens to the volume when released from its claim.",
            ),
            col("Status", "string", "Phase of the volume."),
            col("Claim", "string", "The claim bound to the volume."),
            col("StorageClass", "string", "The StorageClass of the volume."),
            col(
                "VolumeAttributesClass",
                "string",
                "The VolumeAttributesClass of the volume.",
            ),
            col("Reason", "string", "Why the volume is in this phase."),
            AGE,
            wide(
                "VolumeMode",
                "string",
                "Whether the volume is a filesystem or a raw block device.",
            ),
        ],
        ("", "ResourceQuota") => vec![
            NAME,
            AGE,
            col("Request", "string", "Requests of the quota."),
            col("Limit", "string", "Limits of the quota."),
        ],
        ("", "ReplicationController") => vec![
            NAME,
            col("Desired", "integer", "Number of desired pods."),
            col("Current", "integer", "Number of actually running pods."),
            col("Ready", "integer", "Number of pods that are ready."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "Deployment") => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state."),
            col(
                "Up-to-date",
                "integer",
                "Total number of non-terminated pods targeted by this deployment \
                that have the desired template spec.",
            ),
            col(
                "Available",
                "integer",
                "Total number of available pods (ready for at least minReadySeconds) \
                targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            col("Desired", "integer", "Number of desired pods."),
            col("Current", "integer", "Number of actually running pods."),
            col("Ready", "integer", "Number of pods that are ready."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            col(
                "Desired",
                "integer",
                "The total number of nodes that should be running the daemon pod.",
            ),
            col(
                "Current",
                "integer",
                "The number of nodes running at least one daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                "The number of nodes running the daemon pod and ready.",
            ),
            col(
                "Up-to-date",
                "integer",
                "The number of nodes running the updated daemon pod.",
            ),
            col(
                "Available",
                "integer",
                "The number of nodes running an available daemon pod.",
            ),
            col(
                "Node Selector",
                "string",
                "Nodes the daemon pod must be scheduled on.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state."),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("apps", "ControllerRevision") => vec![
            NAME,
            col("Controller", "string", "Controller of the object."),
            col(
                "Revision",
                "integer",
                "Revision represents the revision of the state represented by Data.",
            ),
            AGE,
        ],
        ("batch", "Job") => vec![
            NAME,
            col("Status", "string", "Status of the job."),
            col(
                "Completions",
                "string",
                "The desired number of successfully finished pods the job should \
                be run with.",
            ),
            col("Duration", "string", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("batch", "CronJob") => vec![
            NAME,
            col("Schedule", "string", "The schedule in Cron format."),
            col(
                "Timezone",
                "string",
                "The time zone the schedule is interpreted in.",
            ),
            col(
                "Suspend",
                "boolean",
                "Whether subsequent executions are suspended.",
            ),
            col("Active", "integer", "The number of currently running jobs."),
            col(
                "Last Schedule",
                "string",
                "When the job was last successfully scheduled.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("coordination.k8s.io", "Lease") => {
            vec![
                NAME,
                col(
                    "Holder",
                    "string",
                    "The identity of the current holder of the lease.",
                ),
                AGE,
            ]
        }
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            col(
                "AddressType",
                "string",
                "The type of address carried by this EndpointSlice.",
            ),
            col("Ports", "string", "The ports exposed by this EndpointSlice."),
            col(
                "Endpoints",
                "string",
                "The addresses of the endpoints in this EndpointSlice.",
            ),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => {
            vec![NAME, CREATED_AT]
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            vec![
                NAME,
                col("Role", "string", "The role this binding grants."),
                AGE,
                wide("Users", "string", "Users in the binding."),
                wide("Groups", "string", "Groups in the binding."),
                wide("ServiceAccounts", "string", "ServiceAccounts in the binding."),
            ]
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => vec![NAME, CREATED_AT],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            NAME,
            col("Value", "integer", "The integer value of this priority class."),
            col(
                "Global-Default",
                "boolean",
                "Whether this is the default priority class.",
            ),
            AGE,
            wide(
                "PreemptionPolicy",
                "string",
                "The policy for preempting pods with lower priority.",
            ),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            NAME,
            col(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ),
            col(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "Number of pod disruptions currently allowed.",
            ),
            AGE,
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            NAME,
            col(
                "Provisioner",
                "string",
                "The volume plugin used for provisioning.",
            ),
            col(
                "ReclaimPolicy",
                "string",
                "The reclaim policy of dynamically provisioned volumes.",
            ),
            col(
                "VolumeBindingMode",
                "string",
                "When volumes are provisioned and bound.",
            ),
            col(
                "AllowVolumeExpansion",
                "string",
                "Whether the storage class allows volume expansion.",
            ),
            AGE,
        ],
        ("", "PodTemplate") => vec![
            Column {
                name: "Template",
                ..NAME
            },
            col("Containers", "string", "Names of each container in the template."),
            col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            ),
            col("Pod Labels", "string", "The labels of the pod template."),
        ],
        ("", "LimitRange") => vec![NAME, CREATED_AT],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            NAME,
            col("Reference", "string", "Reference to the scaled target."),
            col(
                "Targets",
                "string",
                "Current and target values of the metrics used to scale.",
            ),
            col("MinPods", "string", "Lower limit for the number of pods."),
            col("MaxPods", "integer", "Upper limit for the number of pods."),
            col(
                "Replicas",
                "integer",
                "Current number of replicas of the scaled target.",
            ),
            AGE,
        ],
        ("networking.k8s.io", "Ingress") => vec![
            NAME,
            col("Class", "string", "The name of the IngressClass resource."),
            col(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against.",
            ),
            col(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer.",
            ),
            col("Ports", "string", "Ports of TLS configurations that open."),
            AGE,
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            NAME,
            col(
                "Controller",
                "string",
                "The name of the controller that should handle this class.",
            ),
            col(
                "Parameters",
                "string",
                "A link to a resource with additional configuration.",
            ),
            AGE,
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            NAME,
            col(
                "Pod-Selector",
                "string",
                "The pods to which this NetworkPolicy object applies.",
            ),
            AGE,
        ],
        ("node.k8s.io", "RuntimeClass") => {
            vec![
                NAME,
                col("Handler", "string", "The underlying runtime and configuration."),
                AGE,
            ]
        }
        ("storage.k8s.io", "CSINode") => {
            vec![
                NAME,
                col("Drivers", "integer", "The number of CSI drivers on the node."),
                AGE,
            ]
        }
        ("storage.k8s.io", "VolumeAttachment") => vec![
            NAME,
            col(
                "Attacher",
                "string",
                "The volume driver that must handle this request.",
            ),
            col("PV", "string", "The persistent volume to attach."),
            col("Node", "string", "The node the volume should be attached to."),
            col(
                "Attached",
                "boolean",
                "Whether the attach operation has completed.",
            ),
            AGE,
        ],
        ("storage.k8s.io", "CSIDriver") => vec![
            NAME,
            col(
                "AttachRequired",
                "boolean",
                "Whether the driver requires an attach operation.",
            ),
            col(
                "PodInfoOnMount",
                "boolean",
                "Whether the driver requires pod information on mount.",
            ),
            col(
                "StorageCapacity",
                "boolean",
                "Whether the driver reports storage capacity.",
            ),
            col(
                "TokenRequests",
                "string",
                "Audiences of the service account tokens passed to the driver.",
            ),
            col(
                "RequiresRepublish",
                "boolean",
                "Whether NodePublishVolume is called periodically.",
            ),
            col(
                "Modes",
                "string",
                "The volume lifecycle modes the driver supports.",
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// Read access to a stored object with Go's zero-value defaults.
struct Obj<'a> {
    v: &'a Value,
    now: DateTime<Utc>,
}

impl Obj<'_> {
    fn str(&self, pointer: &str) -> String {
        self.v
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn str_or(&self, pointer: &str, default: &str) -> String {
        match self.v.pointer(pointer).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => default.to_string(),
        }
    }

    fn int(&self, pointer: &str) -> i64 {
        self.v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
    }

    fn len(&self, pointer: &str) -> i64 {
        match self.v.pointer(pointer) {
            Some(Value::Object(m)) => m.len() as i64,
            Some(Value::Array(a)) => a.len() as i64,
            _ => 0,
        }
    }

    fn name(&self) -> Value {
        self.str("/metadata/name").into()
    }

    fn since(&self, pointer: &str) -> String {
        since(self.v.pointer(pointer), self.now)
    }

    fn age(&self) -> Value {
        self.since("/metadata/creationTimestamp").into()
    }

    fn created_at(&self) -> Value {
        match parse_time(self.v.pointer("/metadata/creationTimestamp")) {
            Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into(),
            None => Value::Null,
        }
    }

    fn template_containers(&self) -> impl Iterator<Item = &Value> {
        self.v
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    fn containers(&self) -> String {
        self.template_containers()
            .map(|c| c.get("name").and_then(Value::as_str).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn images(&self) -> String {
        self.template_containers()
            .map(|c| c.get("image").and_then(Value::as_str).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `translateTimestampSince`: `<unknown>` for a missing timestamp, else the human duration since it.
fn since(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// kube-apiserver's `printPod`: the STATUS column is the most telling reason among the pod's phase, its
/// init containers' and its containers' states, and deletion.
fn pod_cells(o: &Obj<'_>) -> Vec<Value> {
    let pod = o.v;
    let init_specs = array(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let mut total = array(pod, "/spec/containers").len() as i64;
    total += init_specs
        .iter()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .count() as i64;
    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let phase = s(pod, "/status/phase");
    let mut reason = match s(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    for c in array(pod, "/status/conditions") {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }
    let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };

    let init_statuses = array(pod, "/status/initContainerStatuses");
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let count = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        restarts += count;
        let finished = parse_time(c.pointer("/lastState/terminated/finishedAt"));
        last_restart = later(last_restart, finished);
        let is_restartable = restartable(s(c, "/name"));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = c.pointer("/state/terminated");
        let exit_code = terminated
            .and_then(|t| t.get("exitCode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some() && exit_code == 0 {
            continue;
        }
        if is_restartable && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let signal = t.get("signal").and_then(Value::as_i64).unwrap_or(0);
            reason = match s(t, "/reason") {
                "" if signal != 0 => format!("Init:Signal:{signal}"),
                "" => format!("Init:ExitCode:{exit_code}"),
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = array(pod, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in array(pod, "/status/containerStatuses").iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            last_restart = later(
                last_restart,
                parse_time(c.pointer("/lastState/terminated/finishedAt")),
            );
            let waiting_reason = s(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let signal = t.get("signal").and_then(Value::as_i64).unwrap_or(0);
                let exit_code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
                reason = match s(t, "/reason") {
                    "" if signal != 0 => format!("Signal:{signal}"),
                    "" => format!("ExitCode:{exit_code}"),
                    r => r.to_string(),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = array(pod, "/status/conditions")
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        if s(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(o.now - t)),
        _ => restarts.to_string(),
    };

    let none_if_empty = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let pod_ip = array(pod, "/status/podIPs")
        .first()
        .map(|ip| s(ip, "/ip").to_string())
        .unwrap_or_else(|| s(pod, "/status/podIP").to_string());
    let gates = array(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = array(pod, "/status/conditions");
        let met = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == s(g, "/conditionType"))
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };

    vec![
        o.name(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        o.age(),
        none_if_empty(&pod_ip).into(),
        none_if_empty(s(pod, "/spec/nodeName")).into(),
        none_if_empty(s(pod, "/status/nominatedNodeName")).into(),
        readiness_gates.into(),
    ]
}

fn service_cells(o: &Obj<'_>) -> Vec<Value> {
    let svc = o.v;
    let svc_type = match s(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = array(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| svc.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = array(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match svc_type {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut all: Vec<&str> = array(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .and_then(Value::as_str)
                        .or_else(|| i.get("hostname").and_then(Value::as_str))
                })
                .filter(|s| !s.is_empty())
                .collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = array(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let protocol = match s(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) {
                0 => format!("{port}/{protocol}"),
                node_port => format!("{port}:{node_port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        o.name(),
        svc_type.into(),
        cluster_ip.into(),
        external_ip.into(),
        ports.into(),
        o.age(),
        label_map_string(svc.pointer("/spec/selector")).into(),
    ]
}

/// `formatEndpoints`: the first three `ip:port`s and how many more.
fn formatted_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    for subset in array(ep, "/subsets") {
        let addresses: Vec<&str> = array(subset, "/addresses").iter().map(|a| s(a, "/ip")).collect();
        let ports = array(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            list.extend(addresses.iter().map(|ip| ip.to_string()));
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            list.extend(addresses.iter().map(|ip| join_host_port(ip, port)));
        }
    }
    more_string(list, count, MAX, "<none>")
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn more_string(mut list: Vec<String>, count: usize, max: usize, empty: &str) -> String {
    if list.len() > max {
        list.truncate(max);
        return format!("{} + {} more...", list.join(","), count - max);
    }
    if list.is_empty() {
        empty.to_string()
    } else {
        list.join(",")
    }
}

fn endpoint_slice_cells(o: &Obj<'_>) -> Vec<Value> {
    let slice = o.v;
    let ports: Vec<String> = array(slice, "/ports")
        .iter()
        .map(|p| {
            match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                _ => "*".to_string(),
            }
        })
        .collect();
    let port_count = ports.len();
    let addresses: Vec<String> = array(slice, "/endpoints")
        .iter()
        .flat_map(|e| {
            array(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let address_count = addresses.len();
    vec![
        o.name(),
        o.str("/addressType").into(),
        more_string(ports, port_count, 3, "<unset>").into(),
        more_string(addresses, address_count, 3, "<unset>").into(),
        o.age(),
    ]
}

fn node_cells(o: &Obj<'_>) -> Vec<Value> {
    let node = o.v;
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = array(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready")
    {
        status.push(
            if s(c, "/status") == "True" {
                "Ready"
            } else {
                "NotReady"
            }
            .to_string(),
        );
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                roles.push(role.to_string());
            } else if k == "kubernetes.io/role" {
                roles.push(v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    roles.retain(|r| !r.is_empty());
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |kind: &str| {
        array(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| Value::from(o.str_or(&format!("/status/nodeInfo/{field}"), "<unknown>"));
    vec![
        o.name(),
        status.join(",").into(),
        roles.into(),
        o.age(),
        o.str("/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// Events of both APIs: `events.k8s.io/v1` renames the core fields (`regarding`, `note`,
/// `deprecated*` timestamps and count), which kube-apiserver converts before printing.
fn event_cells(o: &Obj<'_>, events_api: bool) -> Vec<Value> {
    let e = o.v;
    let (first_ts, last_ts, count_ptr, object, message, component, host) = if events_api {
        (
            "/deprecatedFirstTimestamp",
            "/deprecatedLastTimestamp",
            "/deprecatedCount",
            "/regarding",
            "/note",
            "/deprecatedSource/component",
            "/deprecatedSource/host",
        )
    } else {
        (
            "/firstTimestamp",
            "/lastTimestamp",
            "/count",
            "/involvedObject",
            "/message",
            "/source/component",
            "/source/host",
        )
    };
    let present = |p: &str| parse_time(e.pointer(p)).is_some();
    let first_seen = if present(first_ts) {
        o.since(first_ts)
    } else {
        o.since("/eventTime")
    };
    let mut last_seen = if present(last_ts) {
        o.since(last_ts)
    } else {
        first_seen.clone()
    };
    let mut count = o.int(count_ptr);
    if let Some(series) = e.get("series").filter(|s| s.is_object()) {
        last_seen = since(series.get("lastObservedTime"), o.now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let involved = e.pointer(object).cloned().unwrap_or(Value::Null);
    let kind = s(&involved, "/kind").to_lowercase();
    let target = match s(&involved, "/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(s(e, component), s(e, "/reportingController"));
    let instance = first_non_empty(s(e, host), s(e, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        o.str("/type").into(),
        o.str("/reason").into(),
        target.into(),
        s(&involved, "/fieldPath").into(),
        source.into(),
        s(e, message).trim().into(),
        first_seen.into(),
        count.into(),
        o.name(),
    ]
}

/// `printHorizontalPodAutoscaler` for autoscaling/v2: `cpu: 40%/80%` per Resource metric, up to three.
fn hpa_cells(o: &Obj<'_>) -> Vec<Value> {
    let hpa = o.v;
    let reference = format!(
        "{}/{}",
        s(hpa, "/spec/scaleTargetRef/kind"),
        s(hpa, "/spec/scaleTargetRef/name")
    );
    let current = array(hpa, "/status/currentMetrics");
    let targets: Vec<String> = array(hpa, "/spec/metrics")
        .iter()
        .map(|m| {
            let kind = s(m, "/type");
            let (spec_key, name) = match kind {
                "Resource" => ("resource", s(m, "/resource/name").to_string()),
                "ContainerResource" => ("containerResource", s(m, "/containerResource/name").to_string()),
                "Pods" => ("pods", s(m, "/pods/metric/name").to_string()),
                "Object" => ("object", s(m, "/object/metric/name").to_string()),
                _ => ("external", s(m, "/external/metric/name").to_string()),
            };
            let target = m
                .pointer(&format!("/{spec_key}/target"))
                .cloned()
                .unwrap_or(Value::Null);
            let observed = current
                .iter()
                .find(|c| {
                    s(c, "/type") == kind
                        && c.pointer(&format!("/{spec_key}/name"))
                            .and_then(Value::as_str)
                            .or_else(|| {
                                c.pointer(&format!("/{spec_key}/metric/name"))
                                    .and_then(Value::as_str)
                            })
                            == Some(name.as_str())
                })
                .and_then(|c| c.pointer(&format!("/{spec_key}/current")).cloned());
            let (cur, tgt) = if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64) {
                let cur = observed
                    .as_ref()
                    .and_then(|c| c.get("averageUtilization").and_then(Value::as_i64))
                    .map(|c| format!("{c}%"))
                    .unwrap_or_else(|| "<unknown>".to_string());
                (cur, format!("{u}%"))
            } else {
                let key = if target.get("averageValue").is_some() {
                    "averageValue"
                } else {
                    "value"
                };
                let cur = observed
                    .as_ref()
                    .and_then(|c| c.get(key).and_then(Value::as_str))
                    .unwrap_or("<unknown>")
                    .to_string();
                (
                    cur,
                    target
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            };
            if kind == "Resource" || kind == "ContainerResource" {
                format!("{name}: {cur}/{tgt}")
            } else {
                format!("{cur}/{tgt}")
            }
        })
        .collect();
    let count = targets.len();
    let targets = more_string(targets, count, 3, "<none>");
    let min_pods = match hpa.pointer("/spec/minReplicas").and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "<unset>".to_string(),
    };
    vec![
        o.name(),
        reference.into(),
        targets.into(),
        min_pods.into(),
        o.int("/spec/maxReplicas").into(),
        o.int("/status/currentReplicas").into(),
        o.age(),
    ]
}

fn ingress_cells(o: &Obj<'_>) -> Vec<Value> {
    let ing = o.v;
    let rules = array(ing, "/spec/rules");
    let hosts: Vec<String> = rules
        .iter()
        .map(|r| s(r, "/host"))
        .filter(|h| !h.is_empty())
        .take(3)
        .map(str::to_string)
        .collect();
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if rules.len() > 3 {
        format!("{} + {} more...", hosts.join(","), rules.len() - 3)
    } else {
        hosts.join(",")
    };
    let address: Vec<&str> = array(ing, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| {
            if s(i, "/ip").is_empty() {
                s(i, "/hostname")
            } else {
                s(i, "/ip")
            }
        })
        .filter(|a| !a.is_empty())
        .collect();
    let ports = if array(ing, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        o.name(),
        o.str_or("/spec/ingressClassName", "<none>").into(),
        hosts.into(),
        address.join(",").into(),
        ports.into(),
        o.age(),
    ]
}

fn job_cells(o: &Obj<'_>) -> Vec<Value> {
    let job = o.v;
    let succeeded = o.int("/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match o.int("/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = parse_time(job.pointer("/status/startTime"));
    let completion = parse_time(job.pointer("/status/completionTime"));
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(o.now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let has = |t: &str| {
        array(job, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    vec![
        o.name(),
        status.into(),
        completions.into(),
        duration.into(),
        o.age(),
        o.containers().into(),
        o.images().into(),
        label_selector_string(job.pointer("/spec/selector")).into(),
    ]
}

fn cronjob_cells(o: &Obj<'_>) -> Vec<Value> {
    let cj = o.v;
    let template = |suffix: &str| -> Vec<&str> {
        array(cj, "/spec/jobTemplate/spec/template/spec/containers")
            .iter()
            .map(|c| s(c, suffix))
            .collect()
    };
    let last_schedule = match cj.pointer("/status/lastScheduleTime") {
        Some(t) if !t.is_null() => since(Some(t), o.now),
        _ => "<none>".to_string(),
    };
    vec![
        o.name(),
        o.str("/spec/schedule").into(),
        o.str_or("/spec/timeZone", "<none>").into(),
        cj.pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .into(),
        o.len("/status/active").into(),
        last_schedule.into(),
        o.age(),
        template("/name").join(",").into(),
        template("/image").join(",").into(),
        label_selector_string(cj.pointer("/spec/jobTemplate/spec/selector")).into(),
    ]
}

fn binding_cells(o: &Obj<'_>) -> Vec<Value> {
    let b = o.v;
    let subjects = |kind: &str| -> String {
        array(b, "/subjects")
            .iter()
            .filter(|sub| s(sub, "/kind") == kind)
            .map(|sub| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s(sub, "/namespace"), s(sub, "/name"))
                } else {
                    s(sub, "/name").to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        o.name(),
        format!("{}/{}", s(b, "/roleRef/kind"), s(b, "/roleRef/name")).into(),
        o.age(),
        subjects("User").into(),
        subjects("Group").into(),
        subjects("ServiceAccount").into(),
    ]
}

fn pvc_cells(o: &Obj<'_>) -> Vec<Value> {
    let phase = if o
        .v
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating".to_string()
    } else {
        o.str("/status/phase")
    };
    let bound = !o.str("/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (
            o.str("/status/capacity/storage"),
            access_modes(array(o.v, "/status/accessModes")),
        )
    } else {
        (String::new(), String::new())
    };
    vec![
        o.name(),
        phase.into(),
        o.str("/spec/volumeName").into(),
        capacity.into(),
        modes.into(),
        o.str("/spec/storageClassName").into(),
        o.str_or("/status/currentVolumeAttributesClassName", "<unset>")
            .into(),
        o.age(),
        o.str_or("/spec/volumeMode", "<unset>").into(),
    ]
}

fn pv_cells(o: &Obj<'_>) -> Vec<Value> {
    let claim = match (o.str("/spec/claimRef/namespace"), o.str("/spec/claimRef/name")) {
        (_, n) if n.is_empty() => String::new(),
        (ns, n) => format!("{ns}/{n}"),
    };
    let phase = if o
        .v
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating".to_string()
    } else {
        o.str("/status/phase")
    };
    vec![
        o.name(),
        o.str("/spec/capacity/storage").into(),
        access_modes(array(o.v, "/spec/accessModes")).into(),
        o.str("/spec/persistentVolumeReclaimPolicy").into(),
        phase.into(),
        claim.into(),
        o.str("/spec/storageClassName").into(),
        o.str_or("/spec/volumeAttributesClassName", "<unset>").into(),
        o.str("/status/reason").into(),
        o.age(),
        o.str_or("/spec/volumeMode", "<unset>").into(),
    ]
}

/// `GetAccessModesAsString`: the short forms in Kubernetes' fixed order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| has(long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// `cpu: 100m/1, pods: 2/10`: used over hard for the quota's request (or `limits.`) resources.
fn quota_summary(quota: &Value, limits: bool) -> Value {
    let hard = quota.pointer("/status/hard").and_then(Value::as_object);
    let used = quota.pointer("/status/used").and_then(Value::as_object);
    let mut requests = Vec::new();
    if let Some(hard) = hard {
        let mut keys: Vec<&String> = hard.keys().collect();
        keys.sort();
        for k in keys {
            if k.starts_with("limits.") != limits {
                continue;
            }
            let u = used.and_then(|u| u.get(k)).and_then(Value::as_str).unwrap_or("0");
            requests.push(format!("{k}: {u}/{}", hard[k].as_str().unwrap_or_default()));
        }
    }
    requests.join(", ").into()
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn names(group: &str, kind: &str) -> Vec<(String, i64)> {
        column_definitions(group, kind)
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn human_duration_matches_kubernetes() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(-5)), "<invalid>");
        assert_eq!(human_duration(d(-1)), "0s");
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(182)), "3m2s");
        assert_eq!(human_duration(d(180)), "3m");
        assert_eq!(human_duration(d(25 * 60 + 10)), "25m");
        assert_eq!(human_duration(d(5 * 3600 + 3 * 60)), "5h3m");
        assert_eq!(human_duration(d(5 * 3600)), "5h");
        assert_eq!(human_duration(d(20 * 3600)), "20h");
        assert_eq!(human_duration(d(51 * 3600)), "2d3h");
        assert_eq!(human_duration(d(48 * 3600)), "2d");
        assert_eq!(human_duration(d(10 * 86400)), "10d");
        assert_eq!(human_duration(d((3 * 365 + 45) * 86400)), "3y45d");
        assert_eq!(human_duration(d(10 * 365 * 86400)), "10y");
    }

    #[test]
    fn pod_columns_and_wide_columns() {
        let cols = names("", "Pod");
        let shown: Vec<&str> = cols.iter().filter(|c| c.1 == 0).map(|c| c.0.as_str()).collect();
        let wide: Vec<&str> = cols.iter().filter(|c| c.1 == 1).map(|c| c.0.as_str()).collect();
        assert_eq!(shown, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
        assert_eq!(column_definitions("", "Pod")[0]["format"], "name");
    }

    #[test]
    fn running_pod_with_a_restart() {
        let pod = json!({
            "metadata": {"name": "web-7d4b9c-x2x9z", "creationTimestamp": "2026-11-26T11:57:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "nginx", "image": "nginx:1.25"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.7",
                "podIPs": [{"ip": "10.42.0.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "nginx", "ready": true, "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-11-26T11:58:00Z"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T11:58:00Z"}}
                }]
            }
        });
        let cells = row_cells("", "Pod", &pod, now());
        assert_eq!(
            cells,
            vec![
                json!("web-7d4b9c-x2x9z"),
                json!("1/1"),
                json!("Running"),
                json!("1 (2m ago)"),
                json!("3m"),
                json!("10.42.0.7"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_status_reasons() {
        let base = |status: Value| {
            json!({
                "metadata": {"name": "p", "creationTimestamp": "2026-11-26T11:59:55Z"},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
                "status": status,
            })
        };
        let status_of = |pod: &Value| row_cells("", "Pod", pod, now())[2].as_str().unwrap().to_string();

        assert_eq!(status_of(&base(json!({"phase": "Pending"}))), "Pending");
        let creating = base(json!({"phase": "Pending", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}));
        assert_eq!(status_of(&creating), "ContainerCreating");
        let crash = base(json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 4,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T11:59:00Z"}}}
        ]}));
        assert_eq!(status_of(&crash), "CrashLoopBackOff");
        assert_eq!(row_cells("", "Pod", &crash, now())[3], json!("4 (60s ago)"));
        let completed = base(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}));
        assert_eq!(status_of(&completed), "Completed");
        let exit = base(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "state": {"terminated": {"exitCode": 3}}}
        ]}));
        assert_eq!(status_of(&exit), "ExitCode:3");
        let init = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "state": {"running": {}}}
            ]}
        });
        assert_eq!(status_of(&init), "Init:1/2");
        let mut terminating = base(json!({"phase": "Running"}));
        terminating["metadata"]["deletionTimestamp"] = json!("2026-11-26T12:00:00Z");
        assert_eq!(status_of(&terminating), "Terminating");
        let gated = base(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
        ]}));
        assert_eq!(status_of(&gated), "SchedulingGated");
    }

    #[test]
    fn deployment_row() {
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-24T09:00:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "edge"]}
                ]},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox"}
                ]}}
            },
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let cells = row_cells("apps", "Deployment", &deploy, now());
        assert_eq!(
            cells,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2d3h"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox"),
                json!("app=web,tier in (edge,front)"),
            ]
        );
        assert_eq!(cells.len(), column_definitions("apps", "Deployment").len());
    }

    #[test]
    fn fresh_deployment_without_status() {
        let deploy = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let cells = row_cells("apps", "Deployment", &deploy, now());
        assert_eq!(cells[1], json!("0/1"));
        assert_eq!(cells[4], json!("<unknown>"));
        assert_eq!(cells[7], json!("<none>"));
    }

    #[test]
    fn service_rows() {
        let node_port = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-26T11:59:30Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.12.7", "clusterIPs": ["10.43.12.7"],
                     "selector": {"app": "web"},
                     "ports": [{"port": 8080, "targetPort": 8080, "nodePort": 31234, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            row_cells("", "Service", &node_port, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.43.12.7"),
                json!("<none>"),
                json!("8080:31234/TCP,53/UDP"),
                json!("30s"),
                json!("app=web"),
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.9"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(row_cells("", "Service", &lb, now())[3], json!("<pending>"));
        let mut lb_ready = lb.clone();
        lb_ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}});
        assert_eq!(row_cells("", "Service", &lb_ready, now())[3], json!("192.0.2.10"));
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        let cells = row_cells("", "Service", &headless, now());
        assert_eq!(
            (&cells[1], &cells[2], &cells[4], &cells[6]),
            (
                &json!("ClusterIP"),
                &json!("None"),
                &json!("<none>"),
                &json!("<none>")
            )
        );
    }

    #[test]
    fn node_row() {
        let node = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2026-11-26T10:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "true",
                                    "node-role.kubernetes.io/master": "true"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.5"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0+rkube", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-25-amd64", "containerRuntimeVersion": "runc://1.1.5"}
            }
        });
        assert_eq!(
            row_cells("", "Node", &node, now()),
            vec![
                json!("node-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master"),
                json!("120m"),
                json!("v1.33.0+rkube"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-25-amd64"),
                json!("runc://1.1.5"),
            ]
        );
        let not_ready = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(row_cells("", "Node", &not_ready, now())[1], json!("NotReady"));
        assert_eq!(row_cells("", "Node", &not_ready, now())[7], json!("<unknown>"));
    }

    #[test]
    fn job_rows() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2026-11-26T11:50:00Z"},
            "spec": {"completions": 3, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}},
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}}},
            "status": {"succeeded": 3, "startTime": "2026-11-26T11:50:00Z", "completionTime": "2026-11-26T11:50:42Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            row_cells("batch", "Job", &job, now()),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("3/3"),
                json!("42s"),
                json!("10m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=abc"),
            ]
        );
        let running = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 2},
            "status": {"startTime": "2026-11-26T11:59:00Z"}});
        let cells = row_cells("batch", "Job", &running, now());
        assert_eq!(
            (&cells[1], &cells[2], &cells[3]),
            (&json!("Running"), &json!("0/1 of 2"), &json!("60s"))
        );
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}, {"ip": "10.42.0.7"}, {"ip": "10.42.0.8"}],
            "ports": [{"port": 8080}]}]});
        assert_eq!(
            row_cells("", "Endpoints", &ep, now())[1],
            json!("10.42.0.5:8080,10.42.0.6:8080,10.42.0.7:8080 + 1 more...")
        );
        let empty = json!({"metadata": {"name": "web"}});
        assert_eq!(row_cells("", "Endpoints", &empty, now())[1], json!("<none>"));
        let slice = json!({"metadata": {"name": "web-abc12"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}]});
        let cells = row_cells("discovery.k8s.io", "EndpointSlice", &slice, now());
        assert_eq!(
            &cells[1..4],
            &[json!("IPv4"), json!("8080"), json!("10.42.0.5,10.42.0.6")]
        );
        let unset = json!({"metadata": {"name": "x"}, "addressType": "IPv4"});
        assert_eq!(
            row_cells("discovery.k8s.io", "EndpointSlice", &unset, now())[2],
            json!("<unset>")
        );
    }

    #[test]
    fn events_rows() {
        let event = json!({
            "metadata": {"name": "web.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{nginx}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-26T11:55:00Z", "lastTimestamp": "2026-11-26T11:59:00Z", "count": 2
        });
        assert_eq!(
            row_cells("", "Event", &event, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{nginx}"),
                json!("kubelet, node-1"),
                json!("Successfully pulled image \"nginx\""),
                json!("5m"),
                json!(2),
                json!("web.17a"),
            ]
        );
        let new_api = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n1"},
            "reason": "Starting", "type": "Normal", "note": "Starting kubelet.",
            "eventTime": "2026-11-26T11:59:50.000000Z", "reportingController": "kubelet", "reportingInstance": "n1"});
        let cells = row_cells("events.k8s.io", "Event", &new_api, now());
        assert_eq!(
            (&cells[0], &cells[3], &cells[5], &cells[8]),
            (&json!("10s"), &json!("node/n1"), &json!("kubelet, n1"), &json!(1))
        );
    }

    #[test]
    fn small_kinds() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2026-11-26T11:59:58Z"}, "status": {"phase": "Active"}});
        assert_eq!(
            row_cells("", "Namespace", &ns, now()),
            vec![json!("kube-system"), json!("Active"), json!("2s")]
        );
        let cm =
            json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(row_cells("", "ConfigMap", &cm, now())[1], json!(3));
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"password": "cGFzcw=="}});
        assert_eq!(
            &row_cells("", "Secret", &secret, now())[1..3],
            &[json!("Opaque"), json!(1)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(row_cells("", "ServiceAccount", &sa, now())[1], json!(0));
        let lease = json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}});
        assert_eq!(
            row_cells("coordination.k8s.io", "Lease", &lease, now())[1],
            json!("node-1")
        );
        let rs = json!({"metadata": {"name": "web-5d9f"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d9f"}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            &row_cells("apps", "ReplicaSet", &rs, now())[1..4],
            &[json!(2), json!(2), json!(1)]
        );
        assert_eq!(
            row_cells("apps", "ReplicaSet", &rs, now())[7],
            json!("app=web,pod-template-hash=5d9f")
        );
        let rb = json!({"metadata": {"name": "admins", "creationTimestamp": "2026-11-26T11:00:00Z"},
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]});
        let cells = row_cells("rbac.authorization.k8s.io", "RoleBinding", &rb, now());
        assert_eq!(
            cells,
            vec![
                json!("admins"),
                json!("ClusterRole/admin"),
                json!("60m"),
                json!("alice"),
                json!(""),
                json!("ci/bot")
            ]
        );
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2026-11-26T11:00:00Z"}});
        assert_eq!(
            row_cells("rbac.authorization.k8s.io", "Role", &role, now())[1],
            json!("2026-11-26T11:00:00Z")
        );
        let unknown = json!({"metadata": {"name": "thing"}});
        assert_eq!(column_definitions("example.com", "Widget").len(), 2);
        assert_eq!(
            row_cells("example.com", "Widget", &unknown, now()),
            vec![json!("thing"), json!("<unknown>")]
        );
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        let kinds = [
            ("", "Pod"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Node"),
            ("", "Namespace"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "PersistentVolumeClaim"),
            ("", "PersistentVolume"),
            ("", "ResourceQuota"),
            ("", "ReplicationController"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "DaemonSet"),
            ("apps", "StatefulSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("coordination.k8s.io", "Lease"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("policy", "PodDisruptionBudget"),
            ("storage.k8s.io", "StorageClass"),
            ("x", "Unknown"),
            ("", "PodTemplate"),
            ("", "LimitRange"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "IngressClass"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("node.k8s.io", "RuntimeClass"),
            ("storage.k8s.io", "CSINode"),
            ("storage.k8s.io", "VolumeAttachment"),
            ("storage.k8s.io", "CSIDriver"),
        ];
        let obj = json!({"metadata": {"name": "n", "creationTimestamp": "2026-11-26T11:00:00Z"}});
        for (group, kind) in kinds {
            assert_eq!(
                row_cells(group, kind, &obj, now()).len(),
                column_definitions(group, kind).len(),
                "{group}/{kind}"
            );
        }
    }

    #[test]
    fn hpa_and_ingress_rows() {
        let hpa = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 41}}}]}});
        let cells = row_cells("autoscaling", "HorizontalPodAutoscaler", &hpa, now());
        assert_eq!(
            &cells[1..6],
            &[
                json!("Deployment/web"),
                json!("cpu: 41%/80%"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
        let mut fresh = hpa.clone();
        fresh["status"] = json!({});
        assert_eq!(
            row_cells("autoscaling", "HorizontalPodAutoscaler", &fresh, now())[2],
            json!("cpu: <unknown>/80%")
        );
        let ing = json!({"metadata": {"name": "site"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}],
                     "tls": [{"hosts": ["a.example.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}});
        let cells = row_cells("networking.k8s.io", "Ingress", &ing, now());
        assert_eq!(
            &cells[1..5],
            &[
                json!("nginx"),
                json!("a.example.com,b.example.com"),
                json!("192.0.2.7"),
                json!("80, 443")
            ]
        );
        let catch_all = json!({"metadata": {"name": "x"}, "spec": {"rules": [{"http": {}}]}});
        assert_eq!(
            &row_cells("networking.k8s.io", "Ingress", &catch_all, now())[1..5],
            &[json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }

    #[test]
    fn selectors_format_like_kubernetes() {
        assert_eq!(label_selector_string(None), "<none>");
        assert_eq!(label_selector_string(Some(&json!({}))), "<none>");
        let sel = json!({"matchExpressions": [
            {"key": "b", "operator": "DoesNotExist"}, {"key": "a", "operator": "Exists"},
            {"key": "c", "operator": "NotIn", "values": ["y", "x"]}
        ]});
        assert_eq!(label_selector_string(Some(&sel)), "a,!b,c notin (x,y)");
        assert_eq!(label_map_string(Some(&json!({"z": "1", "a": "2"}))), "a=2,z=1");
    }
}
