//! The generator of `src/tables.rs`, run as a test so the committed tables can never silently drift:
//! it regenerates them and fails if they differ. `RKUBE_REGENERATE_TABLES=1` writes the new file instead.
//!
//! Inputs:
//! - k8s-pb's prost sources (from cargo's registry): message names, field tags and wire types;
//! - k8s-openapi's schemars schemas: the JSON property names (prost snake-cases them: `hostIP` → `host_ip`,
//!   and message names: `PodIP` → `PodIp`), matched case- and underscore-insensitively;
//! - `gen/keep_zero.txt`: Go scalar fields whose zero value is meaningful (pointers, no `omitempty`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::Resource;
use k8s_openapi::api::{
    apps, authentication, autoscaling, batch, coordination, core, events, networking, policy, rbac,
    scheduling,
};
use schemars::JsonSchema;
use serde_json::{Map, Value};

/// The kinds the decoder accepts: every kind kubectl sends as protobuf (`create deployment|namespace|
/// configmap|secret|service|job|cronjob|serviceaccount|role|rolebinding|clusterrole|clusterrolebinding|
/// quota|priorityclass|pdb|ingress|token`, `autoscale`) plus the other workload kinds, and the
/// kinds protobuf-speaking components (kubelets, controllers built on client-go) write often.
fn roots() -> Vec<Root> {
    vec![
        Root::of::<core::v1::Namespace>(),
        Root::of::<core::v1::ConfigMap>(),
        Root::of::<core::v1::Secret>(),
        Root::of::<core::v1::Service>(),
        Root::of::<core::v1::ServiceAccount>(),
        Root::of::<core::v1::Pod>(),
        Root::of::<core::v1::ResourceQuota>(),
        Root::of::<apps::v1::Deployment>(),
        Root::of::<apps::v1::ReplicaSet>(),
        Root::of::<apps::v1::DaemonSet>(),
        Root::of::<apps::v1::StatefulSet>(),
        Root::of::<batch::v1::Job>(),
        Root::of::<batch::v1::CronJob>(),
        Root::of::<rbac::v1::Role>(),
        Root::of::<rbac::v1::RoleBinding>(),
        Root::of::<rbac::v1::ClusterRole>(),
        Root::of::<rbac::v1::ClusterRoleBinding>(),
        Root::of::<autoscaling::v1::HorizontalPodAutoscaler>(),
        Root::of::<autoscaling::v2::HorizontalPodAutoscaler>(),
        Root::of::<policy::v1::PodDisruptionBudget>(),
        Root::of::<networking::v1::Ingress>(),
        Root::of::<scheduling::v1::PriorityClass>(),
        Root::of::<authentication::v1::TokenRequest>(),
        Root::of::<coordination::v1::Lease>(),
        Root::of::<events::v1::Event>(),
        Root::of::<core::v1::Event>(),
    ]
}

struct Root {
    api_version: &'static str,
    kind: &'static str,
    definition: String,
    register: fn(&mut schemars::SchemaGenerator),
}

impl Root {
    fn of<T: Resource + JsonSchema>() -> Root {
        Root {
            api_version: T::API_VERSION,
            kind: T::KIND,
            definition: T::schema_name().into_owned(),
            register: |generator| {
                generator.subschema_for::<T>();
            },
        }
    }
}

/// Definitions decoded by dedicated code rather than field tables.
fn special_type(definition: &str) -> Option<&'static str> {
    Some(match definition {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => "Type::Time",
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => "Type::MicroTime",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => "Type::IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => "Type::Quantity",
        "io.k8s.apimachinery.pkg.runtime.RawExtension" | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            "Type::RawJson"
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => "Type::Duration",
        _ => return None,
    })
}

/// One prost field: `#[prost(string, optional, tag = "1")] pub name: Option<String>,`.
#[derive(Debug)]
struct PbField {
    rust_name: String,
    attribute: String,
    tag: u32,
    /// The referenced message, as a module path (`api::core::v1::PodSpec`), for message and map fields.
    message: Option<String>,
}

fn registry_source() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    for index in std::fs::read_dir(&registry).expect("cargo registry sources exist") {
        let candidate = index.expect("readable registry").path().join("k8s-pb-0.9.0/src");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("k8s-pb-0.9.0 sources not found under {}", registry.display());
}

fn parse_sources(dir: &Path, module: &mut Vec<String>, out: &mut BTreeMap<String, Vec<PbField>>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            module.push(path.file_name().unwrap().to_string_lossy().into_owned());
            parse_sources(&path, module, out);
            module.pop();
        } else if path.file_name().is_some_and(|n| n == "mod.rs") {
            parse_module(&std::fs::read_to_string(&path).unwrap(), module, out);
        }
    }
}

fn parse_module(source: &str, module: &[String], out: &mut BTreeMap<String, Vec<PbField>>) {
    let mut current: Option<String> = None;
    let mut attribute: Option<String> = None;
    let mut declaration = String::new();
    for line in source.lines() {
        if let Some(name) = line
            .strip_prefix("pub struct ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some(format!("{}::{name}", module.join("::")));
            out.entry(current.clone().unwrap()).or_default();
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        let Some(message) = &current else { continue };
        let trimmed = line.trim();
        if let Some(attr) = trimmed
            .strip_prefix("#[prost(")
            .and_then(|a| a.strip_suffix(")]"))
        {
            attribute = Some(attr.to_owned());
            declaration.clear();
            continue;
        }
        if attribute.is_some() && !trimmed.starts_with("///") {
            declaration.push_str(trimmed);
            let balanced = declaration.matches('<').count() == declaration.matches('>').count();
            if declaration.ends_with(',') && balanced {
                let attr = attribute.take().unwrap();
                let (name, ty) = declaration
                    .trim_start_matches("pub ")
                    .split_once(':')
                    .expect("field: type");
                let tag = attr
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .unwrap();
                out.get_mut(message).unwrap().push(PbField {
                    rust_name: name.trim().trim_start_matches("r#").to_owned(),
                    tag: tag.parse().unwrap(),
                    message: referenced_message(&attr, ty, module),
                    attribute: attr,
                });
                declaration.clear();
            }
        }
    }
}

/// Resolves the message type a field refers to (`super::super::core::v1::PodSpec`, `Vec<Container>`,
/// `BTreeMap<String, super::...::Quantity>`) to a module path from the crate root.
fn referenced_message(attribute: &str, ty: &str, module: &[String]) -> Option<String> {
    if !(attribute.starts_with("message") || attribute.contains("\"string, message\"")) {
        return None;
    }
    let ty = ty.trim_end_matches(',');
    let inner = if let Some(map) = ty.split_once("BTreeMap<").map(|(_, rest)| rest) {
        map.split_once(',')
            .unwrap()
            .1
            .trim()
            .trim_end_matches(',')
            .trim_end_matches('>')
            .trim_end_matches(',')
    } else {
        let start = ty.rfind('<').map_or(0, |i| i + 1);
        ty[start..].trim_end_matches('>')
    };
    let inner = inner
        .trim()
        .trim_start_matches("::prost::alloc::boxed::Box<")
        .trim_end_matches('>');
    let mut path: Vec<String> = module.to_vec();
    let mut rest = inner;
    while let Some(r) = rest.strip_prefix("super::") {
        path.pop();
        rest = r;
    }
    path.extend(rest.split("::").map(str::to_owned));
    Some(path.join("::"))
}

fn normalize(name: &str) -> String {
    name.replace('_', "").to_lowercase()
}

fn definition_package(module_path: &str) -> (String, &str) {
    let (module, name) = module_path.rsplit_once("::").unwrap();
    (
        format!("io.k8s.{}", module.replace("::", ".").replace('_', "-")),
        name,
    )
}

fn module_path(definition: &str, messages: &BTreeMap<String, Vec<PbField>>) -> String {
    let rest = definition.strip_prefix("io.k8s.").unwrap();
    let (package, name) = rest.rsplit_once('.').unwrap();
    let module = package.replace('.', "::").replace('-', "_");
    messages
        .keys()
        .find(|path| {
            path.rsplit_once("::")
                .is_some_and(|(m, n)| m == module && normalize(n) == normalize(name))
        })
        .unwrap_or_else(|| panic!("no k8s-pb message for {definition}"))
        .clone()
}

fn generate() -> String {
    let mut messages = BTreeMap::new();
    parse_sources(&registry_source(), &mut Vec::new(), &mut messages);

    let mut generator = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::openapi3());
    let roots = roots();
    for root in &roots {
        (root.register)(&mut generator);
    }
    let definitions = generator.take_definitions(false);
    let keep_zero: BTreeSet<(String, String)> = include_str!("../gen/keep_zero.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(d, f)| (d.to_owned(), f.to_owned()))
        .collect();

    // Definition name and JSON properties for every reachable message.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut properties_of: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut inline_fields: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut queue: VecDeque<(String, Option<String>)> = roots
        .iter()
        .map(|r| (module_path(&r.definition, &messages), None))
        .collect();
    while let Some((path, inline_parent)) = queue.pop_front() {
        if names.contains_key(&path) {
            continue;
        }
        let (package, pb_name) = definition_package(&path);
        let found = definitions.keys().find(|d| {
            d.rsplit_once('.')
                .is_some_and(|(p, n)| p == package && normalize(n) == normalize(pb_name))
        });
        let (definition, properties) = match (found, &inline_parent) {
            // An embedded Go struct (`json:",inline"`): its fields are the parent's JSON properties.
            (_, Some(parent)) => (
                found.cloned().unwrap_or_else(|| format!("{package}.{pb_name}")),
                properties_of[parent].clone(),
            ),
            (Some(definition), None) => (
                definition.clone(),
                definitions[definition]
                    .get("properties")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            ),
            (None, None) => panic!("no k8s-openapi definition for {path}"),
        };
        if special_type(&definition).is_none() {
            let known = |name: &str| properties.keys().any(|k| normalize(k) == normalize(name));
            for field in &messages[&path] {
                let Some(target) = &field.message else { continue };
                if known(&field.rust_name) {
                    queue.push_back((target.clone(), None));
                } else if messages[target].iter().any(|f| known(&f.rust_name)) {
                    inline_fields.insert((path.clone(), field.tag));
                    queue.push_front((target.clone(), Some(path.clone())));
                }
                // Otherwise the field is newer than k8s-openapi's v1_33 and is left out.
            }
        }
        properties_of.insert(path.clone(), properties);
        names.insert(path, definition);
    }

    let table_messages: Vec<(&String, &String)> = {
        let mut v: Vec<_> = names.iter().filter(|(_, d)| special_type(d).is_none()).collect();
        v.sort_by(|a, b| a.1.cmp(b.1));
        v
    };
    let index: BTreeMap<&String, usize> = table_messages
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (*p, i))
        .collect();
    let type_of = |path: &String| -> String {
        special_type(&names[path]).map_or_else(|| format!("Type::Message({})", index[path]), str::to_owned)
    };

    let mut out = String::new();
    out.push_str(
        "// @generated by tests/generate_tables.rs from k8s-pb 0.9.0, k8s-openapi 0.29 (v1_33) and\n",
    );
    out.push_str(
        "// gen/keep_zero.txt. Do not edit: run `RKUBE_REGENERATE_TABLES=1 cargo test -p rkube-protobuf\n",
    );
    out.push_str("// --test generate_tables`.\n\n");
    out.push_str("use crate::schema::{Field, Kind, MapValue, Message, Type};\n\n");
    out.push_str("pub(crate) static MESSAGES: &[Message] = &[\n");
    for (i, (path, definition)) in table_messages.iter().enumerate() {
        let properties = &properties_of[*path];
        writeln!(out, "    // {i}").unwrap();
        writeln!(out, "    Message {{ name: \"{definition}\", fields: &[").unwrap();
        let mut fields: Vec<&PbField> = messages[*path].iter().collect();
        fields.sort_by_key(|f| f.tag);
        for field in fields {
            if inline_fields.contains(&((*path).clone(), field.tag)) {
                let target = field.message.as_ref().unwrap();
                writeln!(out, "        Field {{ tag: {}, json: \"\", ty: Type::Inline({}), repeated: false, keep_zero: false }},", field.tag, index[target]).unwrap();
                continue;
            }
            let Some(json) = properties
                .keys()
                .find(|k| normalize(k) == normalize(&field.rust_name))
            else {
                // In the protobuf message but not in this version's JSON schema: nothing to map it to.
                writeln!(
                    out,
                    "        // tag {} ({}) has no JSON property in v1_33",
                    field.tag, field.rust_name
                )
                .unwrap();
                continue;
            };
            let attr = field.attribute.as_str();
            let repeated = attr.contains("repeated");
            let ty = if let Some(map) = attr
                .strip_prefix("btree_map = \"string, ")
                .map(|m| m.split('"').next().unwrap())
            {
                let value = match map {
                    "string" => "MapValue::String".to_owned(),
                    "bytes" => "MapValue::Bytes".to_owned(),
                    "message" => {
                        let target = field.message.as_ref().unwrap();
                        match special_type(&names[target]) {
                            Some("Type::Quantity") => "MapValue::Quantity".to_owned(),
                            Some("Type::Time") => "MapValue::Time".to_owned(),
                            Some(other) => panic!("map of {other} in {definition}"),
                            None => format!("MapValue::Message({})", index[target]),
                        }
                    }
                    other => panic!("map value {other} in {definition}"),
                };
                format!("Type::Map({value})")
            } else {
                match attr.split(',').next().unwrap().trim() {
                    "string" => "Type::String".to_owned(),
                    "bool" => "Type::Bool".to_owned(),
                    "int32" => "Type::Int32".to_owned(),
                    "int64" => "Type::Int64".to_owned(),
                    "double" => "Type::Double".to_owned(),
                    "bytes = \"vec\"" => "Type::Bytes".to_owned(),
                    "message" => type_of(field.message.as_ref().unwrap()),
                    other => panic!("unsupported prost type {other} in {definition}"),
                }
            };
            let keep = keep_zero.contains(&((*definition).clone(), json.clone()));
            writeln!(
                out,
                "        Field {{ tag: {}, json: \"{json}\", ty: {ty}, repeated: {repeated}, keep_zero: {keep} }},",
                field.tag
            )
            .unwrap();
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n");
    out.push_str("pub(crate) static KINDS: &[Kind] = &[\n");
    let mut kinds: Vec<&Root> = roots.iter().collect();
    kinds.sort_by_key(|r| (r.api_version, r.kind));
    for root in kinds {
        let path = module_path(&root.definition, &messages);
        writeln!(
            out,
            "    Kind {{ api_version: \"{}\", kind: \"{}\", message: {} }},",
            root.api_version, root.kind, index[&path]
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}

#[test]
fn committed_tables_match_the_generator() {
    let generated = generate();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tables.rs");
    if std::env::var_os("RKUBE_REGENERATE_TABLES").is_some() {
        std::fs::write(&path, &generated).expect("write src/tables.rs");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "src/tables.rs is stale: run RKUBE_REGENERATE_TABLES=1 cargo test -p rkube-protobuf --test generate_tables"
    );
}
