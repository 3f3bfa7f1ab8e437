//! Pulling an image from an OCI distribution (v2) registry into the [`ImageStore`].
//!
//! oci-client does the HTTP, including the bearer-token dance after a `401` with `WWW-Authenticate`. Everything
//! it hands us is hashed again here: the manifest against the digest we asked for (or the index entry that led
//! to it), blobs as they stream to disk, layers against the config's diff IDs as they unpack.

use std::str::FromStr;
use std::sync::{Arc, Once};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use std::io::Write;

pub use oci_client::secrets::RegistryAuth;

use crate::digest::{Digest, DigestError};
use crate::manifest::{self, Descriptor, ManifestError, Parsed};
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Why a pull failed (the agent reports these as `ErrImagePull`).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image name is not a valid reference.
    #[error("invalid image reference {image:?}: {source}")]
    Reference {
        image: String,
        source: oci_client::ParseError,
    },
    /// The registry refused or failed the request (not found, unauthorized, network).
    #[error("registry: {0}")]
    Registry(#[from] oci_client::errors::OciDistributionError),
    /// The registry's digest header is not a sha256 digest.
    #[error("registry sent digest: {0}")]
    Digest(#[from] DigestError),
    /// What the registry sent does not hash to the digest it was asked for.
    #[error("manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigest { expected: Digest, actual: Digest },
    /// The manifest, index or config is malformed or lacks linux/amd64.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Storing or unpacking failed (includes blob digest mismatches).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Downloading a blob broke off.
    #[error("downloading {digest}: {source}")]
    Download { digest: Digest, source: std::io::Error },
    /// The blocking unpack task panicked or was cancelled.
    #[error("unpack task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Registries reached over plain HTTP: only the local host, as Kubernetes runtimes default to.
pub fn is_plain_http(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Normalizes a pod's `image` (`busybox`, `localhost:5000/app:v1`, `x@sha256:…`) to a full reference.
pub fn parse_reference(image: &str) -> Result<Reference, PullError> {
    Reference::from_str(image).map_err(|source| PullError::Reference {
        image: image.to_owned(),
        source,
    })
}

impl ImageStore {
    /// The stored image a pod's `image` field names, after the same normalization as a pull
    /// (`busybox` → `docker.io/library/busybox:latest`). Feeds [`crate::policy::decide`]'s `present`.
    pub fn find_image(&self, image: &str) -> Result<Option<ImageRecord>, PullError> {
        Ok(self.get_image(&parse_reference(image)?.whole())?)
    }
}

/// A registry client pair (HTTPS, and plain HTTP for loopback registries). Create once and share.
pub struct Puller {
    https: Client,
    http: Client,
    /// Registries (`host:port`) pulled over plain HTTP although not on loopback (`--insecure-registry`).
    insecure: Vec<String>,
}

impl Default for Puller {
    fn default() -> Self {
        Self::new()
    }
}

impl Puller {
    pub fn new() -> Puller {
        static PROVIDER: Once = Once::new();
        // oci-client is built without a TLS provider so that ring is the only one in the binary.
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = |protocol| {
            Client::new(ClientConfig {
                protocol,
                platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
                connect_timeout: Some(std::time::Duration::from_secs(10)),
                ..ClientConfig::default()
            })
        };
        Puller {
            https: client(ClientProtocol::Https),
            http: client(ClientProtocol::Http),
            insecure: Vec::new(),
        }
    }

    /// A puller that also uses plain HTTP for `registries` (`host:port`, as in image references).
    pub fn with_insecure_registries(registries: Vec<String>) -> Puller {
        Puller {
            insecure: registries,
            ..Puller::new()
        }
    }

    fn client_for(&self, reference: &Reference) -> &Client {
        let registry = reference.resolve_registry();
        if is_plain_http(registry) || self.insecure.iter().any(|r| r == registry) {
            &self.http
        } else {
            &self.https
        }
    }

    /// Pulls `image` into `store` (skipping blobs already there), unpacks its layers and records it.
    pub async fn pull(
        &self,
        store: &Arc<ImageStore>,
        image: &str,
        auth: &RegistryAuth,
    ) -> Result<ImageRecord, PullError> {
        let reference = parse_reference(image)?;
        let client = self.client_for(&reference);
        let (bytes, header_digest) = client
            .pull_manifest_raw(&reference, auth, manifest::ACCEPTED)
            .await?;
        let mut manifest_digest = Digest::of(&bytes);
        // Pinned by digest: the registry must send exactly that. By tag: it must agree with its own header.
        let expected = match reference.digest() {
            Some(d) => Some(Digest::from_str(d)?),
            None => Digest::from_str(&header_digest).ok(),
        };
        if let Some(expected) = expected
            && expected != manifest_digest
        {
            return Err(PullError::ManifestDigest {
                expected,
                actual: manifest_digest,
            });
        }
        let mut bytes = bytes;
        let manifest = match manifest::parse(&bytes)? {
            Parsed::Manifest(m) => m,
            Parsed::Index(index) => {
                let entry = index.linux_amd64()?;
                let by_digest = reference.clone_with_digest(entry.digest.to_string());
                let (platform_bytes, _) = client
                    .pull_manifest_raw(&by_digest, auth, manifest::ACCEPTED)
                    .await?;
                let actual = Digest::of(&platform_bytes);
                if actual != entry.digest {
                    return Err(PullError::ManifestDigest {
                        expected: entry.digest.clone(),
                        actual,
                    });
                }
                manifest_digest = actual;
                bytes = platform_bytes;
                match manifest::parse(&bytes)? {
                    Parsed::Manifest(m) => m,
                    Parsed::Index(_) => return Err(ManifestError::NoPlatform.into()),
                }
            }
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !store.has_blob(&blob.digest) {
                self.fetch_blob(client, &reference, blob, store).await?;
            }
        }
        store.write_blob(&manifest_digest, &bytes[..])?;
        let name = reference.whole();
        let store = Arc::clone(store);
        let record = tokio::task::spawn_blocking(move || {
            store.install_image(&name, &manifest_digest, &manifest, false)
        })
        .await??;
        Ok(record)
    }

    async fn fetch_blob(
        &self,
        client: &Client,
        reference: &Reference,
        blob: &Descriptor,
        store: &ImageStore,
    ) -> Result<(), PullError> {
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: blob.size as i64,
            ..OciDescriptor::default()
        };
        let mut stream = client.pull_blob_stream(reference, &descriptor).await?;
        let mut writer = store.blob_writer(&blob.digest)?;
        let download_err = |source| PullError::Download {
            digest: blob.digest.clone(),
            source,
        };
        while let Some(chunk) = stream.stream.next().await {
            writer
                .write_all(&chunk.map_err(download_err)?)
                .map_err(download_err)?;
        }
        writer.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_use_plain_http() {
        assert!(is_plain_http("localhost:5000"));
        assert!(is_plain_http("127.0.0.1:41234"));
        assert!(is_plain_http("localhost"));
        assert!(!is_plain_http("docker.io"));
        assert!(!is_plain_http("registry.example.com:5000"));
        assert!(!is_plain_http("localhost.example.com"));
    }

    #[test]
    fn find_image_normalizes_like_pull() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let record = ImageRecord {
            reference: "docker.io/library/busybox:latest".into(),
            manifest_digest: Digest::of(b"m"),
            config_digest: Digest::of(b"c"),
            layers: vec![],
            size: 0,
            imported: false,
            last_used: "2026-01-01T00:00:00Z".into(),
        };
        store.put_image(record.clone()).unwrap();
        assert_eq!(store.find_image("busybox").unwrap(), Some(record.clone()));
        assert_eq!(
            store.find_image("docker.io/library/busybox:latest").unwrap(),
            Some(record)
        );
        assert_eq!(store.find_image("busybox:1.36").unwrap(), None);
    }

    #[test]
    fn short_names_normalize_like_docker() {
        assert_eq!(
            parse_reference("busybox").unwrap().whole(),
            "docker.io/library/busybox:latest"
        );
        let r = parse_reference("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "app", Some("v1"))
        );
        assert!(parse_reference("busy box").is_err());
    }
}
