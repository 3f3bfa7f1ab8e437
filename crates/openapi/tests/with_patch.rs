//! The documents drive rkube-patch's strategic merge patch the way kube-apiserver's schemas do: containers
//! merge by `name`, ports by `containerPort`, `strategy` retains only the patched keys.

use k8s_openapi::api::apps;
use rkube_openapi::{KindSchema, OpenApi};
use schemars::JsonSchema;
use serde_json::json;

#[test]
fn deployment_strategic_merge_patch_uses_the_merge_keys() {
    let api = OpenApi::build(&[KindSchema {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        verbs: &["get", "patch"],
        subresources: &[],
        schema: apps::v1::Deployment::json_schema,
    }]);
    let name = api.definition_name("apps", "v1", "Deployment").unwrap();
    let schema = rkube_patch::SchemaNode::for_definition(api.components(), name).expect("definition found");
    let live = json!({
        "spec": {
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1 } },
            "template": { "spec": { "containers": [
                { "name": "web", "image": "nginx:1.25", "ports": [{ "containerPort": 80 }] },
                { "name": "side", "image": "busybox" }
            ] } }
        }
    });
    let patch = json!({
        "spec": {
            "strategy": { "type": "Recreate", "$retainKeys": ["type"] },
            "template": { "spec": { "containers": [
                { "name": "web", "image": "nginx:1.27", "ports": [{ "containerPort": 443 }] }
            ] } }
        }
    });
    let patched = rkube_patch::strategic_merge_patch(&live, &patch, Some(schema)).unwrap();
    assert_eq!(
        patched,
        json!({
            "spec": {
                "strategy": { "type": "Recreate" },
                "template": { "spec": { "containers": [
                    { "name": "web", "image": "nginx:1.27", "ports": [{ "containerPort": 443 }, { "containerPort": 80 }] },
                    { "name": "side", "image": "busybox" }
                ] } }
            }
        })
    );
}
