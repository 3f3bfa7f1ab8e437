//! Every field of every table, checked against two independent references:
//! 1. prost (k8s-pb): an object with *every* field set is synthesized from our tables, decoded by prost into
//!    the k8s-pb struct and re-encoded; a tag or wire type prost disagrees with fails to decode or is dropped;
//! 2. k8s-openapi (serde): our JSON for it is deserialized into the k8s-openapi type and serialized again; a
//!    JSON name or value shape k8s-openapi does not know is dropped or rejected.
//!
//! Both round trips must give back exactly the JSON we decode.

use base64::Engine;
use k8s_openapi::api as oa;
use k8s_pb::api as pb;
use prost::Message as _;
use rkube_protobuf::schema::{MapValue, Message, Type};
use serde_json::{Map, Value, json};

struct Case {
    api_version: &'static str,
    kind: &'static str,
    prost_round_trip: fn(&[u8]) -> Vec<u8>,
    openapi_round_trip: fn(Value) -> Value,
}

macro_rules! cases {
    ($(($api_version:literal, $kind:literal, $pb:ty, $oa:ty)),* $(,)?) => {
        vec![$(Case {
            api_version: $api_version,
            kind: $kind,
            prost_round_trip: |bytes| <$pb>::decode(bytes).expect("prost decodes the synthesized object").encode_to_vec(),
            openapi_round_trip: |value| {
                let typed: $oa = serde_json::from_value(value).expect("k8s-openapi accepts the JSON");
                serde_json::to_value(typed).unwrap()
            },
        }),*]
    };
}

fn cases() -> Vec<Case> {
    cases![
        (
            "v1",
            "Namespace",
            pb::core::v1::Namespace,
            oa::core::v1::Namespace
        ),
        (
            "v1",
            "ConfigMap",
            pb::core::v1::ConfigMap,
            oa::core::v1::ConfigMap
        ),
        ("v1", "Secret", pb::core::v1::Secret, oa::core::v1::Secret),
        ("v1", "Service", pb::core::v1::Service, oa::core::v1::Service),
        (
            "v1",
            "ServiceAccount",
            pb::core::v1::ServiceAccount,
            oa::core::v1::ServiceAccount
        ),
        ("v1", "Pod", pb::core::v1::Pod, oa::core::v1::Pod),
        (
            "v1",
            "ResourceQuota",
            pb::core::v1::ResourceQuota,
            oa::core::v1::ResourceQuota
        ),
        ("v1", "Event", pb::core::v1::Event, oa::core::v1::Event),
        (
            "apps/v1",
            "Deployment",
            pb::apps::v1::Deployment,
            oa::apps::v1::Deployment
        ),
        (
            "apps/v1",
            "ReplicaSet",
            pb::apps::v1::ReplicaSet,
            oa::apps::v1::ReplicaSet
        ),
        (
            "apps/v1",
            "DaemonSet",
            pb::apps::v1::DaemonSet,
            oa::apps::v1::DaemonSet
        ),
        (
            "apps/v1",
            "StatefulSet",
            pb::apps::v1::StatefulSet,
            oa::apps::v1::StatefulSet
        ),
        ("batch/v1", "Job", pb::batch::v1::Job, oa::batch::v1::Job),
        (
            "batch/v1",
            "CronJob",
            pb::batch::v1::CronJob,
            oa::batch::v1::CronJob
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "Role",
            pb::rbac::v1::Role,
            oa::rbac::v1::Role
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            pb::rbac::v1::RoleBinding,
            oa::rbac::v1::RoleBinding
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            pb::rbac::v1::ClusterRole,
            oa::rbac::v1::ClusterRole
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            pb::rbac::v1::ClusterRoleBinding,
            oa::rbac::v1::ClusterRoleBinding
        ),
        (
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            pb::autoscaling::v1::HorizontalPodAutoscaler,
            oa::autoscaling::v1::HorizontalPodAutoscaler
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            pb::autoscaling::v2::HorizontalPodAutoscaler,
            oa::autoscaling::v2::HorizontalPodAutoscaler
        ),
        (
            "policy/v1",
            "PodDisruptionBudget",
            pb::policy::v1::PodDisruptionBudget,
            oa::policy::v1::PodDisruptionBudget
        ),
        (
            "networking.k8s.io/v1",
            "Ingress",
            pb::networking::v1::Ingress,
            oa::networking::v1::Ingress
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            pb::scheduling::v1::PriorityClass,
            oa::scheduling::v1::PriorityClass
        ),
        (
            "authentication.k8s.io/v1",
            "TokenRequest",
            pb::authentication::v1::TokenRequest,
            oa::authentication::v1::TokenRequest
        ),
        (
            "coordination.k8s.io/v1",
            "Lease",
            pb::coordination::v1::Lease,
            oa::coordination::v1::Lease
        ),
        (
            "events.k8s.io/v1",
            "Event",
            pb::events::v1::Event,
            oa::events::v1::Event
        ),
    ]
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, tag: u32, wire_type: u64) {
    varint(out, (u64::from(tag) << 3) | wire_type);
}

fn len_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    key(out, tag, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, tag: u32, value: u64) {
    key(out, tag, 0);
    varint(out, value);
}

const SECONDS: u64 = 1_700_000_000;

/// Writes one value of `ty` as field `tag`; returns its JSON. Values are never Go zero values, so every
/// field must come out.
fn value(messages: &[Message], ty: Type, tag: u32, name: &str, out: &mut Vec<u8>) -> Value {
    match ty {
        Type::String => {
            let s = format!("{name}-value");
            len_field(out, tag, s.as_bytes());
            Value::String(s)
        }
        Type::Bool => {
            varint_field(out, tag, 1);
            Value::Bool(true)
        }
        Type::Int32 | Type::Int64 => {
            varint_field(out, tag, 7);
            json!(7)
        }
        Type::Double => {
            key(out, tag, 1);
            out.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
            json!(2.5)
        }
        Type::Bytes => {
            len_field(out, tag, &[1, 2, 3]);
            Value::String(base64::engine::general_purpose::STANDARD.encode([1, 2, 3]))
        }
        Type::Message(index) => {
            let (bytes, object) = synthesize(messages, index);
            len_field(out, tag, &bytes);
            Value::Object(object)
        }
        Type::Time => {
            let mut time = Vec::new();
            varint_field(&mut time, 1, SECONDS);
            len_field(out, tag, &time);
            json!("2023-11-14T22:13:20Z")
        }
        Type::MicroTime => {
            let mut time = Vec::new();
            varint_field(&mut time, 1, SECONDS);
            varint_field(&mut time, 2, 123_456_000);
            len_field(out, tag, &time);
            json!("2023-11-14T22:13:20.123456Z")
        }
        Type::IntOrString => {
            let mut int_or_string = Vec::new();
            varint_field(&mut int_or_string, 1, 1);
            len_field(&mut int_or_string, 3, b"25%");
            len_field(out, tag, &int_or_string);
            json!("25%")
        }
        Type::Quantity => {
            let mut quantity = Vec::new();
            len_field(&mut quantity, 1, b"1Gi");
            len_field(out, tag, &quantity);
            json!("1Gi")
        }
        Type::RawJson => {
            let mut raw = Vec::new();
            len_field(&mut raw, 1, br#"{"f:spec":{}}"#);
            len_field(out, tag, &raw);
            json!({ "f:spec": {} })
        }
        Type::Duration => {
            let mut duration = Vec::new();
            varint_field(&mut duration, 1, 90_000_000_000);
            len_field(out, tag, &duration);
            json!("1m30s")
        }
        Type::Map(_) | Type::Inline(_) => unreachable!("handled by synthesize"),
    }
}

fn synthesize(messages: &[Message], index: u16) -> (Vec<u8>, Map<String, Value>) {
    let message = &messages[usize::from(index)];
    let mut bytes = Vec::new();
    let mut object = Map::new();
    for field in message.fields {
        match field.ty {
            Type::Inline(inner) => {
                let (inner_bytes, inner_object) = synthesize(messages, inner);
                len_field(&mut bytes, field.tag, &inner_bytes);
                object.extend(inner_object);
            }
            Type::Map(map_value) => {
                let mut entry = Vec::new();
                len_field(&mut entry, 1, b"key");
                let value_type = match map_value {
                    MapValue::String => Type::String,
                    MapValue::Bytes => Type::Bytes,
                    MapValue::Message(index) => Type::Message(index),
                    MapValue::Quantity => Type::Quantity,
                    MapValue::Time => Type::Time,
                };
                let json = value(messages, value_type, 2, field.json, &mut entry);
                len_field(&mut bytes, field.tag, &entry);
                object.insert(field.json.into(), json!({ "key": json }));
            }
            ty => {
                let json = value(messages, ty, field.tag, field.json, &mut bytes);
                object.insert(
                    field.json.into(),
                    if field.repeated { json!([json]) } else { json },
                );
            }
        }
    }
    (bytes, object)
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    len_field(&mut type_meta, 1, api_version.as_bytes());
    len_field(&mut type_meta, 2, kind.as_bytes());
    let mut body = b"k8s\0".to_vec();
    len_field(&mut body, 1, &type_meta);
    len_field(&mut body, 2, raw);
    body
}

#[test]
fn every_field_agrees_with_prost_and_k8s_openapi() {
    let (messages, kinds) = rkube_protobuf::tables();
    let cases = cases();
    for kind in kinds {
        let case = cases
            .iter()
            .find(|c| c.api_version == kind.api_version && c.kind == kind.kind)
            .unwrap_or_else(|| panic!("no test case for {} {}", kind.api_version, kind.kind));
        let (raw, object) = synthesize(messages, kind.message);
        let mut expected = Map::new();
        expected.insert("apiVersion".into(), kind.api_version.into());
        expected.insert("kind".into(), kind.kind.into());
        expected.extend(object);
        let expected = Value::Object(expected);

        let decoded = rkube_protobuf::decode(&envelope(kind.api_version, kind.kind, &raw)).unwrap();
        assert_eq!(decoded, expected, "{}: decoding the synthesized bytes", kind.kind);

        let through_prost = (case.prost_round_trip)(&raw);
        let decoded = rkube_protobuf::decode(&envelope(kind.api_version, kind.kind, &through_prost)).unwrap();
        assert!(
            decoded == expected,
            "{}: prost disagrees with our tables:\n{}",
            kind.kind,
            differences(&decoded, &expected)
        );

        let mut through_openapi = (case.openapi_round_trip)(decoded.clone());
        drop_added_type_meta(&mut through_openapi, &decoded);
        assert!(
            through_openapi == decoded,
            "{}: k8s-openapi disagrees with our JSON:\n{}",
            kind.kind,
            differences(&through_openapi, &decoded)
        );
    }
}

/// k8s-openapi writes `apiVersion`/`kind` for every embedded resource (a StatefulSet's
/// `volumeClaimTemplates`); Kubernetes' JSON has them only where they were set.
fn drop_added_type_meta(actual: &mut Value, expected: &Value) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for key in ["apiVersion", "kind"] {
                if !e.contains_key(key) {
                    a.remove(key);
                }
            }
            for (key, value) in a.iter_mut() {
                if let Some(e) = e.get(key) {
                    drop_added_type_meta(value, e);
                }
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            for (a, e) in a.iter_mut().zip(e) {
                drop_added_type_meta(a, e);
            }
        }
        _ => {}
    }
}

fn differences(actual: &Value, expected: &Value) -> String {
    let mut out = Vec::new();
    diff(actual, expected, "", &mut out);
    out.join("\n")
}

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
        _ if actual != expected => out.push(format!("  {path}: got {actual}, want {expected}")),
        _ => {}
    }
}
