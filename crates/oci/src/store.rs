//! The on-disk image store: verified content-addressed blobs, unpacked layers and the image index.
//!
//! Layout under the root: `blobs/sha256/<hex>` (immutable, verified before they appear), `layers/<diffid hex>/`
//! (one unpacked directory per layer, shared by every image that has it), `images.json` (reference → image
//! record) and `tmp/` (partial downloads; anything there is garbage from an interrupted write).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hashing};
use crate::manifest::{self, Manifest, ManifestError};
use crate::unpack::{self, UnpackError, Whiteouts};

/// Failures of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's files failed.
    #[error("image store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Content did not hash to the digest it was promised under; nothing was stored.
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A blob the caller needs is not in the store.
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    /// `images.json` could not be parsed or written.
    #[error("image index {path}: {source}")]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A manifest or config in the store is unusable.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// Unpacking a layer failed.
    #[error("unpacking layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One layer of an image as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Digest of the (possibly compressed) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What `images.json` holds for one image reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Fully qualified reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// Digest of the platform manifest (the `imageID`'s repo digest part).
    pub manifest_digest: Digest,
    /// Digest of the image config (Kubernetes shows it as the image ID).
    pub config_digest: Digest,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Sum of the blob sizes.
    pub size: u64,
    /// Imported with `rkube image import`; image GC never removes these.
    pub imported: bool,
    /// RFC 3339 time of the last pull or use, for GC ordering.
    pub last_used: String,
}

/// The store rooted at one directory. Cheap to share behind an `Arc`; writes to the index are serialized.
pub struct ImageStore {
    root: PathBuf,
    index_lock: Mutex<()>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, StoreError> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ImageStore {
            root,
            index_lock: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io { path, source },
        })
    }

    /// Starts writing a blob that must hash to `expected`; see [`BlobWriter::commit`].
    pub fn blob_writer(&self, expected: &Digest) -> Result<BlobWriter, StoreError> {
        let tmp_dir = self.root.join("tmp");
        let file = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_err(&tmp_dir))?;
        Ok(BlobWriter {
            expected: expected.clone(),
            target: self.blob_path(expected),
            file: Hashing::new(file),
        })
    }

    /// Copies `reader` into the blob `expected`, verifying it. Returns the size.
    pub fn write_blob(&self, expected: &Digest, mut reader: impl Read) -> Result<u64, StoreError> {
        if let Ok(meta) = fs::metadata(self.blob_path(expected)) {
            return Ok(meta.len());
        }
        let mut w = self.blob_writer(expected)?;
        io::copy(&mut reader, &mut w).map_err(io_err(&w.target.clone()))?;
        w.commit()
    }

    /// Directory holding the unpacked layer with this diff ID.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Unpacks blob `layer` (tar, optionally gzipped) into [`Self::layer_dir`] unless already there,
    /// converting whiteouts to overlayfs' form. The uncompressed stream must hash to `diff_id`; the
    /// directory appears (by rename) only when it does.
    pub fn unpack_layer(&self, layer: &Digest, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(diff_id);
        if dir.is_dir() {
            return Ok(dir);
        }
        let blob = self.blob_path(layer);
        let file = File::open(&blob).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(layer.clone()),
            _ => StoreError::Io {
                path: blob.clone(),
                source,
            },
        })?;
        let tmp_parent = self.root.join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_parent)
            .map_err(io_err(&tmp_parent))?;
        let unpack_err = |source| StoreError::Unpack {
            layer: layer.clone(),
            source,
        };
        let actual = unpack::unpack_verified(BufReader::new(file), staging.path(), Whiteouts::Overlay)
            .map_err(unpack_err)?;
        if &actual != diff_id {
            return Err(StoreError::DigestMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        let staged = staging.keep();
        match fs::rename(&staged, &dir) {
            Ok(()) => Ok(dir),
            // Someone else unpacked the same layer concurrently; theirs is as good as ours.
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&staged);
                Ok(dir)
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&staged);
                Err(StoreError::Io { path: dir, source })
            }
        }
    }

    /// Unpacks the layers of `manifest` (whose blobs, and config blob, must be stored already), checks them
    /// against the config's diff IDs and records the image under `reference`.
    pub fn install_image(
        &self,
        reference: &str,
        manifest_digest: &Digest,
        manifest: &Manifest,
        imported: bool,
    ) -> Result<ImageRecord, StoreError> {
        let config = self.read_blob(&manifest.config.digest)?;
        let diff_ids = manifest::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ManifestError::LayerCount {
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            }
            .into());
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
            self.unpack_layer(&layer.digest, &diff_id)?;
            layers.push(LayerRecord {
                digest: layer.digest.clone(),
                diff_id,
                media_type: layer.media_type.clone(),
                size: layer.size,
            });
        }
        let record = ImageRecord {
            reference: reference.to_owned(),
            manifest_digest: manifest_digest.clone(),
            config_digest: manifest.config.digest.clone(),
            size: manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>(),
            layers,
            imported,
            last_used: now(),
        };
        self.put_image(record.clone())?;
        Ok(record)
    }

    /// The image's unpacked layer directories in overlayfs `lowerdir=` order (top layer first).
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.layer_dir(&l.diff_id))
            .collect()
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<BTreeMap<String, ImageRecord>, StoreError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Index { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn write_index(&self, index: &BTreeMap<String, ImageRecord>) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Index {
            path: path.clone(),
            source,
        })?;
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_err(&tmp_dir))?;
        tmp.write_all(&bytes).map_err(io_err(&path))?;
        tmp.as_file().sync_all().map_err(io_err(&path))?;
        tmp.persist(&path).map_err(|e| StoreError::Io {
            path,
            source: e.error,
        })?;
        Ok(())
    }

    /// Adds or replaces the record for `record.reference`. An image once imported stays marked imported.
    pub fn put_image(&self, mut record: ImageRecord) -> Result<(), StoreError> {
        let _guard = self.index_lock.lock();
        let mut index = self.read_index()?;
        if let Some(old) = index.get(&record.reference) {
            record.imported |= old.imported && old.manifest_digest == record.manifest_digest;
        }
        index.insert(record.reference.clone(), record);
        self.write_index(&index)
    }

    /// The record for a fully qualified reference.
    pub fn get_image(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self.read_index()?.remove(reference))
    }

    /// Every image, ordered by reference (for `rkube image ls`).
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.read_index()?.into_values().collect())
    }

    /// Drops the index entry only; [`ImageStore::remove_image`] also deletes unshared content.
    pub(crate) fn forget_image(&self, reference: &str) -> Result<(), StoreError> {
        let _guard = self.index_lock.lock();
        let mut index = self.read_index()?;
        if index.remove(reference).is_some() {
            self.write_index(&index)?;
        }
        Ok(())
    }

    /// Marks an image used now, so GC keeps recently used images longest.
    pub fn touch_image(&self, reference: &str) -> Result<(), StoreError> {
        let _guard = self.index_lock.lock();
        let mut index = self.read_index()?;
        if let Some(r) = index.get_mut(reference) {
            r.last_used = now();
            self.write_index(&index)?;
        }
        Ok(())
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A blob being written into `tmp/`; it becomes visible under `blobs/` only through [`BlobWriter::commit`],
/// and dropping it uncommitted removes the partial file.
pub struct BlobWriter {
    expected: Digest,
    target: PathBuf,
    file: Hashing<tempfile::NamedTempFile>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Verifies the digest, syncs and renames the blob into place. Returns the size. On a mismatch the
    /// partial file is removed and nothing is stored.
    pub fn commit(self) -> Result<u64, StoreError> {
        let (actual, len, file) = self.file.finish();
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        file.as_file().sync_all().map_err(io_err(&self.target))?;
        file.persist(&self.target).map_err(|e| StoreError::Io {
            path: self.target.clone(),
            source: e.error,
        })?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        (dir, store)
    }

    fn tmp_is_empty(store: &ImageStore) -> bool {
        fs::read_dir(store.root().join("tmp")).unwrap().next().is_none()
    }

    #[test]
    fn verified_blob_lands_under_its_digest() {
        let (_d, store) = store();
        let data = b"hello layer".repeat(1000);
        let digest = Digest::of(&data);
        assert_eq!(store.write_blob(&digest, &data[..]).unwrap(), data.len() as u64);
        assert_eq!(store.read_blob(&digest).unwrap(), data);
        assert!(
            store
                .blob_path(&digest)
                .ends_with(format!("blobs/sha256/{}", digest.hex()))
        );
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn mismatching_blob_is_an_error_and_leaves_nothing() {
        let (_d, store) = store();
        let claimed = Digest::of(b"what the manifest promised");
        let err = store
            .write_blob(&claimed, &b"what the registry sent"[..])
            .unwrap_err();
        match err {
            StoreError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::of(b"what the registry sent"));
            }
            other => panic!("expected a digest mismatch, got {other}"),
        }
        assert!(!store.has_blob(&claimed));
        assert!(tmp_is_empty(&store));
        assert!(
            fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn lower_dirs_put_the_top_layer_first() {
        let (_d, store) = store();
        let (bottom, top) = (Digest::of(b"bottom"), Digest::of(b"top"));
        let layer = |d: &Digest| LayerRecord {
            digest: d.clone(),
            diff_id: d.clone(),
            media_type: String::new(),
            size: 0,
        };
        let image = ImageRecord {
            reference: "x".into(),
            manifest_digest: Digest::of(b"m"),
            config_digest: Digest::of(b"c"),
            layers: vec![layer(&bottom), layer(&top)],
            size: 0,
            imported: false,
            last_used: now(),
        };
        assert_eq!(
            store.lower_dirs(&image),
            vec![store.layer_dir(&top), store.layer_dir(&bottom)]
        );
    }

    #[test]
    fn index_round_trips_and_keeps_imported_flag() {
        let (_d, store) = store();
        let layer = Digest::of(b"l");
        let rec = ImageRecord {
            reference: "docker.io/library/busybox:latest".into(),
            manifest_digest: Digest::of(b"m"),
            config_digest: Digest::of(b"c"),
            layers: vec![LayerRecord {
                digest: layer.clone(),
                diff_id: layer,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: 1,
            }],
            size: 1,
            imported: true,
            last_used: now(),
        };
        store.put_image(rec.clone()).unwrap();
        store
            .put_image(ImageRecord {
                imported: false,
                ..rec.clone()
            })
            .unwrap();
        assert_eq!(store.list_images().unwrap(), vec![rec.clone()]);
        assert!(
            store
                .get_image("docker.io/library/busybox:latest")
                .unwrap()
                .unwrap()
                .imported
        );
        assert_eq!(store.get_image("docker.io/library/other:latest").unwrap(), None);
    }
}
