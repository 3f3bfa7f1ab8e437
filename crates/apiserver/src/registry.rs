//! The resource registry as data: one [`Kind`] row per served resource, saying how Kubernetes names it, what
//! may be done to it, and which strategy (defaulting, status/generation rules) its writes follow. Adding a
//! kind is one line in [`Registry::builtin`].

use std::any::TypeId;
use std::collections::HashMap;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, node, policy, rbac,
    scheduling, storage,
};
use serde_json::Value;

use crate::strategy::{self, Strategy};

/// The verbs every ordinary resource supports.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A subresource and the kind its requests and replies carry.
#[derive(Clone, Debug)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

const fn sub(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        group,
        version,
        kind,
        verbs,
    }
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CREATE: &[&str] = &["create"];
const CREATE_GET: &[&str] = &["create", "get"];

/// A kind stored as another resource's objects (events.k8s.io/v1 Events are core/v1 Events, as in
/// Kubernetes): converted on the way into and out of the store.
#[derive(Clone, Copy)]
pub struct Conversion {
    /// The group-resource whose keys hold the objects: `events`.
    pub storage: &'static str,
    pub to_storage: fn(&Value) -> Value,
    pub from_storage: fn(&Value) -> Value,
}

/// One served resource.
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource (URL) name: `pods`.
    pub plural: &'static str,
    pub singular: String,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub subresources: Vec<Subresource>,
    /// Decodes a JSON object into the kind's k8s-openapi type and back: checks its shape (the error names
    /// the path) and drops fields the type does not have, as kube-apiserver's typed decoding does.
    pub decode: fn(&Value) -> Result<Value, String>,
    /// The type's JSON schema (k8s-openapi's `schemars` impl), for the OpenAPI documents.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    pub strategy: Strategy,
    pub conversion: Option<Conversion>,
}

impl Kind {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as messages name it: `pods`, `deployments.apps`.
    pub fn group_resource(&self) -> crate::status::GroupResource {
        crate::status::GroupResource::new(self.group, self.plural)
    }

    /// The group-resource whose store keys and watch cache hold this kind's objects.
    pub fn storage_resource(&self) -> String {
        match &self.conversion {
            Some(c) => c.storage.to_string(),
            None => self.group_resource().to_string(),
        }
    }

    /// The store key prefix of every object of this kind: `/registry/deployments.apps/`.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage_resource())
    }

    /// An object as this kind shows it, from its stored form.
    pub fn from_storage(&self, stored: Value) -> Value {
        match &self.conversion {
            Some(c) => (c.from_storage)(&stored),
            None => stored,
        }
    }

    /// An object as it is stored, from this kind's form.
    pub fn to_storage<'a>(&self, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
        match &self.conversion {
            Some(c) => std::borrow::Cow::Owned((c.to_storage)(obj)),
            None => std::borrow::Cow::Borrowed(obj),
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

fn decode_as<T: k8s_openapi::Resource + serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        go_style_error(T::KIND, &path, &e.inner().to_string())
    })?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// A serde shape error as kube-apiserver's JSON decoder words it, so that users see the familiar
/// `json: cannot unmarshal string into Go struct field Pod.spec.containers of type array`.
fn go_style_error(kind: &str, path: &str, serde_message: &str) -> String {
    let json_type = |serde_type: &str| -> &'static str {
        let t = serde_type.trim();
        let numeric = |t: &str| t.len() > 1 && t[1..].chars().all(|c| c.is_ascii_digit());
        if t.starts_with("string") || t.starts_with("char") {
            "string"
        } else if t.starts_with("null") || t.starts_with("unit") {
            "null"
        } else if t.starts_with("integer") || t.starts_with("floating") || numeric(t) {
            "number"
        } else if t.starts_with("boolean") {
            "bool"
        } else if t.starts_with("map") || t.starts_with("struct") || t.contains("object") {
            "object"
        } else if t.starts_with("sequence") || t.starts_with("seq") {
            "array"
        } else {
            "value"
        }
    };
    if let Some(rest) = serde_message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let expected = expected.trim_start_matches("a ").trim_start_matches("an ");
        let field = if path.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{path}")
        };
        return format!(
            "json: cannot unmarshal {} into Go struct field {field} of type {}",
            json_type(got),
            json_type(expected).replace("value", expected)
        );
    }
    if path.is_empty() {
        serde_message.to_string()
    } else {
        format!("{path}: {serde_message}")
    }
}

fn kind<T>(
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: Vec<Subresource>,
    strategy: Strategy,
) -> Kind
where
    T: k8s_openapi::Resource
        + serde::de::DeserializeOwned
        + serde::Serialize
        + schemars::JsonSchema
        + 'static,
{
    Kind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        singular: T::KIND.to_lowercase(),
        short_names,
        categories,
        namespaced: TypeId::of::<T::Scope>() == TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
        verbs: ALL_VERBS,
        subresources,
        decode: decode_as::<T>,
        schema: T::json_schema,
        strategy,
        conversion: None,
    }
}

/// Every served kind, looked up by (group, version, plural).
pub struct Registry {
    kinds: Vec<Kind>,
    by_resource: HashMap<(String, String, String), usize>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let status = || sub("status", "", "", "", GET_PATCH_UPDATE);
        let scale = || sub("scale", "autoscaling", "v1", "Scale", GET_PATCH_UPDATE);
        let s = strategy::for_kind;
        let all: &'static [&'static str] = &["all"];
        let kinds = vec![
            kind::<core::v1::Namespace>(
                &["ns"],
                &[],
                vec![status(), sub("finalize", "", "", "", &["update"])],
                s("Namespace"),
            ),
            kind::<core::v1::Pod>(
                &["po"],
                all,
                vec![
                    status(),
                    sub("binding", "", "v1", "Binding", CREATE),
                    sub("eviction", "policy", "v1", "Eviction", CREATE),
                    sub("log", "", "v1", "Pod", &["get"]),
                    sub("exec", "", "v1", "PodExecOptions", CREATE_GET),
                    sub("attach", "", "v1", "PodAttachOptions", CREATE_GET),
                    sub("portforward", "", "v1", "PodPortForwardOptions", CREATE_GET),
                ],
                s("Pod"),
            ),
            kind::<core::v1::Service>(&["svc"], all, vec![status()], s("Service")),
            kind::<core::v1::Endpoints>(&["ep"], &[], vec![], s("Endpoints")),
            kind::<core::v1::Node>(&["no"], &[], vec![status()], s("Node")),
            kind::<core::v1::Event>(&["ev"], &[], vec![], s("Event")),
            kind::<core::v1::ConfigMap>(&["cm"], &[], vec![], s("ConfigMap")),
            kind::<core::v1::Secret>(&[], &[], vec![], s("Secret")),
            kind::<core::v1::ServiceAccount>(
                &["sa"],
                &[],
                vec![sub(
                    "token",
                    "authentication.k8s.io",
                    "v1",
                    "TokenRequest",
                    CREATE,
                )],
                s("ServiceAccount"),
            ),
            kind::<apps::v1::Deployment>(&["deploy"], all, vec![status(), scale()], s("Deployment")),
            kind::<apps::v1::ReplicaSet>(&["rs"], all, vec![status(), scale()], s("ReplicaSet")),
            kind::<apps::v1::DaemonSet>(&["ds"], all, vec![status()], s("DaemonSet")),
            kind::<apps::v1::StatefulSet>(&["sts"], all, vec![status(), scale()], s("StatefulSet")),
            kind::<batch::v1::Job>(&[], all, vec![status()], s("Job")),
            kind::<discovery::v1::EndpointSlice>(&[], &[], vec![], s("EndpointSlice")),
            kind::<coordination::v1::Lease>(&[], &[], vec![], s("Lease")),
            Kind {
                conversion: Some(Conversion {
                    storage: "events",
                    to_storage: crate::events::to_core,
                    from_storage: crate::events::from_core,
                }),
                ..kind::<events::v1::Event>(&["ev"], &[], vec![], s("Event"))
            },
            kind::<rbac::v1::Role>(&[], &[], vec![], s("Role")),
            kind::<core::v1::PersistentVolumeClaim>(
                &["pvc"],
                &[],
                vec![status()],
                s("PersistentVolumeClaim"),
            ),
            kind::<core::v1::PersistentVolume>(&["pv"], &[], vec![status()], s("PersistentVolume")),
            kind::<core::v1::ResourceQuota>(&["quota"], &[], vec![status()], s("ResourceQuota")),
            kind::<core::v1::LimitRange>(&["limits"], &[], vec![], s("LimitRange")),
            kind::<core::v1::ReplicationController>(
                &["rc"],
                all,
                vec![status(), scale()],
                s("ReplicationController"),
            ),
            kind::<core::v1::PodTemplate>(&[], &[], vec![], s("PodTemplate")),
            kind::<apps::v1::ControllerRevision>(&[], &[], vec![], s("ControllerRevision")),
            kind::<batch::v1::CronJob>(&["cj"], all, vec![status()], s("CronJob")),
            kind::<autoscaling::v2::HorizontalPodAutoscaler>(
                &["hpa"],
                all,
                vec![status()],
                s("HorizontalPodAutoscaler"),
            ),
            kind::<policy::v1::PodDisruptionBudget>(&["pdb"], &[], vec![status()], s("PodDisruptionBudget")),
            kind::<networking::v1::Ingress>(&["ing"], &[], vec![status()], s("Ingress")),
            kind::<networking::v1::IngressClass>(&[], &[], vec![], s("IngressClass")),
            kind::<networking::v1::NetworkPolicy>(&["netpol"], &[], vec![], s("NetworkPolicy")),
            kind::<scheduling::v1::PriorityClass>(&["pc"], &[], vec![], s("PriorityClass")),
            kind::<storage::v1::StorageClass>(&["sc"], &[], vec![], s("StorageClass")),
            kind::<storage::v1::CSIDriver>(&[], &[], vec![], s("CSIDriver")),
            kind::<storage::v1::CSINode>(&[], &[], vec![], s("CSINode")),
            kind::<storage::v1::VolumeAttachment>(&[], &[], vec![status()], s("VolumeAttachment")),
            kind::<node::v1::RuntimeClass>(&[], &[], vec![], s("RuntimeClass")),
            kind::<rbac::v1::RoleBinding>(&[], &[], vec![], s("RoleBinding")),
            kind::<rbac::v1::ClusterRole>(&[], &[], vec![], s("ClusterRole")),
            kind::<rbac::v1::ClusterRoleBinding>(&[], &[], vec![], s("ClusterRoleBinding")),
        ];
        Registry::new(kinds)
    }

    pub fn new(mut kinds: Vec<Kind>) -> Registry {
        for k in &mut kinds {
            // A subresource declared with an empty kind answers with its parent's kind (status, finalize).
            for s in &mut k.subresources {
                if s.kind.is_empty() {
                    s.group = k.group;
                    s.version = k.version;
                    s.kind = k.kind;
                }
            }
        }
        let by_resource = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    (k.group.to_string(), k.version.to_string(), k.plural.to_string()),
                    i,
                )
            })
            .collect();
        Registry { kinds, by_resource }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Kind> {
        self.by_resource
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|&i| &self.kinds[i])
    }

    /// The position of a kind of this registry, for handing it to other threads by index.
    pub fn index_of(&self, kind: &Kind) -> usize {
        self.kinds
            .iter()
            .position(|k| std::ptr::eq(k, kind))
            .expect("kinds come from this registry")
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Served group names in discovery order: the core group ("") first, then by first appearance.
    pub fn groups(&self) -> Vec<&'static str> {
        let mut groups: Vec<&'static str> = Vec::new();
        for k in &self.kinds {
            if !groups.contains(&k.group) {
                groups.push(k.group);
            }
        }
        groups
    }

    /// The versions served for a group, preferred first.
    pub fn versions(&self, group: &str) -> Vec<&'static str> {
        let mut versions: Vec<&'static str> = Vec::new();
        for k in self.kinds.iter().filter(|k| k.group == group) {
            if !versions.contains(&k.version) {
                versions.push(k.version);
            }
        }
        versions
    }

    /// What rkube-openapi needs to generate the OpenAPI documents.
    pub fn kind_schemas(&self) -> Vec<rkube_openapi::KindSchema> {
        self.kinds
            .iter()
            .map(|k| {
                // The schema list wants 'static names; the registry lives for the whole process.
                let subresources: Vec<&'static str> = k.subresources.iter().map(|s| s.name).collect();
                rkube_openapi::KindSchema {
                    group: k.group,
                    version: k.version,
                    kind: k.kind,
                    plural: k.plural,
                    namespaced: k.namespaced,
                    verbs: k.verbs,
                    subresources: Box::leak(subresources.into_boxed_slice()),
                    schema: k.schema,
                }
            })
            .collect()
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Kind> {
        self.kinds
            .iter()
            .filter(move |k| k.group == group && k.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_are_named_like_kubernetes() {
        let r = Registry::builtin();
        assert_eq!(
            r.get("events.k8s.io", "v1", "events").unwrap().key_prefix(),
            "/registry/events/"
        );
        let deploy = r.get("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.kind, "Deployment");
        assert_eq!(deploy.singular, "deployment");
        assert!(deploy.namespaced);
        assert_eq!(deploy.short_names, &["deploy"]);
        assert_eq!(deploy.subresource("scale").unwrap().group, "autoscaling");
        assert_eq!(deploy.subresource("status").unwrap().kind, "Deployment");
        assert_eq!(deploy.key_prefix(), "/registry/deployments.apps/");
        let node = r.get("", "v1", "nodes").unwrap();
        assert!(!node.namespaced);
        assert_eq!(node.key_prefix(), "/registry/nodes/");
        assert!(r.get("", "v1", "deployments").is_none());
        assert_eq!(r.groups()[0], "");
    }

    #[test]
    fn decode_reports_the_path_of_a_shape_error() {
        let r = Registry::builtin();
        let pod = r.get("", "v1", "pods").unwrap();
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "c", "image": 5}]}});
        let err = (pod.decode)(&bad).unwrap_err();
        assert_eq!(
            err,
            "json: cannot unmarshal number into Go struct field Pod.spec.containers[0].image of type string"
        );
        let list = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": "nope"}});
        assert_eq!(
            (pod.decode)(&list).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Pod.spec.containers of type array"
        );
        let good = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        assert!((pod.decode)(&good).is_ok());
    }
}
