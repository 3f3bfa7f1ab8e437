//! Layer tar unpacking: path sanitizing, OCI whiteouts, ownership and modes.
//!
//! Every entry's path is made relative to the layer directory with `..` refused, and no entry is ever written
//! through a symlink, so a hostile layer cannot touch anything outside its directory. Symlink targets are kept
//! verbatim: an absolute target is resolved inside the container's root at run time, never on the host here.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::digest::{Digest, Hashing};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the archive or writing the file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The archive itself could not be read.
    #[error("reading layer archive: {0}")]
    Archive(io::Error),
    /// An entry's path (or hard link target) climbs out of the layer with `..`.
    #[error("entry path {0:?} escapes the layer")]
    UnsafePath(PathBuf),
    /// An entry would be written through a symlink inside the layer.
    #[error("entry path {0:?} goes through a symlink")]
    ThroughSymlink(PathBuf),
    /// Making the overlayfs whiteout (a 0/0 character device or an xattr) failed; this needs root.
    #[error("creating overlay whiteout {path}: {source}")]
    Whiteout { path: PathBuf, source: io::Error },
}

/// How OCI whiteout entries are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Per-layer directories stacked by overlayfs: `.wh.NAME` becomes a 0/0 character device `NAME` and
    /// `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on its directory.
    Overlay,
    /// Layers applied in order onto one directory: `.wh.NAME` deletes `NAME`, `.wh..wh..opq` empties its
    /// directory of what earlier layers put there.
    Apply,
}

/// Makes an archive path relative to the layer root: leading `/` and `.` are dropped, `..` is refused.
/// Returns an empty path for the root itself.
pub fn sanitize(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::UnsafePath(path.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Unpacks a tar or gzipped tar (detected by its magic bytes) into `dest`, returning the digest of the
/// uncompressed tar — the layer's diff ID, which the caller checks against the image config.
pub fn unpack_verified(
    mut reader: impl BufRead,
    dest: &Path,
    whiteouts: Whiteouts,
) -> Result<Digest, UnpackError> {
    let gz = reader
        .fill_buf()
        .map_err(UnpackError::Archive)?
        .starts_with(&[0x1f, 0x8b]);
    let tar_stream: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut hashing = Hashing::new(tar_stream);
    unpack(&mut hashing, dest, whiteouts)?;
    // tar stops at the end-of-archive blocks; the diff ID covers the padding after them too.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    Ok(hashing.finish().0)
}

/// Unpacks an uncompressed tar into `dest` (which must exist), keeping modes, ownership, times and xattrs.
pub fn unpack(reader: impl Read, dest: &Path, whiteouts: Whiteouts) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    // Without root, chown fails; unprivileged runs (tests, tools) keep the files as their own.
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_preserve_mtime(true);
    // Xattrs are applied by us, filtered: see `layer_xattrs`.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let raw = entry.path().map_err(UnpackError::Archive)?.into_owned();
        let rel = sanitize(&raw)?;
        let Some(name) = rel.file_name().map(OsStr::to_owned) else {
            continue;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent_dir = ensure_dirs(dest, parent)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            opaque(&parent_dir, whiteouts)?;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            whiteout(&parent_dir.join(OsStr::from_bytes(hidden)), whiteouts)?;
            continue;
        }
        let target = parent_dir.join(&name);
        let existing = fs::symlink_metadata(&target).ok();
        let is_dir_entry = entry.header().entry_type().is_dir();
        if let Some(meta) = existing {
            // A later entry replaces an earlier one; only directories merge.
            if !(is_dir_entry && meta.is_dir()) {
                remove_any(&target)?;
            }
        }
        if entry.header().entry_type().is_hard_link() {
            let link = entry
                .link_name()
                .map_err(UnpackError::Archive)?
                .unwrap_or_default()
                .into_owned();
            let link_rel = sanitize(&link)?;
            let link_parent = ensure_dirs(dest, link_rel.parent().unwrap_or(Path::new("")))?;
            let source = link_parent.join(link_rel.file_name().unwrap_or_default());
            fs::hard_link(&source, &target).map_err(|source| UnpackError::Io {
                path: target.clone(),
                source,
            })?;
            continue;
        }
        let xattrs = layer_xattrs(&mut entry)?;
        entry.unpack(&target).map_err(|source| UnpackError::Io {
            path: target.clone(),
            source,
        })?;
        if !entry.header().entry_type().is_symlink() {
            for (key, value) in xattrs {
                xattr::set(&target, OsStr::from_bytes(&key), &value).map_err(|source| UnpackError::Io {
                    path: target.clone(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// Extended attribute (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The entry's extended attributes (PAX `SCHILY.xattr.*`), except overlayfs' own `trusted.overlay.*`: a layer
/// that carried those could plant redirects or opaque markers that overlayfs would honour.
fn layer_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Xattrs, UnpackError> {
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Archive)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext.map_err(UnpackError::Archive)?;
        if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")
            && !key.starts_with(b"trusted.overlay.")
        {
            out.push((key.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Returns `dest/rel`, creating missing directories and refusing to pass through a symlink.
fn ensure_dirs(dest: &Path, rel: &Path) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_owned();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(UnpackError::ThroughSymlink(rel.to_owned())),
            Ok(_) => {
                // A file where a directory is needed is replaced, as a later tar entry would.
                remove_any(&cur)?;
                fs::create_dir(&cur).map_err(|source| UnpackError::Io {
                    path: cur.clone(),
                    source,
                })?;
            }
            Err(_) => fs::create_dir(&cur).map_err(|source| UnpackError::Io {
                path: cur.clone(),
                source,
            })?,
        }
    }
    Ok(cur)
}

fn remove_any(path: &Path) -> Result<(), UnpackError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|source| UnpackError::Io {
        path: path.to_owned(),
        source,
    })
}

fn whiteout(path: &Path, mode: Whiteouts) -> Result<(), UnpackError> {
    remove_any(path)?;
    if mode == Whiteouts::Apply {
        return Ok(());
    }
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| UnpackError::Whiteout {
        path: path.to_owned(),
        source: e.into(),
    })
}

fn opaque(dir: &Path, mode: Whiteouts) -> Result<(), UnpackError> {
    match mode {
        Whiteouts::Overlay => {
            xattr::set(dir, "trusted.overlay.opaque", b"y").map_err(|source| UnpackError::Whiteout {
                path: dir.to_owned(),
                source,
            })
        }
        Whiteouts::Apply => {
            let entries = fs::read_dir(dir).map_err(|source| UnpackError::Io {
                path: dir.to_owned(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| UnpackError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                remove_any(&e.path())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// A small tar built in memory: (path, kind) with kind "dir", "file:CONTENT", "link:TARGET", "hard:TARGET".
    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(1234);
            h.set_gid(4321);
            h.set_mtime(1_700_000_000);
            let (ty, data, link) = if *kind == "dir" {
                (tar::EntryType::Directory, "", None)
            } else if let Some(c) = kind.strip_prefix("file:") {
                (tar::EntryType::Regular, c, None)
            } else if let Some(t) = kind.strip_prefix("link:") {
                (tar::EntryType::Symlink, "", Some(t))
            } else if let Some(t) = kind.strip_prefix("hard:") {
                (tar::EntryType::Link, "", Some(t))
            } else {
                panic!("unknown kind {kind}")
            };
            h.set_entry_type(ty);
            h.set_mode(if ty.is_dir() { 0o755 } else { 0o640 });
            h.set_size(data.len() as u64);
            // Raw names: the builder's own path checks would refuse the hostile ones we want to test.
            let name = h.as_old_mut().name.as_mut_slice();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(t) = link {
                h.set_link_name_literal(t).unwrap();
            }
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn sanitize_strips_roots_and_refuses_parent_dirs() {
        assert_eq!(
            sanitize(Path::new("/etc/passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(sanitize(Path::new("./bin/./sh")).unwrap(), Path::new("bin/sh"));
        assert_eq!(sanitize(Path::new("./")).unwrap(), Path::new(""));
        assert!(matches!(
            sanitize(Path::new("a/../../etc")),
            Err(UnpackError::UnsafePath(_))
        ));
        assert!(matches!(
            sanitize(Path::new("../x")),
            Err(UnpackError::UnsafePath(_))
        ));
    }

    #[test]
    fn files_keep_mode_owner_and_symlinks_keep_absolute_targets() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("bin/", "dir"),
            ("bin/busybox", "file:#!"),
            ("bin/sh", "link:/bin/busybox"),
            ("bin/ash", "hard:bin/busybox"),
        ]);
        unpack(&tar[..], dir.path(), Whiteouts::Overlay).unwrap();
        let meta = fs::metadata(dir.path().join("bin/busybox")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        }
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::metadata(dir.path().join("bin/ash")).unwrap().ino(),
            meta.ino()
        );
    }

    #[test]
    fn parent_dir_entries_and_symlink_traversal_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&tar_of(&[("../evil", "file:x")])[..], &dest, Whiteouts::Apply).unwrap_err();
        assert!(matches!(err, UnpackError::UnsafePath(_)), "{err}");
        assert!(!outer.path().join("evil").exists());

        let hostile = tar_of(&[
            ("escape", &format!("link:{}", outer.path().display())),
            ("escape/evil", "file:x"),
        ]);
        let err = unpack(&hostile[..], &dest, Whiteouts::Apply).unwrap_err();
        assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
        assert!(!outer.path().join("evil").exists());

        let err = unpack(
            &tar_of(&[("h", "hard:../../etc/passwd")])[..],
            &dest,
            Whiteouts::Apply,
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::UnsafePath(_)), "{err}");
    }

    #[test]
    fn apply_mode_whiteouts_delete_and_opaque_empties() {
        let dir = tempfile::tempdir().unwrap();
        let lower = tar_of(&[
            ("a/", "dir"),
            ("a/keep", "file:1"),
            ("a/gone", "file:2"),
            ("o/", "dir"),
            ("o/old", "file:3"),
        ]);
        let upper = tar_of(&[
            ("a/.wh.gone", "file:"),
            ("o/.wh..wh..opq", "file:"),
            ("o/new", "file:4"),
        ]);
        unpack(&lower[..], dir.path(), Whiteouts::Apply).unwrap();
        unpack(&upper[..], dir.path(), Whiteouts::Apply).unwrap();
        assert!(dir.path().join("a/keep").exists());
        assert!(!dir.path().join("a/gone").exists());
        assert!(!dir.path().join("a/.wh.gone").exists());
        assert!(!dir.path().join("o/old").exists());
        assert_eq!(fs::read_to_string(dir.path().join("o/new")).unwrap(), "4");
    }

    #[test]
    fn overlay_mode_whiteouts_become_char_devices_and_opaque_xattrs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: overlay whiteouts need root (mknod, trusted.* xattrs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let upper = tar_of(&[
            ("a/.wh.gone", "file:"),
            ("o/.wh..wh..opq", "file:"),
            ("o/new", "file:4"),
        ]);
        unpack(&upper[..], dir.path(), Whiteouts::Overlay).unwrap();
        let wh = fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!dir.path().join("a/.wh.gone").exists());
        assert_eq!(
            xattr::get(dir.path().join("o"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(dir.path().join("o/new").exists());
    }

    #[test]
    fn xattrs_are_kept_but_overlay_ones_are_dropped() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: trusted.* xattrs need root");
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"kept"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(1);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack(&b.into_inner().unwrap()[..], dir.path(), Whiteouts::Overlay).unwrap();
        let f = dir.path().join("f");
        assert_eq!(
            xattr::get(&f, "user.note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(xattr::get(&f, "trusted.overlay.redirect").unwrap(), None);
    }

    #[test]
    fn verified_unpack_reports_the_diff_id_of_gzipped_layers() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("f", "file:hello")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let diff_id = unpack_verified(&gz[..], dir.path(), Whiteouts::Overlay).unwrap();
        assert_eq!(diff_id, Digest::of(&tar));
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "hello");
    }
}
