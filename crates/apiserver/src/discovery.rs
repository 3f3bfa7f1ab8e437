//! Discovery documents, computed once from the registry at start and served as shared bytes: aggregated
//! discovery (`apidiscovery.k8s.io/v2` and `v2beta1`, chosen by kubectl through the response Content-Type)
//! and the legacy `/api`, `/apis`, `/apis/<group>`, `/api/v1`, `/apis/<group>/<version>` documents.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::registry::{Kind, Registry};
use crate::request::DiscoveryFormat;

pub const V2_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const V2BETA1_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Every discovery answer, pre-serialized.
pub struct Discovery {
    core_legacy: Bytes,
    groups_legacy: Bytes,
    core_v2: Bytes,
    groups_v2: Bytes,
    core_v2beta1: Bytes,
    groups_v2beta1: Bytes,
    group: HashMap<String, Bytes>,
    resources: HashMap<(String, String), Bytes>,
}

fn bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a Value always serializes"))
}

fn aggregated_resource(k: &Kind) -> Value {
    let subresources: Vec<Value> = k
        .subresources
        .iter()
        .map(|s| {
            json!({
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs,
            })
        })
        .collect();
    let mut r = json!({
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": k.verbs,
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

fn legacy_resources(registry: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in registry.in_group_version(group, version) {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for s in &k.subresources {
            let mut r = json!({
                "name": format!("{}/{}", k.plural, s.name),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != k.group || s.version != k.version {
                r["group"] = json!(s.group);
                r["version"] = json!(s.version);
            }
            resources.push(r);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn group_versions(registry: &Registry, group: &str) -> Vec<Value> {
    registry
        .versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect()
}

impl Discovery {
    pub fn build(registry: &Registry, server_address: &str) -> Discovery {
        let aggregated_group = |group: &str| {
            let versions: Vec<Value> = registry
                .versions(group)
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .in_group_version(group, v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        };
        let list = |api_version: &str, items: Vec<Value>| {
            bytes(
                &json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}),
            )
        };
        let named: Vec<&str> = registry.groups().into_iter().filter(|g| !g.is_empty()).collect();
        let core_items = vec![aggregated_group("")];
        let group_items: Vec<Value> = named.iter().map(|g| aggregated_group(g)).collect();

        let api_groups: Vec<Value> = named
            .iter()
            .map(|g| {
                let versions = group_versions(registry, g);
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        let group = named
            .iter()
            .zip(&api_groups)
            .map(|(g, doc)| {
                let mut doc = doc.clone();
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                (g.to_string(), bytes(&doc))
            })
            .collect();
        let mut resources = HashMap::new();
        for g in registry.groups() {
            for v in registry.versions(g) {
                resources.insert(
                    (g.to_string(), v.to_string()),
                    bytes(&legacy_resources(registry, g, v)),
                );
            }
        }
        Discovery {
            core_legacy: bytes(&json!({
                "kind": "APIVersions",
                "versions": registry.versions(""),
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
            })),
            groups_legacy: bytes(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": api_groups})),
            core_v2: list("apidiscovery.k8s.io/v2", core_items.clone()),
            groups_v2: list("apidiscovery.k8s.io/v2", group_items.clone()),
            core_v2beta1: list("apidiscovery.k8s.io/v2beta1", core_items),
            groups_v2beta1: list("apidiscovery.k8s.io/v2beta1", group_items),
            group,
            resources,
        }
    }

    /// `/api` (core) or `/apis` in the asked format, with its Content-Type.
    pub fn root(&self, core: bool, format: DiscoveryFormat) -> (&'static str, Bytes) {
        match (format, core) {
            (DiscoveryFormat::AggregatedV2, true) => (V2_CONTENT_TYPE, self.core_v2.clone()),
            (DiscoveryFormat::AggregatedV2, false) => (V2_CONTENT_TYPE, self.groups_v2.clone()),
            (DiscoveryFormat::AggregatedV2Beta1, true) => (V2BETA1_CONTENT_TYPE, self.core_v2beta1.clone()),
            (DiscoveryFormat::AggregatedV2Beta1, false) => {
                (V2BETA1_CONTENT_TYPE, self.groups_v2beta1.clone())
            }
            (DiscoveryFormat::Legacy, true) => ("application/json", self.core_legacy.clone()),
            (DiscoveryFormat::Legacy, false) => ("application/json", self.groups_legacy.clone()),
        }
    }

    pub fn group(&self, group: &str) -> Option<Bytes> {
        self.group.get(group).cloned()
    }

    pub fn resources(&self, group: &str, version: &str) -> Option<Bytes> {
        self.resources
            .get(&(group.to_string(), version.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn aggregated_discovery_lists_short_names_categories_and_subresources() {
        let d = Discovery::build(&Registry::builtin(), "10.0.0.1:6443");
        let (ct, body) = d.root(false, DiscoveryFormat::AggregatedV2);
        assert_eq!(ct, V2_CONTENT_TYPE);
        let doc = parse(&body);
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert_eq!(deploy["scope"], "Namespaced");
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );

        let core = parse(&d.root(true, DiscoveryFormat::AggregatedV2).1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
    }

    #[test]
    fn legacy_discovery() {
        let d = Discovery::build(&Registry::builtin(), "10.0.0.1:6443");
        let api = parse(&d.root(true, DiscoveryFormat::Legacy).1);
        assert_eq!(api["versions"], json!(["v1"]));
        let v1 = parse(&d.resources("", "v1").unwrap());
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"namespaces/finalize")
        );
        let apps = parse(&d.resources("apps", "v1").unwrap());
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        let groups = parse(&d.root(false, DiscoveryFormat::Legacy).1);
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "rbac.authorization.k8s.io")
        );
        assert_eq!(
            parse(&d.group("batch").unwrap())["preferredVersion"]["groupVersion"],
            "batch/v1"
        );
    }
}
