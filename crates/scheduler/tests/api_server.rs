//! The scheduler against a real `rkube server` process (embedded SQLite store, HTTPS, admin kubeconfig):
//! Nodes and Pods are plain API objects, the scheduler talks to the server only through kube-rs.
//! The server binary is `$RKUBE_BIN`, else `target/debug/rkube` (built with `cargo build -p rkube` if absent).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rkube_scheduler::leader::{Ended, LeaderElector, LeaseConfig};
use rkube_scheduler::plugins::default_profile;
use rkube_scheduler::resources::parse_milli;
use rkube_scheduler::{SchedulerOptions, run};
use serde_json::json;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(60);

/// A running `rkube server` in a temp dir, killed and removed on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

fn rkube_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("RKUBE_BIN") {
        return bin.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug/rkube");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "rkube", "--bin", "rkube"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p rkube");
        assert!(status.success(), "cargo build -p rkube failed");
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    async fn start() -> (Server, kube::Client) {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(rkube_binary())
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--disable-agent")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting rkube server");
        let server = Server { child, dir };
        let client = server.wait_ready().await;
        (server, client)
    }

    async fn wait_ready(&self) -> kube::Client {
        let path = self.dir.path().join("kubeconfig.yaml");
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "server not ready; log:\n{}",
                self.log()
            );
            if let Ok(kc) = Kubeconfig::read_from(&path)
                && let Ok(config) =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
                && let Ok(client) = kube::Client::try_from(config)
                && client.apiserver_version().await.is_ok()
                && Api::<Node>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .is_ok()
            {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Ready node with this cpu (memory 8Gi, 110 pods), labels and taints, created through the API.
async fn create_node(client: &kube::Client, name: &str, cpu: &str, taints: serde_json::Value) {
    let api: Api<Node> = Api::all(client.clone());
    let resources = json!({"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated"}],
    });
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints},
        "status": status,
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    // The status subresource is authoritative; some servers drop status on create.
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap();
}

async fn create_pod(client: &kube::Client, name: &str, scheduler: &str, cpu: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
}

/// Polls `check` until it returns `Some`, failing after the deadline with `what`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn cpu_request(p: &Pod) -> i64 {
    p.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

fn scheduled_condition(p: &Pod) -> Option<(String, String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pods_to_fitting_nodes_reports_failures_and_leaves_other_schedulers_pods() {
    let (server, client) = Server::start().await;
    const NAME: &str = "test-scheduler";
    create_node(&client, "node-a", "2", json!([])).await;
    create_node(&client, "node-b", "2", json!([])).await;
    create_node(
        &client,
        "node-c",
        "1",
        json!([{"key": "dedicated", "value": "special", "effect": "NoSchedule"}]),
    )
    .await;
    for i in 0..6 {
        create_pod(&client, &format!("p{i}"), NAME, "500m").await;
    }
    create_pod(&client, "too-big", NAME, "3").await;
    create_pod(&client, "someone-elses", "other-scheduler", "100m").await;

    let options = SchedulerOptions {
        profiles: vec![default_profile(NAME)],
        leader_election: None,
        ..SchedulerOptions::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(run(client.clone(), options, async move {
        let _ = stop_rx.await;
    }));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bound = wait_for("the six small pods to be bound", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.name.as_deref().unwrap().starts_with('p'))
            .collect();
        (bound.len() == 6 && bound.iter().all(|p| node_of(p).is_some())).then_some(bound)
    })
    .await;
    let mut per_node: HashMap<String, i64> = HashMap::new();
    for p in &bound {
        *per_node.entry(node_of(p).unwrap()).or_default() += cpu_request(p);
    }
    assert!(
        !per_node.contains_key("node-c"),
        "tainted node used: {per_node:?}"
    );
    assert!(
        per_node.values().all(|&cpu| cpu <= 2000),
        "overcommitted: {per_node:?}"
    );
    assert_eq!(per_node.values().sum::<i64>(), 3000);

    let condition = wait_for("too-big to be marked Unschedulable", || async {
        scheduled_condition(&pods.get("too-big").await.ok()?)
    })
    .await;
    assert_eq!(
        condition,
        (
            "False".to_string(),
            "Unschedulable".to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: special}, 2 Insufficient cpu. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
                .to_string()
        )
    );

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reasons = wait_for("Scheduled and FailedScheduling events", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let by_pod: BTreeMap<String, (String, String)> = list
            .items
            .into_iter()
            .map(|e| {
                let pod = e.involved_object.name.clone().unwrap_or_default();
                (pod, (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            })
            .collect();
        (by_pod.contains_key("too-big") && by_pod.contains_key("p0")).then_some(by_pod)
    })
    .await;
    assert_eq!(reasons["too-big"].0, "FailedScheduling");
    let p0 = bound
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("p0"))
        .unwrap();
    assert_eq!(
        reasons["p0"],
        (
            "Scheduled".to_string(),
            format!("Successfully assigned default/p0 to {}", node_of(p0).unwrap())
        )
    );

    // A node big enough appears: the unschedulable pod is retried and bound there.
    create_node(&client, "node-d", "4", json!([])).await;
    let node = wait_for("too-big to be bound after node-d was added", || async {
        node_of(&pods.get("too-big").await.ok()?)
    })
    .await;
    assert_eq!(node, "node-d");

    let other = pods.get("someone-elses").await.unwrap();
    assert_eq!(node_of(&other), None, "another scheduler's pod was bound");
    assert_eq!(
        scheduled_condition(&other),
        None,
        "another scheduler's pod was touched"
    );

    stop_tx.send(()).unwrap();
    scheduler.await.unwrap().unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_held_by_one_candidate_and_handed_over_on_release() {
    let (_server, client) = Server::start().await;
    let config = |id: &str| {
        let mut c = LeaseConfig::new("kube-system", "test-lease", id);
        c.retry_period = Duration::from_millis(200);
        c
    };
    let a = LeaderElector::new(client.clone(), config("a"));
    let b = LeaderElector::new(client.clone(), config("b"));

    let (stop_a, stop_a_rx) = tokio::sync::oneshot::channel::<()>();
    let (led_tx, led_rx) = tokio::sync::oneshot::channel::<()>();
    let a_task = tokio::spawn(async move {
        a.run(
            async move {
                let _ = stop_a_rx.await;
            },
            |mut leading| async move {
                let _ = led_tx.send(());
                leading.lost().await;
            },
        )
        .await
    });
    led_rx.await.unwrap();
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b acquired a lease a holds"
    );

    stop_a.send(()).unwrap();
    assert!(matches!(a_task.await.unwrap(), Ended::Shutdown(Some(()))));
    // a released the lease on shutdown, so b takes over without waiting for it to expire.
    assert!(b.try_acquire_or_renew().await.unwrap());
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client, "kube-system")
        .get("test-lease")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_are_aggregated_into_one_object() {
    let (_server, client) = Server::start().await;
    create_pod(&client, "noisy", "nobody", "100m").await;
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get("noisy")
        .await
        .unwrap();
    let recorder = rkube_scheduler::events::EventRecorder::new(client.clone(), "test-scheduler", "test");
    for _ in 0..3 {
        recorder
            .record(
                &pod,
                "Warning",
                "FailedScheduling",
                "0/1 nodes are available: 1 Too many pods.",
            )
            .await
            .unwrap();
    }
    recorder
        .record(&pod, "Warning", "FailedScheduling", "another message")
        .await
        .unwrap();
    let events = Api::<Event>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut seen: Vec<(String, i32)> = events
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("noisy"))
        .map(|e| (e.message.clone().unwrap_or_default(), e.count.unwrap_or(0)))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("0/1 nodes are available: 1 Too many pods.".to_string(), 3),
            ("another message".to_string(), 1)
        ]
    );
}
