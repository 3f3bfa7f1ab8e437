//! Hand-written OpenAPI v3 components reproducing the shapes of the real Kubernetes definitions the tests
//! patch: `allOf: [{$ref}]` property wrappers carrying the `x-kubernetes-*` extensions, `items` wrappers,
//! `additionalProperties` maps, atomic maps and lists.

use serde_json::{Map, Value, json};

/// A property holding a pointer (optional) struct: no default.
fn r(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}]})
}

/// A property holding a non-pointer struct: Kubernetes' OpenAPI gives it `default: {}`.
fn rd(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}], "default": {}})
}

fn items(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}], "default": {}})
}

fn map_list(item: &str, keys: &[&str], merge_key: &str) -> Value {
    json!({
        "type": "array", "items": items(item),
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys,
        "x-kubernetes-patch-merge-key": merge_key, "x-kubernetes-patch-strategy": "merge",
    })
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}})
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

pub(crate) fn components() -> Map<String, Value> {
    let mut c = Map::new();
    let mut def = |name: &str, schema: Value| {
        c.insert(name.to_string(), schema);
    };
    def(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        json!({"type": "object", "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"}, "uid": {"type": "string"},
            "resourceVersion": {"type": "string"}, "generation": {"type": "integer"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "labels": string_map(), "annotations": string_map(),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""},
                "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"},
            "ownerReferences": map_list("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference", &["uid"], "uid"),
            "managedFields": {"type": "array", "x-kubernetes-list-type": "atomic",
                "items": items("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry")},
        }}),
    );
    def(
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
        json!({"type": "object", "x-kubernetes-map-type": "atomic", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
            "uid": {"type": "string"}, "controller": {"type": "boolean"}}}),
    );
    def(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry",
        json!({"type": "object", "properties": {"manager": {"type": "string"}, "fieldsV1": {"type": "object"}}}),
    );
    def(
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        json!({"type": "object", "x-kubernetes-map-type": "atomic", "properties": {
            "matchLabels": string_map(),
            "matchExpressions": {"type": "array", "x-kubernetes-list-type": "atomic",
                "items": items("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement")}}}),
    );
    def(
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement",
        json!({"type": "object", "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
            "values": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"}}}),
    );
    def(
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        json!({"format": "int-or-string"}),
    );
    def(
        "io.k8s.api.apps.v1.Deployment",
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": rd(META),
            "spec": rd("io.k8s.api.apps.v1.DeploymentSpec"), "status": rd("io.k8s.api.apps.v1.DeploymentStatus")}}),
    );
    def(
        "io.k8s.api.apps.v1.DeploymentSpec",
        json!({"type": "object", "required": ["selector", "template"], "properties": {
            "replicas": {"type": "integer", "format": "int32"},
            "minReadySeconds": {"type": "integer"}, "paused": {"type": "boolean"},
            "selector": r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
            "template": rd("io.k8s.api.core.v1.PodTemplateSpec"),
            "strategy": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}],
                "default": {}, "x-kubernetes-patch-strategy": "retainKeys"}}}),
    );
    def(
        "io.k8s.api.apps.v1.DeploymentStrategy",
        json!({"type": "object", "properties": {"type": {"type": "string"},
            "rollingUpdate": r("io.k8s.api.apps.v1.RollingUpdateDeployment")}}),
    );
    def(
        "io.k8s.api.apps.v1.RollingUpdateDeployment",
        json!({"type": "object", "properties": {
            "maxSurge": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString"),
            "maxUnavailable": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString")}}),
    );
    def(
        "io.k8s.api.apps.v1.DeploymentStatus",
        json!({"type": "object", "properties": {"replicas": {"type": "integer"},
            "conditions": map_list("io.k8s.api.apps.v1.DeploymentCondition", &["type"], "type")}}),
    );
    def(
        "io.k8s.api.apps.v1.DeploymentCondition",
        json!({"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}),
    );
    def(
        "io.k8s.api.core.v1.PodTemplateSpec",
        json!({"type": "object", "properties": {"metadata": rd(META), "spec": rd("io.k8s.api.core.v1.PodSpec")}}),
    );
    def(
        "io.k8s.api.core.v1.Pod",
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": rd(META),
            "spec": rd("io.k8s.api.core.v1.PodSpec"), "status": {"type": "object"}}}),
    );
    def(
        "io.k8s.api.core.v1.PodSpec",
        json!({"type": "object", "required": ["containers"], "properties": {
            "containers": map_list("io.k8s.api.core.v1.Container", &["name"], "name"),
            "initContainers": map_list("io.k8s.api.core.v1.Container", &["name"], "name"),
            "volumes": {"type": "array", "items": items("io.k8s.api.core.v1.Volume"),
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge,retainKeys"},
            "tolerations": {"type": "array", "items": items("io.k8s.api.core.v1.Toleration"),
                "x-kubernetes-list-type": "atomic"},
            "imagePullSecrets": map_list("io.k8s.api.core.v1.LocalObjectReference", &["name"], "name"),
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"},
                "x-kubernetes-map-type": "atomic"},
            "restartPolicy": {"type": "string"}, "nodeName": {"type": "string"},
            "terminationGracePeriodSeconds": {"type": "integer"}}}),
    );
    def(
        "io.k8s.api.core.v1.Container",
        json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "image": {"type": "string"}, "imagePullPolicy": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
            "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
            "env": map_list("io.k8s.api.core.v1.EnvVar", &["name"], "name"),
            "ports": {"type": "array", "items": items("io.k8s.api.core.v1.ContainerPort"),
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                "x-kubernetes-patch-merge-key": "containerPort", "x-kubernetes-patch-strategy": "merge"},
            "volumeMounts": map_list("io.k8s.api.core.v1.VolumeMount", &["mountPath"], "mountPath"),
            "resources": rd("io.k8s.api.core.v1.ResourceRequirements")}}),
    );
    def(
        "io.k8s.api.core.v1.EnvVar",
        json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
            "value": {"type": "string"}, "valueFrom": {"type": "object", "properties": {
                "fieldRef": {"type": "object", "x-kubernetes-map-type": "atomic",
                    "properties": {"fieldPath": {"type": "string"}}}}}}}),
    );
    def(
        "io.k8s.api.core.v1.ContainerPort",
        json!({"type": "object", "required": ["containerPort"], "properties": {
            "containerPort": {"type": "integer", "format": "int32"}, "name": {"type": "string"},
            "protocol": {"type": "string", "default": "TCP"}}}),
    );
    def(
        "io.k8s.api.core.v1.VolumeMount",
        json!({"type": "object", "properties": {"name": {"type": "string"}, "mountPath": {"type": "string"},
            "readOnly": {"type": "boolean"}}}),
    );
    def(
        "io.k8s.api.core.v1.ResourceRequirements",
        json!({"type": "object", "properties": {
            "limits": {"type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity")},
            "requests": {"type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity")}}}),
    );
    def(
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
        json!({"type": "string"}),
    );
    def(
        "io.k8s.api.core.v1.Volume",
        json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
            "emptyDir": {"type": "object", "properties": {"medium": {"type": "string"}, "sizeLimit": {"type": "string"}}},
            "hostPath": {"type": "object", "properties": {"path": {"type": "string"}, "type": {"type": "string"}}},
            "configMap": {"type": "object", "properties": {"name": {"type": "string"}}}}}),
    );
    def(
        "io.k8s.api.core.v1.Toleration",
        json!({"type": "object", "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
            "value": {"type": "string"}, "effect": {"type": "string"}}}),
    );
    def(
        "io.k8s.api.core.v1.LocalObjectReference",
        json!({"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"name": {"type": "string"}}}),
    );
    def(
        "io.k8s.api.core.v1.Service",
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": rd(META),
            "spec": rd("io.k8s.api.core.v1.ServiceSpec")}}),
    );
    def(
        "io.k8s.api.core.v1.ServiceSpec",
        json!({"type": "object", "properties": {
            "ports": {"type": "array", "items": items("io.k8s.api.core.v1.ServicePort"),
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                "x-kubernetes-patch-merge-key": "port", "x-kubernetes-patch-strategy": "merge"},
            "selector": {"type": "object", "additionalProperties": {"type": "string"},
                "x-kubernetes-map-type": "atomic"},
            "type": {"type": "string"}, "clusterIP": {"type": "string"}}}),
    );
    def(
        "io.k8s.api.core.v1.ServicePort",
        json!({"type": "object", "required": ["port"], "properties": {"name": {"type": "string"},
            "port": {"type": "integer"}, "targetPort": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString"),
            "protocol": {"type": "string", "default": "TCP"}, "nodePort": {"type": "integer"}}}),
    );
    c
}
