//! Test images built from the static `/usr/bin/busybox`, pushed to a real `docker-registry` that runs
//! inside a test network namespace (so agents in their node namespaces pull them as from any registry).
//!
//! - [`BUSYBOX`]: `bin/busybox` with a link per applet, `/tmp`, `PATH`, `Cmd ["sh"]`.
//! - [`BOOTCAMP_V1`] / [`BOOTCAMP_V2`]: busybox plus `/bin/bootcamp`, an HTTP server on 8080 answering
//!   `Hello Kubernetes bootcamp! | Running on: <pod name> | v=N` (busybox httpd serving a page written at
//!   start from the hostname, which is the pod name).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use rkube_oci::Digest;

use crate::netns;

/// Repository and tag of the plain busybox image.
pub const BUSYBOX: &str = "rkube-test/busybox:1";
/// The bootcamp server answering `v=1`.
pub const BOOTCAMP_V1: &str = "rkube-test/kubernetes-bootcamp:v1";
/// The bootcamp server answering `v=2`.
pub const BOOTCAMP_V2: &str = "rkube-test/kubernetes-bootcamp:v2";

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A `docker-registry` process serving from a temp dir inside a network namespace; killed on drop.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    ns: String,
    addr: SocketAddr,
}

impl Registry {
    /// Starts a registry listening on `addr` inside `ns` and pushes every test image to it.
    pub fn start(ns: &str, addr: SocketAddr) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("rkube-e2e-registry-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = netns::command_in(ns, "/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (Debian package docker-registry; scripts/deps)");
        let registry = Registry {
            child,
            _dir: dir,
            ns: ns.to_string(),
            addr,
        };
        registry.wait_ready();
        registry.push_all();
        registry
    }

    /// `HOST:PORT` as an image reference starts.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The full reference of a test image (`BUSYBOX` …) in this registry.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    fn wait_ready(&self) {
        let addr = self.addr;
        let ok = netns::in_netns(&self.ns, move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                    let mut head = [0u8; 12];
                    if s.read_exact(&mut head).is_ok() && head.ends_with(b"200") {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(
            ok,
            "docker-registry on {addr} in {} did not become ready",
            self.ns
        );
    }

    fn push_all(&self) {
        let addr = self.addr;
        netns::in_netns(&self.ns, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let base = busybox_layer();
                push(addr, BUSYBOX, vec![base.clone()], vec!["sh".into()], &[]).await;
                for (tag, version) in [(BOOTCAMP_V1, "1"), (BOOTCAMP_V2, "2")] {
                    push(
                        addr,
                        tag,
                        vec![base.clone(), bootcamp_layer(version)],
                        vec!["/bin/bootcamp".into()],
                        &["8080/tcp"],
                    )
                    .await;
                }
            })
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a `docker save` tarball of the busybox image tagged `repo_tag` (e.g. `rkube-test/imported:1`) to
/// `path`, for `rkube image import`.
pub fn write_docker_save(path: &std::path::Path, repo_tag: &str) {
    let layer = busybox_layer();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&layer.gzipped[..])
        .read_to_end(&mut tar_bytes)
        .expect("gunzip the layer");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]}
    }))
    .expect("config");
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let layer_name = format!("{}/layer.tar", layer.diff_id.hex());
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": [repo_tag], "Layers": [layer_name]}
    ]))
    .expect("manifest");
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        (config_name.as_str(), &config[..]),
        (layer_name.as_str(), &tar_bytes[..]),
        ("manifest.json", &manifest[..]),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            name,
            data,
        )
        .expect("tar");
    }
    std::fs::write(path, tar.into_inner().expect("tar")).expect("writing the archive");
}

/// A layer as pushed (gzipped) and as named in the config (the tar's digest).
#[derive(Clone)]
struct Layer {
    gzipped: Vec<u8>,
    diff_id: Digest,
}

async fn push(addr: SocketAddr, name: &str, layers: Vec<Layer>, cmd: Vec<String>, ports: &[&str]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let exposed: serde_json::Map<String, serde_json::Value> = ports
        .iter()
        .map(|p| (p.to_string(), serde_json::json!({})))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/", "ExposedPorts": exposed},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()}
    });
    let reference: oci_client::Reference = format!("{addr}/{name}").parse().expect("image reference");
    let layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|l| ImageLayer::oci_v1_gzip(l.gzipped, None))
        .collect();
    client
        .push(
            &reference,
            &layers,
            Config::oci_v1(serde_json::to_vec(&config).expect("config"), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h
}

fn finish(tar: tar::Builder<Vec<u8>>) -> Layer {
    let tar = tar.into_inner().expect("tar");
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    Layer {
        gzipped: gz.finish().expect("gzip"),
        diff_id,
    }
}

/// `bin/busybox`, a symlink per applet in `bin/`, and the directories programs expect.
fn busybox_layer() -> Layer {
    let busybox_path = PathBuf::from("/usr/bin/busybox");
    let busybox = std::fs::read(&busybox_path).expect("busybox-static is installed (/usr/bin/busybox)");
    let list = std::process::Command::new(&busybox_path)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin/", 0o755),
        ("etc/", 0o755),
        ("root/", 0o700),
        ("tmp/", 0o1777),
        ("var/", 0o755),
        ("proc/", 0o555),
        ("sys/", 0o555),
        ("dev/", 0o755),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            std::io::empty(),
        )
        .expect("tar");
    }
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64),
        "bin/busybox",
        &busybox[..],
    )
    .expect("tar");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        tar.append_link(
            &mut header(tar::EntryType::Symlink, 0o777, 0),
            format!("bin/{applet}"),
            "busybox",
        )
        .expect("tar");
    }
    for (path, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnobody:x:65534:\n"),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, text.len() as u64),
            path,
            text.as_bytes(),
        )
        .expect("tar");
    }
    finish(tar)
}

/// The bootcamp server: a page naming the pod (its hostname) and the version, served by busybox httpd.
fn bootcamp_layer(version: &str) -> Layer {
    let script = format!(
        "#!/bin/sh\nmkdir -p /tmp/www\n\
         printf 'Hello Kubernetes bootcamp! | Running on: %s | v={version}\\n' \"$(hostname)\" > /tmp/www/index.html\n\
         echo \"Kubernetes Bootcamp App Started At: $(date) | Running On:  $(hostname)\"\n\
         exec httpd -f -v -p 8080 -h /tmp/www\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o755, script.len() as u64),
        "bin/bootcamp",
        script.as_bytes(),
    )
    .expect("tar");
    finish(tar)
}
