//! `components.schemas`: k8s-openapi's schemars schemas under Kubernetes' definition names
//! (`io.k8s.api.apps.v1.Deployment`), with `$ref`s as `#/components/schemas/<name>`, the kinds' list types,
//! `x-kubernetes-group-version-kind`, and the extensions of [`crate::extensions`].

use k8s_openapi::api::{authentication, autoscaling, core, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::KindSchema;

/// What every `$ref` to a definition starts with (schemars' OpenAPI 3 settings produce exactly this).
pub const REF_PREFIX: &str = "#/components/schemas/";

pub const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
pub const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// `#/components/schemas/<name>`.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// The Go package a group's types live in, as Kubernetes spells it in definition names:
/// `rbac.authorization.k8s.io` → `io.k8s.api.rbac.v1`, `apiextensions.k8s.io` →
/// `io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1`.
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let package = match group {
        "" => "io.k8s.api.core".to_owned(),
        "apiextensions.k8s.io" => "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".to_owned(),
        "apiregistration.k8s.io" => "io.k8s.kube-aggregator.pkg.apis.apiregistration".to_owned(),
        "internal.apiserver.k8s.io" => "io.k8s.api.apiserverinternal".to_owned(),
        "metrics.k8s.io" => "io.k8s.metrics.pkg.apis.metrics".to_owned(),
        other => format!("io.k8s.api.{}", other.split('.').next().unwrap_or(other)),
    };
    format!("{package}.{version}.{kind}")
}

/// Names of the definitions the operations of [`crate::paths`] refer to besides the kinds themselves.
pub mod subresource_kinds {
    pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
    pub const BINDING: &str = "io.k8s.api.core.v1.Binding";
    pub const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
    pub const TOKEN_REQUEST: &str = "io.k8s.api.authentication.v1.TokenRequest";
}

/// Builds every definition the documents for `kinds` can refer to.
pub fn generate(kinds: &[KindSchema]) -> Map<String, Value> {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    // Registering through `subschema_for` puts each type (and everything it refers to) into the
    // generator's definitions under its `schema_name`, which k8s-openapi sets to the Kubernetes name.
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<autoscaling::v1::Scale>();
    generator.subschema_for::<core::v1::Binding>();
    generator.subschema_for::<policy::v1::Eviction>();
    generator.subschema_for::<authentication::v1::TokenRequest>();

    let mut kind_definitions = Vec::new();
    for kind in kinds {
        let name = definition_name(kind.group, kind.version, kind.kind);
        let schema = (kind.schema)(&mut generator);
        generator
            .definitions_mut()
            .insert(name.clone(), schema.to_value());
        let list_name = format!("{name}List");
        generator
            .definitions_mut()
            .insert(list_name.clone(), list_schema(kind, &name));
        kind_definitions.push((kind, name, list_name));
    }
    // Applies the OpenAPI 3.0 transforms (a `$ref` with a description becomes `allOf: [{$ref}]`, as in
    // Kubernetes' own documents) to every definition, including the kinds inserted by hand above.
    let mut components = generator.take_definitions(true);

    for (kind, name, list_name) in &kind_definitions {
        set_group_version_kind(&mut components, name, &[gvk(kind.group, kind.version, kind.kind)]);
        let list_kind = format!("{}List", kind.kind);
        set_group_version_kind(
            &mut components,
            list_name,
            &[gvk(kind.group, kind.version, &list_kind)],
        );
    }
    set_group_version_kind(&mut components, STATUS, &[gvk("", "v1", "Status")]);
    set_group_version_kind(
        &mut components,
        subresource_kinds::SCALE,
        &[gvk("autoscaling", "v1", "Scale")],
    );
    set_group_version_kind(
        &mut components,
        subresource_kinds::BINDING,
        &[gvk("", "v1", "Binding")],
    );
    set_group_version_kind(
        &mut components,
        subresource_kinds::EVICTION,
        &[gvk("policy", "v1", "Eviction")],
    );
    set_group_version_kind(
        &mut components,
        subresource_kinds::TOKEN_REQUEST,
        &[gvk("authentication.k8s.io", "v1", "TokenRequest")],
    );
    // DeleteOptions is accepted by every group-version, and Kubernetes lists them all.
    let mut group_versions: Vec<(&str, &str)> = kinds.iter().map(|k| (k.group, k.version)).collect();
    group_versions.sort_unstable();
    group_versions.dedup();
    let delete_gvks: Vec<Value> = group_versions
        .iter()
        .map(|(g, v)| gvk(g, v, "DeleteOptions"))
        .collect();
    set_group_version_kind(&mut components, DELETE_OPTIONS, &delete_gvks);

    normalize_scalar_types(&mut components);
    crate::extensions::apply(&mut components);
    components
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn set_group_version_kind(components: &mut Map<String, Value>, name: &str, gvks: &[Value]) {
    if let Some(Value::Object(schema)) = components.get_mut(name) {
        schema.insert(
            "x-kubernetes-group-version-kind".into(),
            Value::Array(gvks.to_vec()),
        );
    }
}

/// `<Kind>List` as Kubernetes defines it; k8s-openapi's generic `List<T>` has no per-kind schema name.
fn list_schema(kind: &KindSchema, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", kind.kind, kind.kind),
        "type": "object",
        "properties": {
            "apiVersion": { "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." },
            "kind": { "type": "string", "description": "Kind is a string value representing the REST resource this object represents." },
            "items": {
                "type": "array",
                "description": format!("List of {}.", kind.plural),
                "items": { "allOf": [reference(item)], "default": {} },
            },
            "metadata": { "allOf": [reference(LIST_META)], "default": {},
                "description": "Standard list metadata." },
        },
        "required": ["items"],
    })
}

/// Quantity is a string on the wire as far as clients care (kubectl explain, SMP), and IntOrString is marked
/// the way Kubernetes' v3 documents mark it.
fn normalize_scalar_types(components: &mut Map<String, Value>) {
    if let Some(Value::Object(quantity)) = components.get_mut(QUANTITY) {
        quantity.remove("x-kubernetes-int-or-string");
        quantity.insert("type".into(), "string".into());
    }
    if let Some(Value::Object(int_or_string)) = components.get_mut(INT_OR_STRING) {
        int_or_string.insert("x-kubernetes-int-or-string".into(), true.into());
        int_or_string.insert("format".into(), "int-or-string".into());
    }
}
