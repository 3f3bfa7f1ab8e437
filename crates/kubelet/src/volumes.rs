//! Pod volumes: what each volume of the spec becomes on the node ([`plan`], pure), the files a configMap,
//! secret, downwardAPI or projected volume holds ([`files`], pure), and the bind mounts of one container
//! ([`container_mounts`], pure). [`materialize`] and [`teardown`] do the disk work.
//!
//! Everything lives under the pod's directory `<data>/pods/<uid>/volumes/<plugin>/<name>`, like the kubelet's
//! `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`, so deleting the pod's directory
//! (after unmounting the `medium: Memory` tmpfs) releases its disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use crate::env::field_value;
use crate::resources::resource_field;

/// Why a volume cannot be set up (reported as `FailedMount` events; the pod waits).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A referenced ConfigMap does not exist (and is not optional).
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist (and is not optional).
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// An `items` entry names a key the object lacks.
    #[error("configmap or secret {name} has no key {key}")]
    KeyNotFound { name: String, key: String },
    /// A path escapes the volume (`..`, absolute).
    #[error("invalid path {0:?} in volume")]
    InvalidPath(String),
    /// A container mounts a volume the pod does not declare.
    #[error("volume {0} is not defined in the pod")]
    UnknownVolume(String),
    /// The pod's service account token could not be requested (the account is missing, the API refused).
    #[error("failed to fetch token: {0}")]
    Token(String),
    /// The volume type is not supported by this node.
    #[error("volume {0}: unsupported volume type")]
    Unsupported(String),
    /// Creating, writing or mounting failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Mounting the tmpfs of a `medium: Memory` emptyDir failed.
    #[error("mounting tmpfs at {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
}

/// What one volume is on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// A directory of the pod; a tmpfs when `memory` (sized by `sizeLimit` when given).
    EmptyDir { memory: bool, size_limit: Option<u64> },
    /// A path of the host; `type` says what to create when missing.
    HostPath { path: PathBuf, type_: String },
    /// A directory of files written by the kubelet (configMap, secret, downwardAPI, projected).
    Files,
}

/// One planned volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVolume {
    pub name: String,
    pub kind: VolumeKind,
    /// What containers bind-mount.
    pub path: PathBuf,
}

/// One file of a files volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative to the volume's directory.
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// A bind mount of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

fn plugin_dir(v: &Volume) -> &'static str {
    if v.empty_dir.is_some() {
        "kubernetes.io~empty-dir"
    } else if v.config_map.is_some() {
        "kubernetes.io~configmap"
    } else if v.secret.is_some() {
        "kubernetes.io~secret"
    } else if v.downward_api.is_some() {
        "kubernetes.io~downward-api"
    } else {
        "kubernetes.io~projected"
    }
}

/// What each volume of `pod` becomes under `pod_dir`.
pub fn plan(pod: &Pod, pod_dir: &Path) -> Result<Vec<PlannedVolume>, VolumeError> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = pod_dir.join("volumes").join(plugin_dir(v)).join(&v.name);
        let kind = if let Some(e) = &v.empty_dir {
            VolumeKind::EmptyDir {
                memory: e.medium.as_deref() == Some("Memory"),
                size_limit: e
                    .size_limit
                    .as_ref()
                    .and_then(|q| crate::resources::parse_quantity(&q.0))
                    .map(|b| b as u64),
            }
        } else if let Some(h) = &v.host_path {
            out.push(PlannedVolume {
                name: v.name.clone(),
                kind: VolumeKind::HostPath {
                    path: PathBuf::from(&h.path),
                    type_: h.type_.clone().unwrap_or_default(),
                },
                path: PathBuf::from(&h.path),
            });
            continue;
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            VolumeKind::Files
        } else {
            return Err(VolumeError::Unsupported(v.name.clone()));
        };
        out.push(PlannedVolume {
            name: v.name.clone(),
            kind,
            path,
        });
    }
    Ok(out)
}

/// A relative path that stays inside its volume.
fn safe_relative(p: &str) -> Result<PathBuf, VolumeError> {
    let path = Path::new(p);
    if p.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(VolumeError::InvalidPath(p.into()));
    }
    Ok(path.to_path_buf())
}

/// What files volumes are made of.
pub struct FileSources<'a> {
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// The tokens the pod's `serviceAccountToken` projections ask for ([`token_specs`]); a projection
    /// without its token fails the volume (the pod waits, as the kubelet's `failed to fetch token`).
    pub tokens: &'a BTreeMap<TokenSpec, String>,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
}

fn key_files(
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    out: &mut Vec<VolumeFile>,
) -> Result<(), VolumeError> {
    match items {
        Some(items) => {
            for item in items {
                let content = data.get(&item.key).ok_or_else(|| VolumeError::KeyNotFound {
                    name: name.into(),
                    key: item.key.clone(),
                })?;
                out.push(VolumeFile {
                    path: safe_relative(&item.path)?,
                    content: content.clone(),
                    mode: item.mode.map(|m| m as u32).unwrap_or(default_mode),
                });
            }
        }
        None => {
            for (key, content) in data {
                out.push(VolumeFile {
                    path: safe_relative(&key)?,
                    content,
                    mode: default_mode,
                });
            }
        }
    }
    Ok(())
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    data
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    src: &FileSources<'_>,
    out: &mut Vec<VolumeFile>,
) -> Result<(), VolumeError> {
    for item in items {
        let content = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, src.host_ip, src.pod_ips)
                .map_err(|_| VolumeError::InvalidPath(f.field_path.clone()))?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.clone().unwrap_or_default();
            let container = spec
                .containers
                .iter()
                .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                .or(spec.containers.first())
                .cloned()
                .unwrap_or_default();
            resource_field(
                &container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                0.0,
                0.0,
            )
            .unwrap_or_default()
        } else {
            String::new()
        };
        out.push(VolumeFile {
            path: safe_relative(&item.path)?,
            content: content.into_bytes(),
            mode: item.mode.map(|m| m as u32).unwrap_or(default_mode),
        });
    }
    Ok(())
}

/// The files of a configMap, secret, downwardAPI or projected volume (empty for other kinds).
pub fn files(pod: &Pod, v: &Volume, src: &FileSources<'_>) -> Result<Vec<VolumeFile>, VolumeError> {
    let mut out = Vec::new();
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        match src.config_maps.get(&c.name) {
            Some(cm) => key_files(&c.name, config_map_data(cm), c.items.as_ref(), mode, &mut out)?,
            None if c.optional == Some(true) => {}
            None => return Err(VolumeError::ConfigMapNotFound(c.name.clone())),
        }
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        match src.secrets.get(&name) {
            Some(secret) => key_files(&name, secret_data(secret), s.items.as_ref(), mode, &mut out)?,
            None if s.optional == Some(true) => {}
            None => return Err(VolumeError::SecretNotFound(name)),
        }
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, src, &mut out)?;
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                match src.config_maps.get(&c.name) {
                    Some(cm) => key_files(&c.name, config_map_data(cm), c.items.as_ref(), mode, &mut out)?,
                    None if c.optional == Some(true) => {}
                    None => return Err(VolumeError::ConfigMapNotFound(c.name.clone())),
                }
            }
            if let Some(s) = &source.secret {
                match src.secrets.get(&s.name) {
                    Some(secret) => {
                        key_files(&s.name, secret_data(secret), s.items.as_ref(), mode, &mut out)?
                    }
                    None if s.optional == Some(true) => {}
                    None => return Err(VolumeError::SecretNotFound(s.name.clone())),
                }
            }
            if let Some(d) = &source.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, src, &mut out)?;
            }
            if let Some(t) = &source.service_account_token {
                let token = src
                    .tokens
                    .get(&TokenSpec::of(t))
                    .ok_or_else(|| VolumeError::Token("no token for the pod's service account".into()))?;
                out.push(VolumeFile {
                    path: safe_relative(&t.path)?,
                    content: token.as_bytes().to_vec(),
                    mode,
                });
            }
        }
    }
    Ok(out)
}

/// What one `serviceAccountToken` projection asks for: an audience (None: the API server's own) and a
/// lifetime. Projections asking for the same share one token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenSpec {
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

impl TokenSpec {
    fn of(p: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection) -> TokenSpec {
        TokenSpec {
            audience: p.audience.clone().filter(|a| !a.is_empty()),
            // The API's default for a projection without a lifetime.
            expiration_seconds: p.expiration_seconds.unwrap_or(3600),
        }
    }
}

/// The distinct tokens `pod`'s projected volumes need.
pub fn token_specs(pod: &Pod) -> BTreeSet<TokenSpec> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .filter_map(|s| s.service_account_token.as_ref().map(TokenSpec::of))
        .collect()
}

/// The longest the kubelet keeps a token before asking for a new one, whatever its lifetime.
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 3600;

/// Whether a token that expires at `expires` (Unix seconds) after a lifetime of `lifetime` seconds must be
/// requested again at `now`: once 80 % of its lifetime has passed, or after 24 h (the kubelet's token
/// manager rule; the API server may hand out a longer token than asked, so the lifetime is the requested one).
pub fn token_needs_refresh(expires: i64, lifetime: i64, now: i64) -> bool {
    let issued = expires - lifetime;
    now >= issued + MAX_TOKEN_AGE_SECONDS || now >= expires - lifetime / 5
}

/// The bind mounts of `container`: its volumeMounts (with `subPath`), in spec order.
pub fn container_mounts(container: &Container, volumes: &[PlannedVolume]) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| VolumeError::UnknownVolume(m.name.clone()))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => v.path.join(safe_relative(sub)?),
            None => v.path.clone(),
        };
        out.push(Mount {
            destination: m.mount_path.clone(),
            source,
            read_only: m.read_only.unwrap_or(false) || v.kind == VolumeKind::Files,
        });
    }
    Ok(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|p| p.replace("\\040", " ") == wanted)
}

/// Creates `v` on disk; files volumes get `files` (replacing what was there). Idempotent.
pub fn materialize(v: &PlannedVolume, files: &[VolumeFile]) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    match &v.kind {
        VolumeKind::EmptyDir { memory, size_limit } => {
            std::fs::create_dir_all(&v.path).map_err(io(&v.path))?;
            std::fs::set_permissions(&v.path, std::fs::Permissions::from_mode(0o777)).map_err(io(&v.path))?;
            if *memory && !is_mount_point(&v.path) {
                let options = match size_limit {
                    Some(bytes) => format!("mode=1777,size={bytes}"),
                    None => "mode=1777".to_string(),
                };
                nix::mount::mount(
                    Some("tmpfs"),
                    &v.path,
                    Some("tmpfs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(options.as_str()),
                )
                .map_err(|source| VolumeError::Mount {
                    path: v.path.clone(),
                    source,
                })?;
            }
        }
        VolumeKind::HostPath { path, type_ } => match type_.as_str() {
            "DirectoryOrCreate" => std::fs::create_dir_all(path).map_err(io(path))?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                std::fs::write(path, b"").map_err(io(path))?;
            }
            _ => {}
        },
        VolumeKind::Files => {
            // Write a fresh copy next to the volume and swap it in, so a container never sees half a set.
            let staging = v.path.with_extension("staging");
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(io(&staging))?;
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&staging))?;
            for f in files {
                let path = staging.join(&f.path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                std::fs::write(&path, &f.content).map_err(io(&path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o777))
                    .map_err(io(&path))?;
            }
            if v.path.exists() {
                // The container holds the old directory's inode through its bind mount; copy over it in
                // place so running containers see the update.
                sync_dir(&staging, &v.path)?;
                let _ = std::fs::remove_dir_all(&staging);
            } else {
                std::fs::rename(&staging, &v.path).map_err(io(&v.path))?;
            }
        }
    }
    Ok(())
}

/// Makes `dst` hold exactly the files of `src` (both directories).
fn sync_dir(src: &Path, dst: &Path) -> Result<(), VolumeError> {
    for entry in std::fs::read_dir(dst).map_err(io(dst))?.flatten() {
        let p = entry.path();
        if !src.join(entry.file_name()).exists() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    for entry in std::fs::read_dir(src).map_err(io(src))?.flatten() {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if from.is_dir() {
            std::fs::create_dir_all(&to).map_err(io(&to))?;
            sync_dir(&from, &to)?;
        } else {
            let content = std::fs::read(&from).map_err(io(&from))?;
            let perms = std::fs::metadata(&from).map_err(io(&from))?.permissions();
            if std::fs::read(&to).ok().as_deref() != Some(content.as_slice()) {
                // Renamed into place, so a reader (a client re-reading its token) sees the old file or the
                // new one, never a half-written one. A leftover temp file is removed on the next sync.
                let tmp = dst.join(format!("..{}.tmp", entry.file_name().to_string_lossy()));
                std::fs::write(&tmp, content).map_err(io(&tmp))?;
                std::fs::set_permissions(&tmp, perms.clone()).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &to).map_err(io(&to))?;
            }
            std::fs::set_permissions(&to, perms).map_err(io(&to))?;
        }
    }
    Ok(())
}

/// Unmounts every tmpfs under the pod's directory and deletes it. Idempotent.
pub fn teardown(pod_dir: &Path) -> Result<(), VolumeError> {
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let prefix = pod_dir.to_string_lossy().into_owned();
        let mut points: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p.starts_with(&format!("{prefix}/")))
            .collect();
        // Deepest first.
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Err(e) = nix::mount::umount2(Path::new(&p), nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %p, error = %e, "unmounting pod volume failed");
            }
        }
    }
    match std::fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VolumeError::Io {
            path: pod_dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "cfg", "mountPath": "/etc/app", "readOnly": true},
                    {"name": "cfg", "mountPath": "/etc/one.conf", "subPath": "one.conf"},
                    {"name": "logs", "mountPath": "/var/log/host"}]}],
                "volumes": [
                    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "one", "path": "one.conf"}]}},
                    {"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"name": "kube-api-access-x", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                                                    "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]
            }
        }))
        .unwrap()
    }

    fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": data})).unwrap()
    }

    #[test]
    fn plans_each_volume_kind() {
        let p = pod();
        let plan = plan(&p, Path::new("/data/pods/u1")).unwrap();
        assert_eq!(
            plan[0].path,
            Path::new("/data/pods/u1/volumes/kubernetes.io~empty-dir/scratch")
        );
        assert_eq!(
            plan[0].kind,
            VolumeKind::EmptyDir {
                memory: true,
                size_limit: Some(64 << 20)
            }
        );
        assert_eq!(
            plan[1].path,
            Path::new("/data/pods/u1/volumes/kubernetes.io~configmap/cfg")
        );
        assert_eq!(plan[2].path, Path::new("/var/log"));
        assert_eq!(plan[4].kind, VolumeKind::Files);
        let mounts = container_mounts(&p.spec.as_ref().unwrap().containers[0], &plan).unwrap();
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[2].source, plan[1].path.join("one.conf"));
        assert!(
            mounts[1].read_only && mounts[2].read_only,
            "configMap volumes are read-only"
        );
        assert!(!mounts[0].read_only && !mounts[3].read_only);
    }

    #[test]
    fn files_of_configmap_downward_and_projected_volumes() {
        let p = pod();
        let cms = BTreeMap::from([
            (
                "app".to_string(),
                cm("app", serde_json::json!({"one": "1", "two": "2"})),
            ),
            (
                "kube-root-ca.crt".to_string(),
                cm("kube-root-ca.crt", serde_json::json!({"ca.crt": "PEM"})),
            ),
        ]);
        let secrets = BTreeMap::new();
        let specs = token_specs(&p);
        assert_eq!(
            specs.iter().collect::<Vec<_>>(),
            [&TokenSpec {
                audience: None,
                expiration_seconds: 3607
            }]
        );
        let tokens: BTreeMap<TokenSpec, String> = specs.into_iter().map(|s| (s, "tok".to_string())).collect();
        let src = FileSources {
            config_maps: &cms,
            secrets: &secrets,
            tokens: &tokens,
            host_ip: "192.168.1.2",
            pod_ips: &[],
        };
        let volumes = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap().clone();
        let cfg = files(&p, &volumes[1], &src).unwrap();
        assert_eq!(cfg.len(), 1, "only the listed item");
        assert_eq!(
            (cfg[0].path.to_str(), cfg[0].content.as_slice()),
            (Some("one.conf"), &b"1"[..])
        );
        let info = files(&p, &volumes[3], &src).unwrap();
        assert_eq!(info[0].content, b"app=\"web\"");
        assert_eq!(info[1].content, b"web");
        let sa = files(&p, &volumes[4], &src).unwrap();
        let names: Vec<_> = sa.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(names, ["token", "ca.crt", "namespace"]);
        assert_eq!(sa[0].content, b"tok");
        assert_eq!(sa[2].content, b"shop");
        let none = BTreeMap::new();
        let no_token = FileSources { tokens: &none, ..src };
        assert!(
            matches!(files(&p, &volumes[4], &no_token), Err(VolumeError::Token(_))),
            "no token: the volume waits for one"
        );
        let empty = BTreeMap::new();
        let missing = FileSources {
            config_maps: &empty,
            ..no_token
        };
        assert!(
            matches!(files(&p, &volumes[1], &missing), Err(VolumeError::ConfigMapNotFound(n)) if n == "app")
        );
    }

    #[test]
    fn tokens_are_refreshed_at_80_percent_of_their_lifetime_or_after_a_day() {
        let issued = 1_000_000;
        let hour = 3600;
        assert!(!token_needs_refresh(issued + hour, hour, issued));
        assert!(!token_needs_refresh(issued + hour, hour, issued + 47 * 60));
        assert!(token_needs_refresh(issued + hour, hour, issued + 48 * 60));
        let week = 7 * 24 * hour;
        assert!(!token_needs_refresh(issued + week, week, issued + 23 * hour));
        assert!(token_needs_refresh(issued + week, week, issued + 24 * hour));
    }

    #[test]
    fn paths_cannot_escape_the_volume() {
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("a/b").is_ok());
    }

    #[test]
    fn files_volume_is_written_and_updated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let v = PlannedVolume {
            name: "cfg".into(),
            kind: VolumeKind::Files,
            path: dir.path().join("cfg"),
        };
        let f = |p: &str, c: &str| VolumeFile {
            path: p.into(),
            content: c.as_bytes().to_vec(),
            mode: 0o600,
        };
        materialize(&v, &[f("a", "1"), f("sub/b", "2")]).unwrap();
        assert_eq!(std::fs::read_to_string(v.path.join("sub/b")).unwrap(), "2");
        materialize(&v, &[f("a", "3")]).unwrap();
        assert_eq!(std::fs::read_to_string(v.path.join("a")).unwrap(), "3");
        assert!(!v.path.join("sub").exists(), "removed keys disappear");
        teardown(dir.path()).unwrap();
        assert!(!dir.path().exists());
    }
}
