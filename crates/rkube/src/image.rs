//! `rkube image`: the node's image store (`DIR/agent/images`), for air-gapped hosts and for looking around —
//! `import` loads an OCI archive or `docker save` tarball, `ls` prints what the node holds, as `crictl images`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rkube_oci::{ImageRecord, ImageStore};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI archive or `docker save` tarball into the node's image store.
    Import {
        /// The archive (plain or gzipped tar).
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the images in the node's image store.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The agent's data directory (the store is DIR/agent/images).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rkube")]
    data_dir: PathBuf,
}

/// The image store's directory under an agent data dir; the agent opens the same one.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("images")
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Import { file, store } => {
            let store = open(&store)?;
            let records = rkube_oci::import::import_archive(&store, &file)
                .with_context(|| format!("importing {}", file.display()))?;
            for record in records {
                println!("imported {} ({})", record.reference, record.config_digest);
            }
            Ok(())
        }
        ImageCommand::Ls { store } => {
            let store = open(&store)?;
            let mut images = store.list_images().context("reading the image index")?;
            images.sort_by(|a, b| a.reference.cmp(&b.reference));
            print!("{}", table(&images));
            Ok(())
        }
    }
}

fn open(args: &StoreArgs) -> anyhow::Result<ImageStore> {
    let dir = store_dir(&args.data_dir);
    ImageStore::open(&dir).with_context(|| format!("opening the image store {}", dir.display()))
}

/// `crictl images`' columns: IMAGE, TAG, IMAGE ID (the config digest, shortened), SIZE.
fn table(images: &[ImageRecord]) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in images {
        let (repo, tag) = split_reference(&image.reference);
        let hex = image.config_digest.hex();
        rows.push([
            repo.to_string(),
            tag.to_string(),
            hex[..hex.len().min(13)].to_string(),
            human_size(image.size),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("   ").trim_end();
        out.push('\n');
    }
    out
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a digest reference has no tag (`<none>`).
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, _digest)) = reference.split_once('@') {
        return (repo, "<none>");
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (&reference[..name_start + i], &reference[name_start + i + 1..]),
        None => (reference, "<none>"),
    }
}

/// Sizes as crictl prints them: decimal units, three significant digits (`4.26MB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/rkube/app:v2"),
            ("127.0.0.1:5000/rkube/app", "v2")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app@sha256:abc"),
            ("127.0.0.1:5000/app", "<none>")
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "<none>")
        );
    }

    #[test]
    fn sizes_use_decimal_units_with_three_digits() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_000_000), "12MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }
}
