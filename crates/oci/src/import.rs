//! `rkube image import FILE`: an OCI image layout archive or a `docker save` tarball into the store.
//!
//! The archive is unpacked into a staging directory under the store's `tmp/`, then every blob is copied in
//! through the store's verified writer, so a corrupt archive stores nothing under a wrong name. Imported images
//! are marked so image GC never removes them: an air-gapped node cannot pull them back.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::digest::{Digest, Hashing};
use crate::manifest::{self, Descriptor, Manifest, ManifestError, Parsed};
use crate::store::{ImageRecord, ImageStore, StoreError};
use crate::unpack::{self, UnpackError, Whiteouts};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the archive or a file in it failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The archive could not be unpacked (malformed tar, unsafe paths).
    #[error("unpacking archive: {0}")]
    Archive(#[from] UnpackError),
    /// Neither `manifest.json` (docker save) nor `index.json` (OCI layout) is in the archive.
    #[error("not an OCI image layout or docker save archive")]
    UnknownFormat,
    /// A JSON file in the archive is malformed.
    #[error("{file}: {source}")]
    Json {
        file: &'static str,
        source: serde_json::Error,
    },
    /// A manifest or config is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An image name in the archive is not a valid reference.
    #[error("invalid image name {0:?} in archive")]
    Name(String),
    /// No image in the archive carries a name to record it under.
    #[error("the archive holds no named image")]
    NoImages,
    /// Storing blobs or unpacking layers failed (includes digest mismatches).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Imports every named image in the archive at `file` (plain or gzipped tar) and returns their records.
pub fn import_archive(store: &ImageStore, file: &Path) -> Result<Vec<ImageRecord>, ImportError> {
    let tmp = store.root().join("tmp");
    let staging = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(&tmp)
        .map_err(io_err(&tmp))?;
    let archive = File::open(file).map_err(io_err(file))?;
    unpack::unpack_verified(BufReader::new(archive), staging.path(), Whiteouts::Apply)?;
    let dir = staging.path();
    let records = if dir.join("manifest.json").is_file() {
        import_docker_save(store, dir)?
    } else if dir.join("index.json").is_file() {
        import_oci_layout(store, dir)?
    } else {
        return Err(ImportError::UnknownFormat);
    };
    if records.is_empty() {
        return Err(ImportError::NoImages);
    }
    Ok(records)
}

fn normalize(name: &str) -> Result<String, ImportError> {
    oci_client::Reference::from_str(name)
        .map(|r| r.whole())
        .map_err(|_| ImportError::Name(name.to_owned()))
}

/// Copies a file from the staging dir into the store, verifying it against `digest`.
fn store_file(store: &ImageStore, path: &Path, digest: &Digest) -> Result<u64, ImportError> {
    let f = File::open(path).map_err(io_err(path))?;
    Ok(store.write_blob(digest, BufReader::new(f))?)
}

/// Digest and size of a file.
fn digest_file(path: &Path) -> Result<(Digest, u64), ImportError> {
    let mut h = Hashing::new(BufReader::new(File::open(path).map_err(io_err(path))?));
    io::copy(&mut h, &mut io::sink()).map_err(io_err(path))?;
    let (d, len, _) = h.finish();
    Ok((d, len))
}

fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImportError> {
    Ok(dir.join(unpack::sanitize(Path::new(rel))?))
}

fn import_docker_save(store: &ImageStore, dir: &Path) -> Result<Vec<ImageRecord>, ImportError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let path = dir.join("manifest.json");
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|source| ImportError::Json {
        file: "manifest.json",
        source,
    })?;
    let mut records = Vec::new();
    for entry in entries {
        let config_path = inside(dir, &entry.config)?;
        let (config_digest, config_size) = digest_file(&config_path)?;
        store_file(store, &config_path, &config_digest)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let layer_path = inside(dir, layer)?;
            let (digest, size) = digest_file(&layer_path)?;
            store_file(store, &layer_path, &digest)?;
            let mut magic = [0u8; 2];
            let gz = io::Read::read_exact(
                &mut File::open(&layer_path).map_err(io_err(&layer_path))?,
                &mut magic,
            )
            .is_ok()
                && magic == [0x1f, 0x8b];
            let media_type = if gz {
                manifest::DOCKER_LAYER_GZIP
            } else {
                manifest::DOCKER_LAYER_TAR
            };
            layers.push(
                serde_json::json!({"mediaType": media_type, "size": size, "digest": digest.to_string()}),
            );
        }
        // docker save carries no registry manifest; write the one a registry would serve for this image.
        let manifest_json = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::DOCKER_MANIFEST,
            "config": {"mediaType": manifest::DOCKER_CONFIG, "size": config_size, "digest": config_digest.to_string()},
            "layers": layers,
        }))
        .map_err(|source| ImportError::Json { file: "manifest.json", source })?;
        let manifest_digest = Digest::of(&manifest_json);
        store.write_blob(&manifest_digest, &manifest_json[..])?;
        let Parsed::Manifest(m) = manifest::parse(&manifest_json)? else {
            unreachable!("built as a manifest")
        };
        for tag in entry.repo_tags.unwrap_or_default() {
            records.push(store.install_image(&normalize(&tag)?, &manifest_digest, &m, true)?);
        }
    }
    Ok(records)
}

fn import_oci_layout(store: &ImageStore, dir: &Path) -> Result<Vec<ImageRecord>, ImportError> {
    let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
    let path = dir.join("index.json");
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let Parsed::Index(index) = manifest::parse(&bytes)? else {
        return Err(ImportError::UnknownFormat);
    };
    let mut records = Vec::new();
    for entry in &index.manifests {
        let name = ["io.containerd.image.name", "org.opencontainers.image.ref.name"]
            .iter()
            .find_map(|k| entry.annotations.get(*k))
            .and_then(|n| normalize(n).ok());
        let Some(name) = name else { continue };
        let (manifest_digest, m) = resolve(store, entry, &blob)?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            store_file(store, &blob(&d.digest), &d.digest)?;
        }
        records.push(store.install_image(&name, &manifest_digest, &m, true)?);
    }
    Ok(records)
}

/// Follows index entries down to the linux/amd64 manifest, storing each manifest blob on the way.
fn resolve(
    store: &ImageStore,
    entry: &Descriptor,
    blob: &impl Fn(&Digest) -> PathBuf,
) -> Result<(Digest, Manifest), ImportError> {
    let mut digest = entry.digest.clone();
    // An index nests at most a few levels in practice; the bound stops a cycle in a hostile archive.
    for _ in 0..4 {
        store_file(store, &blob(&digest), &digest)?;
        match manifest::parse(&store.read_blob(&digest)?)? {
            Parsed::Manifest(m) => return Ok((digest, m)),
            Parsed::Index(index) => digest = index.linux_amd64()?.digest.clone(),
        }
    }
    Err(ManifestError::NoPlatform.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    /// A one-layer image whose layer holds `bin/hello`: (layer tar, config JSON).
    fn image() -> (Vec<u8>, Vec<u8>) {
        let mut layer = tar::Builder::new(Vec::new());
        append(&mut layer, "bin/hello", b"#!/bin/sh\necho hello\n");
        let layer = layer.into_inner().unwrap();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]}});
        (layer, serde_json::to_vec(&config).unwrap())
    }

    fn write_archive(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            append(&mut b, p, data);
        }
        let path = dir.join("image.tar");
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn imports_docker_save_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let (layer, config) = image();
        let manifest = serde_json::json!([{"Config": "cfg.json", "RepoTags": ["hello:1.0"], "Layers": ["abc/layer.tar"]}]);
        let archive = write_archive(
            dir.path(),
            &[
                ("manifest.json", manifest.to_string().into_bytes()),
                ("cfg.json", config.clone()),
                ("abc/layer.tar", layer.clone()),
            ],
        );
        let records = import_archive(&store, &archive).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.reference, "docker.io/library/hello:1.0");
        assert!(r.imported);
        assert_eq!(r.config_digest, Digest::of(&config));
        assert_eq!(r.layers[0].media_type, manifest::DOCKER_LAYER_TAR);
        assert!(store.layer_dir(&Digest::of(&layer)).join("bin/hello").is_file());
        assert_eq!(store.list_images().unwrap(), records);
        assert!(
            fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(),
            "staging removed"
        );
    }

    #[test]
    fn imports_oci_layout_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let (layer, config) = image();
        let (ld, cd) = (Digest::of(&layer), Digest::of(&config));
        let m = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": cd.to_string()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": layer.len(), "digest": ld.to_string()}]}))
        .unwrap();
        let md = Digest::of(&m);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": manifest::OCI_MANIFEST,
            "size": m.len(), "digest": md.to_string(),
            "annotations": {"io.containerd.image.name": "127.0.0.1:5000/hello:v2"}}]});
        let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let archive = write_archive(
            dir.path(),
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                ("index.json", index.to_string().into_bytes()),
                (&blob(&md), m.clone()),
                (&blob(&cd), config.clone()),
                (&blob(&ld), layer.clone()),
            ],
        );
        let records = import_archive(&store, &archive).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].reference, "127.0.0.1:5000/hello:v2");
        assert_eq!(records[0].manifest_digest, md);
        assert!(records[0].imported);
        assert!(store.layer_dir(&ld).join("bin/hello").is_file());
    }

    #[test]
    fn corrupt_blob_in_oci_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let claimed = Digest::of(b"real manifest");
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": manifest::OCI_MANIFEST,
            "size": 13, "digest": claimed.to_string(), "annotations": {"io.containerd.image.name": "x:1"}}]});
        let archive = write_archive(
            dir.path(),
            &[
                ("index.json", index.to_string().into_bytes()),
                (&format!("blobs/sha256/{}", claimed.hex()), b"tampered".to_vec()),
            ],
        );
        let err = import_archive(&store, &archive).unwrap_err();
        assert!(
            matches!(err, ImportError::Store(StoreError::DigestMismatch { .. })),
            "{err}"
        );
        assert!(!store.has_blob(&claimed));
        assert!(store.list_images().unwrap().is_empty());
    }
}
