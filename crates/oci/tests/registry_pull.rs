//! Pulls an image built from `/bin/busybox` out of a real `docker-registry` on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rkube_oci::pull::{PullError, Puller};
use rkube_oci::{Digest, ImageStore, StoreError};

/// A `docker-registry` process with its own storage dir; killed and removed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start() -> Registry {
        Self::start_with(None)
    }

    /// With `htpasswd` (one `user:bcrypt` line) the registry demands HTTP basic auth.
    fn start_with(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("rkube-oci-registry-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(line) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: rkube-test\n    path: {}\n",
                file.display()
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (Debian package docker-registry)");
        let registry = Registry { child, dir, addr };
        registry.wait_ready();
        registry
    }

    /// Waits until `GET /v2/` answers 200, the distribution spec's "this is a v2 registry" check.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
                let mut head = [0u8; 12];
                // 401 is "up, wants credentials" for the basic-auth registry.
                if s.read_exact(&mut head).is_ok() && (head.ends_with(b"200") || head.ends_with(b"401")) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "registry on {} did not become ready",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// A one-layer image: `bin/busybox` and `bin/sh -> busybox`, gzipped. Returns (layer, config, diff ID).
fn busybox_image() -> (Vec<u8>, Vec<u8>, Digest) {
    let header = || {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = header();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut file = header();
    file.set_mode(0o755);
    file.set_size(busybox.len() as u64);
    tar.append_data(&mut file, "bin/busybox", &busybox[..]).unwrap();
    let mut link = header();
    link.set_mode(0o777);
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    tar.append_link(&mut link, "bin/sh", "busybox").unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    });
    (layer, serde_json::to_vec(&config).unwrap(), diff_id)
}

async fn push(registry: &Registry, name: &str) -> Digest {
    push_as(registry, name, &RegistryAuth::Anonymous).await
}

async fn push_as(registry: &Registry, name: &str, auth: &RegistryAuth) -> Digest {
    let (layer, config, diff_id) = busybox_image();
    push_image(registry, name, auth, layer, config).await;
    diff_id
}

fn http_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

async fn push_image(registry: &Registry, name: &str, auth: &RegistryAuth, layer: Vec<u8>, config: Vec<u8>) {
    let reference: Reference = format!("{}/{name}", registry.addr).parse().unwrap();
    http_client()
        .push(
            &reference,
            &[ImageLayer::oci_v1_gzip(layer, None)],
            Config::oci_v1(config, None),
            auth,
            None,
        )
        .await
        .expect("push to the local registry");
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[tokio::test]
async fn pulls_a_pushed_busybox_image_by_tag_and_unpacks_it() {
    let registry = Registry::start();
    let diff_id = push(&registry, "rkube/busybox:v1").await;

    let root = tempfile::Builder::new()
        .prefix("rkube-oci-store-")
        .tempdir()
        .unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let puller = Puller::new();
    let image = format!("{}/rkube/busybox:v1", registry.addr);
    let record = puller
        .pull(&store, &image, &RegistryAuth::Anonymous)
        .await
        .unwrap();

    assert_eq!(record.reference, image);
    assert!(!record.imported);
    assert_eq!(record.layers.len(), 1);
    assert_eq!(record.layers[0].diff_id, diff_id);
    for d in [
        &record.manifest_digest,
        &record.config_digest,
        &record.layers[0].digest,
    ] {
        assert_eq!(
            &Digest::of(&store.read_blob(d).unwrap()),
            d,
            "stored blob {d} matches its name"
        );
    }
    let layer = store.layer_dir(&diff_id);
    assert!(is_executable(&layer.join("bin/busybox")));
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let out = Command::new(layer.join("bin/busybox"))
        .args(["echo", "from-layer"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-layer");
    assert_eq!(store.list_images().unwrap(), vec![record.clone()]);

    // Pinned by digest, the same image resolves to the same record content without downloading again.
    let pinned = format!("{}/rkube/busybox@{}", registry.addr, record.manifest_digest);
    let again = puller
        .pull(&store, &pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(again.config_digest, record.config_digest);

    let missing = puller
        .pull(
            &store,
            &format!("{}/rkube/busybox:nope", registry.addr),
            &RegistryAuth::Anonymous,
        )
        .await;
    assert!(missing.is_err(), "an unknown tag is a pull error");
}

/// `rkube:s3cret`, bcrypt cost 5 (the registry's htpasswd backend accepts only bcrypt).
const HTPASSWD: &str = "rkube:$2y$05$xas4f2HSeHo.4TSA7VTJa.nKI1vhKV4hQfnENie8QdsZQe7n4D/Fe";

#[tokio::test]
async fn basic_auth_registry_needs_the_credentials() {
    let registry = Registry::start_with(Some(HTPASSWD));
    let creds = RegistryAuth::Basic("rkube".into(), "s3cret".into());
    let diff_id = push_as(&registry, "private/busybox:v1", &creds).await;

    let root = tempfile::Builder::new()
        .prefix("rkube-oci-store-")
        .tempdir()
        .unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let image = format!("{}/private/busybox:v1", registry.addr);

    let anonymous = Puller::new().pull(&store, &image, &RegistryAuth::Anonymous).await;
    assert!(
        matches!(
            anonymous,
            Err(PullError::Registry(
                OciDistributionError::UnauthorizedError { .. }
            ))
        ),
        "anonymous pull from a basic-auth registry is unauthorized: {anonymous:?}"
    );
    let wrong = RegistryAuth::Basic("rkube".into(), "wrong".into());
    assert!(
        Puller::new().pull(&store, &image, &wrong).await.is_err(),
        "wrong password must fail"
    );
    assert!(store.list_images().unwrap().is_empty());

    let record = Puller::new().pull(&store, &image, &creds).await.unwrap();
    assert_eq!(record.layers[0].diff_id, diff_id);
    assert!(is_executable(&store.layer_dir(&diff_id).join("bin/busybox")));
}

/// An image index entry for the manifest the registry serves under `name`.
async fn index_entry(registry: &Registry, name: &str, arch: &str) -> serde_json::Value {
    let reference: Reference = format!("{}/{name}", registry.addr).parse().unwrap();
    let (bytes, digest) = http_client()
        .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .unwrap();
    serde_json::json!({"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": digest, "size": bytes.len(),
        "platform": {"architecture": arch, "os": "linux"}})
}

#[tokio::test]
async fn multi_platform_index_resolves_to_linux_amd64() {
    let registry = Registry::start();
    let (amd_layer, amd_config, amd_diff) = busybox_image();
    let amd_config_digest = Digest::of(&amd_config);
    push_image(
        &registry,
        "multi/app:amd64",
        &RegistryAuth::Anonymous,
        amd_layer,
        amd_config,
    )
    .await;
    // The arm64 variant is a different image, so picking it would show in the config digest and layer.
    let mut arm = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(3);
    arm.append_data(&mut h, "arch", &b"arm"[..]).unwrap();
    let arm = arm.into_inner().unwrap();
    let arm_config = serde_json::json!({"architecture": "arm64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&arm).to_string()]}});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&arm).unwrap();
    let arm_gz = gz.finish().unwrap();
    push_image(
        &registry,
        "multi/app:arm64",
        &RegistryAuth::Anonymous,
        arm_gz,
        serde_json::to_vec(&arm_config).unwrap(),
    )
    .await;

    let index: OciImageIndex = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [index_entry(&registry, "multi/app:arm64", "arm64").await,
                      index_entry(&registry, "multi/app:amd64", "amd64").await]
    }))
    .unwrap();
    let tag: Reference = format!("{}/multi/app:v1", registry.addr).parse().unwrap();
    http_client()
        .push_manifest_list(&tag, &RegistryAuth::Anonymous, index)
        .await
        .unwrap();

    let root = tempfile::Builder::new()
        .prefix("rkube-oci-store-")
        .tempdir()
        .unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let record = Puller::new()
        .pull(&store, &tag.whole(), &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(record.config_digest, amd_config_digest);
    assert_eq!(record.layers[0].diff_id, amd_diff);
    assert!(is_executable(&store.layer_dir(&amd_diff).join("bin/busybox")));
    assert!(!store.layer_dir(&Digest::of(&arm)).exists());
}

#[tokio::test]
async fn tampered_layer_in_the_registry_is_refused_and_leaves_nothing() {
    let registry = Registry::start();
    let (layer, config, _) = busybox_image();
    let layer_digest = Digest::of(&layer);
    push_image(
        &registry,
        "tamper/busybox:v1",
        &RegistryAuth::Anonymous,
        layer.clone(),
        config,
    )
    .await;
    // Same length, different bytes, written straight into the registry's storage behind its back.
    let data = registry
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&layer_digest.hex()[..2])
        .join(layer_digest.hex())
        .join("data");
    let mut tampered = layer;
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&data, tampered).expect("registry stores blobs under data/docker/registry/v2");

    let root = tempfile::Builder::new()
        .prefix("rkube-oci-store-")
        .tempdir()
        .unwrap();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let image = format!("{}/tamper/busybox:v1", registry.addr);
    let result = Puller::new().pull(&store, &image, &RegistryAuth::Anonymous).await;
    // oci-client's own check usually fires mid-stream; ours at commit is the backstop.
    assert!(
        matches!(
            result,
            Err(PullError::Download { .. } | PullError::Store(StoreError::DigestMismatch { .. }))
        ),
        "a blob that does not match its digest must fail the pull: {result:?}"
    );
    assert!(!store.has_blob(&layer_digest));
    assert!(store.list_images().unwrap().is_empty());
    assert!(
        std::fs::read_dir(root.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no partial download left"
    );
}
