//! The runtime part of an image's config blob (entrypoint, cmd, env, working dir, user) and Kubernetes'
//! rules for combining it with a container's `command` and `args`.

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
