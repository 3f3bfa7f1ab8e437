//! Value validation of API objects, reporting what Kubernetes' validation reports, in its words.
//!
//! By the time [`validate`] runs, the object has been decoded into its k8s-openapi type (so shapes are right)
//! and defaulted; this module checks *values*: names, labels, annotations, the per-kind spec rules, and
//! which fields an update may not change. Each finding is a [`FieldError`] whose `message` is exactly what
//! kube-apiserver puts in a `Status` cause (`Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain …`);
//! the core turns the list into one 422 `Invalid` Status. Start at [`validate`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

/// One thing wrong with one field, as a `metav1.StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueForbidden`, `FieldValueTooLong` or `FieldValueNotFound`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].name`.
    pub field: String,
    /// What Kubernetes prints after the path, e.g. `Required value` or
    /// `Invalid value: 70000: must be between 1 and 65535, inclusive`.
    pub message: String,
}

impl fmt::Display for FieldError {
    /// `field: message`, the form a Status message joins with `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every value error in `obj` (a `kind` of API `group`), and, when `old` is the stored object of an update,
/// every change to a field Kubernetes does not let an update change. Empty = valid.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.object_meta(group, kind, obj);
    if let Some(old) = old {
        v.object_meta_update(obj, old);
    }
    match (group, kind) {
        ("", "Pod") => {
            v.pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", PodContext::Pod);
            if let Some(old) = old {
                v.pod_update(obj, old);
            }
        }
        ("", "PodTemplate") => v.pod_template(obj.get("template"), "template", PodContext::Pod),
        ("", "Service") => v.service(obj, old),
        ("", "ConfigMap") => v.config_map(obj, old),
        ("", "Secret") => v.secret(obj, old),
        ("", "Node") => v.node(obj),
        ("", "Endpoints") => v.endpoints(obj),
        ("", "ReplicationController") => v.replication_controller(obj),
        ("apps", "Deployment") => v.workload(obj, old, Workload::Deployment),
        ("apps", "ReplicaSet") => v.workload(obj, old, Workload::ReplicaSet),
        ("apps", "DaemonSet") => v.workload(obj, old, Workload::DaemonSet),
        ("apps", "StatefulSet") => v.workload(obj, old, Workload::StatefulSet),
        ("batch", "Job") => v.job(obj, old),
        ("batch", "CronJob") => v.cron_job(obj),
        ("discovery.k8s.io", "EndpointSlice") => v.endpoint_slice(obj),
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => v.role(obj),
        ("policy", "PodDisruptionBudget") => v.pod_disruption_budget(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => v.horizontal_pod_autoscaler(obj),
        ("scheduling.k8s.io", "PriorityClass") => v.priority_class(obj, old),
        ("coordination.k8s.io", "Lease") => {
            for key in ["leaseDurationSeconds", "leaseTransitions"] {
                v.non_negative(&format!("spec.{key}"), obj.pointer(&format!("/spec/{key}")));
            }
        }
        ("networking.k8s.io", "Ingress") => v.ingress(obj),
        ("networking.k8s.io", "NetworkPolicy") => v.network_policy(obj),
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            v.role_binding(obj, old, kind == "ClusterRoleBinding")
        }
        _ => {}
    }
    v.errors
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const CONFIG_DATA_LIMIT: usize = 1024 * 1024;
const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
     or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
     for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex \
     used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', \
     start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or \
     'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
     validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
     '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  \
     or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
     (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE: &str = "field is immutable";
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

/// How a name is checked, per kind (Kubernetes' `ValidateNameFunc`s).
#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// Kinds without a namespace; `metadata.namespace` is forbidden on them.
fn cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace")
            | ("", "Node")
            | ("", "PersistentVolume")
            | ("", "ComponentStatus")
            | ("rbac.authorization.k8s.io", "ClusterRole")
            | ("rbac.authorization.k8s.io", "ClusterRoleBinding")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("storage.k8s.io", "StorageClass")
            | ("storage.k8s.io", "CSIDriver")
            | ("storage.k8s.io", "CSINode")
            | ("storage.k8s.io", "VolumeAttachment")
            | ("node.k8s.io", "RuntimeClass")
            | ("apiregistration.k8s.io", "APIService")
            | ("admissionregistration.k8s.io", _)
            | ("certificates.k8s.io", "CertificateSigningRequest")
            | ("flowcontrol.apiserver.k8s.io", _)
            | ("networking.k8s.io", "IngressClass")
            | ("networking.k8s.io", "IPAddress")
            | ("networking.k8s.io", "ServiceCIDR")
    )
}

fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    // A generateName prefix may end in '-' (the random suffix follows it).
    let name = if prefix {
        name.strip_suffix('-')
            .map(|n| format!("{n}a"))
            .unwrap_or(name.to_string())
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => dns1123_subdomain(&name),
        NameRule::Label => dns1123_label(&name),
        NameRule::Dns1035 => dns1035_label(&name),
        NameRule::PathSegment => path_segment(&name),
    }
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// `IsDNS1123Label`.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !is_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(is_label) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// `IsDNS1035Label`.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !is_label(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

/// `ValidatePathSegmentName`: anything that can be one URL path segment.
fn path_segment(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

fn is_qualified_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.chars().all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// `IsQualifiedName`: `[prefix/]name`, the shape of label and annotation keys.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => {
            if name.contains('/') {
                return vec![format!(
                    "a qualified name {} (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation \
                     is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and \
                     '/' (e.g. 'example.com/MyName')",
                    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                     alphanumeric character"
                )];
            }
            (Some(prefix), name)
        }
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !is_qualified_part(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// `IsValidPortName`: an IANA_SVC_NAME.
fn port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !s.chars().all(|c| is_alnum_lower(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    } else if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

fn config_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

const QUANTITY_MSG: &str = "quantities must match the regular expression \
     '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A Kubernetes resource quantity (`500m`, `1.5Gi`, `2e3`, `128974848`) in base units; `None` when it
/// does not parse.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let number_end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(value * multiplier)
}

/// A value as Go's `%v`/`%q`/`%#v` would show it in an error (strings quoted, numbers bare, maps as
/// `map[string]string{…}`).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(m) if m.values().all(Value::is_string) => string_map(Some(v)),
        other => other.to_string(),
    }
}

fn string_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let sorted: BTreeMap<&String, &str> = m
                .iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
                .collect();
            let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
    }
}

/// A `metav1.LabelSelector` as Go's `%#v` prints it, which is what selector errors show.
fn show_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return "null".to_string();
    };
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|v| format!("{:?}", v.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        e.get("key").and_then(Value::as_str).unwrap_or_default(),
                        e.get("operator").and_then(Value::as_str).unwrap_or_default()
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        string_map(sel.get("matchLabels"))
    )
}

/// Whether a `metav1.LabelSelector` selects a set of labels (an empty selector selects everything).
fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object)
        && !ml.iter().all(|(k, v)| get(k) == v.as_str())
    {
        return false;
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_is_empty(sel: &Value) -> bool {
    let empty = |k: &str| match sel.get(k) {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => true,
    };
    empty("matchLabels") && empty("matchExpressions")
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Where a pod spec sits, which changes a few rules (a Deployment's pods must restart Always …).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PodContext {
    Pod,
    Template {
        restart_policies: &'static [&'static str],
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn push(&mut self, reason: &'static str, field: impl Into<String>, message: String) {
        self.errors.push(FieldError {
            reason,
            field: field.into(),
            message,
        });
    }

    fn required(&mut self, field: impl Into<String>, detail: &str) {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        self.push("FieldValueRequired", field, message);
    }

    fn invalid(&mut self, field: impl Into<String>, value: &Value, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {detail}", show(value)),
        );
    }

    fn invalid_shown(&mut self, field: impl Into<String>, shown: &str, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {shown}: {detail}"),
        );
    }

    fn not_supported(&mut self, field: impl Into<String>, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        );
    }

    fn duplicate(&mut self, field: impl Into<String>, value: &Value) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", show(value)),
        );
    }

    fn forbidden(&mut self, field: impl Into<String>, detail: &str) {
        self.push("FieldValueForbidden", field, format!("Forbidden: {detail}"));
    }

    fn too_long(&mut self, field: impl Into<String>, max: usize) {
        self.push(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        );
    }

    fn not_found(&mut self, field: impl Into<String>, value: &str) {
        self.push("FieldValueNotFound", field, format!("Not found: {value:?}"));
    }

    fn check(&mut self, field: &str, value: &str, messages: Vec<String>) {
        for m in messages {
            self.invalid(field, &Value::String(value.to_string()), &m);
        }
    }

    fn one_of(&mut self, field: &str, value: Option<&Value>, supported: &[&str]) {
        if let Some(s) = value.and_then(Value::as_str)
            && !supported.contains(&s)
        {
            self.not_supported(field, s, supported);
        }
    }

    fn non_negative(&mut self, field: &str, value: Option<&Value>) {
        if let Some(n) = value.and_then(Value::as_i64)
            && n < 0
        {
            self.invalid(field, &Value::from(n), "must be greater than or equal to 0");
        }
    }

    fn port_number(&mut self, field: &str, value: i64) {
        if !(1..=65535).contains(&value) {
            self.invalid(field, &Value::from(value), PORT_RANGE_MSG);
        }
    }

    // ---- metadata -------------------------------------------------------------------------------------

    fn object_meta(&mut self, group: &str, kind: &str, obj: &Value) {
        let empty = Value::Null;
        let meta = obj.get("metadata").unwrap_or(&empty);
        let rule = name_rule(group, kind);
        let name = str_at(meta, "name");
        let generate_name = str_at(meta, "generateName");
        if !generate_name.is_empty() {
            self.check(
                "metadata.generateName",
                generate_name,
                name_errors(rule, generate_name, true),
            );
        }
        if name.is_empty() {
            if generate_name.is_empty() {
                self.required("metadata.name", "name or generateName is required");
            }
        } else {
            self.check("metadata.name", name, name_errors(rule, name, false));
        }
        let namespace = str_at(meta, "namespace");
        if cluster_scoped(group, kind) {
            if !namespace.is_empty() {
                self.forbidden("metadata.namespace", "not allowed on this type");
            }
        } else if !namespace.is_empty() {
            self.check("metadata.namespace", namespace, dns1123_label(namespace));
        }
        self.labels("metadata.labels", meta.get("labels"));
        self.annotations("metadata.annotations", meta.get("annotations"));
        self.owner_references(meta);
        for (i, f) in arr(meta, "finalizers").iter().enumerate() {
            let f = f.as_str().unwrap_or_default();
            self.check(&format!("metadata.finalizers[{i}]"), f, qualified_name(f));
        }
    }

    fn labels(&mut self, field: &str, labels: Option<&Value>) {
        let Some(labels) = labels.and_then(Value::as_object) else {
            return;
        };
        for (k, v) in labels {
            self.check(field, k, qualified_name(k));
            let v = v.as_str().unwrap_or_default();
            self.check(field, v, label_value(v));
        }
    }

    fn annotations(&mut self, field: &str, annotations: Option<&Value>) {
        let Some(annotations) = annotations.and_then(Value::as_object) else {
            return;
        };
        let mut total = 0;
        for (k, v) in annotations {
            self.check(field, k, qualified_name(&k.to_lowercase()));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            self.too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT);
        }
    }

    fn owner_references(&mut self, meta: &Value) {
        let refs = arr(meta, "ownerReferences");
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            let path = format!("metadata.ownerReferences[{i}]");
            for key in ["apiVersion", "kind", "name", "uid"] {
                if str_at(r, key).is_empty() {
                    let field = if key == "apiVersion" {
                        format!("{path}.apiVersion")
                    } else {
                        format!("{path}.{key}")
                    };
                    self.invalid(
                        field,
                        &Value::String(String::new()),
                        &format!("{key} must not be empty"),
                    );
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            self.invalid_shown(
                "metadata.ownerReferences",
                &format!("{} references", refs.len()),
                "Only one reference can have Controller set to true",
            );
        }
    }

    fn object_meta_update(&mut self, obj: &Value, old: &Value) {
        let new_meta = obj.get("metadata");
        let old_meta = old.get("metadata");
        for key in ["name", "namespace", "uid"] {
            let new = new_meta.and_then(|m| m.get(key));
            let old = old_meta.and_then(|m| m.get(key));
            // An update that leaves uid out keeps the stored one (the core copies it); only a different
            // value is a change.
            if key == "uid" && new.and_then(Value::as_str).is_none_or(str::is_empty) {
                continue;
            }
            if new.and_then(Value::as_str).unwrap_or_default()
                != old.and_then(Value::as_str).unwrap_or_default()
            {
                self.invalid(
                    format!("metadata.{key}"),
                    new.unwrap_or(&Value::String(String::new())),
                    IMMUTABLE,
                );
            }
        }
    }

    fn label_selector(&mut self, field: &str, sel: &Value) {
        self.labels(&format!("{field}.matchLabels"), sel.get("matchLabels"));
        for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
            let path = format!("{field}.matchExpressions[{i}]");
            let key = str_at(e, "key");
            self.check(&format!("{path}.key"), key, qualified_name(key));
            let has_values = !arr(e, "values").is_empty();
            match str_at(e, "operator") {
                "In" | "NotIn" if !has_values => self.required(
                    format!("{path}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ),
                "Exists" | "DoesNotExist" if has_values => self.forbidden(
                    format!("{path}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                op => self.invalid(
                    format!("{path}.operator"),
                    &Value::String(op.to_string()),
                    "not a valid selector operator",
                ),
            }
        }
    }

    // ---- pods -----------------------------------------------------------------------------------------

    fn pod_template(&mut self, template: Option<&Value>, field: &str, ctx: PodContext) {
        let Some(template) = template.filter(|t| t.is_object()) else {
            self.required(field, "");
            return;
        };
        if let Some(meta) = template.get("metadata") {
            self.labels(&format!("{field}.metadata.labels"), meta.get("labels"));
            self.annotations(&format!("{field}.metadata.annotations"), meta.get("annotations"));
        }
        self.pod_spec(
            template.get("spec").unwrap_or(&Value::Null),
            &format!("{field}.spec"),
            ctx,
        );
    }

    fn pod_spec(&mut self, spec: &Value, field: &str, ctx: PodContext) {
        // Volumes first: mounts refer to them.
        let mut volumes = HashSet::new();
        for (i, vol) in arr(spec, "volumes").iter().enumerate() {
            let path = format!("{field}.volumes[{i}].name");
            let name = str_at(vol, "name");
            if name.is_empty() {
                self.required(path, "");
            } else {
                self.check(&path, name, dns1123_label(name));
                if !volumes.insert(name.to_string()) {
                    self.duplicate(path, &Value::String(name.to_string()));
                }
            }
        }

        let containers = arr(spec, "containers");
        if containers.is_empty() {
            self.required(format!("{field}.containers"), "");
        }
        let mut names = HashSet::new();
        for (list, key) in [
            (arr(spec, "initContainers"), "initContainers"),
            (containers, "containers"),
        ] {
            for (i, c) in list.iter().enumerate() {
                self.container(
                    c,
                    &format!("{field}.{key}[{i}]"),
                    &mut names,
                    &volumes,
                    key == "initContainers",
                );
            }
        }

        let restart_policies: &[&str] = match ctx {
            PodContext::Pod => &["Always", "OnFailure", "Never"],
            PodContext::Template { restart_policies } => restart_policies,
        };
        if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
            && !restart_policies.contains(&rp)
        {
            self.not_supported(format!("{field}.restartPolicy"), rp, restart_policies);
        }
        self.one_of(
            &format!("{field}.dnsPolicy"),
            spec.get("dnsPolicy"),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        );
        self.non_negative(
            &format!("{field}.terminationGracePeriodSeconds"),
            spec.get("terminationGracePeriodSeconds"),
        );
        if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
            && n <= 0
        {
            self.invalid(
                format!("{field}.activeDeadlineSeconds"),
                &Value::from(n),
                "must be greater than or equal to 1",
            );
        }
        for key in ["hostname", "subdomain"] {
            if let Some(v) = spec.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                self.check(&format!("{field}.{key}"), v, dns1123_label(v));
            }
        }
        self.labels(&format!("{field}.nodeSelector"), spec.get("nodeSelector"));
        for (i, t) in arr(spec, "tolerations").iter().enumerate() {
            let path = format!("{field}.tolerations[{i}]");
            self.one_of(
                &format!("{path}.operator"),
                t.get("operator"),
                &["Equal", "Exists"],
            );
            if let Some(effect) = t.get("effect").and_then(Value::as_str).filter(|e| !e.is_empty()) {
                let supported = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
                if !supported.contains(&effect) {
                    self.not_supported(format!("{path}.effect"), effect, &supported);
                }
            }
            if str_at(t, "operator") == "Exists" && !str_at(t, "value").is_empty() {
                self.invalid(
                    format!("{path}.operator"),
                    &Value::String("Exists".into()),
                    "value must be empty when `operator` is 'Exists'",
                );
            }
        }
    }

    fn container(
        &mut self,
        c: &Value,
        path: &str,
        names: &mut HashSet<String>,
        volumes: &HashSet<String>,
        init: bool,
    ) {
        let name = str_at(c, "name");
        if name.is_empty() {
            self.required(format!("{path}.name"), "");
        } else {
            self.check(&format!("{path}.name"), name, dns1123_label(name));
            if !names.insert(name.to_string()) {
                self.duplicate(format!("{path}.name"), &Value::String(name.to_string()));
            }
        }
        if str_at(c, "image").trim().is_empty() {
            self.required(format!("{path}.image"), "");
        }
        self.one_of(
            &format!("{path}.imagePullPolicy"),
            c.get("imagePullPolicy"),
            &["Always", "IfNotPresent", "Never"],
        );
        if init {
            self.one_of(
                &format!("{path}.restartPolicy"),
                c.get("restartPolicy"),
                &["Always"],
            );
        } else if c.get("restartPolicy").is_some_and(|v| !v.is_null()) {
            self.forbidden(
                format!("{path}.restartPolicy"),
                "may not be set for non-init containers",
            );
        }
        let mut port_names = HashSet::new();
        for (i, p) in arr(c, "ports").iter().enumerate() {
            let pp = format!("{path}.ports[{i}]");
            match p.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
                0 => self.required(format!("{pp}.containerPort"), ""),
                n => self.port_number(&format!("{pp}.containerPort"), n),
            }
            if let Some(n) = p.get("hostPort").and_then(Value::as_i64).filter(|n| *n != 0) {
                self.port_number(&format!("{pp}.hostPort"), n);
            }
            let pname = str_at(p, "name");
            if !pname.is_empty() {
                self.check(&format!("{pp}.name"), pname, port_name(pname));
                if !port_names.insert(pname.to_string()) {
                    self.duplicate(format!("{pp}.name"), &Value::String(pname.to_string()));
                }
            }
            self.one_of(
                &format!("{pp}.protocol"),
                p.get("protocol"),
                &["SCTP", "TCP", "UDP"],
            );
        }
        self.resources(c.get("resources"), &format!("{path}.resources"));
        for (i, e) in arr(c, "env").iter().enumerate() {
            if str_at(e, "name").is_empty() {
                self.required(format!("{path}.env[{i}].name"), "");
            }
        }
        for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
            let mp = format!("{path}.volumeMounts[{i}]");
            let vname = str_at(m, "name");
            if vname.is_empty() {
                self.required(format!("{mp}.name"), "");
            } else if !volumes.contains(vname) {
                self.not_found(format!("{mp}.name"), vname);
            }
            if str_at(m, "mountPath").is_empty() {
                self.required(format!("{mp}.mountPath"), "");
            }
        }
    }

    /// Quantities parse, are not negative, and no request exceeds its limit.
    fn resources(&mut self, resources: Option<&Value>, field: &str) {
        let Some(resources) = resources else { return };
        let mut parsed: [BTreeMap<String, (String, f64)>; 2] = Default::default();
        for (i, part) in ["limits", "requests"].iter().enumerate() {
            for (name, q) in resources
                .get(*part)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let path = format!("{field}.{part}[{name}]");
                let text = match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match parse_quantity(&text) {
                    None => self.invalid(path, &Value::String(text.clone()), QUANTITY_MSG),
                    Some(v) if v < 0.0 => self.invalid(
                        path,
                        &Value::String(text.clone()),
                        "must be greater than or equal to 0",
                    ),
                    Some(v) => {
                        parsed[i].insert(name.clone(), (text, v));
                    }
                }
            }
        }
        let [limits, requests] = parsed;
        for (name, (text, request)) in &requests {
            if let Some((limit_text, limit)) = limits.get(name)
                && request > limit
            {
                self.invalid(
                    format!("{field}.requests"),
                    &Value::String(text.clone()),
                    &format!("must be less than or equal to {name} limit of {limit_text}"),
                );
            }
        }
    }

    /// `ValidatePodUpdate`: a pod's spec is fixed once created, except images, deadlines, added tolerations
    /// and the grace period.
    fn pod_update(&mut self, obj: &Value, old: &Value) {
        let (Some(new_spec), Some(old_spec)) = (obj.get("spec"), old.get("spec")) else {
            return;
        };
        let mut a = new_spec.clone();
        let mut b = old_spec.clone();
        for spec in [&mut a, &mut b] {
            if let Some(m) = spec.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                m.remove("terminationGracePeriodSeconds");
                for key in ["containers", "initContainers"] {
                    if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                        for c in list.iter_mut().filter_map(Value::as_object_mut) {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        // Binding sets spec.nodeName once: a change from unset is the scheduler's, not the user's.
        if str_at(old_spec, "nodeName").is_empty() {
            for spec in [&mut a, &mut b] {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("nodeName");
                }
            }
        }
        if a != b {
            self.forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,\
                 `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions \
                 to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it \
                 was previously negative)",
            );
        }
    }

    // ---- workloads ------------------------------------------------------------------------------------

    fn selector_and_template(&mut self, spec: &Value, what: &str, restart_policies: &'static [&'static str]) {
        match spec.get("selector").filter(|s| !s.is_null()) {
            None => self.required("spec.selector", ""),
            Some(sel) => {
                self.label_selector("spec.selector", sel);
                if selector_is_empty(sel) {
                    self.invalid_shown(
                        "spec.selector",
                        &show_selector(Some(sel)),
                        &format!("empty selector is invalid for {what}"),
                    );
                } else if let Some(template) = spec.get("template") {
                    let labels = template.pointer("/metadata/labels");
                    if !selector_matches(sel, labels.and_then(Value::as_object)) {
                        self.invalid_shown(
                            "spec.template.metadata.labels",
                            &string_map(labels),
                            "`selector` does not match template `labels`",
                        );
                    }
                }
            }
        }
        self.pod_template(
            spec.get("template"),
            "spec.template",
            PodContext::Template { restart_policies },
        );
    }

    fn workload(&mut self, obj: &Value, old: Option<&Value>, workload: Workload) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        let what = match workload {
            Workload::Deployment | Workload::ReplicaSet => "deployment",
            Workload::DaemonSet => "daemonset",
            Workload::StatefulSet => "statefulset",
        };
        self.selector_and_template(spec, what, &["Always"]);
        if workload != Workload::DaemonSet {
            self.non_negative("spec.replicas", spec.get("replicas"));
        }
        self.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"));
        self.non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"));
        match workload {
            Workload::Deployment => self.deployment_strategy(spec),
            Workload::StatefulSet => {
                self.one_of(
                    "spec.podManagementPolicy",
                    spec.get("podManagementPolicy"),
                    &["OrderedReady", "Parallel"],
                );
                self.one_of(
                    "spec.updateStrategy.type",
                    spec.pointer("/updateStrategy/type"),
                    &["OnDelete", "RollingUpdate"],
                );
            }
            Workload::DaemonSet => {
                self.one_of(
                    "spec.updateStrategy.type",
                    spec.pointer("/updateStrategy/type"),
                    &["OnDelete", "RollingUpdate"],
                );
            }
            Workload::ReplicaSet => {}
        }
        let Some(old) = old else { return };
        let old_spec = old.get("spec").unwrap_or(&empty);
        // apps/v1 made every workload's selector immutable.
        if spec.get("selector") != old_spec.get("selector") {
            self.invalid_shown("spec.selector", &show_selector(spec.get("selector")), IMMUTABLE);
        }
        if workload == Workload::StatefulSet {
            let mut a = spec.clone();
            let mut b = old_spec.clone();
            for s in [&mut a, &mut b] {
                if let Some(m) = s.as_object_mut() {
                    for key in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "revisionHistoryLimit",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        m.remove(key);
                    }
                }
            }
            if a != b {
                self.forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
                     'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and \
                     'minReadySeconds' are forbidden",
                );
            }
        }
    }

    fn deployment_strategy(&mut self, spec: &Value) {
        let Some(strategy) = spec.get("strategy").filter(|s| s.is_object()) else {
            return;
        };
        let kind = strategy
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate");
        if !["Recreate", "RollingUpdate"].contains(&kind) {
            self.not_supported("spec.strategy.type", kind, &["Recreate", "RollingUpdate"]);
        }
        let rolling = strategy.get("rollingUpdate").filter(|r| r.is_object());
        if kind == "Recreate" && rolling.is_some() {
            self.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            );
        }
        if let Some(r) = rolling {
            let is_zero = |v: Option<&Value>| match v {
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s == "0%" || s == "0",
                _ => false,
            };
            for key in ["maxUnavailable", "maxSurge"] {
                match r.get(key) {
                    Some(Value::Number(n)) if n.as_i64().unwrap_or(0) < 0 => self.invalid(
                        format!("spec.strategy.rollingUpdate.{key}"),
                        &Value::Number(n.clone()),
                        "must be greater than or equal to 0",
                    ),
                    Some(Value::String(s)) => {
                        let pct = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
                        if pct.is_none() {
                            self.invalid(
                                format!("spec.strategy.rollingUpdate.{key}"),
                                &Value::String(s.clone()),
                                "a valid percent string must be a numeric string followed by an ending '%' (e.g. \
                                 '1%',  or '93%', regex used for validation is '[0-9]+%')",
                            );
                        } else if key == "maxUnavailable" && pct.unwrap_or(0) > 100 {
                            self.invalid(
                                format!("spec.strategy.rollingUpdate.{key}"),
                                &Value::String(s.clone()),
                                "must not be greater than 100%",
                            );
                        }
                    }
                    _ => {}
                }
            }
            if is_zero(r.get("maxUnavailable")) && is_zero(r.get("maxSurge")) {
                self.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    r.get("maxUnavailable").unwrap_or(&Value::Null),
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        if let (Some(deadline), Some(min_ready)) = (
            spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
            spec.get("minReadySeconds").and_then(Value::as_i64),
        ) && deadline <= min_ready
        {
            self.invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(deadline),
                "must be greater than minReadySeconds",
            );
        }
    }

    fn replication_controller(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        self.non_negative("spec.replicas", spec.get("replicas"));
        self.pod_template(
            spec.get("template"),
            "spec.template",
            PodContext::Template {
                restart_policies: &["Always"],
            },
        );
    }

    fn job(&mut self, obj: &Value, old: Option<&Value>) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        for key in [
            "parallelism",
            "completions",
            "backoffLimit",
            "ttlSecondsAfterFinished",
        ] {
            self.non_negative(&format!("spec.{key}"), spec.get(key));
        }
        if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
            && n <= 0
        {
            self.invalid(
                "spec.activeDeadlineSeconds",
                &Value::from(n),
                "must be greater than or equal to 1",
            );
        }
        self.one_of(
            "spec.completionMode",
            spec.get("completionMode"),
            &["NonIndexed", "Indexed"],
        );
        if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
            self.label_selector("spec.selector", sel);
            let labels = spec.pointer("/template/metadata/labels");
            if !selector_matches(sel, labels.and_then(Value::as_object)) {
                self.invalid_shown(
                    "spec.template.metadata.labels",
                    &string_map(labels),
                    "`selector` does not match template `labels`",
                );
            }
        }
        self.job_template(spec, "spec.template");
        if let Some(old) = old {
            let old_spec = old.get("spec").unwrap_or(&empty);
            if spec.get("selector") != old_spec.get("selector") {
                self.invalid_shown("spec.selector", &show_selector(spec.get("selector")), IMMUTABLE);
            }
            if spec.get("completions") != old_spec.get("completions")
                && str_at(spec, "completionMode") == "Indexed"
            {
                self.invalid(
                    "spec.completions",
                    spec.get("completions").unwrap_or(&Value::Null),
                    IMMUTABLE,
                );
            }
            // The template may change only while the job is suspended (Kubernetes lets scheduling
            // directives change then); it is otherwise fixed.
            let suspended = old_spec.get("suspend").and_then(Value::as_bool) == Some(true);
            if !suspended && spec.get("template") != old_spec.get("template") {
                self.invalid_shown("spec.template", "core.PodTemplateSpec{…}", IMMUTABLE);
            }
        }
    }

    fn job_template(&mut self, job_spec: &Value, field: &str) {
        const JOB_RESTART: &[&str] = &["OnFailure", "Never"];
        self.pod_template(
            job_spec.get("template"),
            field,
            PodContext::Template {
                restart_policies: JOB_RESTART,
            },
        );
        if job_spec.pointer("/template/spec").is_some()
            && job_spec.pointer("/template/spec/restartPolicy").is_none()
        {
            self.required(
                format!("{field}.spec.restartPolicy"),
                "valid values: \"OnFailure\", \"Never\"",
            );
        }
    }

    fn cron_job(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.len() > 52 {
            self.invalid(
                "metadata.name",
                &Value::String(name.to_string()),
                "must be no more than 52 characters",
            );
        }
        let schedule = str_at(spec, "schedule");
        if schedule.is_empty() {
            self.required("spec.schedule", "");
        } else {
            let fields = schedule.split_whitespace().count();
            if !schedule.starts_with('@') && fields != 5 {
                self.invalid(
                    "spec.schedule",
                    &Value::String(schedule.to_string()),
                    &format!("expected exactly 5 fields, found {fields}: {schedule}"),
                );
            }
        }
        self.one_of(
            "spec.concurrencyPolicy",
            spec.get("concurrencyPolicy"),
            &["Allow", "Forbid", "Replace"],
        );
        self.non_negative(
            "spec.startingDeadlineSeconds",
            spec.get("startingDeadlineSeconds"),
        );
        self.non_negative(
            "spec.successfulJobsHistoryLimit",
            spec.get("successfulJobsHistoryLimit"),
        );
        self.non_negative("spec.failedJobsHistoryLimit", spec.get("failedJobsHistoryLimit"));
        match spec.pointer("/jobTemplate/spec") {
            Some(job_spec) => self.job_template(job_spec, "spec.jobTemplate.spec.template"),
            None => self.required("spec.jobTemplate.spec.template", ""),
        }
    }

    // ---- services and endpoints -----------------------------------------------------------------------

    fn service(&mut self, obj: &Value, old: Option<&Value>) {
        const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        let svc_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
        if !TYPES.contains(&svc_type) {
            self.not_supported("spec.type", svc_type, TYPES);
        }
        let cluster_ip = str_at(spec, "clusterIP");
        let headless = cluster_ip == "None";
        let ports = arr(spec, "ports");
        if ports.is_empty() && svc_type != "ExternalName" && !headless {
            self.required("spec.ports", "");
        }
        if svc_type == "ExternalName" {
            let external = str_at(spec, "externalName");
            if external.is_empty() {
                self.required("spec.externalName", "");
            } else {
                self.check(
                    "spec.externalName",
                    external,
                    dns1123_subdomain(external.trim_end_matches('.')),
                );
            }
        }
        if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
            self.invalid(
                "spec.clusterIPs[0]",
                &Value::String(cluster_ip.to_string()),
                "must be empty, 'None', or a valid IP address",
            );
        }
        let mut port_names = HashSet::new();
        let mut port_keys = HashSet::new();
        let mut node_ports = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            let name = str_at(p, "name");
            if ports.len() > 1 && name.is_empty() {
                self.required(format!("{pp}.name"), "");
            } else if !name.is_empty() {
                self.check(&format!("{pp}.name"), name, dns1123_label(name));
                if !port_names.insert(name.to_string()) {
                    self.duplicate(format!("{pp}.name"), &Value::String(name.to_string()));
                }
            }
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            self.port_number(&format!("{pp}.port"), port);
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            if !["SCTP", "TCP", "UDP"].contains(&protocol) {
                self.not_supported(format!("{pp}.protocol"), protocol, &["SCTP", "TCP", "UDP"]);
            }
            if !port_keys.insert((port, protocol.to_string())) {
                self.duplicate(pp.clone(), &Value::String(format!("{port}/{protocol}")));
            }
            match p.get("targetPort") {
                Some(Value::Number(n)) => {
                    let n = n.as_i64().unwrap_or(0);
                    if n != 0 {
                        self.port_number(&format!("{pp}.targetPort"), n);
                    }
                }
                Some(Value::String(s)) => self.check(&format!("{pp}.targetPort"), s, port_name(s)),
                _ => {}
            }
            let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if node_port != 0 {
                if svc_type == "ClusterIP" || svc_type == "ExternalName" {
                    self.forbidden(
                        format!("{pp}.nodePort"),
                        &format!("may not be used when `type` is '{svc_type}'"),
                    );
                } else if !NODE_PORT_RANGE.contains(&node_port) {
                    self.invalid(
                        format!("{pp}.nodePort"),
                        &Value::from(node_port),
                        "provided port is not in the valid range. The range of valid ports is 30000-32767",
                    );
                } else if !node_ports.insert((node_port, protocol.to_string())) {
                    self.duplicate(format!("{pp}.nodePort"), &Value::from(node_port));
                }
            }
        }
        self.labels("spec.selector", spec.get("selector"));
        for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
            let ip = ip.as_str().unwrap_or_default();
            if ip.parse::<IpAddr>().is_err() {
                self.invalid(
                    format!("spec.externalIPs[{i}]"),
                    &Value::String(ip.to_string()),
                    "must be a valid IP address",
                );
            }
        }
        self.one_of(
            "spec.sessionAffinity",
            spec.get("sessionAffinity"),
            &["ClientIP", "None"],
        );
        if let Some(policy) = spec
            .get("externalTrafficPolicy")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            if svc_type == "ClusterIP" || svc_type == "ExternalName" {
                self.invalid(
                    "spec.externalTrafficPolicy",
                    &Value::String(policy.to_string()),
                    "may only be set for externally-accessible services",
                );
            } else if !["Cluster", "Local"].contains(&policy) {
                self.not_supported("spec.externalTrafficPolicy", policy, &["Cluster", "Local"]);
            }
        }
        self.one_of(
            "spec.internalTrafficPolicy",
            spec.get("internalTrafficPolicy"),
            &["Cluster", "Local"],
        );
        self.one_of(
            "spec.ipFamilyPolicy",
            spec.get("ipFamilyPolicy"),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        );
        if let Some(old) = old {
            // The core copies an allocated ClusterIP into an update that leaves it out; an update may not
            // move a Service to another IP.
            let old_ip = old
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let old_type = old
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if svc_type != "ExternalName"
                && old_type != "ExternalName"
                && !old_ip.is_empty()
                && !cluster_ip.is_empty()
                && cluster_ip != old_ip
            {
                self.invalid(
                    "spec.clusterIP",
                    &Value::String(cluster_ip.to_string()),
                    IMMUTABLE,
                );
            }
        }
    }

    fn endpoints(&mut self, obj: &Value) {
        for (i, subset) in arr(obj, "subsets").iter().enumerate() {
            for key in ["addresses", "notReadyAddresses"] {
                for (j, a) in arr(subset, key).iter().enumerate() {
                    let ip = str_at(a, "ip");
                    if ip.parse::<IpAddr>().is_err() {
                        self.invalid(
                            format!("subsets[{i}].{key}[{j}].ip"),
                            &Value::String(ip.to_string()),
                            "must be a valid IP address",
                        );
                    }
                }
            }
            for (j, p) in arr(subset, "ports").iter().enumerate() {
                self.port_number(
                    &format!("subsets[{i}].ports[{j}].port"),
                    p.get("port").and_then(Value::as_i64).unwrap_or(0),
                );
                self.one_of(
                    &format!("subsets[{i}].ports[{j}].protocol"),
                    p.get("protocol"),
                    &["SCTP", "TCP", "UDP"],
                );
            }
        }
    }

    fn endpoint_slice(&mut self, obj: &Value) {
        const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
        let address_type = str_at(obj, "addressType");
        if address_type.is_empty() {
            self.required("addressType", "");
        } else if !TYPES.contains(&address_type) {
            self.not_supported("addressType", address_type, TYPES);
        }
        for (i, e) in arr(obj, "endpoints").iter().enumerate() {
            let addresses = arr(e, "addresses");
            if addresses.is_empty() {
                self.required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 address",
                );
            }
            for (j, a) in addresses.iter().enumerate() {
                let a = a.as_str().unwrap_or_default();
                let ok = match address_type {
                    "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => dns1123_subdomain(a).is_empty(),
                };
                if !ok {
                    let detail = match address_type {
                        "IPv4" => "must be a valid IPv4 address",
                        "IPv6" => "must be a valid IPv6 address",
                        _ => DNS1123_SUBDOMAIN_MSG,
                    };
                    self.invalid(
                        format!("endpoints[{i}].addresses[{j}]"),
                        &Value::String(a.to_string()),
                        detail,
                    );
                }
            }
        }
        for (i, p) in arr(obj, "ports").iter().enumerate() {
            if let Some(n) = p.get("port").and_then(Value::as_i64) {
                self.port_number(&format!("ports[{i}].port"), n);
            }
            self.one_of(
                &format!("ports[{i}].protocol"),
                p.get("protocol"),
                &["SCTP", "TCP", "UDP"],
            );
        }
    }

    // ---- configuration --------------------------------------------------------------------------------

    fn config_map(&mut self, obj: &Value, old: Option<&Value>) {
        let mut total = 0;
        let binary = obj.get("binaryData").and_then(Value::as_object);
        for (k, v) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
            self.check(&format!("data[{k}]"), k, config_key(k));
            if binary.is_some_and(|b| b.contains_key(k)) {
                self.invalid(
                    format!("data[{k}]"),
                    &Value::String(k.clone()),
                    "duplicate of key present in binaryData",
                );
            }
            total += v.as_str().map_or(0, str::len);
        }
        for (k, v) in binary.into_iter().flatten() {
            self.check(&format!("binaryData[{k}]"), k, config_key(k));
            // Stored base64: the decoded size is what Kubernetes limits.
            total += v.as_str().map_or(0, |s| s.len() / 4 * 3);
        }
        if total > CONFIG_DATA_LIMIT {
            self.too_long("data", CONFIG_DATA_LIMIT);
        }
        if let Some(old) = old {
            self.immutable_data(obj, old, &["data", "binaryData"]);
        }
    }

    fn secret(&mut self, obj: &Value, old: Option<&Value>) {
        let data = obj.get("data").and_then(Value::as_object);
        let mut total = 0;
        for (k, v) in data.into_iter().flatten() {
            self.check(&format!("data[{k}]"), k, config_key(k));
            total += v.as_str().map_or(0, |s| s.len() / 4 * 3);
        }
        if total > CONFIG_DATA_LIMIT {
            self.too_long("data", CONFIG_DATA_LIMIT);
        }
        let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
        let secret_type = str_at(obj, "type");
        let required_keys: &[&str] = match secret_type {
            "kubernetes.io/tls" => &["tls.crt", "tls.key"],
            "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
            "kubernetes.io/dockercfg" => &[".dockercfg"],
            "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
            _ => &[],
        };
        for key in required_keys {
            if !has(key) {
                self.required(format!("data[{key}]"), "");
            }
        }
        if secret_type == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
            self.required("data[username]", "");
            self.required("data[password]", "");
        }
        if secret_type == "kubernetes.io/service-account-token"
            && obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .is_none()
        {
            self.required("metadata.annotations[kubernetes.io/service-account.name]", "");
        }
        if let Some(old) = old {
            let old_type = str_at(old, "type");
            if !secret_type.is_empty() && secret_type != old_type {
                self.invalid("type", &Value::String(secret_type.to_string()), IMMUTABLE);
            }
            self.immutable_data(obj, old, &["data", "stringData"]);
        }
    }

    /// ConfigMaps and Secrets marked `immutable: true` keep their data and the mark forever.
    fn immutable_data(&mut self, obj: &Value, old: &Value, keys: &[&str]) {
        if old.get("immutable").and_then(Value::as_bool) != Some(true) {
            return;
        }
        const MSG: &str = "field is immutable when `immutable` is set";
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            self.forbidden("immutable", MSG);
        }
        for key in keys {
            let new = obj.get(*key).filter(|v| !v.is_null());
            let prev = old.get(*key).filter(|v| !v.is_null());
            if *key == "stringData" {
                continue;
            }
            if new != prev {
                self.forbidden(*key, MSG);
            }
        }
    }

    fn node(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        let mut cidrs = Vec::new();
        if let Some(c) = spec
            .get("podCIDR")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            cidrs.push(("spec.podCIDR".to_string(), c));
        }
        for (i, c) in arr(spec, "podCIDRs").iter().enumerate() {
            cidrs.push((format!("spec.podCIDRs[{i}]"), c.as_str().unwrap_or_default()));
        }
        for (field, c) in cidrs {
            if crate::alloc::parse_cidr(c).is_none() {
                self.invalid(
                    field,
                    &Value::String(c.to_string()),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                );
            }
        }
        for (i, t) in arr(spec, "taints").iter().enumerate() {
            let key = str_at(t, "key");
            self.check(&format!("spec.taints[{i}].key"), key, qualified_name(key));
            let effect = str_at(t, "effect");
            let supported = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
            if effect.is_empty() {
                self.required(format!("spec.taints[{i}].effect"), "");
            } else if !supported.contains(&effect) {
                self.not_supported(format!("spec.taints[{i}].effect"), effect, &supported);
            }
        }
    }

    // ---- policy, autoscaling, scheduling, networking --------------------------------------------------

    fn pod_disruption_budget(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        if spec.get("minAvailable").is_some_and(|v| !v.is_null())
            && spec.get("maxUnavailable").is_some_and(|v| !v.is_null())
        {
            self.invalid_shown(
                "spec",
                "policy.PodDisruptionBudgetSpec{…}",
                "minAvailable and maxUnavailable cannot be both set",
            );
        }
        for key in ["minAvailable", "maxUnavailable"] {
            match spec.get(key) {
                Some(Value::Number(n)) if n.as_i64().unwrap_or(0) < 0 => {
                    self.invalid(format!("spec.{key}"), &Value::Number(n.clone()), "must be greater than or equal to 0")
                }
                Some(Value::String(p)) => {
                    match p.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
                        None => self.invalid(
                            format!("spec.{key}"),
                            &Value::String(p.clone()),
                            "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  \
                             or '93%', regex used for validation is '[0-9]+%')",
                        ),
                        Some(n) if n > 100 => {
                            self.invalid(format!("spec.{key}"), &Value::String(p.clone()), "must not be greater than 100%")
                        }
                        Some(_) => {}
                    }
                }
                _ => {}
            }
        }
        if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
            self.label_selector("spec.selector", sel);
        }
    }

    fn horizontal_pod_autoscaler(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
        if max < 1 {
            self.invalid("spec.maxReplicas", &Value::from(max), "must be greater than 0");
        }
        if let Some(min) = spec.get("minReplicas").and_then(Value::as_i64) {
            if min < 1 {
                self.invalid(
                    "spec.minReplicas",
                    &Value::from(min),
                    "must be greater than or equal to 1",
                );
            } else if max >= 1 && max < min {
                self.invalid(
                    "spec.maxReplicas",
                    &Value::from(max),
                    "must be greater than or equal to `minReplicas`",
                );
            }
        }
        let target = spec.get("scaleTargetRef").unwrap_or(&empty);
        if str_at(target, "kind").is_empty() {
            self.required("spec.scaleTargetRef.kind", "");
        }
        if str_at(target, "name").is_empty() {
            self.required("spec.scaleTargetRef.name", "");
        }
    }

    fn priority_class(&mut self, obj: &Value, old: Option<&Value>) {
        // The system classes (system-node-critical, system-cluster-critical) sit above the user maximum.
        const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
        if !name.starts_with("system-") && value > HIGHEST_USER_DEFINABLE_PRIORITY {
            self.forbidden(
                "value",
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
                ),
            );
        }
        self.one_of(
            "preemptionPolicy",
            obj.get("preemptionPolicy"),
            &["Never", "PreemptLowerPriority"],
        );
        if let Some(old) = old
            && old.get("value") != obj.get("value")
        {
            self.forbidden("value", "may not be changed in an update.");
        }
    }

    fn ingress(&mut self, obj: &Value) {
        for (i, rule) in arr(obj.get("spec").unwrap_or(&Value::Null), "rules")
            .iter()
            .enumerate()
        {
            let host = str_at(rule, "host");
            if !host.is_empty() {
                let check = host.strip_prefix("*.").unwrap_or(host);
                if host.parse::<IpAddr>().is_ok() {
                    self.invalid(
                        format!("spec.rules[{i}].host"),
                        &Value::String(host.to_string()),
                        "must be a DNS name, not an IP address",
                    );
                } else {
                    self.check(&format!("spec.rules[{i}].host"), host, dns1123_subdomain(check));
                }
            }
            for (j, path) in arr(rule.get("http").unwrap_or(&Value::Null), "paths")
                .iter()
                .enumerate()
            {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                match path.get("pathType").and_then(Value::as_str) {
                    None => self.required(format!("{field}.pathType"), "pathType must be specified"),
                    Some(t) if !["Exact", "ImplementationSpecific", "Prefix"].contains(&t) => self
                        .not_supported(
                            format!("{field}.pathType"),
                            t,
                            &["Exact", "ImplementationSpecific", "Prefix"],
                        ),
                    Some(t) => {
                        let p = str_at(path, "path");
                        if t != "ImplementationSpecific" && !p.starts_with('/') {
                            self.invalid(
                                format!("{field}.path"),
                                &Value::String(p.to_string()),
                                "must be an absolute path",
                            );
                        }
                    }
                }
            }
        }
    }

    fn network_policy(&mut self, obj: &Value) {
        let empty = Value::Null;
        let spec = obj.get("spec").unwrap_or(&empty);
        if let Some(sel) = spec.get("podSelector").filter(|s| !s.is_null()) {
            self.label_selector("spec.podSelector", sel);
        }
        for (i, t) in arr(spec, "policyTypes").iter().enumerate() {
            let t = t.as_str().unwrap_or_default();
            if !["Ingress", "Egress"].contains(&t) {
                self.not_supported(format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]);
            }
        }
    }

    // ---- RBAC -----------------------------------------------------------------------------------------

    fn role(&mut self, obj: &Value) {
        for (i, rule) in arr(obj, "rules").iter().enumerate() {
            if arr(rule, "verbs").is_empty() {
                self.required(
                    format!("rules[{i}].verbs"),
                    "verbs must contain at least one value",
                );
            }
            let non_resource = !arr(rule, "nonResourceURLs").is_empty();
            if non_resource {
                if obj.get("kind").and_then(Value::as_str) == Some("Role") {
                    self.invalid(
                        format!("rules[{i}].nonResourceURLs"),
                        &Value::Null,
                        "namespaced rules cannot apply to non-resource URLs",
                    );
                }
            } else {
                if rule.get("apiGroups").is_none() {
                    self.required(
                        format!("rules[{i}].apiGroups"),
                        "resource rules must supply at least one api group",
                    );
                }
                if arr(rule, "resources").is_empty() {
                    self.required(
                        format!("rules[{i}].resources"),
                        "resource rules must supply at least one resource",
                    );
                }
            }
        }
    }

    fn role_binding(&mut self, obj: &Value, old: Option<&Value>, cluster: bool) {
        let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
        let kinds: &[&str] = if cluster {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        let kind = str_at(role_ref, "kind");
        if !kinds.contains(&kind) {
            self.not_supported("roleRef.kind", kind, kinds);
        }
        if str_at(role_ref, "apiGroup") != "rbac.authorization.k8s.io" {
            self.not_supported(
                "roleRef.apiGroup",
                str_at(role_ref, "apiGroup"),
                &["rbac.authorization.k8s.io"],
            );
        }
        if str_at(role_ref, "name").is_empty() {
            self.required("roleRef.name", "");
        }
        for (i, s) in arr(obj, "subjects").iter().enumerate() {
            let kind = str_at(s, "kind");
            let kinds = ["ServiceAccount", "User", "Group"];
            if !kinds.contains(&kind) {
                self.not_supported(format!("subjects[{i}].kind"), kind, &kinds);
            }
            if str_at(s, "name").is_empty() {
                self.required(format!("subjects[{i}].name"), "");
            }
            if kind == "ServiceAccount" && cluster && str_at(s, "namespace").is_empty() {
                self.required(format!("subjects[{i}].namespace"), "");
            }
        }
        if let Some(old) = old
            && obj.get("roleRef") != old.get("roleRef")
        {
            self.invalid("roleRef", role_ref, "cannot change roleRef");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    fn pod(name: &str, containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"containers": containers, "restartPolicy": "Always"}})
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": 2, "selector": selector,
                        "template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}})
    }

    #[test]
    fn a_good_pod_is_valid() {
        let p = pod(
            "web-0",
            json!([{"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}]),
        );
        assert_eq!(validate("", "Pod", &p, None), vec![]);
    }

    #[test]
    fn bad_name_reports_rfc1123_subdomain() {
        let p = pod("Bad_Name", json!([{"name": "c", "image": "busybox"}]));
        let errs = validate("", "Pod", &p, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            errs[0].message,
            "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
    }

    #[test]
    fn name_or_generate_name_required() {
        let mut p = pod("", json!([{"name": "c", "image": "busybox"}]));
        assert_eq!(
            messages(&validate("", "Pod", &p, None)),
            ["metadata.name: Required value: name or generateName is required"]
        );
        p["metadata"]["generateName"] = json!("web-");
        assert_eq!(validate("", "Pod", &p, None), vec![]);
    }

    #[test]
    fn namespaces_and_services_need_labels() {
        let ns = json!({"metadata": {"name": "my.ns"}});
        let errs = validate("", "Namespace", &ns, None);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .contains("a lowercase RFC 1123 label must consist"),
            "{}",
            errs[0].message
        );
        let svc =
            json!({"metadata": {"name": "1web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
        let errs = validate("", "Service", &svc, None);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"1web\": a DNS-1035 label"),
            "{}",
            errs[0].message
        );
        let ns_in_ns = json!({"metadata": {"name": "a", "namespace": "b"}});
        assert_eq!(
            messages(&validate("", "Namespace", &ns_in_ns, None)),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn labels_and_annotations() {
        let p = json!({"metadata": {"name": "p", "labels": {"bad key": "v", "ok": "has space", "example.com/app": "web"},
                       "annotations": {"big": "x".repeat(300 * 1024)}},
                       "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let errs = messages(&validate("", "Pod", &p, None));
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with(
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric"
        ));
        assert!(errs[1].starts_with(
            "metadata.labels: Invalid value: \"has space\": a valid label must be an empty string"
        ));
        assert_eq!(
            errs[2],
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        let long = json!({"metadata": {"name": "p", "labels": {"k": "v".repeat(64)}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(
            messages(&validate("", "Pod", &long, None))[0].ends_with("must be no more than 63 characters")
        );
    }

    #[test]
    fn pod_spec_rules() {
        let empty = pod("p", json!([]));
        assert_eq!(
            messages(&validate("", "Pod", &empty, None)),
            ["spec.containers: Required value"]
        );
        let mut p = pod(
            "p",
            json!([
                {"name": "app", "image": "busybox", "ports": [{"containerPort": 70000, "protocol": "TCP"}]},
                {"name": "app", "image": "", "ports": [{"containerPort": 80, "protocol": "HTTP"}]},
                {"name": "Side_Car", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ]),
        );
        p["spec"]["restartPolicy"] = json!("Sometimes");
        let errs = messages(&validate("", "Pod", &p, None));
        assert_eq!(
            errs,
            [
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[1].name: Duplicate value: \"app\"",
                "spec.containers[1].image: Required value",
                "spec.containers[1].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                &format!("spec.containers[2].name: Invalid value: \"Side_Car\": {DNS1123_LABEL_MSG}"),
                "spec.containers[2].volumeMounts[0].name: Not found: \"data\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
    }

    #[test]
    fn resource_quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("128974848"), Some(128974848.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        for bad in ["", "abc", "1.2.3", "5 Gi", "1Gb", "m"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        let p = pod(
            "p",
            json!([{"name": "c", "image": "i", "resources": {
                "limits": {"cpu": "1", "memory": "lots"},
                "requests": {"cpu": "2", "memory": "64Mi"}}}]),
        );
        assert_eq!(
            messages(&validate("", "Pod", &p, None)),
            [
                format!("spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": {QUANTITY_MSG}"),
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn pod_updates_may_change_only_images() {
        let old = pod("p", json!([{"name": "app", "image": "nginx:1.25"}]));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(validate("", "Pod", &new, Some(&old)), vec![]);
        new["spec"]["containers"][0]["command"] = json!(["sh"]);
        let errs = validate("", "Pod", &new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert!(
            errs[0]
                .message
                .starts_with("Forbidden: pod updates may not change fields other than")
        );
        let mut renamed = old.clone();
        renamed["metadata"]["name"] = json!("q");
        assert_eq!(
            messages(&validate("", "Pod", &renamed, Some(&old))),
            ["metadata.name: Invalid value: \"q\": field is immutable"]
        );
    }

    #[test]
    fn deployment_selector_rules() {
        assert_eq!(
            validate(
                "apps",
                "Deployment",
                &deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"})),
                None
            ),
            vec![]
        );
        let mismatch = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "api"}));
        assert_eq!(
            messages(&validate("apps", "Deployment", &mismatch, None)),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
            ]
        );
        let empty = deployment(json!({}), json!({"app": "web"}));
        assert_eq!(
            messages(&validate("apps", "Deployment", &empty, None)),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
            ]
        );
        let mut negative = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
        negative["spec"]["replicas"] = json!(-1);
        negative["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            messages(&validate("apps", "Deployment", &negative, None)),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let old = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "tier": "x"}),
        );
        let new = deployment(
            json!({"matchLabels": {"app": "web", "tier": "x"}}),
            json!({"app": "web", "tier": "x"}),
        );
        assert_eq!(
            messages(&validate("apps", "Deployment", &new, Some(&old))),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
        let mut zero = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
        zero["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_eq!(
            messages(&validate("apps", "Deployment", &zero, None)),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
    }

    #[test]
    fn selector_expressions() {
        let d = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}, {"key": "x", "operator": "Exists", "values": ["y"]}]}),
            json!({"app": "web", "x": "1"}),
        );
        assert_eq!(
            messages(&validate("apps", "Deployment", &d, None)),
            [
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            ]
        );
    }

    #[test]
    fn job_rules() {
        let job = json!({"metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "pi", "image": "perl"}]}}}});
        assert_eq!(
            messages(&validate("batch", "Job", &job, None)),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
        let mut ok = job.clone();
        ok["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(validate("batch", "Job", &ok, None), vec![]);
        let mut changed = ok.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.40");
        assert_eq!(
            messages(&validate("batch", "Job", &changed, Some(&ok))),
            ["spec.template: Invalid value: core.PodTemplateSpec{…}: field is immutable"]
        );
    }

    #[test]
    fn service_rules() {
        let good = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 31234, "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]}});
        assert_eq!(validate("", "Service", &good, None), vec![]);
        let bad = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "Fancy",
                     "ports": [{"port": 0, "protocol": "TCP"}, {"name": "b", "port": 80, "protocol": "ICMP", "nodePort": 80}]}});
        assert_eq!(
            messages(&validate("", "Service", &bad, None)),
            [
                "spec.type: Unsupported value: \"Fancy\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ]
        );
        let cluster_ip = json!({"metadata": {"name": "a", "namespace": "d"},
            "spec": {"ports": [{"port": 80, "nodePort": 30001}], "clusterIP": "10.43.0.5"}});
        assert_eq!(
            messages(&validate("", "Service", &cluster_ip, None)),
            ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let old = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"ports": [{"port": 80}], "clusterIP": "10.43.0.5"}});
        let mut moved = old.clone();
        moved["spec"]["clusterIP"] = json!("10.43.0.6");
        assert_eq!(
            messages(&validate("", "Service", &moved, Some(&old))),
            ["spec.clusterIP: Invalid value: \"10.43.0.6\": field is immutable"]
        );
        let dup = json!({"metadata": {"name": "a", "namespace": "d"},
            "spec": {"ports": [{"name": "x", "port": 80}, {"name": "x", "port": 81}]}});
        assert_eq!(
            messages(&validate("", "Service", &dup, None)),
            ["spec.ports[1].name: Duplicate value: \"x\""]
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm =
            json!({"metadata": {"name": "cfg", "namespace": "d"}, "data": {"good.key": "1", "bad/key": "2"}});
        assert_eq!(
            messages(&validate("", "ConfigMap", &cm, None)),
            [format!(
                "data[bad/key]: Invalid value: \"bad/key\": {CONFIG_KEY_MSG}"
            )]
        );
        let frozen =
            json!({"metadata": {"name": "cfg", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
        let mut changed = frozen.clone();
        changed["data"]["a"] = json!("2");
        assert_eq!(
            messages(&validate("", "ConfigMap", &changed, Some(&frozen))),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
        let tls = json!({"metadata": {"name": "t", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="}});
        assert_eq!(
            messages(&validate("", "Secret", &tls, None)),
            ["data[tls.key]: Required value"]
        );
        let old = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"});
        let mut retyped = old.clone();
        retyped["type"] = json!("kubernetes.io/basic-auth");
        retyped["data"] = json!({"username": "dQ=="});
        assert_eq!(
            messages(&validate("", "Secret", &retyped, Some(&old))),
            ["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }

    #[test]
    fn policy_autoscaling_scheduling_networking() {
        let pdb = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"minAvailable": 1, "maxUnavailable": "150%"}});
        assert_eq!(
            messages(&validate("policy", "PodDisruptionBudget", &pdb, None)),
            [
                "spec: Invalid value: policy.PodDisruptionBudgetSpec{…}: minAvailable and maxUnavailable cannot be both set",
                "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
            ]
        );
        let hpa = json!({"metadata": {"name": "h", "namespace": "d"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 5, "maxReplicas": 2}});
        assert_eq!(
            messages(&validate("autoscaling", "HorizontalPodAutoscaler", &hpa, None)),
            ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        let pc = json!({"metadata": {"name": "huge"}, "value": 2_000_000_000});
        assert_eq!(
            messages(&validate("scheduling.k8s.io", "PriorityClass", &pc, None)),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        let system = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000});
        assert_eq!(
            validate("scheduling.k8s.io", "PriorityClass", &system, None),
            vec![]
        );
        let ok = json!({"metadata": {"name": "high"}, "value": 1000});
        let mut changed = ok.clone();
        changed["value"] = json!(2000);
        assert_eq!(
            messages(&validate(
                "scheduling.k8s.io",
                "PriorityClass",
                &changed,
                Some(&ok)
            )),
            ["value: Forbidden: may not be changed in an update."]
        );
        let ing = json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [
            {"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix"}, {"path": "api", "pathType": "Exact"}, {"path": "/x"}]}},
            {"host": "Bad_Host"}]}});
        let errs = messages(&validate("networking.k8s.io", "Ingress", &ing, None));
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!(
            errs[0],
            "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path"
        );
        assert_eq!(
            errs[1],
            "spec.rules[0].http.paths[2].pathType: Required value: pathType must be specified"
        );
        assert!(
            errs[2].starts_with(
                "spec.rules[1].host: Invalid value: \"Bad_Host\": a lowercase RFC 1123 subdomain"
            )
        );
    }

    #[test]
    fn rbac_and_nodes() {
        let rb = json!({"metadata": {"name": "system:admins", "namespace": "d"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "admin"},
            "subjects": [{"kind": "Robot", "name": "r"}]});
        assert_eq!(
            messages(&validate("rbac.authorization.k8s.io", "RoleBinding", &rb, None)),
            [
                "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""
            ]
        );
        let node = json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.42.0.0/33", "taints": [{"key": "k", "effect": "Sometimes"}]}});
        let errs = messages(&validate("", "Node", &node, None));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].starts_with("spec.podCIDR: Invalid value: \"10.42.0.0/33\": must be a valid CIDR value")
        );
    }
}
