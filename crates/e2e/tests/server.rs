//! The `rkube server` process itself: its files, who it lets in, and how it stops and restarts.

use std::os::unix::fs::PermissionsExt;

use rkube_e2e::{Cluster, Datastore, json};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A copy of the admin kubeconfig with the client certificate replaced by `user` (YAML flow mapping).
fn kubeconfig_with_user(c: &Cluster, file: &str, user: &str) -> String {
    let text = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| {
            if l.trim() == "user:" {
                format!("  user: {user}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    c.write_file(file, &stripped).to_str().unwrap().to_string()
}

#[test]
fn writes_kubeconfig_and_token_privately() {
    let c = Cluster::start(Datastore::Embedded);
    let data = c.data_dir();
    assert_eq!(mode(&c.kubeconfig()), 0o600);
    assert_eq!(mode(&data.join("token")), 0o600);
    assert!(
        data.join("db/state.db").exists(),
        "the embedded store lives under DIR/db"
    );
    for f in ["ca.crt", "ca.key", "serving.crt", "serving.key"] {
        assert!(data.join("tls").join(f).exists(), "tls/{f}");
    }
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    assert!(kubeconfig.contains(&format!("server: {}", c.url())));
    assert!(c.url().starts_with("https://127.0.0.1:"));
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    assert!(token.trim().len() >= 32, "a node join token: {token:?}");
}

#[test]
fn health_is_open_everything_else_needs_credentials() {
    let c = Cluster::start(Datastore::Embedded);
    // A bare user name (which kubectl would otherwise prompt for) is no credential to rkube.
    let anon = kubeconfig_with_user(&c, "anonymous.yaml", "{username: nobody}");
    let anon = anon.as_str();
    for path in ["/livez", "/readyz", "/healthz"] {
        let out = c.kubectl(&["--kubeconfig", anon, "get", "--raw", path]);
        assert_eq!(out.ok().trim(), "ok", "{path}");
    }
    let version = json(
        c.kubectl(&["--kubeconfig", anon, "get", "--raw", "/version"])
            .ok(),
    );
    assert_eq!(version["major"], "1");

    let denied = c.kubectl(&["--kubeconfig", anon, "get", "namespaces"]);
    assert!(
        denied
            .err()
            .contains("error: You must be logged in to the server"),
        "{}",
        denied.stderr
    );
    let raw = c.kubectl(&["--kubeconfig", anon, "get", "--raw", "/api/v1/namespaces"]);
    assert!(raw.err().contains("Unauthorized"), "{}", raw.stderr);
    let wrong = kubeconfig_with_user(&c, "wrong.yaml", "{token: not-the-token}");
    let wrong = c.kubectl(&["--kubeconfig", &wrong, "get", "namespaces"]);
    assert!(
        wrong.err().contains("error: You must be logged in to the server"),
        "{}",
        wrong.stderr
    );

    // The node join token authenticates (as a node).
    let token = std::fs::read_to_string(c.data_dir().join("token")).unwrap();
    let node = kubeconfig_with_user(&c, "node.yaml", &format!("{{token: {}}}", token.trim()));
    let node = c.kubectl(&["--kubeconfig", &node, "get", "namespaces", "-o", "name"]);
    assert!(
        node.ok().lines().any(|l| l == "namespace/default"),
        "{}",
        node.stdout
    );
}

#[test]
fn sigterm_stops_cleanly_and_restart_keeps_pki_and_token() {
    let mut c = Cluster::start(Datastore::Embedded);
    let ca = std::fs::read_to_string(c.data_dir().join("tls/ca.crt")).unwrap();
    let token = std::fs::read_to_string(c.data_dir().join("token")).unwrap();
    let serving = std::fs::read_to_string(c.data_dir().join("tls/serving.crt")).unwrap();
    c.kubectl(&["create", "namespace", "persisted"]).ok();

    c.restart();

    assert_eq!(
        std::fs::read_to_string(c.data_dir().join("tls/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_to_string(c.data_dir().join("token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(c.data_dir().join("tls/serving.crt")).unwrap(),
        serving
    );
    assert_eq!(
        c.kubectl(&["get", "namespace", "persisted", "-o", "name"])
            .ok()
            .trim(),
        "namespace/persisted"
    );
    assert!(
        c.stop(),
        "the server exits 0 on SIGTERM:\n{}",
        c.server_log_tail()
    );
}

#[test]
fn runs_on_etcd() {
    let c = Cluster::start(Datastore::Etcd);
    c.kubectl(&["create", "configmap", "on-etcd", "--from-literal=a=1"])
        .ok();
    assert_eq!(
        c.kubectl(&["get", "cm", "on-etcd", "-o", "jsonpath={.data.a}"])
            .ok(),
        "1"
    );
    assert!(
        !c.data_dir().join("db/state.db").exists(),
        "no embedded store when etcd is used"
    );
}

#[test]
fn sigterm_with_an_open_watch_still_exits() {
    let mut c = Cluster::start(Datastore::Embedded);
    let mut watch = c.kubectl_stream(&["get", "configmaps", "-w"]);
    c.kubectl(&["create", "configmap", "watched", "--from-literal=a=1"])
        .ok();
    watch.wait_for_line(&["watched"], std::time::Duration::from_secs(30));
    assert!(
        c.stop(),
        "the server exits 0 on SIGTERM with a watch open:\n{}",
        c.server_log_tail()
    );
    // The watch ended with the shutdown instead of being cut off when the grace period ran out.
    let log = c.server_log_tail();
    assert!(log.contains("all connections closed"), "{log}");
    assert!(!log.contains("closing the remaining connections"), "{log}");
}

/// What ALPN and certificate a TLS client gets: kubectl and client-go speak HTTP/2, the Python client
/// HTTP/1.1; both must be offered, with a leaf certificate valid for 127.0.0.1 that chains to the CA.
#[tokio::test]
async fn tls_offers_h2_and_http11_with_a_leaf_certificate() {
    use std::sync::Arc;

    let c = tokio::task::spawn_blocking(|| Cluster::start(Datastore::Embedded))
        .await
        .unwrap();
    let ca_pem = std::fs::read(c.data_dir().join("tls/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let roots = Arc::new(roots);
    let addr = c.url().strip_prefix("https://").unwrap().to_string();
    for (alpn, want) in [
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], b"h2".as_slice()),
        (vec![b"http/1.1".to_vec()], b"http/1.1"),
    ] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("the leaf verifies against the cluster CA for 127.0.0.1");
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(want));
        let chain = session.peer_certificates().unwrap();
        assert!(chain.len() >= 2, "the server sends its leaf and the CA");
        assert_ne!(
            chain[0].as_ref(),
            chain[1].as_ref(),
            "the serving certificate is not the CA"
        );
    }
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}

fn rkube(args: &[&str], dir: &std::path::Path) -> rkube_e2e::Output {
    let out = std::process::Command::new(rkube_e2e::rkube_binary())
        .args(args)
        .env("RKUBE_LOG", "warn")
        .current_dir(dir)
        .output()
        .expect("running rkube");
    rkube_e2e::Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

#[test]
fn bad_flags_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let base = [
        "server",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--disable-agent",
    ];

    let cidr = rkube(
        &[&base[..], &["--service-cidr", "10.43.0.0/99"]].concat(),
        dir.path(),
    );
    assert_eq!(cidr.code, Some(1));
    assert!(
        cidr.stderr
            .contains("--service-cidr \"10.43.0.0/99\" is not a CIDR"),
        "{}",
        cidr.stderr
    );

    let store = rkube(
        &[&base[..], &["--datastore-endpoint", "mysql://db"]].concat(),
        dir.path(),
    );
    assert_eq!(store.code, Some(1));
    assert!(
        store.stderr.contains("invalid datastore endpoint \"mysql://db\""),
        "{}",
        store.stderr
    );

    let duration = rkube(
        &[&base[..], &["--node-monitor-grace-period", "fifty"]].concat(),
        dir.path(),
    );
    assert_eq!(duration.code, Some(2), "clap usage error");
    assert!(
        duration.stderr.contains("invalid duration \"fifty\""),
        "{}",
        duration.stderr
    );
}

#[test]
fn a_link_named_kubectl_is_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl");
    std::os::unix::fs::symlink(rkube_e2e::rkube_binary(), &link).unwrap();
    let out = std::process::Command::new(&link)
        .args(["get", "pods"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rkube kubectl is not implemented yet"));
    let sub = rkube(&["kubectl", "get", "pods"], dir.path());
    assert_eq!(sub.code, Some(1));
    assert!(
        sub.stderr.contains("rkube kubectl is not implemented yet"),
        "{}",
        sub.stderr
    );
}

#[test]
fn whoami_and_can_i() {
    let c = Cluster::start(Datastore::Embedded);
    let me = c.kubectl(&["auth", "whoami"]);
    let rows = rkube_e2e::table(me.ok());
    assert_eq!(rows[1], ["Username", "system:admin"]);
    assert_eq!(rows[2], ["Groups", "[system:masters", "system:authenticated]"]);
    assert_eq!(
        c.kubectl(&["auth", "can-i", "create", "deployments"]).ok().trim(),
        "yes"
    );
    assert_eq!(
        c.kubectl(&["auth", "can-i", "delete", "pods", "-n", "kube-system"])
            .ok()
            .trim(),
        "yes"
    );

    let token = std::fs::read_to_string(c.data_dir().join("token")).unwrap();
    let node = kubeconfig_with_user(&c, "node.yaml", &format!("{{token: worker-1/{}}}", token.trim()));
    let node_me = c.kubectl(&["--kubeconfig", &node, "auth", "whoami", "-o", "json"]);
    let review = json(node_me.ok());
    assert_eq!(review["status"]["userInfo"]["username"], "system:node:worker-1");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["system:nodes", "system:authenticated"])
    );
}
