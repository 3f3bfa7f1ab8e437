//! The path items kube-apiserver publishes for one resource: the namespaced (or cluster) collection, the
//! item, the all-namespaces list, and the subresources, each operation with `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind` and the query parameters clients probe for (kubectl's
//! `--validate=strict` looks for `fieldValidation` on the kind's PATCH operation).

use serde_json::{Map, Value, json};

use crate::KindSchema;
use crate::definitions::{self, DELETE_OPTIONS, PATCH, STATUS, reference, subresource_kinds};

/// What a subresource's operations read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`, `ephemeralcontainers`, `resize`, `approval`: the kind itself, get/put/patch.
    SameKind,
    /// `finalize`: the kind itself, put only.
    Finalize,
    /// `scale`: `autoscaling/v1` Scale, get/put/patch.
    Scale,
    /// `binding`, `eviction`, `token`: a create-only request kind.
    Create {
        definition: &'static str,
        group: &'static str,
        version: &'static str,
        kind: &'static str,
    },
    /// `log`: plain text.
    Log,
}

impl Subresource {
    /// The operations for a subresource name, or `None` for streaming ones (exec, attach, portforward,
    /// proxy) that have no schema to publish.
    pub fn for_name(name: &str) -> Option<Subresource> {
        Some(match name {
            "status" | "ephemeralcontainers" | "resize" | "approval" => Subresource::SameKind,
            "finalize" => Subresource::Finalize,
            "scale" => Subresource::Scale,
            "binding" => Subresource::Create {
                definition: subresource_kinds::BINDING,
                group: "",
                version: "v1",
                kind: "Binding",
            },
            "eviction" => Subresource::Create {
                definition: subresource_kinds::EVICTION,
                group: "policy",
                version: "v1",
                kind: "Eviction",
            },
            "token" => Subresource::Create {
                definition: subresource_kinds::TOKEN_REQUEST,
                group: "authentication.k8s.io",
                version: "v1",
                kind: "TokenRequest",
            },
            "log" => Subresource::Log,
            _ => return None,
        })
    }
}

/// `(path, path item)` pairs for one resource.
pub fn resource_paths(kind: &KindSchema) -> Vec<(String, Value)> {
    let names = Names::new(kind);
    let prefix = format!("/{}", crate::group_version_path(kind.group, kind.version));
    let (collection, namespace_params) = if kind.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{prefix}/{}", kind.plural), vec![])
    };
    let item = format!("{collection}/{{name}}");
    let has = |verb: &str| kind.verbs.contains(&verb);
    let this_gvk = gvk(kind.group, kind.version, kind.kind);
    let object = definitions::definition_name(kind.group, kind.version, kind.kind);
    let list = format!("{object}List");

    let mut out = Vec::new();

    let mut ops = Map::new();
    if has("list") {
        ops.insert(
            "get".into(),
            list_operation(&names, &names.op("list", ""), &list, &this_gvk),
        );
    }
    if has("create") {
        ops.insert(
            "post".into(),
            create_operation(&names, &names.op("create", ""), &object, &this_gvk),
        );
    }
    if has("deletecollection") {
        let mut op = delete_operation(&names, &names.op("deletecollection", ""), &this_gvk);
        op["x-kubernetes-action"] = "deletecollection".into();
        op["parameters"]
            .as_array_mut()
            .expect("built as array")
            .extend(list_query_params());
        ops.insert("delete".into(), op);
    }
    if !ops.is_empty() {
        out.push((collection.clone(), path_item(ops, namespace_params.clone())));
    }

    let mut ops = Map::new();
    if has("get") {
        ops.insert(
            "get".into(),
            read_operation(&names, &names.op("read", ""), &object, &this_gvk),
        );
    }
    if has("update") {
        ops.insert(
            "put".into(),
            replace_operation(&names, &names.op("replace", ""), &object, &this_gvk),
        );
    }
    if has("patch") {
        ops.insert(
            "patch".into(),
            patch_operation(&names, &names.op("patch", ""), &object, &this_gvk),
        );
    }
    if has("delete") {
        ops.insert(
            "delete".into(),
            delete_operation(&names, &names.op("delete", ""), &this_gvk),
        );
    }
    let mut item_params = vec![path_param("name")];
    item_params.extend(namespace_params.iter().cloned());
    if !ops.is_empty() {
        out.push((item.clone(), path_item(ops, item_params.clone())));
    }

    if kind.namespaced && has("list") {
        let mut ops = Map::new();
        let id = format!("list{}{}ForAllNamespaces", names.group_version, kind.kind);
        ops.insert("get".into(), list_operation(&names, &id, &list, &this_gvk));
        out.push((format!("{prefix}/{}", kind.plural), path_item(ops, vec![])));
    }

    for sub in kind.subresources {
        let Some(shape) = Subresource::for_name(sub) else {
            continue;
        };
        let suffix = capitalize(sub);
        let mut ops = Map::new();
        match shape {
            Subresource::SameKind => {
                ops.insert(
                    "get".into(),
                    read_operation(&names, &names.op("read", &suffix), &object, &this_gvk),
                );
                let id = names.op("replace", &suffix);
                ops.insert("put".into(), replace_operation(&names, &id, &object, &this_gvk));
                let id = names.op("patch", &suffix);
                ops.insert("patch".into(), patch_operation(&names, &id, &object, &this_gvk));
            }
            Subresource::Finalize => {
                let id = names.op("replace", &suffix);
                ops.insert("put".into(), replace_operation(&names, &id, &object, &this_gvk));
            }
            Subresource::Scale => {
                let scale_gvk = gvk("autoscaling", "v1", "Scale");
                let scale = subresource_kinds::SCALE;
                ops.insert(
                    "get".into(),
                    read_operation(&names, &names.op("read", &suffix), scale, &scale_gvk),
                );
                let id = names.op("replace", &suffix);
                ops.insert("put".into(), replace_operation(&names, &id, scale, &scale_gvk));
                let id = names.op("patch", &suffix);
                ops.insert("patch".into(), patch_operation(&names, &id, scale, &scale_gvk));
            }
            Subresource::Create {
                definition,
                group,
                version,
                kind,
            } => {
                let id = names.op("create", &suffix);
                let op = create_operation(&names, &id, definition, &gvk(group, version, kind));
                ops.insert("post".into(), op);
            }
            Subresource::Log => {
                let mut op = operation(&names, &names.op("read", &suffix), "get", &this_gvk);
                op["parameters"] = Value::Array(
                    [
                        "container",
                        "follow",
                        "limitBytes",
                        "previous",
                        "sinceSeconds",
                        "tailLines",
                        "timestamps",
                    ]
                    .iter()
                    .map(|name| query_param(name))
                    .collect(),
                );
                op["responses"] = json!({ "200": { "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } },
                            "401": { "description": "Unauthorized" } });
                ops.insert("get".into(), op);
            }
        }
        out.push((format!("{item}/{sub}"), path_item(ops, item_params.clone())));
    }
    out
}

/// Operation ids and tags the way kube-apiserver spells them (`patchAppsV1NamespacedDeploymentScale`,
/// tag `apps_v1`).
struct Names {
    group_version: String,
    scope: &'static str,
    kind: &'static str,
    tag: String,
}

impl Names {
    fn new(kind: &KindSchema) -> Names {
        let group_words: Vec<&str> = if kind.group.is_empty() {
            vec!["core"]
        } else {
            kind.group.trim_end_matches(".k8s.io").split('.').collect()
        };
        let group_camel: String = group_words.iter().map(|w| capitalize(w)).collect();
        let tag_group = group_words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { (*w).to_owned() } else { capitalize(w) })
            .collect::<String>();
        Names {
            group_version: format!("{group_camel}{}", capitalize(kind.version)),
            scope: if kind.namespaced { "Namespaced" } else { "" },
            kind: kind.kind,
            tag: format!("{tag_group}_{}", kind.version),
        }
    }

    fn op(&self, verb: &str, suffix: &str) -> String {
        let kind = if verb == "deletecollection" {
            "Collection"
        } else {
            ""
        };
        let verb = if verb == "deletecollection" {
            "delete"
        } else {
            verb
        };
        format!(
            "{verb}{}{kind}{}{}{suffix}",
            self.group_version, self.scope, self.kind
        )
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn path_item(ops: Map<String, Value>, mut parameters: Vec<Value>) -> Value {
    parameters.push(query_param("pretty"));
    let mut item = ops;
    item.insert("parameters".into(), Value::Array(parameters));
    Value::Object(item)
}

fn operation(names: &Names, id: &str, action: &str, gvk: &Value) -> Value {
    json!({
        "tags": [names.tag],
        "operationId": id,
        "parameters": [],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    })
}

fn object_content(definition: &str) -> Value {
    let schema = reference(definition);
    json!({
        "application/json": { "schema": schema },
        "application/yaml": { "schema": schema },
        "application/vnd.kubernetes.protobuf": { "schema": schema },
    })
}

fn responses(definition: &str, codes: &[&str]) -> Value {
    let mut out = Map::new();
    for code in codes {
        let description = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        out.insert(
            (*code).into(),
            json!({ "description": description, "content": object_content(definition) }),
        );
    }
    out.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(out)
}

fn read_operation(names: &Names, id: &str, definition: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "get", gvk);
    op["description"] = format!("read the specified {}", names.kind).into();
    op["responses"] = responses(definition, &["200"]);
    op
}

fn list_operation(names: &Names, id: &str, list: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "list", gvk);
    op["description"] = format!("list or watch objects of kind {}", names.kind).into();
    op["parameters"] = Value::Array(list_query_params());
    let schema = reference(list);
    op["responses"] = json!({
        "200": { "description": "OK", "content": {
            "application/json": { "schema": schema },
            "application/yaml": { "schema": schema },
            "application/vnd.kubernetes.protobuf": { "schema": schema },
            "application/json;stream=watch": { "schema": schema },
            "application/vnd.kubernetes.protobuf;stream=watch": { "schema": schema },
        } },
        "401": { "description": "Unauthorized" },
    });
    op
}

fn create_operation(names: &Names, id: &str, definition: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "post", gvk);
    op["description"] = format!("create a {}", names.kind).into();
    op["parameters"] = Value::Array(write_query_params(false));
    op["requestBody"] =
        json!({ "content": { "*/*": { "schema": reference(definition) } }, "required": true });
    op["responses"] = responses(definition, &["200", "201", "202"]);
    op
}

fn replace_operation(names: &Names, id: &str, definition: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "put", gvk);
    op["description"] = format!("replace the specified {}", names.kind).into();
    op["parameters"] = Value::Array(write_query_params(false));
    op["requestBody"] =
        json!({ "content": { "*/*": { "schema": reference(definition) } }, "required": true });
    op["responses"] = responses(definition, &["200", "201"]);
    op
}

fn patch_operation(names: &Names, id: &str, definition: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "patch", gvk);
    op["description"] = format!("partially update the specified {}", names.kind).into();
    op["parameters"] = Value::Array(write_query_params(true));
    let patch = json!({ "schema": reference(PATCH) });
    op["requestBody"] = json!({
        "content": {
            "application/apply-patch+yaml": patch,
            "application/json-patch+json": patch,
            "application/merge-patch+json": patch,
            "application/strategic-merge-patch+json": patch,
        },
        "required": true,
    });
    op["responses"] = responses(definition, &["200", "201"]);
    op
}

fn delete_operation(names: &Names, id: &str, gvk: &Value) -> Value {
    let mut op = operation(names, id, "delete", gvk);
    op["description"] = format!("delete a {}", names.kind).into();
    op["parameters"] = Value::Array(
        [
            "dryRun",
            "gracePeriodSeconds",
            "orphanDependents",
            "propagationPolicy",
        ]
        .iter()
        .map(|name| query_param(name))
        .collect(),
    );
    op["requestBody"] = json!({ "content": { "*/*": { "schema": reference(DELETE_OPTIONS) } } });
    op["responses"] = responses(STATUS, &["200", "202"]);
    op
}

fn write_query_params(patch: bool) -> Vec<Value> {
    let mut names = vec!["dryRun", "fieldManager", "fieldValidation"];
    if patch {
        names.push("force");
    }
    names.into_iter().map(query_param).collect()
}

fn list_query_params() -> Vec<Value> {
    [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ]
    .into_iter()
    .map(query_param)
    .collect()
}

fn path_param(name: &str) -> Value {
    let description = match name {
        "namespace" => "object name and auth scope, such as for teams and projects",
        _ => "name of the resource",
    };
    json!({ "name": name, "in": "path", "description": description, "required": true,
            "schema": { "type": "string", "uniqueItems": true } })
}

/// Query parameters with kube-apiserver's descriptions (shortened) and types.
fn query_param(name: &str) -> Value {
    let (kind, description) = match name {
        "pretty" => ("string", "If 'true', then the output is pretty printed."),
        "dryRun" => (
            "string",
            "When present, indicates that modifications should not be persisted. Valid values: All.",
        ),
        "fieldManager" => (
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        "fieldValidation" => (
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or \
             duplicate fields. Valid values are: Ignore, Warn, Strict.",
        ),
        "force" => (
            "boolean",
            "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
        ),
        "gracePeriodSeconds" => (
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        "orphanDependents" => ("boolean", "Deprecated: please use the PropagationPolicy."),
        "propagationPolicy" => (
            "string",
            "Whether and how garbage collection will be performed: Orphan, Background, Foreground.",
        ),
        "allowWatchBookmarks" => (
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        "continue" => (
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        "fieldSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        "labelSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        "limit" => (
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        "resourceVersion" => (
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        "resourceVersionMatch" => (
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        "sendInitialEvents" => (
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        "timeoutSeconds" => ("integer", "Timeout for the list/watch call."),
        "watch" => (
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
        "follow" | "previous" | "timestamps" => ("boolean", "Log streaming option."),
        "limitBytes" | "sinceSeconds" | "tailLines" => ("integer", "Log streaming option."),
        _ => ("string", ""),
    };
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": kind, "uniqueItems": true } })
}
