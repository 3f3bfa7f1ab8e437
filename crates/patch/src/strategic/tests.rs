use serde_json::{Map, Value, json};

use super::*;
use crate::testdata::components;

fn smp(
    components: &Map<String, Value>,
    kind: &str,
    original: Value,
    patch: Value,
) -> Result<Value, PatchError> {
    let schema = SchemaNode::for_definition(components, kind);
    assert!(schema.is_some(), "no test schema for {kind}");
    strategic_merge_patch(&original, &patch, schema)
}

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";
const SERVICE: &str = "io.k8s.api.core.v1.Service";

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}
    })
}

fn containers_of(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"]
}

fn names(list: &Value, key: &str) -> Vec<Value> {
    list.as_array().unwrap().iter().map(|e| e[key].clone()).collect()
}

#[test]
fn kubectl_set_image_changes_only_the_image() {
    let c = components();
    let original =
        deployment(json!([{"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"image": "nginx:1.26", "name": "nginx"}]}}}});
    let result = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap();
    let mut expected = original;
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    assert_eq!(result, expected);
}

#[test]
fn set_image_on_one_of_two_containers_keeps_the_other_and_the_order() {
    let c = components();
    let original = deployment(json!([
        {"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox", "args": ["sleep"]}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"image": "busybox:2", "name": "sidecar"}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        containers_of(&result),
        &json!([{"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox:2", "args": ["sleep"]}])
    );
}

#[test]
fn set_element_order_places_new_and_reordered_elements() {
    let c = components();
    let original = deployment(json!([{"name": "b", "image": "b"}, {"name": "a", "image": "a"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "c"}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        names(containers_of(&result), "name"),
        [json!("a"), json!("b"), json!("c")]
    );
    assert_eq!(containers_of(&result)[2], json!({"name": "c", "image": "c"}));
}

#[test]
fn without_set_element_order_new_elements_go_first_like_kube_apiserver() {
    // kube-apiserver's mergeSortedSlice cannot rank an element the server never had, and takes the
    // patch's side first; kubectl always sends $setElementOrder, so it never sees this.
    let c = components();
    let original = deployment(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c"}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        names(containers_of(&result), "name"),
        [json!("c"), json!("a"), json!("b")]
    );
}

#[test]
fn patched_elements_follow_patch_order_interleaved_with_server_order() {
    let c = components();
    let original = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}, {"name": "a", "image": "y"}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        names(containers_of(&result), "name"),
        [json!("b"), json!("c"), json!("a")]
    );
}

#[test]
fn list_element_directives() {
    let c = components();
    let two = json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
    let cases = [
        (
            "delete by merge key",
            json!([{"name": "a", "$patch": "delete"}]),
            json!([{"name": "b", "image": "b"}]),
        ),
        (
            "delete an absent element",
            json!([{"name": "zz", "$patch": "delete"}]),
            two.clone(),
        ),
        (
            "replace the whole list",
            json!([{"$patch": "replace"}, {"name": "c", "image": "c"}]),
            json!([{"name": "c", "image": "c"}]),
        ),
        (
            "delete and modify together",
            json!([{"name": "a", "$patch": "delete"}, {"name": "b", "image": "b2"}]),
            json!([{"name": "b", "image": "b2"}]),
        ),
        (
            "merge marker is the default",
            json!([{"name": "a", "$patch": "merge", "image": "a2"}]),
            json!([{"name": "a", "image": "a2"}, {"name": "b", "image": "b"}]),
        ),
    ];
    for (what, containers, expected) in cases {
        let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let result = smp(&c, DEPLOYMENT, deployment(two.clone()), patch).unwrap();
        assert_eq!(containers_of(&result), &expected, "{what}");
    }
}

#[test]
fn map_directives() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    let labels = |result: &Value| result["metadata"]["labels"].clone();

    let replaced = smp(
        &c,
        DEPLOYMENT,
        original.clone(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    )
    .unwrap();
    assert_eq!(labels(&replaced), json!({"only": "this"}));

    let deleted = smp(
        &c,
        DEPLOYMENT,
        original.clone(),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
    )
    .unwrap();
    assert!(deleted["spec"].get("strategy").is_none(), "{deleted}");
    assert_eq!(deleted["spec"]["replicas"], json!(1));

    let merged = smp(
        &c,
        DEPLOYMENT,
        original.clone(),
        json!({"metadata": {"labels": {"$patch": "merge", "tier": "fe"}}}),
    )
    .unwrap();
    assert_eq!(labels(&merged), json!({"app": "web", "tier": "fe"}));

    let err = smp(
        &c,
        DEPLOYMENT,
        original,
        json!({"metadata": {"labels": {"$patch": "frobnicate"}}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Malformed(_)), "{err:?}");
    assert_eq!(err.status_code(), 400);
}

#[test]
fn null_deletes_and_nested_nulls_are_dropped() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    let patch = json!({"metadata": {"labels": {"app": null, "new": "x"}, "annotations": {"gone": null, "kept": "y"}},
        "spec": {"paused": null, "minReadySeconds": 5}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(result["metadata"]["labels"], json!({"new": "x"}));
    assert_eq!(result["metadata"]["annotations"], json!({"kept": "y"}));
    assert_eq!(result["spec"]["minReadySeconds"], json!(5));
}

#[test]
fn env_merges_by_name() {
    let c = components();
    let original = deployment(
        json!([{"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
    );
    // kubectl set env A=10 C=3 (two-way patch with $setElementOrder).
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{"name": "app",
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
            "env": [{"name": "A", "value": "10"}, {"name": "C", "value": "3"}]}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        containers_of(&result)[0]["env"],
        json!([{"name": "A", "value": "10"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn env_value_from_replaces_value_with_null() {
    let c = components();
    let original = deployment(json!([{"name": "app", "env": [{"name": "A", "value": "1"}]}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app",
        "env": [{"name": "A", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        containers_of(&result)[0]["env"],
        json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
}

#[test]
fn container_ports_merge_by_container_port() {
    let c = components();
    let original = deployment(
        json!([{"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]),
    );
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app",
        "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443.0, "$patch": "delete"}]}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        containers_of(&result)[0]["ports"],
        json!([{"containerPort": 80, "name": "web"}])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let c = components();
    let original = json!({"spec": {"type": "ClusterIP", "selector": {"app": "web", "tier": "fe"},
        "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443, "targetPort": 8443}]}});
    let patch = json!({"spec": {"type": "NodePort", "selector": {"app": "web2"},
        "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
        "ports": [{"port": 443, "nodePort": 30443}]}});
    let result = smp(&c, SERVICE, original, patch).unwrap();
    assert_eq!(
        result["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443, "targetPort": 8443, "nodePort": 30443}])
    );
    // The selector is a map, so SMP merges it even though apply treats it as atomic.
    assert_eq!(result["spec"]["selector"], json!({"app": "web2", "tier": "fe"}));
    assert_eq!(result["spec"]["type"], json!("NodePort"));
}

#[test]
fn finalizers_merge_as_a_set() {
    let c = components();
    let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
    let cases = [
        (
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            json!(["a", "b", "c"]),
        ),
        (
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "c"], "finalizers": ["c"]}}),
            json!(["a", "b", "c"]),
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"]}}),
            json!(["b"]),
        ),
        (
            json!({"metadata": {"$setElementOrder/finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
            json!(["b"]),
        ),
        (
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!(["c", "a"]),
        ),
    ];
    for (patch, expected) in cases {
        let result = smp(&c, POD, original.clone(), patch.clone()).unwrap();
        assert_eq!(result["metadata"]["finalizers"], expected, "{patch}");
        assert_eq!(
            result["metadata"].as_object().unwrap().len(),
            2,
            "no directive leaked: {result}"
        );
    }
}

#[test]
fn delete_from_primitive_list_of_an_absent_list_adds_nothing() {
    let c = components();
    let result = smp(
        &c,
        POD,
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    )
    .unwrap();
    assert_eq!(result, json!({"metadata": {"name": "p"}}));
}

#[test]
fn deployment_strategy_retain_keys() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    // kubectl apply switching RollingUpdate → Recreate.
    let patch =
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let result = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap();
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));

    // Without the null, $retainKeys alone still drops rollingUpdate.
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let result = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap();
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));

    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}});
    let err = smp(&c, DEPLOYMENT, original, patch).unwrap_err();
    assert_eq!(
        err,
        PatchError::RetainKeysMismatch {
            path: "spec.strategy".into()
        }
    );
    assert_eq!(err.status_code(), 422);
}

#[test]
fn volumes_merge_by_name_with_retain_keys() {
    let c = components();
    let original = json!({"spec": {"containers": [{"name": "a"}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}});
    let patch = json!({"spec": {"volumes": [
        {"name": "data", "hostPath": {"path": "/srv"}, "$retainKeys": ["hostPath", "name"]}]}});
    let result = smp(&c, POD, original, patch).unwrap();
    assert_eq!(
        result["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "cfg", "configMap": {"name": "c"}}])
    );
}

#[test]
fn atomic_and_unannotated_lists_are_replaced() {
    let c = components();
    let original = json!({"spec": {"containers": [{"name": "a", "command": ["sh", "-c", "x"]}],
        "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}});
    let patch = json!({"spec": {"tolerations": [{"key": "c", "operator": "Exists"}],
        "containers": [{"name": "a", "command": ["true"]}]}});
    let result = smp(&c, POD, original, patch).unwrap();
    assert_eq!(
        result["spec"]["tolerations"],
        json!([{"key": "c", "operator": "Exists"}])
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "a", "command": ["true"]}])
    );
}

#[test]
fn missing_merge_key_is_a_bad_request() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap_err();
    match &err {
        PatchError::MissingMergeKey { path, key, .. } => {
            assert_eq!(
                (path.as_str(), key.as_str()),
                ("spec.template.spec.containers", "name")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.status_code(), 400);

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "image": "x"}]}}}});
    assert!(matches!(
        smp(&c, DEPLOYMENT, original, patch),
        Err(PatchError::MissingMergeKey { .. })
    ));
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    let c = components();
    let original = deployment(json!([{"name": "a"}, {"name": "b"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b", "image": "1"}, {"name": "a", "image": "2"}]}}}});
    assert!(matches!(
        smp(&c, DEPLOYMENT, original.clone(), patch),
        Err(PatchError::Malformed(_))
    ));
    let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": "a"}}}});
    assert!(matches!(
        smp(&c, DEPLOYMENT, original, patch),
        Err(PatchError::Malformed(_))
    ));
}

#[test]
fn set_element_order_alone_reorders() {
    let c = components();
    let original = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        names(containers_of(&result), "name"),
        [json!("c"), json!("a"), json!("b")]
    );
}

#[test]
fn directives_never_leak_into_new_fields() {
    let c = components();
    let original = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/initContainers": [{"name": "init"}],
        "initContainers": [{"name": "init", "image": "busybox", "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}]}],
        "volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {"medium": null}}],
        "nodeSelector": {"$patch": "replace", "disk": "ssd"},
        "tolerations": [{"$patch": "replace"}, {"key": "k"}]}});
    let result = smp(&c, POD, original, patch).unwrap();
    assert_eq!(
        result["spec"],
        json!({"containers": [{"name": "a"}],
            "initContainers": [{"name": "init", "image": "busybox", "env": [{"name": "X", "value": "1"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k"}]})
    );
    assert!(!result.to_string().contains('$'), "{result}");
}

#[test]
fn without_a_schema_it_is_a_merge_patch_that_still_honours_directives() {
    let original = json!({"spec": {"items": [{"name": "a", "v": 1}, {"name": "b"}], "m": {"x": 1, "y": 2}}});
    let patch = json!({"spec": {"items": [{"name": "a", "v": 2}], "m": {"y": null, "z": 3},
        "$setElementOrder/items": [{"name": "a"}], "n": {"$patch": "replace", "k": 1}}});
    let result = strategic_merge_patch(&original, &patch, None).unwrap();
    assert_eq!(
        result,
        json!({"spec": {"items": [{"name": "a", "v": 2}], "m": {"x": 1, "z": 3}, "n": {"k": 1}}})
    );
}

#[test]
fn kubectl_rollout_restart_and_scale_style_patches() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    let patch = json!({"spec": {"replicas": 3, "template": {"metadata": {"annotations":
        {"kubectl.kubernetes.io/restartedAt": "2026-11-26T01:00:00Z"}}}}});
    let result = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap();
    assert_eq!(result["spec"]["replicas"], json!(3));
    assert_eq!(
        result["spec"]["template"]["metadata"],
        json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-26T01:00:00Z"}})
    );
    assert_eq!(containers_of(&result), containers_of(&original));
}

#[test]
fn type_changes_take_the_patch_value() {
    let c = components();
    let original = json!({"spec": {"strategy": "odd", "replicas": {"weird": true}}});
    let patch = json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 2}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        result,
        json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 2}})
    );
}

#[test]
fn structurally_impossible_lists_are_unprocessable() {
    let c = components();
    let original = json!({"metadata": {"finalizers": ["a"]}});
    let err = smp(
        &c,
        POD,
        original.clone(),
        json!({"metadata": {"finalizers": [["x"]]}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Unprocessable { .. }), "{err:?}");
    assert_eq!(err.status_code(), 422);
    let err = smp(&c, POD, original, json!({"metadata": {"finalizers": [{"a": 1}]}})).unwrap_err();
    assert!(matches!(err, PatchError::Unprocessable { .. }), "{err:?}");
}

#[test]
fn patch_must_be_an_object_and_original_is_left_alone() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    assert!(matches!(
        smp(&c, DEPLOYMENT, original.clone(), json!([1])),
        Err(PatchError::Malformed(_))
    ));
    let before = original.clone();
    let schema = SchemaNode::for_definition(&c, DEPLOYMENT);
    let _ = strategic_merge_patch(&original, &json!({"spec": {"replicas": 9}}), schema).unwrap();
    assert_eq!(original, before);
}

#[test]
fn kubectl_apply_three_way_patches() {
    // The shapes `kubectl apply` (client-side) sends after diffing last-applied against the new file.
    let c = components();
    let original = deployment(json!([
        {"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "b"}]));
    let cases = [
        (
            "drop a container",
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"$patch": "delete", "name": "b"}]}}}}),
            json!([{"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]),
        ),
        (
            "drop an env var and change an image",
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a2", "$setElementOrder/env": [{"name": "Y"}],
                    "env": [{"$patch": "delete", "name": "X"}]}]}}}}),
            json!([{"name": "a", "image": "a2", "env": [{"name": "Y", "value": "2"}]}, {"name": "b", "image": "b"}]),
        ),
        (
            "swap the containers",
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}}}),
            json!([{"name": "b", "image": "b"},
                {"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]),
        ),
    ];
    for (what, patch, expected) in cases {
        let result = smp(&c, DEPLOYMENT, original.clone(), patch).unwrap();
        assert_eq!(containers_of(&result), &expected, "{what}");
    }
}

#[test]
fn last_applied_annotation_and_labels_patch_together() {
    let c = components();
    let original = deployment(json!([{"name": "a"}]));
    let patch = json!({"metadata": {"annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Deployment\"}\n"},
        "labels": {"app": "web", "version": "2"}}});
    let result = smp(&c, DEPLOYMENT, original, patch).unwrap();
    assert_eq!(
        result["metadata"]["labels"],
        json!({"app": "web", "version": "2"})
    );
    assert_eq!(
        result["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        json!("{\"kind\":\"Deployment\"}\n")
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let c = components();
    let original = json!({"metadata": {"ownerReferences": [
        {"uid": "1", "kind": "ReplicaSet", "name": "rs1", "controller": true}]}});
    let patch = json!({"metadata": {"ownerReferences": [{"uid": "2", "kind": "Node", "name": "n"},
        {"uid": "1", "controller": false}]}});
    let result = smp(&c, POD, original, patch).unwrap();
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"uid": "2", "kind": "Node", "name": "n"},
            {"uid": "1", "kind": "ReplicaSet", "name": "rs1", "controller": false}])
    );
}
