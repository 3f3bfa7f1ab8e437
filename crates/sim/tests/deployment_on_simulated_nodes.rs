//! Simulated nodes under the real control plane: a real `rkube server` process, the controller manager,
//! the scheduler and the simulator in this process (each with its own client), driven by the real kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rkube_e2e::{Cluster, Datastore};
use rkube_sim::SimOptions;
use rkube_sim::ipam::Cidr;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(90);

async fn client(cluster: &Cluster) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, failing with `what` and the last observation at the deadline.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("timed out waiting for {what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The running pods of `app=web` as name → (node, pod IP, host IP), once there are `n` of them, all Ready.
async fn running_web_pods(
    pods: &Api<Pod>,
    n: usize,
) -> Result<BTreeMap<String, (String, String, String)>, String> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .map_err(|e| e.to_string())?;
    let mut running = BTreeMap::new();
    for p in &list.items {
        let status = p.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && ready && p.metadata.deletion_timestamp.is_none() {
            running.insert(
                p.metadata.name.clone().unwrap_or_default(),
                (
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    status.pod_ip.unwrap_or_default(),
                    status.host_ip.unwrap_or_default(),
                ),
            );
        }
    }
    if running.len() == n && list.items.len() == n {
        Ok(running)
    } else {
        Err(format!(
            "{} pods, {} running and ready: {running:?}",
            list.items.len(),
            running.len()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_runs_on_simulated_nodes_with_ips_from_their_pod_cidrs() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(Datastore::Embedded));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_future = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let controllers = tokio::spawn(rkube_controllers::run(
        client(&cluster).await,
        Default::default(),
        stopped_future(),
    ));
    let scheduler = tokio::spawn(rkube_scheduler::run(
        client(&cluster).await,
        Default::default(),
        stopped_future(),
    ));
    let options = SimOptions {
        count: 3,
        cpu: "4".into(),
        memory: "16Gi".into(),
        lease_renew_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let sim = tokio::spawn(rkube_sim::run(client(&cluster).await, options, stopped_future()));

    let c = client(&cluster).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");

    // Three Ready nodes, each with a pod CIDR from node IPAM and a Lease held by itself.
    let node_cidrs: BTreeMap<String, (Cidr, String)> =
        wait_for("3 ready simulated nodes with pod CIDRs", || async {
            let list = nodes
                .list(&ListParams::default().labels("type=sim"))
                .await
                .map_err(|e| e.to_string())?;
            let mut found = BTreeMap::new();
            for n in &list.items {
                let status = n.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                let ip = status
                    .addresses
                    .iter()
                    .flatten()
                    .find(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone());
                if let (true, Some(cidr), Some(ip)) = (ready, cidr, ip) {
                    found.insert(
                        n.metadata.name.clone().unwrap(),
                        (Cidr::parse(&cidr).unwrap(), ip),
                    );
                }
            }
            if found.len() == 3 {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        })
        .await;
    assert_eq!(
        node_cidrs.keys().cloned().collect::<Vec<_>>(),
        ["sim-0", "sim-1", "sim-2"]
    );
    for name in node_cidrs.keys() {
        let lease = leases.get(name).await.expect("node lease");
        let owner = &lease
            .metadata
            .owner_references
            .as_ref()
            .expect("lease owned by its node")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Node", name.as_str())
        );
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
        let first = spec.renew_time.expect("renewTime");
        wait_for("the lease renewed", || async {
            let renewed = leases
                .get(name)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .unwrap()
                .renew_time;
            match renewed {
                Some(t) if t.0 > first.0 => Ok(()),
                other => Err(format!("{name}: renewTime still {other:?}")),
            }
        })
        .await;
    }
    let node = nodes.get("sim-1").await.unwrap();
    let capacity = node.status.unwrap().capacity.unwrap();
    assert_eq!(
        (capacity["cpu"].0.as_str(), capacity["memory"].0.as_str()),
        ("4", "16Gi")
    );

    let kubectl = |args: &[&str]| tokio::task::block_in_place(|| cluster.kubectl(args));
    kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=4",
    ])
    .ok();
    kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"]).ok();

    let running = wait_for("4 running web pods", || running_web_pods(&pods, 4)).await;
    let mut ips = BTreeSet::new();
    for (pod, (node, pod_ip, host_ip)) in &running {
        let (cidr, node_ip) = &node_cidrs[node];
        let ip: Ipv4Addr = pod_ip
            .parse()
            .unwrap_or_else(|_| panic!("{pod} has no IP: {pod_ip:?}"));
        assert!(cidr.contains(ip), "{pod} on {node} has {ip}, outside {cidr}");
        assert_eq!(host_ip, node_ip, "{pod}'s hostIP");
        assert!(ips.insert(ip), "{ip} given to two pods");
    }
    let used_nodes: BTreeSet<_> = running.values().map(|(n, _, _)| n.clone()).collect();
    assert!(
        used_nodes.len() >= 2,
        "4 pods should spread over nodes: {running:?}"
    );
    let listed = kubectl(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    assert_eq!(listed.ok().matches("Running").count(), 4, "{}", listed.stdout);

    // A deleted pod goes away (the simulated kubelet finishes its graceful deletion) and is replaced.
    let victim = running.keys().next().unwrap().clone();
    kubectl(&["delete", "pod", &victim, "--timeout=60s"]).ok();
    let after = wait_for("the deleted pod replaced", || async {
        let now = running_web_pods(&pods, 4).await?;
        if now.contains_key(&victim) {
            Err(format!("{victim} still there"))
        } else {
            Ok(now)
        }
    })
    .await;
    for (pod, (node, pod_ip, _)) in &after {
        assert!(
            node_cidrs[node].0.contains(pod_ip.parse().unwrap()),
            "{pod}: {pod_ip} outside {node}'s CIDR"
        );
    }

    let _ = stop.send(true);
    for task in [
        controllers.await.map(|r| r.map_err(|e| e.to_string())),
        scheduler.await.map(|r| r.map_err(|e| e.to_string())),
    ] {
        task.expect("task panicked").expect("component failed");
    }
    sim.await.expect("simulator panicked").expect("simulator failed");
}
