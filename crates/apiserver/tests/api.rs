//! The API server in-process over plain HTTP on 127.0.0.1:0 with a real SQLite store in a temp dir, driven
//! by kube-rs as a client would drive Kubernetes.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};
use rkube_apiserver::{ApiOptions, ApiState};
use serde_json::{Value, json};

struct Server {
    client: Client,
    url: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = rkube_store::sqlite::SqliteBackend::open(&dir.path().join("db"), Default::default())
        .await
        .unwrap();
    let state = ApiState::new(Arc::new(store), ApiOptions::default())
        .await
        .unwrap();
    rkube_apiserver::bootstrap(&state).await.unwrap();
    state.set_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = rkube_apiserver::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let config = Config::new(url.parse().unwrap());
    let client = Client::try_from(config).unwrap();
    Server {
        client,
        url,
        _dir: dir,
        task,
    }
}

fn cm(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

async fn raw(server: &Server, method: &str, path: &str, accept: &str, body: Option<Value>) -> (u16, Value) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.url))
        .header("Accept", accept);
    let req = match body {
        Some(b) => req
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&b).unwrap())
            .unwrap(),
        None => req.body(Vec::new()).unwrap(),
    };
    let resp = server
        .client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bootstrap_discovery_and_version() {
    let s = start().await;
    let version = s.client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));
    let namespaces: Vec<String> = Api::<Namespace>::all(s.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(&ns.to_string()), "{namespaces:?}");
    }
    let kubernetes = Api::<Service>::namespaced(s.client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    assert_eq!(kubernetes.spec.unwrap().cluster_ip.as_deref(), Some("10.43.0.1"));
    let dns = Api::<Service>::namespaced(s.client.clone(), "kube-system")
        .get("kube-dns")
        .await
        .unwrap();
    let spec = dns.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
    let ports: Vec<_> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into())
        ]
    );

    let discovery = kube::Discovery::new(s.client.clone()).run().await.unwrap();
    let (deploy, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .unwrap();
    assert_eq!(deploy.plural, "deployments");
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "deployments/scale" || r.plural == "scale")
    );
}

#[tokio::test]
async fn configmap_crud_conflict_and_not_found() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &cm("c1", json!({"a": "1"})))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let again = api
        .create(&PostParams::default(), &cm("c1", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(e) if e.code == 409 && e.reason == "AlreadyExists"),
        "{again:?}"
    );
    assert!(
        again.to_string().contains(r#"configmaps "c1" already exists"#),
        "{again}"
    );

    let mut updated = created.clone();
    updated.data = Some([("a".to_string(), "2".to_string())].into());
    let updated = api.replace("c1", &PostParams::default(), &updated).await.unwrap();
    assert_ne!(updated.metadata.resource_version.as_deref(), Some(rv.as_str()));
    // A write carrying the old resourceVersion conflicts.
    let stale = api
        .replace("c1", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, kube::Error::Api(e) if e.code == 409 && e.reason == "Conflict"),
        "{stale:?}"
    );
    assert!(
        stale.to_string().contains("the object has been modified"),
        "{stale}"
    );

    let patched = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "3"}, "metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().get("b").map(String::as_str), Some("3"));
    assert_eq!(
        patched.metadata.labels.unwrap().get("x").map(String::as_str),
        Some("y")
    );

    api.delete("c1", &DeleteParams::default()).await.unwrap();
    let gone = api.get("c1").await.unwrap_err();
    assert!(matches!(&gone, kube::Error::Api(e) if e.code == 404), "{gone:?}");
    assert!(
        gone.to_string().contains(r#"configmaps "c1" not found"#),
        "{gone}"
    );

    let missing_ns = Api::<ConfigMap>::namespaced(s.client.clone(), "nope")
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing_ns, kube::Error::Api(e) if e.code == 404),
        "{missing_ns:?}"
    );
}

#[tokio::test]
async fn list_with_selectors_limit_and_continue() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    for i in 0..7 {
        let mut c = cm(&format!("l{i}"), json!({}));
        c.metadata.labels = Some(
            [(
                "parity".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let even = api
        .list(&ListParams::default().labels("parity=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    let set = api
        .list(&ListParams::default().labels("parity in (odd),parity notin (even)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 3);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=l3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    let mut names = Vec::new();
    let mut lp = ListParams::default().labels("parity").limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("l{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_delivers_changes_in_order() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("w", json!({"a": "1"})))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(c) => seen.push(("ADDED", c.data.unwrap()["a"].clone())),
            WatchEvent::Modified(c) => seen.push(("MODIFIED", c.data.unwrap()["a"].clone())),
            WatchEvent::Deleted(c) => seen.push(("DELETED", c.data.unwrap()["a"].clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "1".to_string()),
            ("MODIFIED", "2".to_string()),
            ("DELETED", "2".to_string())
        ]
    );
}

#[tokio::test]
async fn deployments_default_generation_and_scale() {
    let s = start().await;
    let api = Api::<Deployment>::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
    let c = &spec.template.spec.unwrap().containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));

    let labelled = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "a label change is not a spec change"
    );

    let scale = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let after = api.get("web").await.unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(4));
    assert_eq!(after.metadata.generation, Some(2));

    let status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 4, "observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status.status.unwrap().replicas, Some(4));
    assert_eq!(
        status.metadata.generation,
        Some(2),
        "a status write is not a spec change"
    );
    // A spec write cannot change status.
    let spec_write = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_write.status.unwrap().replicas, Some(4));

    let smp = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}}}})),
        )
        .await
        .unwrap();
    let containers = smp.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("nginx:1.26"));
}

#[tokio::test]
async fn pods_bind_and_delete_gracefully() {
    let s = start().await;
    let api = Api::<Pod>::namespaced(s.client.clone(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
        .unwrap()
    };
    let created = api.create(&PostParams::default(), &pod("p1")).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        created.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("Always")
    );

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    let (code, _) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods/p1/binding",
        "application/json",
        Some(binding.clone()),
    )
    .await;
    assert_eq!(code, 201);
    let (code, status) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods/p1/binding",
        "application/json",
        Some(binding),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        api.get("p1").await.unwrap().spec.unwrap().node_name.as_deref(),
        Some("n1")
    );

    // A bound pod is marked for deletion with its grace period; an unbound one goes at once.
    api.delete("p1", &DeleteParams::default()).await.unwrap();
    let marked = api.get("p1").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    api.delete(
        "p1",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get("p1").await.is_err());

    api.create(&PostParams::default(), &pod("p2")).await.unwrap();
    api.delete("p2", &DeleteParams::default()).await.unwrap();
    assert!(api.get("p2").await.is_err());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        api.get("f").await.is_err(),
        "removing the last finalizer deletes the object"
    );
}

#[tokio::test]
async fn tables_and_errors_on_the_wire() {
    let s = start().await;
    let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (code, table) = raw(&s, "GET", "/api/v1/namespaces?limit=500", table_accept, None).await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert!(
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["cells"][0] == "default")
    );
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    let (code, status) = raw(
        &s,
        "GET",
        "/api/v1/namespaces/default/pods/nope",
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], r#"pods "nope" not found"#);
    assert_eq!(status["reason"], "NotFound");

    let bad =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}});
    let (code, status) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(bad),
    )
    .await;
    assert_eq!(code, 400, "{status}");

    let unknown =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "spec": {"foo": 1}});
    let (code, status) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        Some(unknown),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        r#"strict decoding error: unknown field "spec""#
    );
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let s = start().await;
    let api = Api::<Service>::namespaced(s.client.clone(), "default");
    let svc = |name: &str, spec: Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let web = api
        .create(
            &PostParams::default(),
            &svc(
                "web",
                json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 8080}]}),
            ),
        )
        .await
        .unwrap();
    let spec = web.spec.unwrap();
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    let port = &spec.ports.unwrap()[0];
    assert!((30000..=32767).contains(&port.node_port.unwrap()));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
            8080
        ))
    );
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));

    let taken = api
        .create(
            &PostParams::default(),
            &svc("dup", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, kube::Error::Api(e) if e.code == 422),
        "{taken:?}"
    );
    assert!(
        taken.to_string().contains("provided IP is already allocated"),
        "{taken}"
    );

    // Deleting the Service frees its address for an explicit request.
    api.delete("web", &DeleteParams::default()).await.unwrap();
    let reuse = api
        .create(
            &PostParams::default(),
            &svc("reuse", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    assert_eq!(reuse.spec.unwrap().cluster_ip, Some(ip));
    let headless = api
        .create(
            &PostParams::default(),
            &svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

#[tokio::test]
async fn server_side_apply_creates_tracks_owners_and_conflicts() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let config =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "1"}});
    let created = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(config.clone()))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["k"], "1");
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["alice"]);

    let bob =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "2"}});
    let conflict = api
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(bob.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(e) if e.code == 409),
        "{conflict:?}"
    );
    assert!(
        conflict.to_string().contains("conflict with \"alice\""),
        "{conflict}"
    );
    let forced = api
        .patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(bob))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
}

#[tokio::test]
async fn events_k8s_io_and_core_events_are_the_same_objects() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let s = start().await;
    let v1 = Api::<Event>::namespaced(s.client.clone(), "default");
    let core = Api::<CoreEvent>::namespaced(s.client.clone(), "default");
    let ev: Event = serde_json::from_value(json!({"metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Scaled", "type": "Normal", "action": "Scale",
        "note": "scaled up", "reportingController": "rkube/deployment", "reportingInstance": "x",
        "regarding": {"kind": "Deployment", "name": "web", "namespace": "default", "uid": "u1"}}))
    .unwrap();
    v1.create(&PostParams::default(), &ev).await.unwrap();
    let seen = core
        .list(&ListParams::default().fields("involvedObject.name=web,involvedObject.kind=Deployment"))
        .await
        .unwrap();
    assert_eq!(seen.items.len(), 1);
    assert_eq!(seen.items[0].message.as_deref(), Some("scaled up"));
    assert_eq!(
        seen.items[0].reporting_component.as_deref(),
        Some("rkube/deployment")
    );
    let back = v1.get("e1").await.unwrap();
    assert_eq!(back.note.as_deref(), Some("scaled up"));
    assert_eq!(back.regarding.unwrap().name.as_deref(), Some("web"));
    let by_regarding = v1
        .list(&ListParams::default().fields("regarding.name=web"))
        .await
        .unwrap();
    assert_eq!(by_regarding.items.len(), 1);
}

#[tokio::test]
async fn watch_filters_by_selector_sends_bookmarks_and_ends_at_timeout() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams {
        bookmarks: true,
        ..WatchParams::default().labels("app=web").timeout(3)
    };
    let mut stream = api.watch(&params, &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("sel", json!({})))
        .await
        .unwrap();
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    let mut types = Vec::new();
    // The stream ends by itself at timeoutSeconds.
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match ev {
            WatchEvent::Added(_) => types.push("ADDED"),
            WatchEvent::Modified(_) => types.push("MODIFIED"),
            WatchEvent::Deleted(_) => types.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    // Entering the selector is ADDED, leaving it DELETED; the unlabelled create is not seen.
    assert_eq!(types, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn watch_from_before_the_cache_window_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn rkube_store::Backend> = Arc::new(
        rkube_store::sqlite::SqliteBackend::open(&dir.path().join("db"), Default::default())
            .await
            .unwrap(),
    );
    {
        let state = ApiState::new(store.clone(), ApiOptions::default()).await.unwrap();
        rkube_apiserver::bootstrap(&state).await.unwrap();
    }
    // A new server over the same store starts its history at the store's current revision.
    let s = {
        let state = ApiState::new(store, ApiOptions::default()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = rkube_apiserver::router(state);
        let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let client = Client::try_from(Config::new(url.parse().unwrap())).unwrap();
        Server {
            client,
            url,
            _dir: dir,
            task,
        }
    };
    let api = Api::<Namespace>::all(s.client.clone());
    let mut stream = api.watch(&WatchParams::default(), "1").await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A list still works, and a watch from its resourceVersion is accepted.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let (code, _) = raw(
        &s,
        "GET",
        &format!("/api/v1/namespaces?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn dry_run_generate_name_preconditions_and_terminating_namespaces() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", json!({})),
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert!(api.get("dry").await.is_err(), "dryRun must not persist");

    let mut generated = cm("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let made = api.create(&PostParams::default(), &generated).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = api.delete(&name, &wrong_uid).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(e) if e.code == 409), "{err:?}");
    assert!(
        err.to_string()
            .contains("Precondition failed: UID in precondition: nope"),
        "{err}"
    );

    let nsapi = Api::<Namespace>::all(s.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    let created = nsapi.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        created.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "doomed"
    );
    nsapi.delete("doomed", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        nsapi
            .get("doomed")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Terminating")
    );
    let refused = Api::<ConfigMap>::namespaced(s.client.clone(), "doomed")
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 403),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("because it is being terminated"),
        "{refused}"
    );
    // The namespace controller's last steps: finalize, then delete again.
    let (code, _) = raw(&s, "PUT", "/api/v1/namespaces/doomed/finalize", "application/json",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}, "spec": {"finalizers": []}}))).await;
    assert_eq!(code, 200);
    assert!(
        nsapi.get("doomed").await.is_err(),
        "a finalized terminating namespace is removed"
    );

    let deleted = api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    assert!(deleted.left().is_some());
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn bootstrap_is_idempotent_across_restarts() {
    use k8s_openapi::api::core::v1::Endpoints;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn rkube_store::Backend> = Arc::new(
        rkube_store::sqlite::SqliteBackend::open(&dir.path().join("db"), Default::default())
            .await
            .unwrap(),
    );
    {
        let state = ApiState::new(store.clone(), ApiOptions::default()).await.unwrap();
        rkube_apiserver::bootstrap(&state).await.unwrap();
    }
    let moved = ApiOptions {
        advertise_address: [127, 0, 0, 2].into(),
        ..ApiOptions::default()
    };
    let state = ApiState::new(store, moved).await.unwrap();
    rkube_apiserver::bootstrap(&state)
        .await
        .expect("a second start bootstraps over the existing objects");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = rkube_apiserver::router(state);
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = Client::try_from(Config::new(url.parse().unwrap())).unwrap();
    let s = Server {
        client,
        url,
        _dir: dir,
        task,
    };

    let endpoints = Api::<Endpoints>::namespaced(s.client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    assert_eq!(
        endpoints.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip,
        "127.0.0.2"
    );
    // The restarted allocator knows 10.43.0.1 is taken.
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 1}]}}),
    )
    .unwrap();
    let err = Api::<Service>::namespaced(s.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_err();
    assert!(matches!(&err, kube::Error::Api(e) if e.code == 422), "{err:?}");
}

/// kubectl's typed commands (`create configmap`, `create deployment` …) send protobuf bodies.
#[tokio::test]
async fn protobuf_bodies_are_accepted_and_unknown_media_types_refused() {
    use k8s_pb::api::core::v1 as pb;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message;
    let s = start().await;
    let cm = pb::ConfigMap {
        metadata: Some(ObjectMeta {
            name: Some("pb".into()),
            ..Default::default()
        }),
        data: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    };
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(cm.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(envelope.encode_to_vec());
    let post = |content_type: &'static str, body: Vec<u8>| {
        axum::http::Request::post(format!("{}/api/v1/namespaces/default/configmaps", s.url))
            .header("Content-Type", content_type)
            .header("Accept", "application/vnd.kubernetes.protobuf,application/json")
            .body(kube::client::Body::from(body))
            .unwrap()
    };
    let resp = s
        .client
        .send(post("application/vnd.kubernetes.protobuf", body))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let got = Api::<ConfigMap>::namespaced(s.client.clone(), "default")
        .get("pb")
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["a"], "b");

    let resp = s
        .client
        .send(post("text/plain", b"hello".to_vec()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = s
        .client
        .send(post("application/json", vec![b' '; 3 * 1024 * 1024 + 10]))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

#[tokio::test]
async fn node_agents_watch_their_own_pods() {
    let s = start().await;
    let api = Api::<Pod>::namespaced(s.client.clone(), "default");
    let all = Api::<Pod>::all(s.client.clone());
    let params = WatchParams::default().fields("spec.nodeName=n1").timeout(20);
    let mut stream = all.watch(&params, "0").await.unwrap().boxed();
    let pod = |name: &str, node: Option<&str>| -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    api.create(&PostParams::default(), &pod("elsewhere", Some("n2")))
        .await
        .unwrap();
    api.create(&PostParams::default(), &pod("mine", None))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "mine"},
        "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods/mine/binding",
        "application/json",
        Some(binding),
    )
    .await;
    assert_eq!(code, 201);
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("mine")),
        other => panic!("expected the bound pod ADDED, got {other:?}"),
    }
}

/// kube-runtime's watcher, as controllers use it: list+watch, and the streaming-list (sendInitialEvents) mode.
#[tokio::test]
async fn kube_runtime_watchers_see_existing_and_new_objects() {
    use kube::runtime::watcher::{self, Event};
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    api.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut events = watcher::watcher(api.clone(), config).boxed();
        let mut initial = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Event::Init => {}
                Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
                Event::InitDone => break,
                other => panic!("unexpected {other:?} during the initial list"),
            }
        }
        assert!(initial.contains(&"before".to_string()), "{initial:?}");
        let name = format!("after-{}", initial.len());
        api.create(&PostParams::default(), &cm(&name, json!({})))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Apply(c) => assert_eq!(c.metadata.name.as_deref(), Some(name.as_str())),
            other => panic!("expected the new object, got {other:?}"),
        }
    }
}

/// Concurrent patches of one object all land: each is retried on the store's conflicts.
#[tokio::test]
async fn concurrent_patches_are_retried_not_lost() {
    let s = start().await;
    let api = Api::<ConfigMap>::namespaced(s.client.clone(), "default");
    api.create(&PostParams::default(), &cm("hot", json!({})))
        .await
        .unwrap();
    let patches = (0..20).map(|i| {
        let api = api.clone();
        async move {
            let patch = json!({"metadata": {"labels": {format!("l{i}"): "x"}}});
            api.patch("hot", &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    });
    for result in futures::future::join_all(patches).await {
        result.unwrap();
    }
    let labels = api.get("hot").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.len(), 20, "{labels:?}");
}
