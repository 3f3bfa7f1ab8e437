//! What clients read from the generated documents: kubectl's `--validate=strict` probe, `kubectl explain`,
//! client-side apply's merge keys, and the API server's unknown-field check.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, node, policy, rbac,
    scheduling, storage,
};
use rkube_openapi::{KindSchema, OpenApi};
use schemars::JsonSchema;
use serde_json::{Value, json};

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn kinds() -> Vec<KindSchema> {
    vec![
        KindSchema {
            group: "apps",
            version: "v1",
            kind: "Deployment",
            plural: "deployments",
            namespaced: true,
            verbs: ALL_VERBS,
            subresources: &["status", "scale"],
            schema: apps::v1::Deployment::json_schema,
        },
        KindSchema {
            group: "",
            version: "v1",
            kind: "Pod",
            plural: "pods",
            namespaced: true,
            verbs: ALL_VERBS,
            subresources: &[
                "status",
                "binding",
                "eviction",
                "log",
                "exec",
                "ephemeralcontainers",
            ],
            schema: core::v1::Pod::json_schema,
        },
        KindSchema {
            group: "",
            version: "v1",
            kind: "Service",
            plural: "services",
            namespaced: true,
            verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
            subresources: &["status"],
            schema: core::v1::Service::json_schema,
        },
        KindSchema {
            group: "",
            version: "v1",
            kind: "Namespace",
            plural: "namespaces",
            namespaced: false,
            verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
            subresources: &["status", "finalize"],
            schema: core::v1::Namespace::json_schema,
        },
    ]
}

/// Every kind the API server serves, for checks over the whole table.
fn served_kinds() -> Vec<KindSchema> {
    fn kind<T: k8s_openapi::Resource + JsonSchema>(namespaced: bool) -> KindSchema {
        // The name a kind is filed under must be the one k8s-openapi's own `$ref`s use.
        assert_eq!(
            rkube_openapi::definitions::definition_name(T::GROUP, T::VERSION, T::KIND),
            T::schema_name()
        );
        KindSchema {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            namespaced,
            verbs: ALL_VERBS,
            subresources: &["status"],
            schema: T::json_schema,
        }
    }
    let mut all = kinds();
    all.extend([
        kind::<core::v1::Endpoints>(true),
        kind::<core::v1::Node>(false),
        kind::<core::v1::Event>(true),
        kind::<core::v1::ConfigMap>(true),
        kind::<core::v1::Secret>(true),
        kind::<core::v1::ServiceAccount>(true),
        kind::<core::v1::PersistentVolumeClaim>(true),
        kind::<apps::v1::ReplicaSet>(true),
        kind::<apps::v1::DaemonSet>(true),
        kind::<apps::v1::StatefulSet>(true),
        kind::<batch::v1::Job>(true),
        kind::<batch::v1::CronJob>(true),
        kind::<discovery::v1::EndpointSlice>(true),
        kind::<coordination::v1::Lease>(true),
        kind::<events::v1::Event>(true),
        kind::<rbac::v1::Role>(true),
        kind::<rbac::v1::RoleBinding>(true),
        kind::<rbac::v1::ClusterRole>(false),
        kind::<rbac::v1::ClusterRoleBinding>(false),
        kind::<core::v1::PersistentVolume>(false),
        kind::<core::v1::LimitRange>(true),
        kind::<core::v1::ReplicationController>(true),
        kind::<core::v1::PodTemplate>(true),
        kind::<core::v1::ResourceQuota>(true),
        kind::<apps::v1::ControllerRevision>(true),
        kind::<autoscaling::v2::HorizontalPodAutoscaler>(true),
        kind::<policy::v1::PodDisruptionBudget>(true),
        kind::<networking::v1::Ingress>(true),
        kind::<networking::v1::NetworkPolicy>(true),
        kind::<scheduling::v1::PriorityClass>(false),
        kind::<storage::v1::StorageClass>(false),
        kind::<node::v1::RuntimeClass>(false),
    ]);
    all
}

fn document(api: &OpenApi, path: &str) -> Value {
    serde_json::from_slice(&api.group_version_json(path).expect("document served")).unwrap()
}

fn schemas(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas")
}

/// A property's schema, following `allOf: [{$ref}]` / `$ref` and `items` the way clients do.
fn property<'a>(doc: &'a Value, definition: &str, path: &[&str]) -> &'a Value {
    let mut schema = &schemas(doc)[definition];
    for (i, name) in path.iter().enumerate() {
        schema = &schema["properties"][*name];
        assert!(!schema.is_null(), "{definition}.{} missing", path[..=i].join("."));
        if i + 1 < path.len() {
            schema = target(doc, schema);
        }
    }
    schema
}

fn target<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let schema = if schema.get("items").is_some() {
        &schema["items"]
    } else {
        schema
    };
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference {
        Some(r) => &schemas(doc)[r.strip_prefix("#/components/schemas/").expect("components ref")],
        None => schema,
    }
}

#[test]
fn index_points_at_each_group_version_with_a_stable_hash() {
    let api = OpenApi::build(&kinds());
    let index: Value = serde_json::from_slice(&api.index_json()).unwrap();
    let paths = index["paths"].as_object().unwrap();
    assert_eq!(paths.keys().collect::<Vec<_>>(), ["api/v1", "apis/apps/v1"]);
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    assert!(url.len() > "/openapi/v3/apis/apps/v1?hash=".len());

    let again = OpenApi::build(&kinds());
    assert_eq!(api.index_json(), again.index_json());
    assert_eq!(
        api.group_version_json("apis/apps/v1"),
        again.group_version_json("apis/apps/v1")
    );
    assert_ne!(paths["api/v1"], paths["apis/apps/v1"]);
    assert!(api.group_version_json("/apis/apps/v1").is_some());
    assert!(api.group_version_json("apis/batch/v1").is_none());
}

#[test]
fn deployment_patch_operation_satisfies_kubectl_strict_validation_probe() {
    let api = OpenApi::build(&kinds());
    let doc = document(&api, "apis/apps/v1");
    assert_eq!(doc["openapi"], "3.0.0");
    let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let params: Vec<(&str, &str)> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
        assert!(
            params.contains(&(name, "query")),
            "{name} missing from {params:?}"
        );
    }
    let content = patch["requestBody"]["content"].as_object().unwrap();
    for media in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(media), "{media}");
    }
    for (method, action) in [("get", "get"), ("put", "put"), ("delete", "delete")] {
        assert_eq!(item[method]["x-kubernetes-action"], action);
    }
    let collection = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(collection["get"]["x-kubernetes-action"], "list");
    assert_eq!(collection["post"]["x-kubernetes-action"], "post");
    assert_eq!(collection["delete"]["x-kubernetes-action"], "deletecollection");
    assert_eq!(
        doc["paths"]["/apis/apps/v1/deployments"]["get"]["x-kubernetes-action"],
        "list"
    );
    let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    assert!(
        doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["put"].is_object()
    );
}

#[test]
fn core_paths_cover_namespaced_cluster_and_subresources() {
    let api = OpenApi::build(&kinds());
    let doc = document(&api, "api/v1");
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/namespaces/{namespace}/pods",
        "/api/v1/namespaces/{namespace}/pods/{name}",
        "/api/v1/pods",
        "/api/v1/namespaces/{namespace}/pods/{name}/status",
        "/api/v1/namespaces/{namespace}/pods/{name}/binding",
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        "/api/v1/namespaces",
        "/api/v1/namespaces/{name}",
        "/api/v1/namespaces/{name}/finalize",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/pods/{name}/exec"));
    // Services have no deletecollection verb here.
    assert!(
        paths["/api/v1/namespaces/{namespace}/services"]
            .get("delete")
            .is_none()
    );
    assert_eq!(
        paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]["x-kubernetes-group-version-kind"]
            ["kind"],
        "Binding"
    );
}

#[test]
fn components_carry_group_version_kind_and_descriptions_for_explain() {
    let api = OpenApi::build(&kinds());
    let doc = document(&api, "apis/apps/v1");
    let deployment = &schemas(&doc)["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert_eq!(
        schemas(&doc)["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"][0]["kind"],
        "DeploymentList"
    );
    // `kubectl explain deployment.spec.strategy` prints the field and the type's descriptions.
    let strategy = property(&doc, "io.k8s.api.apps.v1.Deployment", &["spec", "strategy"]);
    assert!(
        strategy["description"]
            .as_str()
            .unwrap()
            .contains("deployment strategy")
    );
    assert!(
        target(&doc, strategy)["description"]
            .as_str()
            .unwrap()
            .contains("how to replace existing pods")
    );
    // Every $ref resolves inside the document.
    let text = serde_json::to_string(&doc).unwrap();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas(&doc).contains_key(name), "dangling $ref {name}");
    }
    assert!(!text.contains("\"$ref\":\"#/$defs"));
    assert_eq!(
        api.definition_name("apps", "v1", "Deployment"),
        Some("io.k8s.api.apps.v1.Deployment")
    );
    assert_eq!(
        api.definition_name("", "v1", "Pod"),
        Some("io.k8s.api.core.v1.Pod")
    );
    assert_eq!(api.definition_name("apps", "v1", "Nope"), None);
}

#[test]
fn merge_keys_and_list_types_sit_on_the_fields_kubernetes_marks() {
    let api = OpenApi::build(&kinds());
    let apps = document(&api, "apis/apps/v1");
    let pod_spec = ["spec", "template", "spec"];
    let field = |doc: &Value, def: &str, path: &[&str], last: &str| {
        let mut full: Vec<&str> = path.to_vec();
        full.push(last);
        property(doc, def, &full).clone()
    };

    let containers = field(&apps, "io.k8s.api.apps.v1.Deployment", &pod_spec, "containers");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));

    let volumes = field(&apps, "io.k8s.api.apps.v1.Deployment", &pod_spec, "volumes");
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let tolerations = field(&apps, "io.k8s.api.apps.v1.Deployment", &pod_spec, "tolerations");
    assert_eq!(tolerations["x-kubernetes-list-type"], "atomic");
    assert!(tolerations.get("x-kubernetes-patch-merge-key").is_none());

    let strategy = field(&apps, "io.k8s.api.apps.v1.Deployment", &["spec"], "strategy");
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    let conditions = field(&apps, "io.k8s.api.apps.v1.Deployment", &["status"], "conditions");
    assert_eq!(conditions["x-kubernetes-patch-merge-key"], "type");

    let container = &schemas(&apps)["io.k8s.api.core.v1.Container"]["properties"];
    assert_eq!(
        container["ports"]["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        container["ports"]["x-kubernetes-patch-merge-key"],
        "containerPort"
    );
    assert_eq!(container["env"]["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(
        container["volumeMounts"]["x-kubernetes-patch-merge-key"],
        "mountPath"
    );
    assert_eq!(
        schemas(&apps)["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
        "atomic"
    );

    let meta = &schemas(&apps)["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
    assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(meta["finalizers"]["x-kubernetes-list-type"], "set");
    assert_eq!(meta["ownerReferences"]["x-kubernetes-patch-merge-key"], "uid");

    let core = document(&api, "api/v1");
    let ports = field(&core, "io.k8s.api.core.v1.Service", &["spec"], "ports");
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "port");
    assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["port", "protocol"]));
    let pod_ips = field(&core, "io.k8s.api.core.v1.Pod", &["status"], "podIPs");
    assert_eq!(pod_ips["x-kubernetes-patch-merge-key"], "ip");

    let int_or_string = &schemas(&apps)["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(int_or_string["x-kubernetes-int-or-string"], true);
    assert_eq!(
        schemas(&core)["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"],
        "string"
    );
}

#[test]
fn every_extension_table_entry_names_a_field_of_the_served_schemas() {
    let kinds = served_kinds();
    let api = OpenApi::build(&kinds);
    for kind in &kinds {
        let name = api.definition_name(kind.group, kind.version, kind.kind).unwrap();
        assert!(
            api.components()[name]["properties"]["metadata"].is_object(),
            "{name}"
        );
    }
    let components = api.components();
    let mut applied = 0;
    for entry in rkube_openapi::extensions::table() {
        let Some(definition) = components.get(entry.definition) else {
            continue;
        };
        if !entry.property.is_empty() {
            assert!(
                definition["properties"].get(entry.property).is_some(),
                "{}.{} is in the table but not in k8s-openapi's schema",
                entry.definition,
                entry.property
            );
        }
        applied += 1;
    }
    assert!(applied > 150, "only {applied} entries applied");
}

#[test]
fn unknown_fields_reports_nested_unknowns_and_accepts_known_and_free_form_fields() {
    let api = OpenApi::build(&kinds());
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "labels": { "any-label": "x" }, "annotations": { "a": "b" },
                      "managedFields": [{ "manager": "kubectl", "fieldsV1": { "f:spec": { "f:replicas": {} } } }] },
        "spec": {
            "replicas": 1,
            "foo": true,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [
                        { "name": "a", "image": "nginx", "resources": { "limits": { "cpu": "1" } } },
                        { "name": "b", "image": "nginx", "bogus": 1, "ports": [{ "containerPort": 80, "nope": 1 }] }
                    ]
                }
            }
        },
        "status": {}
    });
    assert_eq!(
        api.unknown_fields("apps", "v1", "Deployment", &deployment),
        [
            ".spec.foo",
            ".spec.template.spec.containers[1].bogus",
            ".spec.template.spec.containers[1].ports[0].nope"
        ]
    );
    let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
                      "spec": { "containers": [{ "name": "c", "image": "i" }] } });
    assert!(api.unknown_fields("", "v1", "Pod", &pod).is_empty());
    assert_eq!(
        api.unknown_fields(
            "",
            "v1",
            "Pod",
            &json!({ "spec": { "nodeName": "n" }, "extra": 1 })
        ),
        [".extra"]
    );
    assert!(
        api.unknown_fields("batch", "v1", "Job", &json!({ "x": 1 }))
            .is_empty()
    );
}

#[test]
#[ignore = "writes the apps/v1 and v1 documents to $RKUBE_OPENAPI_DUMP for inspection with kubectl"]
fn dump_documents() {
    let dir = std::path::PathBuf::from(std::env::var("RKUBE_OPENAPI_DUMP").expect("RKUBE_OPENAPI_DUMP"));
    let api = OpenApi::build(&kinds());
    std::fs::write(dir.join("index.json"), api.index_json()).unwrap();
    std::fs::write(
        dir.join("apps-v1.json"),
        api.group_version_json("apis/apps/v1").unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("v1.json"), api.group_version_json("api/v1").unwrap()).unwrap();
}
