//! A container's environment, as the kubelet builds it: Service variables of the namespace (when
//! `enableServiceLinks`), then `envFrom`, then `env` in order, each value with `$(VAR)` references to what
//! came before expanded. Pure: the worker fetches the ConfigMaps, Secrets and Services first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use crate::resources::resource_field;

/// Why a container's environment cannot be built (reported as `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// The ConfigMap or Secret exists but lacks the key.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    /// A `fieldRef` names a field the downward API does not offer.
    #[error("unsupported fieldRef {0}")]
    UnsupportedField(String),
}

/// What environment values can refer to.
pub struct EnvSources<'a> {
    pub pod: &'a Pod,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// The namespace's Services plus the `kubernetes` Service of `default` (the master service).
    pub services: &'a [Service],
    /// Node allocatable CPU cores and memory bytes, what an unset limit means for `resourceFieldRef`.
    pub node_cpu: f64,
    pub node_memory: f64,
}

/// The names of the ConfigMaps and Secrets `pod` refers to (env, envFrom, volumes, projected volumes).
pub fn references(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        secrets.insert(s.name.clone());
    }
    (cms, secrets)
}

/// The Service link variables for `services` (Docker-links style, as the kubelet writes them).
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let pname = pname.to_uppercase().replace('-', "_");
                out.push((format!("{name}_SERVICE_PORT_{pname}"), p.port.to_string()));
            }
        }
        let proto =
            |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.as_deref().unwrap_or("TCP").to_string();
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in ports {
            let proto_up = proto(p).to_uppercase();
            let prefix = format!("{name}_PORT_{}_{proto_up}", p.port);
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto_up.to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), proto_up.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// Expands `$(NAME)` from `vars`; `$$` is a literal `$`; unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    s.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

/// The value of a downward API `fieldRef` path for `pod`.
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ips: &[String]) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", &meta.labels) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", &meta.annotations) {
        return Ok(v);
    }
    let map_text = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&meta.labels),
        "metadata.annotations" => map_text(&meta.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        other => return Err(EnvError::UnsupportedField(other.into())),
    })
}

/// The `NAME=value` environment of `container` (image defaults are merged by the caller, under these).
pub fn container_env(container: &Container, src: &EnvSources<'_>) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = src.pod.metadata.namespace.clone().unwrap_or_default();
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |order: &mut Vec<String>, vars: &mut HashMap<String, String>, k: String, v: String| {
        if vars.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    };
    let links = src
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services: Vec<Service> = src
        .services
        .iter()
        .filter(|s| {
            links
                || (s.metadata.name.as_deref() == Some("kubernetes")
                    && s.metadata.namespace.as_deref() == Some("default"))
        })
        .cloned()
        .collect();
    for (k, v) in service_env(&services) {
        set(&mut order, &mut vars, k, v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut order, &mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match src.secrets.get(&r.name) {
                Some(s) => {
                    for k in s.data.iter().flatten().map(|(k, _)| k) {
                        let v = secret_value(s, k).unwrap_or_default();
                        set(&mut order, &mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or_default(), &vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(src.pod, &f.field_path, src.host_ip, src.pod_ips)?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                        Some(name) => src
                            .pod
                            .spec
                            .iter()
                            .flat_map(|s| s.containers.iter())
                            .find(|c| c.name == name)
                            .unwrap_or(container),
                        None => container,
                    };
                    resource_field(
                        target,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                        src.node_cpu,
                        src.node_memory,
                    )
                    .unwrap_or_default()
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match src.config_maps.get(&r.name) {
                        Some(cm) => match config_map_value(cm, &r.key) {
                            Some(v) => v,
                            None if optional => continue,
                            None => {
                                return Err(EnvError::KeyNotFound {
                                    kind: "configmap",
                                    namespace,
                                    name: r.name.clone(),
                                    key: r.key.clone(),
                                });
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match src.secrets.get(&r.name) {
                        Some(s) => match secret_value(s, &r.key) {
                            Some(v) => v,
                            None if optional => continue,
                            None => {
                                return Err(EnvError::KeyNotFound {
                                    kind: "secret",
                                    namespace,
                                    name: r.name.clone(),
                                    key: r.key.clone(),
                                });
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError::SecretNotFound(r.name.clone())),
                    }
                } else {
                    String::new()
                }
            }
        };
        set(&mut order, &mut vars, e.name.clone(), value);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// Image defaults (`NAME=value` strings from the image config) overridden by the container's own.
pub fn merge_with_image(image_env: &[String], env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in env {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A command or argument list with `$(VAR)` references to the container's environment expanded.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    items.iter().map(|s| expand(s, &vars)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "default",
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .unwrap()
    }

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    fn container(env: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "image": "busybox", "env": env,
            "resources": {"limits": {"memory": "64Mi"}}}))
        .unwrap()
    }

    #[test]
    fn expansion() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("é$(A", &vars), "é$(A");
    }

    #[test]
    fn service_links_look_like_docker_links() {
        let svc = service(
            "shop",
            "redis-primary",
            "10.43.0.7",
            serde_json::json!([{"name": "db", "port": 6379, "protocol": "TCP"}]),
        );
        let env: BTreeMap<_, _> = service_env(&[svc]).into_iter().collect();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.43.0.7");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_DB"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.43.0.7:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP"], "tcp://10.43.0.7:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.43.0.7");
        let headless = service("shop", "h", "None", serde_json::json!([{"port": 80}]));
        assert!(service_env(&[headless]).is_empty());
    }

    #[test]
    fn value_from_every_source() {
        let p = pod();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"}, "data": {"mode": "fast"}}))
        .unwrap();
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "pw".to_string(),
                ByteString(b"hunter2".to_vec()),
            )])),
            ..Default::default()
        };
        let cms = BTreeMap::from([("cfg".to_string(), cm)]);
        let secrets = BTreeMap::from([("db".to_string(), secret)]);
        let services = [service(
            "default",
            "kubernetes",
            "10.43.0.1",
            serde_json::json!([{"name": "https", "port": 443}]),
        )];
        let src = EnvSources {
            pod: &p,
            host_ip: "192.168.1.2",
            pod_ips: &["10.42.0.9".to_string()],
            config_maps: &cms,
            secrets: &secrets,
            services: &services,
            node_cpu: 2.0,
            node_memory: 4e9,
        };
        let c = container(serde_json::json!([
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
            {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)/$(POD)"}
        ]));
        let env: BTreeMap<_, _> = container_env(&c, &src).unwrap().into_iter().collect();
        assert_eq!(env["POD"], "web");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.42.0.9");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["PW"], "hunter2");
        assert!(!env.contains_key("OPT"));
        assert_eq!(env["URL"], "https://10.43.0.1:443/web");

        let missing = container(serde_json::json!([
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]));
        assert_eq!(
            container_env(&missing, &src).unwrap_err().to_string(),
            "couldn't find key nope in configmap shop/cfg"
        );
    }

    #[test]
    fn image_env_is_overridden_and_references_are_collected() {
        let merged = merge_with_image(
            &["PATH=/bin".into(), "LANG=C".into()],
            &[("LANG".into(), "en".into()), ("X".into(), "1".into())],
        );
        assert_eq!(merged, ["PATH=/bin", "LANG=en", "X=1"]);
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "a"}}]}],
                     "volumes": [{"name": "v", "secret": {"secretName": "s"}},
                                 {"name": "w", "projected": {"sources": [{"configMap": {"name": "b"}}]}}],
                     "imagePullSecrets": [{"name": "reg"}]}
        }))
        .unwrap();
        let (cms, secrets) = references(&p);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["reg", "s"]);
    }
}
