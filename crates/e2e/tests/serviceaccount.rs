//! Kubernetes' in-cluster config on a real node: a pod in a fresh namespace finds its service account's
//! token, the cluster CA and its namespace under `/var/run/secrets/kubernetes.io/serviceaccount` (the
//! ServiceAccount admission's projected volume, the root CA publisher's ConfigMap, the kubelet's bound
//! TokenRequest), and kubectl with only that token and that CA is the pod's account. Run as root.

use std::time::Duration;

use rkube_e2e::images::BUSYBOX;
use rkube_e2e::json;
use rkube_e2e::nodes::NodeCluster;

const POD_TIMEOUT: Duration = Duration::from_secs(60);
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The `server:` URL of the admin kubeconfig.
fn server_url(cluster: &NodeCluster) -> String {
    let text = std::fs::read_to_string(cluster.kubeconfig()).expect("admin kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_string())
        .expect("server: in the kubeconfig")
}

#[test]
fn pods_get_a_working_service_account_token_ca_and_namespace() {
    let cluster = NodeCluster::single();
    let image = cluster.image(BUSYBOX);
    // A pod right after its namespace: its `default` account and CA ConfigMap are created meanwhile by the
    // controllers, and the kubelet waits for them.
    cluster.kubectl(&["create", "namespace", "sa-e2e"]).ok();
    let run = |name: &str, overrides: &str| {
        cluster
            .kubectl(&[
                "run",
                name,
                "-n",
                "sa-e2e",
                &format!("--image={image}"),
                &format!("--overrides={overrides}"),
                "--",
                "sleep",
                "3600",
            ])
            .ok();
    };
    run("app", "{}");
    run("nomount", r#"{"spec": {"automountServiceAccountToken": false}}"#);

    let pod = json(
        cluster
            .kubectl(&["get", "pod", "app", "-n", "sa-e2e", "-o", "json"])
            .ok(),
    );
    let volume = &pod["spec"]["volumes"][0];
    let volume_name = volume["name"].as_str().unwrap_or_default();
    assert!(volume_name.starts_with("kube-api-access-"), "{volume}");
    assert_eq!(volume_name.len(), "kube-api-access-".len() + 5, "{volume_name}");
    let mount = &pod["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], MOUNT);
    assert_eq!(mount["readOnly"], true);

    wait_ready(&cluster, "app");
    let exec = |pod: &str, cmd: &[&str]| {
        let mut args = vec!["exec", "-n", "sa-e2e", pod, "--"];
        args.extend_from_slice(cmd);
        cluster.kubectl(&args)
    };
    let namespace = exec("app", &["cat", &format!("{MOUNT}/namespace")]);
    assert_eq!(namespace.ok(), "sa-e2e");
    let ca = exec("app", &["cat", &format!("{MOUNT}/ca.crt")]).ok().to_string();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = exec("app", &["cat", &format!("{MOUNT}/token")])
        .ok()
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // kubectl with nothing but the pod's token and CA (what client libraries' in-cluster config uses).
    let ca_file = cluster.write_file("pod-ca.crt", &ca);
    let kubeconfig = cluster.write_file(
        "pod-kubeconfig.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: \
             x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            server_url(&cluster),
            ca_file.display()
        ),
    );
    let whoami = cluster.kubectl(&[
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami.ok(), "system:serviceaccount:sa-e2e:default");

    wait_ready(&cluster, "nomount");
    let listed = exec("nomount", &["ls", MOUNT]);
    assert_ne!(
        listed.code,
        Some(0),
        "automountServiceAccountToken: false mounts nothing: {listed:?}"
    );
}

fn wait_ready(cluster: &NodeCluster, name: &str) {
    rkube_e2e::wait_until(&format!("pod sa-e2e/{name} Ready"), POD_TIMEOUT, |last| {
        let out = cluster.kubectl(&["get", "pod", name, "-n", "sa-e2e", "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        *last = format!(
            "{}\n{}\nserver log:\n{}",
            out.stdout,
            out.stderr,
            cluster.log_tail(0)
        );
        let ready = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    });
}
