//! Image garbage collection by disk threshold, kubelet-style: a pure plan, then [`ImageStore`] removals.
//!
//! Above the high threshold, images are removed least recently used first until usage would be at the low
//! threshold. Images in use by a container and imported images (an air-gapped node could not pull them
//! back) are never chosen.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;

use crate::digest::Digest;
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Bytes to free when `used` of `capacity` is at or above `high_percent`, to get down to `low_percent`.
pub fn bytes_to_free(capacity: u64, used: u64, high_percent: u8, low_percent: u8) -> u64 {
    let pct = |p: u8| (capacity as u128 * p as u128 / 100) as u64;
    if capacity == 0 || used < pct(high_percent) {
        0
    } else {
        used.saturating_sub(pct(low_percent))
    }
}

/// The references to remove, least recently used first, until their sizes add up to `to_free` (or no
/// candidate is left). `in_use` holds references of images that running or pending containers use.
pub fn plan(images: &[ImageRecord], in_use: &HashSet<String>, to_free: u64) -> Vec<String> {
    let mut candidates: Vec<&ImageRecord> = images
        .iter()
        .filter(|i| !i.imported && !in_use.contains(&i.reference))
        .collect();
    // RFC 3339 UTC timestamps of one format sort chronologically as strings.
    candidates.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.reference.cmp(&b.reference))
    });
    let mut freed = 0u64;
    let mut out = Vec::new();
    for image in candidates {
        if freed >= to_free {
            break;
        }
        freed += image.size;
        out.push(image.reference.clone());
    }
    out
}

impl ImageStore {
    /// Forgets `reference` and deletes every blob and unpacked layer no remaining image refers to.
    /// Returns the bytes of blobs deleted. Blobs of a pull still in progress are not yet referenced, so the
    /// caller must not run this concurrently with pulls or imports into the same store.
    pub fn remove_image(&self, reference: &str) -> Result<u64, StoreError> {
        self.forget_image(reference)?;
        let images = self.list_images()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for i in &images {
            keep_blobs.insert(i.manifest_digest.hex().to_owned());
            keep_blobs.insert(i.config_digest.hex().to_owned());
            for l in &i.layers {
                keep_blobs.insert(l.digest.hex().to_owned());
                keep_layers.insert(l.diff_id.hex().to_owned());
            }
        }
        let mut freed = 0;
        let blobs = self.root().join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(|source| StoreError::Io {
            path: blobs.clone(),
            source,
        })? {
            let entry = entry.map_err(|source| StoreError::Io {
                path: blobs.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&name) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                remove(fs::remove_file(entry.path()), &entry.path())?;
            }
        }
        let layers = self.root().join("layers");
        for entry in fs::read_dir(&layers).map_err(|source| StoreError::Io {
            path: layers.clone(),
            source,
        })? {
            let entry = entry.map_err(|source| StoreError::Io {
                path: layers.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if format!("sha256:{name}").parse::<Digest>().is_err() {
                continue;
            }
            if !keep_layers.contains(&name) {
                remove(fs::remove_dir_all(entry.path()), &entry.path())?;
            }
        }
        Ok(freed)
    }
}

fn remove(res: io::Result<()>, path: &std::path::Path) -> Result<(), StoreError> {
    match res {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str, size: u64, last_used: &str, imported: bool) -> ImageRecord {
        ImageRecord {
            reference: reference.into(),
            manifest_digest: Digest::of(reference.as_bytes()),
            config_digest: Digest::of(b"c"),
            layers: vec![],
            size,
            imported,
            last_used: last_used.into(),
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(bytes_to_free(1000, 840, 85, 80), 0);
        assert_eq!(bytes_to_free(1000, 850, 85, 80), 50);
        assert_eq!(bytes_to_free(1000, 990, 85, 80), 190);
        assert_eq!(bytes_to_free(0, 10, 85, 80), 0);
    }

    #[test]
    fn plan_takes_least_recently_used_and_spares_in_use_and_imported() {
        let images = vec![
            image("a", 100, "2026-01-03T00:00:00Z", false),
            image("old-imported", 500, "2026-01-01T00:00:00Z", true),
            image("old-in-use", 500, "2026-01-01T00:00:00Z", false),
            image("b", 100, "2026-01-02T00:00:00Z", false),
            image("c", 100, "2026-01-04T00:00:00Z", false),
        ];
        let in_use = HashSet::from(["old-in-use".to_owned()]);
        assert_eq!(plan(&images, &in_use, 150), vec!["b", "a"]);
        assert_eq!(plan(&images, &in_use, 0), Vec::<String>::new());
        assert_eq!(plan(&images, &in_use, 10_000), vec!["b", "a", "c"]);
    }

    #[test]
    fn removing_an_image_keeps_blobs_and_layers_another_image_shares() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let put = |data: &[u8]| {
            let d = Digest::of(data);
            store.write_blob(&d, data).unwrap();
            d
        };
        let shared = put(b"shared layer");
        let only_a = put(b"layer of a");
        let (ma, mb, cfg) = (put(b"manifest a"), put(b"manifest b"), put(b"config"));
        let layer = |d: &Digest| {
            fs::create_dir_all(store.layer_dir(d)).unwrap();
            crate::store::LayerRecord {
                digest: d.clone(),
                diff_id: d.clone(),
                media_type: String::new(),
                size: 1,
            }
        };
        let rec = |r: &str, m: &Digest, layers| ImageRecord {
            reference: r.into(),
            manifest_digest: m.clone(),
            config_digest: cfg.clone(),
            layers,
            size: 2,
            imported: false,
            last_used: "2026-01-01T00:00:00Z".into(),
        };
        store
            .put_image(rec("a", &ma, vec![layer(&shared), layer(&only_a)]))
            .unwrap();
        store.put_image(rec("b", &mb, vec![layer(&shared)])).unwrap();

        let freed = store.remove_image("a").unwrap();
        assert_eq!(freed, (b"layer of a".len() + b"manifest a".len()) as u64);
        assert!(!store.has_blob(&only_a) && !store.has_blob(&ma));
        assert!(!store.layer_dir(&only_a).exists());
        assert!(store.has_blob(&shared) && store.has_blob(&cfg) && store.has_blob(&mb));
        assert!(store.layer_dir(&shared).is_dir());
        assert_eq!(store.list_images().unwrap().len(), 1);
    }
}
