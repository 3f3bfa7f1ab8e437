//! The parts of OCI / Docker v2 manifests, indexes and image configs the store needs.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];

/// Why a manifest or config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The JSON does not have the shape of a manifest, index or config.
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The config lists a different number of diff IDs than the manifest has layers.
    #[error("image config has {diff_ids} diff IDs but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    /// The index has no linux/amd64 image.
    #[error("no linux/amd64 image in the index")]
    NoPlatform,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A multi-platform index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// What a manifest endpoint (or `index.json`) returned.
#[derive(Debug, Clone)]
pub enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

/// Parses manifest bytes; an object with `manifests` is an index whatever its media type says.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Malformed {
            what: "manifest",
            source,
        })?;
    if value.get("manifests").is_some() {
        serde_json::from_value(value)
            .map(Parsed::Index)
            .map_err(|source| ManifestError::Malformed {
                what: "image index",
                source,
            })
    } else {
        serde_json::from_value(value)
            .map(Parsed::Manifest)
            .map_err(|source| ManifestError::Malformed {
                what: "manifest",
                source,
            })
    }
}

impl Index {
    /// The linux/amd64 entry, which is the only platform this node runs.
    pub fn linux_amd64(&self) -> Result<&Descriptor, ManifestError> {
        self.manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or(ManifestError::NoPlatform)
    }
}

/// The `rootfs.diff_ids` of an image config, bottom layer first.
pub fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, ManifestError> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<Digest>,
    }
    let c: Config = serde_json::from_slice(config).map_err(|source| ManifestError::Malformed {
        what: "image config",
        source,
    })?;
    Ok(c.rootfs.diff_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_resolves_to_linux_amd64() {
        let a = Digest::of(b"arm");
        let x = Digest::of(b"amd");
        let json = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": a.to_string(), "size": 1,
                 "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": x.to_string(), "size": 2,
                 "platform": {"architecture": "amd64", "os": "linux"}}
            ]
        });
        let Parsed::Index(index) = parse(json.to_string().as_bytes()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(index.linux_amd64().unwrap().digest, x);
        let only_arm = Index {
            manifests: index.manifests[..1].to_vec(),
        };
        assert!(matches!(only_arm.linux_amd64(), Err(ManifestError::NoPlatform)));
    }

    #[test]
    fn config_diff_ids_are_parsed_and_checked() {
        let d = Digest::of(b"layer");
        let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d.to_string()]}});
        assert_eq!(diff_ids(cfg.to_string().as_bytes()).unwrap(), vec![d]);
        let bad = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": ["md5:00"]}});
        assert!(diff_ids(bad.to_string().as_bytes()).is_err());
    }
}
