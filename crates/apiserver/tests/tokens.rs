//! The HTTPS API server in-process (`server::run` on 127.0.0.1:0, SQLite in a temp dir), driven by the
//! real `kubectl`: service-account tokens (`kubectl create token`, bearer authentication, revocation by
//! deleting the account) and Service type changes as Kubernetes does them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rkube_apiserver::server::{ServerConfig, run};
use serde_json::Value;

struct Server {
    dir: tempfile::TempDir,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.join();
        }
    }
}

impl Server {
    /// Starts the server on its own runtime thread and waits until kubectl gets answers.
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            disable_agent: true,
            node_name: "test-node".into(),
            ..Default::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                run(config, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut server = Server {
            dir,
            url: String::new(),
            stop: Some(stop_tx),
            task: Some(task),
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&kubeconfig)
                && let Some(url) = text.lines().find_map(|l| l.trim().strip_prefix("server: "))
                && server.kubectl(&["get", "--raw", "/readyz"]).status.success()
            {
                server.url = url.to_string();
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("kubectl must be installed")
    }

    /// kubectl as an anonymous client holding only `token` (no client certificate).
    fn kubectl_with_token(&self, token: &str, args: &[&str]) -> Output {
        let empty = self.dir.path().join("empty-kubeconfig");
        std::fs::write(&empty, "").unwrap();
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&empty)
            .args([
                "--server",
                &self.url,
                "--insecure-skip-tls-verify",
                "--token",
                token,
            ])
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("kubectl must be installed")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn tls_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The JSON payload of a JWT (no verification: the test reads what the server put in).
fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn kubectl_create_token_authenticates_as_the_service_account_until_it_is_deleted() {
    let server = Server::start();
    server.ok(&["create", "serviceaccount", "default"]);
    let token = server.ok(&["create", "token", "default"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    let claims = payload(&token);
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let uid = server.ok(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], uid.as_str());

    let whoami = server.kubectl_with_token(&token, &["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let review: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let groups = review["status"]["userInfo"]["groups"].as_array().unwrap();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
    let pods = server.kubectl_with_token(&token, &["get", "pods"]);
    assert!(pods.status.success(), "{}", stderr(&pods));

    // A token for another audience is not one for the API server.
    let vault = server
        .ok(&["create", "token", "default", "--audience", "vault"])
        .trim()
        .to_string();
    assert_eq!(payload(&vault)["aud"], serde_json::json!(["vault"]));
    let refused = server.kubectl_with_token(&vault, &["auth", "whoami"]);
    assert!(stderr(&refused).contains("Unauthorized"), "{}", stderr(&refused));

    // Too short a lifetime is refused with kube-apiserver's words.
    let short = server.kubectl(&["create", "token", "default", "--duration", "5m"]);
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains(
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
        ),
        "{}",
        stderr(&short)
    );
    let missing = server.kubectl(&["create", "token", "nobody"]);
    assert!(
        stderr(&missing).contains(r#"serviceaccounts "nobody" not found"#),
        "{}",
        stderr(&missing)
    );

    // Deleting the account revokes its tokens, even once an account of the same name is back.
    server.ok(&["delete", "serviceaccount", "default"]);
    server.ok(&["create", "serviceaccount", "default"]);
    let revoked = server.kubectl_with_token(&token, &["auth", "whoami"]);
    assert!(stderr(&revoked).contains("Unauthorized"), "{}", stderr(&revoked));
}

#[test]
fn tokens_are_checked_for_signature_expiry_and_bound_pod() {
    let server = Server::start();
    server.ok(&["create", "serviceaccount", "builder"]);
    server.ok(&[
        "run",
        "web",
        "--image",
        "busybox",
        "--overrides",
        r#"{"spec": {"serviceAccountName": "builder"}}"#,
    ]);
    let pod_uid = server.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let bound = server
        .ok(&[
            "create",
            "token",
            "builder",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
        ])
        .trim()
        .to_string();
    let claims = payload(&bound);
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], pod_uid.as_str());
    let whoami = server.kubectl_with_token(&bound, &["auth", "whoami"]);
    assert!(whoami.status.success(), "{}", stderr(&whoami));

    // The kubelet's projected-volume request (3607 s, bound to the pod) gets kube-apiserver's extended
    // token: valid for a year, with `warnafter` at the requested lifetime.
    let kubelet = server
        .ok(&[
            "create",
            "token",
            "builder",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
            "--duration",
            "3607s",
        ])
        .trim()
        .to_string();
    let extended = payload(&kubelet);
    let iat = extended["iat"].as_i64().unwrap();
    assert_eq!(extended["exp"].as_i64().unwrap() - iat, 365 * 24 * 3600);
    assert_eq!(
        extended["kubernetes.io"]["warnafter"].as_i64().unwrap() - iat,
        3607
    );

    // Another account may not mint tokens bound to this pod.
    server.ok(&["create", "serviceaccount", "other"]);
    let wrong = server.kubectl(&[
        "create",
        "token",
        "other",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
    ]);
    assert!(
        stderr(&wrong).contains("to pod running with different serviceaccount name"),
        "{}",
        stderr(&wrong)
    );

    // Tokens signed by the server's key but already expired, or signed by another key, are refused.
    let key_dir = server.tls_dir().join("tls");
    let issuer = rkube_apiserver::serviceaccount_token::TokenIssuer::load_or_create(&key_dir).unwrap();
    let sa_uid = server.ok(&["get", "sa", "builder", "-o", "jsonpath={.metadata.uid}"]);
    let now = chrono::Utc::now().timestamp();
    let mut claims: rkube_apiserver::serviceaccount_token::Claims =
        serde_json::from_value(payload(&bound)).unwrap();
    claims.kubernetes.pod = None;
    claims.kubernetes.serviceaccount.uid = sa_uid;
    let fresh = issuer.sign(&claims).unwrap();
    let ok = server.kubectl_with_token(&fresh, &["auth", "whoami"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    claims.iat = now - 7200;
    claims.nbf = now - 7200;
    claims.exp = now - 60;
    let expired = issuer.sign(&claims).unwrap();
    let out = server.kubectl_with_token(&expired, &["auth", "whoami"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign =
        rkube_apiserver::serviceaccount_token::TokenIssuer::load_or_create(foreign_dir.path()).unwrap();
    claims.exp = now + 3600;
    let forged = foreign.sign(&claims).unwrap();
    let out = server.kubectl_with_token(&forged, &["auth", "whoami"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));

    // The key is published for other verifiers.
    let jwks: Value = serde_json::from_str(&server.ok(&["get", "--raw", "/openid/v1/jwks"])).unwrap();
    assert_eq!(jwks, issuer.jwks());
    let discovery: Value =
        serde_json::from_str(&server.ok(&["get", "--raw", "/.well-known/openid-configuration"])).unwrap();
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );

    // Deleting the pod revokes the token bound to it.
    server.ok(&[
        "delete",
        "pod",
        "web",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.kubectl_with_token(&bound, &["auth", "whoami"]);
        if stderr(&out).contains("Unauthorized") {
            break;
        }
        assert!(Instant::now() < deadline, "the bound token outlived its pod");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn service_type_changes_like_kubernetes() {
    let server = Server::start();
    server.ok(&["create", "service", "loadbalancer", "lb", "--tcp", "80:8080"]);
    server.ok(&[
        "patch",
        "svc",
        "lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let before: Value = serde_json::from_str(&server.ok(&["get", "svc", "lb", "-o", "json"])).unwrap();
    let node_port = before["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let cluster_ip = before["spec"]["clusterIP"].as_str().unwrap().to_string();

    server.ok(&["patch", "svc", "lb", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    let after: Value = serde_json::from_str(&server.ok(&["get", "svc", "lb", "-o", "json"])).unwrap();
    let spec = &after["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["clusterIP"], cluster_ip.as_str());
    assert!(spec["ports"][0].get("nodePort").is_none(), "{spec}");
    for gone in [
        "externalTrafficPolicy",
        "allocateLoadBalancerNodePorts",
        "healthCheckNodePort",
    ] {
        assert!(spec.get(gone).is_none(), "{gone} kept: {spec}");
    }

    // The freed node port can be taken by another Service.
    server.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp",
        "80:8080",
        "--node-port",
        &node_port.to_string(),
    ]);

    // ClusterIP → ExternalName gives the address back; and back to ClusterIP gets a new one.
    server.ok(&[
        "patch",
        "svc",
        "lb",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"example.com"}}"#,
    ]);
    let external: Value = serde_json::from_str(&server.ok(&["get", "svc", "lb", "-o", "json"])).unwrap();
    assert!(
        external["spec"].get("clusterIP").is_none(),
        "{}",
        external["spec"]
    );
    server.ok(&[
        "create",
        "service",
        "clusterip",
        "reuse",
        "--tcp",
        "80:8080",
        "--clusterip",
        &cluster_ip,
    ]);
    server.ok(&[
        "patch",
        "svc",
        "lb",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP","externalName":null}}"#,
    ]);
    let back: Value = serde_json::from_str(&server.ok(&["get", "svc", "lb", "-o", "json"])).unwrap();
    let ip = back["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        ip.parse::<std::net::IpAddr>().is_ok() && ip != cluster_ip,
        "{}",
        back["spec"]
    );
}
