//! Hand-built Nodes and Pods for the unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
    Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// A Ready node with this allocatable cpu, memory and pod count.
pub fn node(name: &str, cpu: &str, memory: &str, pods: i64) -> Node {
    let alloc = quantities(&[
        ("cpu", cpu),
        ("memory", memory),
        ("pods", &pods.to_string()),
        ("ephemeral-storage", "100Gi"),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(alloc.clone()),
            capacity: Some(alloc),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

pub fn with_labels(mut n: Node, pairs: &[(&str, &str)]) -> Node {
    let labels = n.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in pairs {
        labels.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: effect.into(),
        time_added: None,
    }
}

pub fn with_taints(mut n: Node, taints: Vec<Taint>) -> Node {
    n.spec.get_or_insert_with(NodeSpec::default).taints = Some(taints);
    n
}

pub fn container(requests: &[(&str, &str)]) -> Container {
    Container {
        name: "c".into(),
        image: Some("busybox".into()),
        resources: (!requests.is_empty()).then(|| ResourceRequirements {
            requests: Some(quantities(requests)),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// A pod in namespace `default` with one container requesting `requests`.
pub fn pod_with_requests(name: &str, requests: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container(requests)],
            ..PodSpec::default()
        }),
        status: None,
    }
}

pub fn pod(name: &str) -> Pod {
    pod_with_requests(name, &[])
}

pub fn pod_labels(mut p: Pod, pairs: &[(&str, &str)]) -> Pod {
    let labels = p.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in pairs {
        labels.insert(k.to_string(), v.to_string());
    }
    p
}

pub fn bound(mut p: Pod, node: &str) -> Pod {
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p
}

pub fn with_host_port(p: &mut Pod, port: i32) {
    p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
        container_port: port,
        host_port: Some(port),
        ..ContainerPort::default()
    }]);
}

pub fn with_tolerations(mut p: Pod, tolerations: Vec<Toleration>) -> Pod {
    p.spec.as_mut().unwrap().tolerations = Some(tolerations);
    p
}

pub fn toleration(key: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some(if value.is_empty() { "Exists" } else { "Equal" }.into()),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: (!effect.is_empty()).then(|| effect.to_string()),
        toleration_seconds: None,
    }
}
