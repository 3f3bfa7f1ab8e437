//! Bodies captured from the real kubectl 1.33 (`gen/capture_kubectl.py`): each decodes to exactly the JSON
//! the same kubectl prints for the same command with `--dry-run=client -o json`, apart from Go's
//! `creationTimestamp: null`, which is the unset time and therefore absent in our output.

use serde_json::Value;

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn check(resource: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let body = std::fs::read(dir.join(format!("{resource}.bin"))).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{resource}.json"))).unwrap()).unwrap();
    let decoded = rkube_protobuf::decode(&body).unwrap_or_else(|e| panic!("{resource}: {e}"));
    assert_eq!(decoded, without_nulls(expected), "{resource}");
}

#[test]
fn create_deployment() {
    check("deployments");
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/deployments.bin"
    ))
    .unwrap();
    let decoded = rkube_protobuf::decode(&body).unwrap();
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(decoded).unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
    assert_eq!(container.ports.as_ref().unwrap()[0].protocol, None);
}

#[test]
fn create_namespace() {
    check("namespaces");
}

#[test]
fn create_configmap_keeps_empty_values() {
    check("configmaps");
}

#[test]
fn create_secret_generic_base64s_data() {
    check("secrets");
}

#[test]
fn create_service_nodeport() {
    check("services");
}

#[test]
fn create_serviceaccount() {
    check("serviceaccounts");
}

#[test]
fn create_job() {
    check("jobs");
}

#[test]
fn create_role_and_bindings() {
    for resource in ["roles", "rolebindings", "clusterroles", "clusterrolebindings"] {
        check(resource);
    }
}

#[test]
fn create_secret_docker_registry() {
    check("secrets-docker");
}

#[test]
fn create_cronjob_quota_pdb_ingress_priorityclass() {
    for resource in [
        "cronjobs",
        "resourcequotas",
        "poddisruptionbudgets",
        "ingresses",
        "priorityclasses",
    ] {
        check(resource);
    }
}

/// `kubectl create token robot --duration=1h --audience=api` (no `--dry-run` for tokens, so the expected
/// JSON is written out: Go's JSON keeps `status.token` because its tag has no `omitempty`).
#[test]
fn create_token() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let decoded = rkube_protobuf::decode(&std::fs::read(dir.join("token.bin")).unwrap()).unwrap();
    assert_eq!(
        decoded,
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {},
            "spec": { "audiences": ["api"], "expirationSeconds": 3600 },
            "status": { "token": "" },
        })
    );
}

#[test]
fn rejects_bodies_without_magic_or_with_unknown_kinds() {
    assert!(matches!(
        rkube_protobuf::decode(b"{}"),
        Err(rkube_protobuf::DecodeError::MissingMagic)
    ));
    // apiVersion "v1", kind "Nope", no raw object.
    let body = b"k8s\0\x0a\x0a\x0a\x02v1\x12\x04Nope";
    assert!(matches!(
        rkube_protobuf::decode(body),
        Err(rkube_protobuf::DecodeError::UnsupportedKind { .. })
    ));
    let mut truncated = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/deployments.bin"
    ))
    .unwrap();
    truncated.truncate(100);
    assert!(rkube_protobuf::decode(&truncated).is_err());
}
