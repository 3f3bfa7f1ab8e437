//! The runtime part of an image's config blob (entrypoint, cmd, env, working dir, user) and Kubernetes'
//! rules for combining it with a container's `command` and `args`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::digest::Digest;
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Why an image config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageConfigError {
    /// The blob is not JSON of the image-config shape.
    #[error("malformed image config: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The config blob could not be read from the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user or group name the image's `/etc/passwd` / `/etc/group` does not define.
    #[error("unable to find {kind} {name}: no matching entries in the image's /etc/{file}")]
    UnknownUser {
        kind: &'static str,
        name: String,
        file: &'static str,
    },
}

/// A user spec resolved to numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups in the image's `/etc/group` that list the user as a member.
    pub additional_gids: Vec<u32>,
}

/// The content of `rel` (e.g. `etc/passwd`) as the overlay of `lower_dirs` (top layer first) shows it.
fn layered_file(lower_dirs: &[PathBuf], rel: &str) -> Option<String> {
    for dir in lower_dirs {
        let path = dir.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return std::fs::read_to_string(&path).ok(),
            // A whiteout (or anything else) in a higher layer hides lower ones.
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`; empty is root) against the image's
/// `/etc/passwd` and `/etc/group`, the way container runtimes do: a numeric uid need not exist (its gid is
/// then 0), a name must.
pub fn resolve_user(user: &str, lower_dirs: &[PathBuf]) -> Result<ResolvedUser, ImageConfigError> {
    let passwd = layered_file(lower_dirs, "etc/passwd").unwrap_or_default();
    let group = layered_file(lower_dirs, "etc/group").unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // name:x:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() >= 4 && (f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part))
        });
    let (uid, mut gid, name) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].to_owned()),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => {
            return Err(ImageConfigError::UnknownUser {
                kind: "user",
                name: user_part.to_owned(),
                file: "passwd",
            });
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match (groups.iter().find(|f| f[0] == g), g.parse::<u32>()) {
            (_, Ok(n)) => n,
            (Some(f), Err(_)) => f[2].parse().unwrap_or(0),
            (None, Err(_)) => {
                return Err(ImageConfigError::UnknownUser {
                    kind: "group",
                    name: g.to_owned(),
                    file: "group",
                });
            }
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name)
                && let Ok(n) = f[2].parse::<u32>()
                && n != gid
                && !additional_gids.contains(&n)
            {
                additional_gids.push(n);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// What an image says about how to run it. Absent fields are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image wrote it.
    pub user: String,
}

#[derive(Deserialize)]
struct Blob {
    #[serde(default)]
    config: Option<Inner>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

impl ImageConfig {
    /// Parses an OCI or Docker image config blob.
    pub fn parse(blob: &[u8]) -> Result<ImageConfig, ImageConfigError> {
        let inner = serde_json::from_slice::<Blob>(blob)?.config.unwrap_or_default();
        Ok(ImageConfig {
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
            env: inner.env.unwrap_or_default(),
            working_dir: inner.working_dir.unwrap_or_default(),
            user: inner.user.unwrap_or_default(),
        })
    }

    /// The config of an image in the store.
    pub fn load(store: &ImageStore, image: &ImageRecord) -> Result<ImageConfig, ImageConfigError> {
        Self::load_digest(store, &image.config_digest)
    }

    pub fn load_digest(store: &ImageStore, config: &Digest) -> Result<ImageConfig, ImageConfigError> {
        Self::parse(&store.read_blob(config)?)
    }
}

/// The argv a container runs, by Kubernetes' rules: `command` replaces the image's Entrypoint (and drops
/// its Cmd); `args` replace the Cmd; with neither, the image's Entrypoint + Cmd.
pub fn resolve_command(image: &ImageConfig, command: &[String], args: &[String]) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/ep"],"Cmd":["--flag"],
                "Env":["PATH=/bin","A=b"],"WorkingDir":"/app","User":"1000:1000"},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_the_runtime_fields() {
        let img = image();
        assert_eq!(img.entrypoint, v(&["/ep"]));
        assert_eq!(img.cmd, v(&["--flag"]));
        assert_eq!(img.env, v(&["PATH=/bin", "A=b"]));
        assert_eq!(img.working_dir, "/app");
        assert_eq!(img.user, "1000:1000");
        let bare = ImageConfig::parse(br#"{"config":{"Cmd":null}}"#).unwrap();
        assert_eq!(bare, ImageConfig::default());
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
        assert!(ImageConfig::parse(b"[1]").is_err());
    }

    #[test]
    fn users_resolve_against_the_top_layer_that_has_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(bottom.join("etc")).unwrap();
        std::fs::write(
            bottom.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nold:x:9:9::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            top.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            bottom.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nstaff:x:50:\n",
        )
        .unwrap();
        let layers = vec![top, bottom];
        let r = |u: &str| resolve_user(u, &layers);
        assert_eq!(r("").unwrap(), ResolvedUser::default());
        assert_eq!(
            r("app").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            r("1000:staff").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(r("4242:7").unwrap().gid, 7);
        // The top layer's passwd hides the bottom one's.
        assert!(matches!(
            r("old"),
            Err(ImageConfigError::UnknownUser { kind: "user", .. })
        ));
        assert!(matches!(
            r("app:nogroup"),
            Err(ImageConfigError::UnknownUser { kind: "group", .. })
        ));
    }

    #[test]
    fn kubernetes_command_rules() {
        let img = image();
        // Neither: Entrypoint + Cmd.
        assert_eq!(resolve_command(&img, &[], &[]), v(&["/ep", "--flag"]));
        // Args only: Entrypoint + args.
        assert_eq!(resolve_command(&img, &[], &v(&["x"])), v(&["/ep", "x"]));
        // Command only: the image's Cmd is ignored too.
        assert_eq!(resolve_command(&img, &v(&["sh"]), &[]), v(&["sh"]));
        // Both.
        assert_eq!(
            resolve_command(&img, &v(&["sh", "-c"]), &v(&["echo"])),
            v(&["sh", "-c", "echo"])
        );
        let cmd_only = ImageConfig {
            cmd: v(&["httpd", "-f"]),
            ..Default::default()
        };
        assert_eq!(resolve_command(&cmd_only, &[], &[]), v(&["httpd", "-f"]));
        assert_eq!(resolve_command(&cmd_only, &[], &v(&["ls"])), v(&["ls"]));
    }
}
