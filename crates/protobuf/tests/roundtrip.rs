//! Objects built as k8s-pb (prost) structs with many fields set, encoded by prost into the Kubernetes
//! envelope, decoded by us: the JSON must be exactly Kubernetes' JSON for the object and must deserialize
//! into the k8s-openapi type. prost's encoder is independent of our tables, so a wrong tag, wire type, JSON
//! name or special encoding shows up as a difference here.

use std::collections::BTreeMap;

use k8s_pb::api::{apps, batch, core, rbac};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

fn envelope<M: Message>(api_version: &str, kind: &str, object: &M) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

/// Decodes, compares with `expected`, and checks the JSON is a valid `T`.
fn check<M: Message, T: serde::de::DeserializeOwned>(
    api_version: &str,
    kind: &str,
    object: &M,
    expected: Value,
) -> T {
    let decoded = rkube_protobuf::decode(&envelope(api_version, kind, object)).expect("decodes");
    let mut differences = Vec::new();
    diff(&decoded, &expected, "", &mut differences);
    assert!(
        differences.is_empty(),
        "{kind}: decoded differs from expected at:\n{}",
        differences.join("\n")
    );
    serde_json::from_value(decoded).expect("deserializes into the k8s-openapi type")
}

/// Paths where `actual` and `expected` differ, with both values, so a failure names the field.
fn diff(actual: &Value, expected: &Value, path: &str, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for key in a.keys().chain(e.keys().filter(|k| !a.contains_key(*k))) {
                let child = format!("{path}.{key}");
                diff(
                    a.get(key).unwrap_or(&Value::Null),
                    e.get(key).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                diff(a, e, &format!("{path}[{i}]"), out);
            }
        }
        _ if actual != expected => out.push(format!("  {path}: decoded {actual}, expected {expected}")),
        _ => {}
    }
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity { string: s(v) }))
        .collect()
}

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

fn int_port(port: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(port),
        str_val: s(""),
    })
}

fn str_port(port: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(port),
    })
}

fn selector(pairs: &[(&str, &str)]) -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector {
        match_labels: map(pairs),
        match_expressions: vec![],
    })
}

/// Metadata the way Go encodes it: every non-pointer string present even when empty, the zero
/// `deletionTimestamp` absent, `generation` 0.
fn object_meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s("default"),
        self_link: s(""),
        uid: s("6a1c0f58-4f0c-4b7b-9e0e-3f7b7c1d2e3f"),
        resource_version: s("42"),
        generation: Some(3),
        creation_timestamp: time(1_700_000_000),
        deletion_timestamp: None,
        deletion_grace_period_seconds: Some(0),
        labels: map(&[("app", "web"), ("tier", "")]),
        annotations: map(&[("note", "a \"quoted\" value")]),
        owner_references: vec![meta::OwnerReference {
            api_version: s("apps/v1"),
            kind: s("ReplicaSet"),
            name: s("web-abc"),
            uid: s("u-1"),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }],
        finalizers: strings(&["example.com/cleanup"]),
        managed_fields: vec![meta::ManagedFieldsEntry {
            manager: s("kubectl-create"),
            operation: s("Update"),
            api_version: s("apps/v1"),
            time: time(1_700_000_001),
            fields_type: s("FieldsV1"),
            fields_v1: Some(meta::FieldsV1 {
                raw: Some(br#"{"f:spec":{"f:replicas":{}}}"#.to_vec()),
            }),
            subresource: s(""),
        }],
    })
}

fn object_meta_json(name: &str) -> Value {
    json!({
        "name": name,
        "namespace": "default",
        "uid": "6a1c0f58-4f0c-4b7b-9e0e-3f7b7c1d2e3f",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2023-11-14T22:13:20Z",
        "deletionGracePeriodSeconds": 0,
        "labels": { "app": "web", "tier": "" },
        "annotations": { "note": "a \"quoted\" value" },
        "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u-1",
                              "controller": true, "blockOwnerDeletion": false }],
        "finalizers": ["example.com/cleanup"],
        "managedFields": [{ "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1",
                            "time": "2023-11-14T22:13:21Z", "fieldsType": "FieldsV1",
                            "fieldsV1": { "f:spec": { "f:replicas": {} } } }],
    })
}

fn container(name: &str) -> core::v1::Container {
    core::v1::Container {
        name: s(name),
        image: s("nginx:1.27"),
        command: strings(&["nginx"]),
        args: strings(&["-g", "daemon off;"]),
        working_dir: s(""),
        ports: vec![
            core::v1::ContainerPort {
                name: s("http"),
                host_port: Some(0),
                container_port: Some(8080),
                protocol: s("TCP"),
                host_ip: s(""),
            },
            core::v1::ContainerPort {
                name: s(""),
                host_port: Some(9443),
                container_port: Some(443),
                protocol: s("UDP"),
                host_ip: s("127.0.0.1"),
            },
        ],
        env_from: vec![core::v1::EnvFromSource {
            prefix: s("CFG_"),
            config_map_ref: Some(core::v1::ConfigMapEnvSource {
                local_object_reference: Some(core::v1::LocalObjectReference { name: s("settings") }),
                optional: Some(false),
            }),
            secret_ref: None,
        }],
        env: vec![
            core::v1::EnvVar {
                name: s("PLAIN"),
                value: s("1"),
                value_from: None,
            },
            core::v1::EnvVar {
                name: s("EMPTY"),
                value: s(""),
                value_from: None,
            },
            core::v1::EnvVar {
                name: s("PASSWORD"),
                value: s(""),
                value_from: Some(core::v1::EnvVarSource {
                    secret_key_ref: Some(core::v1::SecretKeySelector {
                        local_object_reference: Some(core::v1::LocalObjectReference { name: s("creds") }),
                        key: s("pw"),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            },
            core::v1::EnvVar {
                name: s("NODE"),
                value: s(""),
                value_from: Some(core::v1::EnvVarSource {
                    field_ref: Some(core::v1::ObjectFieldSelector {
                        api_version: s("v1"),
                        field_path: s("spec.nodeName"),
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::v1::ResourceRequirements {
            limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
            requests: quantities(&[("cpu", "250m")]),
            claims: vec![],
        }),
        volume_mounts: vec![core::v1::VolumeMount {
            name: s("data"),
            read_only: Some(true),
            mount_path: s("/data"),
            sub_path: s(""),
            mount_propagation: None,
            sub_path_expr: s(""),
            recursive_read_only: None,
        }],
        liveness_probe: Some(core::v1::Probe {
            handler: Some(core::v1::ProbeHandler {
                http_get: Some(core::v1::HttpGetAction {
                    path: s("/healthz"),
                    port: int_port(8080),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![core::v1::HttpHeader {
                        name: s("X-Probe"),
                        value: s("yes"),
                    }],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            timeout_seconds: Some(1),
            period_seconds: Some(10),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            termination_grace_period_seconds: None,
        }),
        readiness_probe: Some(core::v1::Probe {
            handler: Some(core::v1::ProbeHandler {
                tcp_socket: Some(core::v1::TcpSocketAction {
                    port: str_port("http"),
                    host: s(""),
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            timeout_seconds: Some(0),
            period_seconds: Some(0),
            success_threshold: Some(0),
            failure_threshold: Some(0),
            termination_grace_period_seconds: None,
        }),
        lifecycle: Some(core::v1::Lifecycle {
            pre_stop: Some(core::v1::LifecycleHandler {
                exec: Some(core::v1::ExecAction {
                    command: strings(&["sleep", "5"]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_path: s("/dev/termination-log"),
        termination_message_policy: s("File"),
        image_pull_policy: s("IfNotPresent"),
        security_context: Some(core::v1::SecurityContext {
            capabilities: Some(core::v1::Capabilities {
                add: strings(&["NET_ADMIN"]),
                drop: strings(&["ALL"]),
            }),
            privileged: Some(false),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(true),
        ..Default::default()
    }
}

fn container_json(name: &str) -> Value {
    json!({
        "name": name,
        "image": "nginx:1.27",
        "command": ["nginx"],
        "args": ["-g", "daemon off;"],
        "ports": [
            { "name": "http", "containerPort": 8080, "protocol": "TCP" },
            { "hostPort": 9443, "containerPort": 443, "protocol": "UDP", "hostIP": "127.0.0.1" },
        ],
        "envFrom": [{ "prefix": "CFG_", "configMapRef": { "name": "settings", "optional": false } }],
        "env": [
            { "name": "PLAIN", "value": "1" },
            { "name": "EMPTY" },
            { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "pw", "optional": true } } },
            { "name": "NODE", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "spec.nodeName" } } },
        ],
        "resources": { "limits": { "cpu": "500m", "memory": "128Mi" }, "requests": { "cpu": "250m" } },
        "volumeMounts": [{ "name": "data", "readOnly": true, "mountPath": "/data" }],
        "livenessProbe": {
            "httpGet": { "path": "/healthz", "port": 8080, "scheme": "HTTP",
                         "httpHeaders": [{ "name": "X-Probe", "value": "yes" }] },
            "initialDelaySeconds": 5, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
            "failureThreshold": 3,
        },
        "readinessProbe": { "tcpSocket": { "port": "http" } },
        "lifecycle": { "preStop": { "exec": { "command": ["sleep", "5"] } } },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": { "capabilities": { "add": ["NET_ADMIN"], "drop": ["ALL"] }, "privileged": false,
                             "runAsUser": 0, "runAsNonRoot": false, "readOnlyRootFilesystem": true },
        "tty": true,
    })
}

fn pod_spec() -> core::v1::PodSpec {
    core::v1::PodSpec {
        volumes: vec![
            core::v1::Volume {
                name: s("data"),
                volume_source: Some(core::v1::VolumeSource {
                    empty_dir: Some(core::v1::EmptyDirVolumeSource {
                        medium: s("Memory"),
                        size_limit: Some(Quantity { string: s("1Gi") }),
                    }),
                    ..Default::default()
                }),
            },
            core::v1::Volume {
                name: s("config"),
                volume_source: Some(core::v1::VolumeSource {
                    config_map: Some(core::v1::ConfigMapVolumeSource {
                        local_object_reference: Some(core::v1::LocalObjectReference { name: s("settings") }),
                        items: vec![core::v1::KeyToPath {
                            key: s("a"),
                            path: s("a.txt"),
                            mode: Some(0o400),
                        }],
                        default_mode: Some(0o644),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ],
        init_containers: vec![core::v1::Container {
            name: s("init"),
            image: s("busybox"),
            resources: Some(core::v1::ResourceRequirements::default()),
            ..Default::default()
        }],
        containers: vec![container("web")],
        restart_policy: s("Always"),
        termination_grace_period_seconds: Some(0),
        dns_policy: s("ClusterFirst"),
        node_selector: map(&[("kubernetes.io/os", "linux")]),
        service_account_name: s("robot"),
        automount_service_account_token: Some(false),
        node_name: s(""),
        host_network: Some(false),
        security_context: Some(core::v1::PodSecurityContext {
            fs_group: Some(2000),
            supplemental_groups: vec![0, 3000],
            sysctls: vec![core::v1::Sysctl {
                name: s("net.core.somaxconn"),
                value: s("1024"),
            }],
            ..Default::default()
        }),
        image_pull_secrets: vec![core::v1::LocalObjectReference { name: s("regcred") }],
        affinity: Some(core::v1::Affinity {
            node_affinity: Some(core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(core::v1::NodeSelector {
                    node_selector_terms: vec![core::v1::NodeSelectorTerm {
                        match_expressions: vec![core::v1::NodeSelectorRequirement {
                            key: s("zone"),
                            operator: s("In"),
                            values: strings(&["a", "b"]),
                        }],
                        match_fields: vec![],
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: vec![],
            }),
            pod_anti_affinity: Some(core::v1::PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: vec![
                    core::v1::WeightedPodAffinityTerm {
                        weight: Some(100),
                        pod_affinity_term: Some(core::v1::PodAffinityTerm {
                            label_selector: selector(&[("app", "web")]),
                            topology_key: s("kubernetes.io/hostname"),
                            ..Default::default()
                        }),
                    },
                ],
                ..Default::default()
            }),
            pod_affinity: None,
        }),
        scheduler_name: s("default-scheduler"),
        tolerations: vec![core::v1::Toleration {
            key: s("node.kubernetes.io/not-ready"),
            operator: s("Exists"),
            value: s(""),
            effect: s("NoExecute"),
            toleration_seconds: Some(0),
        }],
        host_aliases: vec![core::v1::HostAlias {
            ip: s("10.0.0.1"),
            hostnames: strings(&["db"]),
        }],
        priority: Some(0),
        enable_service_links: Some(false),
        topology_spread_constraints: vec![core::v1::TopologySpreadConstraint {
            max_skew: Some(1),
            topology_key: s("zone"),
            when_unsatisfiable: s("DoNotSchedule"),
            label_selector: selector(&[("app", "web")]),
            ..Default::default()
        }],
        ephemeral_containers: vec![core::v1::EphemeralContainer {
            ephemeral_container_common: Some(core::v1::EphemeralContainerCommon {
                name: s("debug"),
                image: s("busybox"),
                stdin: Some(true),
                resources: Some(core::v1::ResourceRequirements::default()),
                ..Default::default()
            }),
            target_container_name: s("web"),
        }],
        ..Default::default()
    }
}

fn pod_spec_json() -> Value {
    json!({
        "volumes": [
            { "name": "data", "emptyDir": { "medium": "Memory", "sizeLimit": "1Gi" } },
            { "name": "config", "configMap": { "name": "settings", "items": [{ "key": "a", "path": "a.txt", "mode": 256 }],
                                               "defaultMode": 420 } },
        ],
        "initContainers": [{ "name": "init", "image": "busybox", "resources": {} }],
        "containers": [container_json("web")],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 0,
        "dnsPolicy": "ClusterFirst",
        "nodeSelector": { "kubernetes.io/os": "linux" },
        "serviceAccountName": "robot",
        "automountServiceAccountToken": false,
        "securityContext": { "fsGroup": 2000, "supplementalGroups": [0, 3000], "sysctls": [{ "name": "net.core.somaxconn", "value": "1024" }] },
        "imagePullSecrets": [{ "name": "regcred" }],
        "affinity": {
            "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
                { "matchExpressions": [{ "key": "zone", "operator": "In", "values": ["a", "b"] }] } ] } },
            "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100,
                "podAffinityTerm": { "labelSelector": { "matchLabels": { "app": "web" } },
                                     "topologyKey": "kubernetes.io/hostname" } }] },
        },
        "schedulerName": "default-scheduler",
        "tolerations": [{ "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                          "tolerationSeconds": 0 }],
        "hostAliases": [{ "ip": "10.0.0.1", "hostnames": ["db"] }],
        "priority": 0,
        "enableServiceLinks": false,
        "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                        "labelSelector": { "matchLabels": { "app": "web" } } }],
        "ephemeralContainers": [{ "name": "debug", "image": "busybox", "stdin": true, "resources": {},
                                  "targetContainerName": "web" }],
    })
}

fn template() -> Option<core::v1::PodTemplateSpec> {
    Some(core::v1::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("app", "web")]),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(pod_spec()),
    })
}

fn template_json() -> Value {
    json!({ "metadata": { "labels": { "app": "web" } }, "spec": pod_spec_json() })
}

#[test]
fn deployment_round_trips_with_zero_replicas_kept() {
    let deployment = apps::v1::Deployment {
        metadata: object_meta("web"),
        spec: Some(apps::v1::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("NotIn"),
                    values: strings(&["cache"]),
                }],
            }),
            template: template(),
            strategy: Some(apps::v1::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::v1::RollingUpdateDeployment {
                    max_unavailable: int_port(0),
                    max_surge: str_port("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            paused: Some(false),
            progress_deadline_seconds: Some(600),
        }),
        status: Some(apps::v1::DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            unavailable_replicas: Some(1),
            terminating_replicas: None,
            conditions: vec![apps::v1::DeploymentCondition {
                r#type: s("Available"),
                status: s("False"),
                last_update_time: time(1_700_000_100),
                last_transition_time: time(1_700_000_200),
                reason: s("MinimumReplicasUnavailable"),
                message: s("Deployment does not have minimum availability."),
            }],
            collision_count: Some(0),
        }),
    };
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta_json("web"),
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "web" },
                          "matchExpressions": [{ "key": "tier", "operator": "NotIn", "values": ["cache"] }] },
            "template": template_json(),
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": "25%" } },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
            "availableReplicas": 1, "unavailableReplicas": 1, "collisionCount": 0,
            "conditions": [{ "type": "Available", "status": "False", "lastUpdateTime": "2023-11-14T22:15:00Z",
                             "lastTransitionTime": "2023-11-14T22:16:40Z", "reason": "MinimumReplicasUnavailable",
                             "message": "Deployment does not have minimum availability." }],
        },
    });
    let decoded: k8s_openapi::api::apps::v1::Deployment =
        check("apps/v1", "Deployment", &deployment, expected);
    assert_eq!(decoded.spec.unwrap().replicas, Some(0));
}

#[test]
fn pod_with_status_round_trips() {
    let pod = core::v1::Pod {
        metadata: object_meta("web-1"),
        spec: Some(pod_spec()),
        status: Some(core::v1::PodStatus {
            phase: s("Running"),
            conditions: vec![core::v1::PodCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_probe_time: Some(meta::Time::default()),
                last_transition_time: Some(meta::Time {
                    seconds: Some(1_700_000_300),
                    nanos: Some(0),
                }),
                reason: s(""),
                message: s(""),
                observed_generation: None,
            }],
            host_ip: s("192.168.1.10"),
            host_ips: vec![core::v1::HostIp {
                ip: s("192.168.1.10"),
            }],
            pod_ip: s("10.42.0.7"),
            pod_ips: vec![
                core::v1::PodIp { ip: s("10.42.0.7") },
                core::v1::PodIp { ip: s("fd00::7") },
            ],
            start_time: time(1_700_000_250),
            container_statuses: vec![core::v1::ContainerStatus {
                name: s("web"),
                state: Some(core::v1::ContainerState {
                    running: Some(core::v1::ContainerStateRunning {
                        started_at: time(1_700_000_260),
                    }),
                    ..Default::default()
                }),
                last_state: Some(core::v1::ContainerState::default()),
                ready: Some(false),
                restart_count: Some(0),
                image: s("nginx:1.27"),
                image_id: s("docker.io/library/nginx@sha256:abc"),
                container_id: s("containerd://123"),
                started: Some(true),
                ..Default::default()
            }],
            qos_class: s("Burstable"),
            ..Default::default()
        }),
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": object_meta_json("web-1"),
        "spec": pod_spec_json(),
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": "2023-11-14T22:18:20Z" }],
            "hostIP": "192.168.1.10",
            "hostIPs": [{ "ip": "192.168.1.10" }],
            "podIP": "10.42.0.7",
            "podIPs": [{ "ip": "10.42.0.7" }, { "ip": "fd00::7" }],
            "startTime": "2023-11-14T22:17:30Z",
            "containerStatuses": [{ "name": "web", "state": { "running": { "startedAt": "2023-11-14T22:17:40Z" } },
                                    "lastState": {}, "ready": false, "restartCount": 0, "image": "nginx:1.27",
                                    "imageID": "docker.io/library/nginx@sha256:abc", "containerID": "containerd://123",
                                    "started": true }],
            "qosClass": "Burstable",
        },
    });
    let _: k8s_openapi::api::core::v1::Pod = check("v1", "Pod", &pod, expected);
}

#[test]
fn service_round_trips_int_and_named_target_ports() {
    let service = core::v1::Service {
        metadata: object_meta("web"),
        spec: Some(core::v1::ServiceSpec {
            ports: vec![
                core::v1::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    app_protocol: None,
                    port: Some(80),
                    target_port: str_port("http"),
                    node_port: Some(30080),
                },
                core::v1::ServicePort {
                    name: s("metrics"),
                    protocol: s("TCP"),
                    app_protocol: s("http"),
                    port: Some(9090),
                    target_port: int_port(9090),
                    node_port: Some(0),
                },
            ],
            selector: map(&[("app", "web")]),
            cluster_ip: s("10.43.0.20"),
            cluster_ips: strings(&["10.43.0.20"]),
            r#type: s("NodePort"),
            external_ips: vec![],
            session_affinity: s("None"),
            load_balancer_ip: s(""),
            external_traffic_policy: s("Cluster"),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ip_families: strings(&["IPv4"]),
            ip_family_policy: s("SingleStack"),
            allocate_load_balancer_node_ports: None,
            internal_traffic_policy: s("Cluster"),
            ..Default::default()
        }),
        status: Some(core::v1::ServiceStatus {
            load_balancer: Some(core::v1::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta_json("web"),
        "spec": {
            "ports": [
                { "name": "http", "protocol": "TCP", "port": 80, "targetPort": "http", "nodePort": 30080 },
                { "name": "metrics", "protocol": "TCP", "appProtocol": "http", "port": 9090, "targetPort": 9090 },
            ],
            "selector": { "app": "web" },
            "clusterIP": "10.43.0.20",
            "clusterIPs": ["10.43.0.20"],
            "type": "NodePort",
            "sessionAffinity": "None",
            "externalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": { "loadBalancer": {} },
    });
    let _: k8s_openapi::api::core::v1::Service = check("v1", "Service", &service, expected);
}

#[test]
fn secret_and_configmap_bytes_are_base64() {
    let secret = core::v1::Secret {
        metadata: object_meta("creds"),
        immutable: Some(false),
        data: [
            ("pw".to_owned(), b"s3cr3t".to_vec()),
            ("bin".to_owned(), vec![0, 255, 10]),
            ("empty".to_owned(), vec![]),
        ]
        .into_iter()
        .collect(),
        string_data: map(&[("user", "admin")]),
        r#type: s("Opaque"),
    };
    let expected = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": object_meta_json("creds"), "immutable": false,
        "data": { "pw": "czNjcjN0", "bin": "AP8K", "empty": "" }, "stringData": { "user": "admin" }, "type": "Opaque",
    });
    let _: k8s_openapi::api::core::v1::Secret = check("v1", "Secret", &secret, expected);

    let config_map = core::v1::ConfigMap {
        metadata: object_meta("settings"),
        immutable: None,
        data: map(&[("a", "1"), ("b", "")]),
        binary_data: [("blob".to_owned(), b"hi".to_vec())].into_iter().collect(),
    };
    let expected = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": object_meta_json("settings"),
        "data": { "a": "1", "b": "" }, "binaryData": { "blob": "aGk=" },
    });
    let _: k8s_openapi::api::core::v1::ConfigMap = check("v1", "ConfigMap", &config_map, expected);
}

#[test]
fn namespace_and_service_account_round_trip() {
    let namespace = core::v1::Namespace {
        metadata: object_meta("team-a"),
        spec: Some(core::v1::NamespaceSpec {
            finalizers: strings(&["kubernetes"]),
        }),
        status: Some(core::v1::NamespaceStatus {
            phase: s("Active"),
            conditions: vec![core::v1::NamespaceCondition {
                r#type: s("NamespaceDeletionContentFailure"),
                status: s("False"),
                last_transition_time: time(1_700_000_000),
                reason: s("ContentDeleted"),
                message: s(""),
            }],
        }),
    };
    let expected = json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": object_meta_json("team-a"),
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active", "conditions": [{ "type": "NamespaceDeletionContentFailure", "status": "False",
                    "lastTransitionTime": "2023-11-14T22:13:20Z", "reason": "ContentDeleted" }] },
    });
    let _: k8s_openapi::api::core::v1::Namespace = check("v1", "Namespace", &namespace, expected);

    let account = core::v1::ServiceAccount {
        metadata: object_meta("robot"),
        secrets: vec![core::v1::ObjectReference {
            name: s("robot-token"),
            namespace: s(""),
            ..Default::default()
        }],
        image_pull_secrets: vec![core::v1::LocalObjectReference { name: s("regcred") }],
        automount_service_account_token: Some(false),
    };
    let expected = json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta_json("robot"),
        "secrets": [{ "name": "robot-token" }], "imagePullSecrets": [{ "name": "regcred" }],
        "automountServiceAccountToken": false,
    });
    let _: k8s_openapi::api::core::v1::ServiceAccount = check("v1", "ServiceAccount", &account, expected);
}

#[test]
fn workload_kinds_round_trip() {
    let replica_set = apps::v1::ReplicaSet {
        metadata: object_meta("web-abc"),
        spec: Some(apps::v1::ReplicaSetSpec {
            replicas: Some(3),
            min_ready_seconds: Some(5),
            selector: selector(&[("app", "web")]),
            template: template(),
        }),
        status: Some(apps::v1::ReplicaSetStatus {
            replicas: Some(0),
            fully_labeled_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            terminating_replicas: None,
            observed_generation: Some(1),
            conditions: vec![],
        }),
    };
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": object_meta_json("web-abc"),
        "spec": { "replicas": 3, "minReadySeconds": 5, "selector": { "matchLabels": { "app": "web" } },
                  "template": template_json() },
        "status": { "replicas": 0, "observedGeneration": 1 },
    });
    let _: k8s_openapi::api::apps::v1::ReplicaSet = check("apps/v1", "ReplicaSet", &replica_set, expected);

    let daemon_set = apps::v1::DaemonSet {
        metadata: object_meta("agent"),
        spec: Some(apps::v1::DaemonSetSpec {
            selector: selector(&[("app", "web")]),
            template: template(),
            update_strategy: Some(apps::v1::DaemonSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::v1::RollingUpdateDaemonSet {
                    max_unavailable: int_port(1),
                    max_surge: int_port(0),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
        }),
        status: Some(apps::v1::DaemonSetStatus {
            current_number_scheduled: Some(1),
            number_misscheduled: Some(0),
            desired_number_scheduled: Some(1),
            number_ready: Some(1),
            ..Default::default()
        }),
    };
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": object_meta_json("agent"),
        "spec": { "selector": { "matchLabels": { "app": "web" } }, "template": template_json(),
                  "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1, "maxSurge": 0 } },
                  "revisionHistoryLimit": 10 },
        "status": { "currentNumberScheduled": 1, "numberMisscheduled": 0, "desiredNumberScheduled": 1,
                    "numberReady": 1 },
    });
    let _: k8s_openapi::api::apps::v1::DaemonSet = check("apps/v1", "DaemonSet", &daemon_set, expected);

    let stateful_set = apps::v1::StatefulSet {
        metadata: object_meta("db"),
        spec: Some(apps::v1::StatefulSetSpec {
            replicas: Some(1),
            selector: selector(&[("app", "web")]),
            template: template(),
            volume_claim_templates: vec![core::v1::PersistentVolumeClaim {
                metadata: Some(meta::ObjectMeta {
                    name: s("data"),
                    ..Default::default()
                }),
                spec: Some(core::v1::PersistentVolumeClaimSpec {
                    access_modes: strings(&["ReadWriteOnce"]),
                    resources: Some(core::v1::VolumeResourceRequirements {
                        limits: BTreeMap::new(),
                        requests: quantities(&[("storage", "1Gi")]),
                    }),
                    storage_class_name: s(""),
                    ..Default::default()
                }),
                status: None,
            }],
            service_name: s("db"),
            pod_management_policy: s("OrderedReady"),
            update_strategy: Some(apps::v1::StatefulSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::v1::RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: s("Retain"),
                    when_scaled: s("Delete"),
                },
            ),
            ordinals: Some(apps::v1::StatefulSetOrdinals { start: Some(0) }),
            ..Default::default()
        }),
        status: None,
    };
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": object_meta_json("db"),
        "spec": {
            "replicas": 1, "selector": { "matchLabels": { "app": "web" } }, "template": template_json(),
            "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": { "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "1Gi" } }, "storageClassName": "" } }],
            "serviceName": "db", "podManagementPolicy": "OrderedReady",
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 0 } },
            "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Delete" },
            "ordinals": { "start": 0 },
        },
    });
    let _: k8s_openapi::api::apps::v1::StatefulSet = check("apps/v1", "StatefulSet", &stateful_set, expected);
}

#[test]
fn job_round_trips_with_zero_backoff_limit() {
    let job = batch::v1::Job {
        metadata: object_meta("once"),
        spec: Some(batch::v1::JobSpec {
            parallelism: Some(1),
            completions: Some(1),
            active_deadline_seconds: None,
            backoff_limit: Some(0),
            selector: None,
            manual_selector: None,
            template: template(),
            ttl_seconds_after_finished: Some(100),
            completion_mode: s("NonIndexed"),
            suspend: Some(false),
            ..Default::default()
        }),
        status: Some(batch::v1::JobStatus {
            start_time: time(1_700_000_000),
            active: Some(1),
            succeeded: Some(0),
            failed: Some(0),
            ready: Some(0),
            ..Default::default()
        }),
    };
    let expected = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": object_meta_json("once"),
        "spec": { "parallelism": 1, "completions": 1, "backoffLimit": 0, "template": template_json(),
                  "ttlSecondsAfterFinished": 100, "completionMode": "NonIndexed", "suspend": false },
        "status": { "startTime": "2023-11-14T22:13:20Z", "active": 1, "ready": 0 },
    });
    let _: k8s_openapi::api::batch::v1::Job = check("batch/v1", "Job", &job, expected);
}

#[test]
fn rbac_kinds_round_trip() {
    let rule = rbac::v1::PolicyRule {
        verbs: strings(&["get", "list"]),
        api_groups: strings(&[""]),
        resources: strings(&["pods", "pods/log"]),
        resource_names: vec![],
        non_resource_ur_ls: vec![],
    };
    let role = rbac::v1::Role {
        metadata: object_meta("reader"),
        rules: vec![rule.clone()],
    };
    let rule_json = json!({ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"] });
    let expected = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": object_meta_json("reader"),
                "rules": [rule_json] });
    let _: k8s_openapi::api::rbac::v1::Role = check("rbac.authorization.k8s.io/v1", "Role", &role, expected);

    let cluster_role = rbac::v1::ClusterRole {
        metadata: object_meta("creader"),
        rules: vec![rbac::v1::PolicyRule {
            verbs: strings(&["get"]),
            non_resource_ur_ls: strings(&["/healthz"]),
            ..Default::default()
        }],
        aggregation_rule: Some(rbac::v1::AggregationRule {
            cluster_role_selectors: vec![meta::LabelSelector {
                match_labels: map(&[("rbac.example.com/aggregate", "true")]),
                match_expressions: vec![],
            }],
        }),
    };
    let expected = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": object_meta_json("creader"),
        "rules": [{ "verbs": ["get"], "nonResourceURLs": ["/healthz"] }],
        "aggregationRule": { "clusterRoleSelectors": [{ "matchLabels": { "rbac.example.com/aggregate": "true" } }] },
    });
    let _: k8s_openapi::api::rbac::v1::ClusterRole = check(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        &cluster_role,
        expected,
    );

    let subjects = vec![
        rbac::v1::Subject {
            kind: s("User"),
            api_group: s("rbac.authorization.k8s.io"),
            name: s("alice"),
            namespace: s(""),
        },
        rbac::v1::Subject {
            kind: s("ServiceAccount"),
            api_group: s(""),
            name: s("robot"),
            namespace: s("default"),
        },
    ];
    let subjects_json = json!([
        { "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice" },
        { "kind": "ServiceAccount", "name": "robot", "namespace": "default" },
    ]);
    let role_ref = Some(rbac::v1::RoleRef {
        api_group: s("rbac.authorization.k8s.io"),
        kind: s("Role"),
        name: s("reader"),
    });
    let role_ref_json = json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader" });
    let binding = rbac::v1::RoleBinding {
        metadata: object_meta("read"),
        subjects: subjects.clone(),
        role_ref: role_ref.clone(),
    };
    let expected = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                           "metadata": object_meta_json("read"), "subjects": subjects_json, "roleRef": role_ref_json });
    let _: k8s_openapi::api::rbac::v1::RoleBinding =
        check("rbac.authorization.k8s.io/v1", "RoleBinding", &binding, expected);

    let cluster_binding = rbac::v1::ClusterRoleBinding {
        metadata: object_meta("cread"),
        subjects,
        role_ref,
    };
    let expected = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                           "metadata": object_meta_json("cread"), "subjects": subjects_json, "roleRef": role_ref_json });
    let _: k8s_openapi::api::rbac::v1::ClusterRoleBinding = check(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &cluster_binding,
        expected,
    );
}

#[test]
fn every_table_kind_is_a_kind_kubectl_sends() {
    let kinds: Vec<_> = rkube_protobuf::supported_kinds().collect();
    for needed in [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("v1", "Pod"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "StatefulSet"),
        ("batch/v1", "Job"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ] {
        assert!(kinds.contains(&needed), "{needed:?} missing");
    }
}

#[test]
fn lease_and_event_micro_times_keep_microseconds() {
    use k8s_pb::api::coordination;
    let micro = |seconds: i64, nanos: i32| {
        Some(meta::MicroTime {
            seconds: Some(seconds),
            nanos: Some(nanos),
        })
    };
    let lease = coordination::v1::Lease {
        metadata: object_meta("node-1"),
        spec: Some(coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            acquire_time: micro(1_700_000_000, 0),
            renew_time: micro(1_700_000_000, 123_456_789),
            lease_transitions: Some(0),
            strategy: None,
            preferred_holder: None,
        }),
    };
    let expected = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": object_meta_json("node-1"),
        "spec": { "holderIdentity": "node-1", "leaseDurationSeconds": 40, "acquireTime": "2023-11-14T22:13:20.000000Z",
                  "renewTime": "2023-11-14T22:13:20.123456Z", "leaseTransitions": 0 },
    });
    let _: k8s_openapi::api::coordination::v1::Lease =
        check("coordination.k8s.io/v1", "Lease", &lease, expected);

    let event = core::v1::Event {
        metadata: object_meta("web.1"),
        involved_object: Some(core::v1::ObjectReference {
            kind: s("Pod"),
            namespace: s("default"),
            name: s("web"),
            uid: s("u-2"),
            api_version: s("v1"),
            resource_version: s(""),
            field_path: s("spec.containers{web}"),
        }),
        reason: s("Pulled"),
        message: s("Container image already present"),
        source: Some(core::v1::EventSource {
            component: s("kubelet"),
            host: s("node-1"),
        }),
        first_timestamp: time(1_700_000_000),
        last_timestamp: time(1_700_000_060),
        count: Some(2),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime::default()),
        series: None,
        action: s(""),
        related: None,
        reporting_component: s("kubelet"),
        reporting_instance: s("node-1"),
    };
    let expected = json!({
        "apiVersion": "v1", "kind": "Event", "metadata": object_meta_json("web.1"),
        "involvedObject": { "kind": "Pod", "namespace": "default", "name": "web", "uid": "u-2", "apiVersion": "v1",
                            "fieldPath": "spec.containers{web}" },
        "reason": "Pulled", "message": "Container image already present",
        "source": { "component": "kubelet", "host": "node-1" },
        "firstTimestamp": "2023-11-14T22:13:20Z", "lastTimestamp": "2023-11-14T22:14:20Z", "count": 2,
        "type": "Normal", "reportingComponent": "kubelet", "reportingInstance": "node-1",
    });
    let _: k8s_openapi::api::core::v1::Event = check("v1", "Event", &event, expected);
}
