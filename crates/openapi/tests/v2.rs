//! What kubectl before 1.29 reads from `GET /openapi/v2`: the gnostic protobuf decodes, every definition
//! parses under kube-openapi's rules (`proto.NewOpenAPIData` rejects the whole document otherwise), the
//! Deployment PATCH operation carries `fieldValidation` (the `--validate=strict` probe), and definitions carry
//! the group-version-kind and merge-key extensions client-side apply and `explain` look up.

use std::collections::BTreeMap;

use k8s_openapi::api::{apps, batch, core, networking, policy, rbac};
use prost::Message;
use rkube_openapi::v2::proto::{self, non_body_parameter, parameter};
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

fn kind<T: k8s_openapi::Resource + JsonSchema>(
    namespaced: bool,
    subresources: &'static [&'static str],
) -> KindSchema {
    KindSchema {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        namespaced,
        verbs: ALL_VERBS,
        subresources,
        schema: T::json_schema,
    }
}

fn api() -> OpenApi {
    OpenApi::build(&[
        kind::<apps::v1::Deployment>(true, &["status", "scale"]),
        kind::<core::v1::Pod>(true, &["status", "binding", "eviction", "log", "exec"]),
        kind::<core::v1::Service>(true, &["status"]),
        kind::<core::v1::Namespace>(false, &["status", "finalize"]),
        kind::<core::v1::ServiceAccount>(true, &["token"]),
        kind::<core::v1::ConfigMap>(true, &[]),
        kind::<batch::v1::CronJob>(true, &["status"]),
        kind::<networking::v1::Ingress>(true, &["status"]),
        kind::<policy::v1::PodDisruptionBudget>(true, &["status"]),
        kind::<rbac::v1::ClusterRole>(false, &[]),
    ])
}

fn decode(api: &OpenApi) -> proto::Document {
    proto::Document::decode(api.v2_protobuf()).expect("the served bytes decode as openapi_v2.Document")
}

fn definitions(doc: &proto::Document) -> BTreeMap<&str, &proto::Schema> {
    let defs = doc.definitions.as_ref().expect("definitions present");
    defs.additional_properties
        .iter()
        .map(|named| (named.name.as_str(), named.value.as_ref().expect("schema present")))
        .collect()
}

/// Vendor extensions are YAML text; ours are JSON, which is YAML.
fn extension(extensions: &[proto::NamedAny], name: &str) -> Option<Value> {
    let found = extensions.iter().find(|e| e.name == name)?;
    let yaml = &found.value.as_ref().expect("extension value").yaml;
    Some(serde_json::from_str(yaml).expect("extension is JSON text"))
}

fn property<'a>(schema: &'a proto::Schema, name: &str) -> &'a proto::Schema {
    let props = schema.properties.as_ref().expect("object has properties");
    props
        .additional_properties
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.value.as_ref())
        .unwrap_or_else(|| panic!("property {name} missing"))
}

fn resolve<'a>(defs: &BTreeMap<&str, &'a proto::Schema>, schema: &'a proto::Schema) -> &'a proto::Schema {
    match schema.r#ref.strip_prefix("#/definitions/") {
        Some(name) => defs.get(name).unwrap_or_else(|| panic!("dangling $ref {name}")),
        None => schema,
    }
}

#[test]
fn deployment_definition_has_group_version_kind_and_resolvable_spec() {
    let api = api();
    let doc = decode(&api);
    assert_eq!(doc.swagger, "2.0");
    let defs = definitions(&doc);
    let deployment = defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        extension(&deployment.vendor_extension, "x-kubernetes-group-version-kind"),
        Some(json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }]))
    );
    // v3's `allOf: [{$ref}]` became a plain `$ref` into `#/definitions/`, keeping its description.
    let spec = property(deployment, "spec");
    assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
    assert!(spec.all_of.is_empty());
    let spec = resolve(&defs, spec);
    assert!(
        spec.required.contains(&"selector".to_owned()),
        "{:?}",
        spec.required
    );
    let replicas = property(spec, "replicas");
    assert_eq!(replicas.r#type.as_ref().unwrap().value, ["integer"]);
    assert_eq!(replicas.format, "int32");
}

#[test]
fn container_lists_carry_merge_keys_for_client_side_apply() {
    let api = api();
    let doc = decode(&api);
    let defs = definitions(&doc);
    let containers = property(defs["io.k8s.api.core.v1.PodSpec"], "containers");
    assert_eq!(
        extension(&containers.vendor_extension, "x-kubernetes-patch-merge-key"),
        Some(json!("name"))
    );
    assert_eq!(
        extension(&containers.vendor_extension, "x-kubernetes-patch-strategy"),
        Some(json!("merge"))
    );
    let items = &containers.items.as_ref().expect("array items").schema;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].r#ref, "#/definitions/io.k8s.api.core.v1.Container");
    let ports = property(defs["io.k8s.api.core.v1.Container"], "ports");
    assert_eq!(
        extension(&ports.vendor_extension, "x-kubernetes-patch-merge-key"),
        Some(json!("containerPort"))
    );
}

/// kubectl's query-param verifier: the first PATCH operation tagged with the kind's GVK must list
/// `fieldValidation` among its query parameters.
#[test]
fn deployment_patch_operation_offers_field_validation() {
    let api = api();
    let doc = decode(&api);
    let paths = &doc.paths.as_ref().expect("paths").path;
    let gvk = json!({ "group": "apps", "kind": "Deployment", "version": "v1" });
    let patch = paths
        .iter()
        .filter_map(|p| p.value.as_ref()?.patch.as_ref())
        .find(|op| extension(&op.vendor_extension, "x-kubernetes-group-version-kind") == Some(gvk.clone()))
        .expect("a PATCH operation for apps/v1 Deployment");
    let query_names: Vec<&str> = patch
        .parameters
        .iter()
        .filter_map(|p| match p.parameter.as_ref()?.oneof.as_ref()? {
            parameter::Oneof::NonBodyParameter(nb) => match nb.oneof.as_ref()? {
                non_body_parameter::Oneof::QueryParameterSubSchema(q) => Some(q.name.as_str()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(query_names.contains(&"fieldValidation"), "{query_names:?}");
    assert!(
        patch
            .consumes
            .contains(&"application/strategic-merge-patch+json".to_owned())
    );
    let body = patch
        .parameters
        .iter()
        .find_map(|p| match p.parameter.as_ref()?.oneof.as_ref()? {
            parameter::Oneof::BodyParameter(b) => Some(b),
            _ => None,
        })
        .expect("body parameter");
    assert!(body.required);
    assert_eq!(
        body.schema.as_ref().unwrap().r#ref,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
    );
    let ok = patch
        .responses
        .as_ref()
        .unwrap()
        .response_code
        .iter()
        .find(|r| r.name == "200");
    let ok = ok
        .and_then(|r| r.value.as_ref()?.response.as_ref())
        .expect("200 response");
    let schema = ok
        .schema
        .as_ref()
        .and_then(|s| s.schema.as_ref())
        .expect("200 schema");
    assert_eq!(schema.r#ref, "#/definitions/io.k8s.api.apps.v1.Deployment");
}

/// The checks of kube-openapi's `Definitions.ParseSchema`, which fails the whole document on the first
/// violation: every `$ref` names a definition, at most one type, arrays have exactly one item schema, and
/// typed scalars are one of the four primitive types.
#[test]
fn every_schema_parses_under_kube_openapi_rules() {
    fn check(
        defs: &BTreeMap<&str, &proto::Schema>,
        schema: &proto::Schema,
        at: &str,
        problems: &mut Vec<String>,
    ) {
        if !schema.r#ref.is_empty() {
            match schema.r#ref.strip_prefix("#/definitions/") {
                Some(name) if defs.contains_key(name) => {}
                _ => problems.push(format!("{at}: dangling $ref {}", schema.r#ref)),
            }
            return;
        }
        let types = schema
            .r#type
            .as_ref()
            .map(|t| t.value.as_slice())
            .unwrap_or_default();
        match types {
            [] | [_] => {}
            more => problems.push(format!("{at}: several types {more:?}")),
        }
        match types.first().map(String::as_str) {
            Some("array") => match schema.items.as_ref().map(|i| i.schema.as_slice()) {
                Some([item]) => check(defs, item, &format!("{at}[]"), problems),
                _ => problems.push(format!("{at}: array without exactly one item schema")),
            },
            Some("object") | None => {}
            Some("string" | "number" | "integer" | "boolean") => {}
            Some(other) => problems.push(format!("{at}: unknown primitive type {other}")),
        }
        for prop in schema.properties.iter().flat_map(|p| &p.additional_properties) {
            check(
                defs,
                prop.value.as_ref().unwrap(),
                &format!("{at}.{}", prop.name),
                problems,
            );
        }
        if let Some(proto::additional_properties_item::Oneof::Schema(s)) = schema
            .additional_properties
            .as_ref()
            .and_then(|a| a.oneof.as_ref())
        {
            check(defs, s, &format!("{at}{{}}"), problems);
        }
    }
    let api = api();
    let doc = decode(&api);
    let defs = definitions(&doc);
    assert!(defs.len() > 100, "only {} definitions", defs.len());
    let mut problems = Vec::new();
    for (name, schema) in &defs {
        check(&defs, schema, name, &mut problems);
    }
    for path in &doc.paths.as_ref().unwrap().path {
        let item = path.value.as_ref().unwrap();
        let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
        for op in ops.into_iter().flatten() {
            for response in &op.responses.as_ref().unwrap().response_code {
                let response = response.value.as_ref().unwrap().response.as_ref().unwrap();
                if let Some(schema) = response.schema.as_ref().and_then(|s| s.schema.as_ref()) {
                    check(&defs, schema, &path.name, &mut problems);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn json_form_is_the_same_document() {
    let api = api();
    let json: Value = serde_json::from_slice(&api.v2_json()).unwrap();
    assert_eq!(json["swagger"], "2.0");
    let doc = decode(&api);
    assert_eq!(
        json["definitions"].as_object().unwrap().len(),
        doc.definitions.as_ref().unwrap().additional_properties.len()
    );
    assert_eq!(
        json["paths"].as_object().unwrap().len(),
        doc.paths.as_ref().unwrap().path.len()
    );
    let pod_log = &json["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"];
    assert_eq!(pod_log["produces"], json!(["text/plain"]));
    assert_eq!(pod_log["responses"]["200"]["schema"], json!({ "type": "string" }));
    let name_param =
        &json["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["parameters"][0];
    assert_eq!(name_param["in"], "path");
    assert_eq!(name_param["type"], "string");
    assert!(name_param.get("schema").is_none());
}

/// Reads the length-delimited fields numbered `tag` of one message, straight from the wire.
fn fields(mut message: &[u8], tag: u32) -> Vec<&[u8]> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut out = Vec::new();
    while !message.is_empty() {
        let (field, wire_type) = decode_key(&mut message).expect("field key");
        match wire_type {
            WireType::LengthDelimited => {
                let len = decode_varint(&mut message).expect("length") as usize;
                let (value, rest) = message.split_at(len);
                if field == tag {
                    out.push(value);
                }
                message = rest;
            }
            WireType::Varint => {
                decode_varint(&mut message).expect("varint");
            }
            WireType::SixtyFourBit => message = &message[8..],
            WireType::ThirtyTwoBit => message = &message[4..],
            other => panic!("unexpected wire type {other:?}"),
        }
    }
    out
}

/// The field numbers of `OpenAPIv2.proto`, checked without our own message types (which a round trip
/// through the same structs cannot catch): Document.definitions = 9, Definitions.additional_properties = 1,
/// NamedSchema{name = 1, value = 2}, Schema.vendor_extension = 31, NamedAny{name = 1, value = 2},
/// Any.yaml = 2; Document.paths = 8, Paths.path = 2, PathItem.patch = 8, Operation.parameters = 8,
/// ParametersItem.parameter = 1, Parameter.non_body_parameter = 2, NonBodyParameter.query = 3,
/// QueryParameterSubSchema.name = 4.
#[test]
fn wire_layout_matches_the_gnostic_field_numbers() {
    let bytes = api().v2_protobuf();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let definitions = fields(&bytes, 9);
    assert_eq!(definitions.len(), 1);
    let deployment = fields(definitions[0], 1)
        .into_iter()
        .find(|named| {
            fields(named, 1).first().map(|n| text(n)) == Some("io.k8s.api.apps.v1.Deployment".into())
        })
        .expect("Deployment definition on the wire");
    let schema = fields(deployment, 2)[0];
    let gvk = fields(schema, 31)
        .into_iter()
        .find(|ext| text(fields(ext, 1)[0]) == "x-kubernetes-group-version-kind")
        .expect("gvk extension");
    let yaml = text(fields(fields(gvk, 2)[0], 2)[0]);
    assert_eq!(
        serde_json::from_str::<Value>(&yaml).unwrap(),
        json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
    );

    let paths = fields(&bytes, 8);
    let item = fields(paths[0], 2)
        .into_iter()
        .find(|named| text(fields(named, 1)[0]) == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .expect("deployment item path");
    let patch = fields(fields(item, 2)[0], 8)[0];
    let query_names: Vec<String> = fields(patch, 8)
        .into_iter()
        .flat_map(|item| fields(item, 1))
        .flat_map(|param| fields(param, 2))
        .flat_map(|non_body| fields(non_body, 3))
        .map(|query| text(fields(query, 4)[0]))
        .collect();
    assert!(
        query_names.contains(&"fieldValidation".to_owned()),
        "{query_names:?}"
    );
}
