//! Client libraries other than kubectl: the official Python client (`kubernetes` on PyPI) and kube-rs,
//! each using the kubeconfig the server wrote — kube-rs over rustls proves the CA + leaf design.

use std::time::Duration;

use rkube_e2e::{Cluster, Datastore};

/// Lists, creates, patches, paginates, watches and fails like a Python controller would.
const PYTHON_SCRIPT: &str = r#"
import sys, threading
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = [ns.metadata.name for ns in core.list_namespace().items]
assert "default" in names and "kube-system" in names, names

ns = "py"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
for i in range(7):
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"app": "py"}), data={"i": str(i)}))

# Pagination: follow metadata._continue until done, with a page size smaller than the list.
seen, token, pages = [], None, 0
while True:
    page = core.list_namespaced_config_map(ns, label_selector="app=py", limit=3, _continue=token)
    pages += 1
    seen += [cm.metadata.name for cm in page.items]
    token = page.metadata._continue
    if not token:
        break
assert sorted(seen) == [f"cm-{i}" for i in range(7)], seen
assert pages == 3, pages

patched = core.patch_namespaced_config_map("cm-0", ns, {"data": {"i": "patched"}, "metadata": {"labels": {"extra": "yes"}}})
assert patched.data["i"] == "patched" and patched.metadata.labels["extra"] == "yes"

# Watch from the list's resourceVersion: only the later change arrives.
rv = core.list_namespaced_config_map(ns).metadata.resource_version
events = []
def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "late":
            w.stop()
t = threading.Thread(target=watcher)
t.start()
core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late")))
t.join(timeout=25)
assert ("ADDED", "late") in events, events
assert all(name == "late" for _, name in events), events

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="nginx", image="nginx:1.25")]))))
apps.create_namespaced_deployment(ns, dep)
scale = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
assert scale.spec.replicas == 3
assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3

try:
    core.read_namespaced_config_map("nope", ns)
    raise SystemExit("expected 404")
except ApiException as e:
    assert e.status == 404, e.status
    assert '"reason":"NotFound"' in e.body.replace(" ", ""), e.body
try:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    raise SystemExit("expected 409")
except ApiException as e:
    assert e.status == 409, e.status
try:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
    raise SystemExit("expected 422")
except ApiException as e:
    assert e.status == 422, e.status
    assert "a lowercase RFC 1123 subdomain" in e.body, e.body

core.delete_namespaced_config_map("cm-1", ns)
assert len(core.list_namespaced_config_map(ns, label_selector="app=py").items) == 6
print("python client OK")
"#;

fn python_has_kubernetes() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn official_python_client() {
    if !python_has_kubernetes() {
        // scripts/deps installs it; CI runs scripts/deps first, so there a missing module is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "the Python `kubernetes` module is missing (scripts/deps installs it)"
        );
        eprintln!("SKIPPED official_python_client: python3 cannot import `kubernetes`; run scripts/deps");
        return;
    }
    let c = Cluster::start(Datastore::Embedded);
    let script = c.write_file("client.py", PYTHON_SCRIPT);
    let out = c.run_with_kubeconfig("python3", &[script.to_str().unwrap()]);
    assert_eq!(out.ok().trim(), "python client OK", "stderr:\n{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_over_rustls() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::runtime::watcher;

    let c = tokio::task::spawn_blocking(|| Cluster::start(Datastore::Embedded))
        .await
        .unwrap();
    let kubeconfig = Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("from=kube-rs")).boxed();

    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "from-rust", "labels": {"from": "kube-rs"}},
        "data": {"a": "1"}
    }))
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());

    let patch = serde_json::json!({"data": {"a": "2"}});
    let patched = cms
        .patch("from-rust", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["a"], "2");

    // The watcher (list + watch, as every kube-rs controller does) sees the object.
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)
                    if cm.metadata.name.as_deref() == Some("from-rust") =>
                {
                    return cm;
                }
                _ => {}
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the watcher saw the ConfigMap");
    assert_eq!(seen.metadata.labels.unwrap()["from"], "kube-rs");

    let err = cms.get("nope").await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    cms.delete("from-rust", &Default::default()).await.unwrap();
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}
