//! The declarative loop end to end: a real `rkube server` (API server, controller manager, scheduler), real
//! `rkube simulate-nodes` processes as the nodes, and the real kubectl — starting with the seed's walkthrough
//! (create, expose, label, scale, set image, rollout undo), then DaemonSets, garbage collection, namespace
//! deletion, node loss, leader hand-over between two servers on one etcd and a pod for another scheduler.
//! Every step asserts what a user sees in kubectl, waiting on conditions with deadlines.

use std::collections::BTreeSet;
use std::time::Duration;

use rkube_e2e::{Cluster, Datastore, json, row, table, wait_until};
use rkube_store::testing::EtcdServer;

const IMAGE_V1: &str = "gcr.io/google-samples/kubernetes-bootcamp:v1";
const IMAGE_V2: &str = "gcr.io/google-samples/kubernetes-bootcamp:v2";
/// How long anything the control plane does may take on this loaded shared machine.
const DEADLINE: Duration = Duration::from_secs(120);
const ROLLOUT_TIMEOUT: &str = "--timeout=120s";

/// Waits until `kubectl get nodes` lists exactly `names`, all Ready.
fn wait_nodes_ready(c: &Cluster, names: &[&str]) {
    wait_until(&format!("nodes {names:?} Ready"), DEADLINE, |last| {
        let out = c.kubectl(&["get", "nodes"]);
        *last = format!("{}{}", out.stdout, out.stderr);
        let rows = table(&out.stdout);
        let ready: BTreeSet<&str> = rows
            .iter()
            .skip(1)
            .filter(|r| r.get(1).map(String::as_str) == Some("Ready"))
            .map(|r| r[0].as_str())
            .collect();
        (ready == names.iter().copied().collect()).then_some(())
    });
}

/// `kubectl rollout status` of `what` (like `deployment/web`) must report success.
#[track_caller]
fn rollout_succeeds(c: &Cluster, what: &str) {
    let out = c.kubectl(&["rollout", "status", what, ROLLOUT_TIMEOUT]);
    assert!(
        out.code == Some(0) && out.stdout.contains("successfully rolled out"),
        "rollout status {what}:\n{}{}\ncluster:\n{}\nserver log:\n{}",
        out.stdout,
        out.stderr,
        c.kubectl(&["get", "nodes,pods", "-o", "wide"]).stdout,
        c.server_log_tail()
    );
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let expr = format!("jsonpath={path}");
    let mut all = args.to_vec();
    all.extend(["-o", &expr]);
    c.kubectl(&all).ok().to_string()
}

/// The (name, node) of the pods listed by `kubectl get pods -l SELECTOR -o wide` that are Running and not
/// being deleted.
fn running_pods_on_nodes(c: &Cluster, selector: &str, namespace: &str) -> Vec<(String, String)> {
    let out = c.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "wide"]);
    let rows = table(out.ok());
    let Some(header) = rows.first() else {
        return Vec::new();
    };
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    let (status, node) = (col("STATUS"), col("NODE"));
    rows[1..]
        .iter()
        .filter(|r| r[status] == "Running")
        .map(|r| (r[0].clone(), r[node].clone()))
        .collect()
}

#[test]
fn the_seed_walkthrough_on_three_simulated_nodes() {
    let c = Cluster::start(Datastore::Embedded);
    let _nodes = c.simulate_nodes("node", 3);
    wait_nodes_ready(&c, &["node-0", "node-1", "node-2"]);

    let out = c.kubectl(&[
        "create",
        "deployment",
        "kubernetes-bootcamp",
        &format!("--image={IMAGE_V1}"),
    ]);
    assert_eq!(out.ok().trim(), "deployment.apps/kubernetes-bootcamp created");
    rollout_succeeds(&c, "deployment/kubernetes-bootcamp");

    let out = c.kubectl(&[
        "expose",
        "deployment/kubernetes-bootcamp",
        "--type=NodePort",
        "--port",
        "8080",
    ]);
    assert_eq!(out.ok().trim(), "service/kubernetes-bootcamp exposed");
    let svc = c.kubectl(&["get", "services"]);
    let svc_row = row(svc.ok(), "kubernetes-bootcamp");
    assert_eq!(svc_row[1], "NodePort", "{}", svc.stdout);
    let node_port: u16 = jsonpath(
        &c,
        &["get", "service", "kubernetes-bootcamp"],
        "{.spec.ports[0].nodePort}",
    )
    .parse()
    .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "nodePort {node_port}");
    assert!(
        svc_row[4].contains(&format!("8080:{node_port}/TCP")),
        "{}",
        svc.stdout
    );

    let pods = running_pods_on_nodes(&c, "app=kubernetes-bootcamp", "default");
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod = pods[0].0.clone();
    let pod_ip = jsonpath(&c, &["get", "pod", &pod], "{.status.podIP}");
    assert!(pod_ip.starts_with("10.42."), "pod IP {pod_ip:?}");
    wait_until("the EndpointSlice to list the pod", DEADLINE, |last| {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubernetes-bootcamp",
        ]);
        *last = format!("{}{}", out.stdout, out.stderr);
        let rows = table(&out.stdout);
        // NAME ADDRESSTYPE PORTS ENDPOINTS AGE
        (rows.len() == 2 && rows[1][1] == "IPv4" && rows[1][2] == "8080" && rows[1][3] == pod_ip)
            .then_some(())
    });

    let out = c.kubectl(&["label", "pod", &pod, "version=v1"]);
    assert_eq!(out.ok().trim(), format!("pod/{pod} labeled"));
    let out = c.kubectl(&["get", "pods", "-L", "version"]);
    assert_eq!(table(out.ok())[0].last().unwrap(), "VERSION");
    assert_eq!(row(out.ok(), &pod).last().unwrap(), "v1", "{}", out.stdout);

    let out = c.kubectl(&["scale", "deployments/kubernetes-bootcamp", "--replicas=4"]);
    assert_eq!(out.ok().trim(), "deployment.apps/kubernetes-bootcamp scaled");
    rollout_succeeds(&c, "deployment/kubernetes-bootcamp");
    let out = c.kubectl(&["get", "deployments"]);
    assert_eq!(
        &row(out.ok(), "kubernetes-bootcamp")[1..4],
        ["4/4", "4", "4"],
        "{}",
        out.stdout
    );
    let pods = running_pods_on_nodes(&c, "app=kubernetes-bootcamp", "default");
    assert_eq!(pods.len(), 4, "{pods:?}");
    let nodes: BTreeSet<&str> = pods.iter().map(|(_, n)| n.as_str()).collect();
    assert!(nodes.len() >= 2, "4 replicas on 3 nodes should spread: {pods:?}");

    let out = c.kubectl(&[
        "set",
        "image",
        "deployment/kubernetes-bootcamp",
        &format!("kubernetes-bootcamp={IMAGE_V2}"),
    ]);
    assert_eq!(
        out.ok().trim(),
        "deployment.apps/kubernetes-bootcamp image updated"
    );
    rollout_succeeds(&c, "deployment/kubernetes-bootcamp");
    let images = jsonpath(
        &c,
        &["get", "pods", "-l", "app=kubernetes-bootcamp"],
        "{.items[*].spec.containers[0].image}",
    );
    assert_eq!(images.split_whitespace().collect::<Vec<_>>(), [IMAGE_V2; 4]);

    let out = c.kubectl(&["rollout", "history", "deployment/kubernetes-bootcamp"]);
    let revisions: Vec<String> = table(out.ok())
        .into_iter()
        .filter(|r| r[0].parse::<u32>().is_ok())
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{}", out.stdout);

    let out = c.kubectl(&["rollout", "undo", "deployment/kubernetes-bootcamp"]);
    assert_eq!(out.ok().trim(), "deployment.apps/kubernetes-bootcamp rolled back");
    rollout_succeeds(&c, "deployment/kubernetes-bootcamp");
    let template_image = jsonpath(
        &c,
        &["get", "deployment", "kubernetes-bootcamp"],
        "{.spec.template.spec.containers[0].image}",
    );
    assert_eq!(template_image, IMAGE_V1);
    let rs = json(
        c.kubectl(&["get", "rs", "-l", "app=kubernetes-bootcamp", "-o", "json"])
            .ok(),
    );
    let current: Vec<&serde_json::Value> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["replicas"] != 0)
        .collect();
    assert_eq!(
        current.len(),
        1,
        "one scaled-up ReplicaSet after the undo: {rs:#}"
    );
    assert_eq!(
        current[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE_V1
    );
    assert_eq!(
        current[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "{rs:#}"
    );
    assert_eq!(
        rs["items"].as_array().unwrap().len(),
        2,
        "the undo re-adopts the v1 ReplicaSet rather than making a third: {rs:#}"
    );

    let out = c.kubectl(&["delete", "service", "-l", "app=kubernetes-bootcamp"]);
    assert_eq!(out.ok().trim(), "service \"kubernetes-bootcamp\" deleted");
    let out = c.kubectl(&["get", "service", "kubernetes-bootcamp"]);
    assert!(out.err().contains("NotFound"), "{}", out.stderr);
    let out = c.kubectl(&["get", "services", "-o", "name"]);
    assert_eq!(out.ok().trim(), "service/kubernetes");
}

const DAEMONSET: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: agent
        image: busybox:1.36
";

#[test]
fn a_daemonset_covers_every_node_it_tolerates() {
    let c = Cluster::start(Datastore::Embedded);
    let _nodes = c.simulate_nodes("ds", 4);
    wait_nodes_ready(&c, &["ds-0", "ds-1", "ds-2", "ds-3"]);
    let out = c.kubectl(&["taint", "nodes", "ds-3", "dedicated=infra:NoSchedule"]);
    assert_eq!(out.ok().trim(), "node/ds-3 tainted");

    let out = c.kubectl_stdin(&["apply", "-f", "-"], DAEMONSET);
    assert_eq!(out.ok().trim(), "daemonset.apps/agent created");
    rollout_succeeds(&c, "daemonset/agent");
    let out = c.kubectl(&["get", "daemonsets"]);
    // NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE
    assert_eq!(
        &row(out.ok(), "agent")[1..6],
        ["3", "3", "3", "3", "3"],
        "{}",
        out.stdout
    );
    let mut nodes: Vec<String> = running_pods_on_nodes(&c, "app=agent", "default")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["ds-0", "ds-1", "ds-2"], "one pod per untainted node");
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: nginx:1.25
"
    )
}

fn create_and_roll_out(c: &Cluster, name: &str, replicas: u32, namespace: &str) {
    let out = c.kubectl_stdin(
        &["apply", "-n", namespace, "-f", "-"],
        &deployment(name, replicas),
    );
    assert_eq!(out.ok().trim(), format!("deployment.apps/{name} created"));
    let out = c.kubectl(&[
        "rollout",
        "status",
        "-n",
        namespace,
        &format!("deployment/{name}"),
        ROLLOUT_TIMEOUT,
    ]);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}\nserver log:\n{}",
        out.stdout,
        c.server_log_tail()
    );
}

#[test]
fn deleting_a_deployment_cascades_or_orphans() {
    let c = Cluster::start(Datastore::Embedded);
    let _nodes = c.simulate_nodes("gc", 2);
    wait_nodes_ready(&c, &["gc-0", "gc-1"]);

    // Orphan: the ReplicaSet and its pods stay, no longer owned.
    create_and_roll_out(&c, "kept", 2, "default");
    let rs = jsonpath(&c, &["get", "rs", "-l", "app=kept"], "{.items[*].metadata.name}");
    let out = c.kubectl(&["delete", "deployment", "kept", "--cascade=orphan"]);
    assert_eq!(out.ok().trim(), "deployment.apps \"kept\" deleted");
    let out = c.kubectl(&["get", "deployment", "kept"]);
    assert!(out.err().contains("NotFound"), "{}", out.stderr);
    wait_until(
        "the orphaned ReplicaSet to lose its ownerReferences",
        DEADLINE,
        |last| {
            *last = c.kubectl(&["get", "rs", &rs, "-o", "json"]).stdout;
            let obj: serde_json::Value = serde_json::from_str(last).ok()?;
            obj["metadata"]
                .get("ownerReferences")
                .is_none_or(|o| o.as_array().is_some_and(Vec::is_empty))
                .then_some(())
        },
    );

    // Cascade (kubectl's default, background): the ReplicaSet and its pods go too.
    create_and_roll_out(&c, "gone", 2, "default");
    let out = c.kubectl(&["delete", "deployment", "gone"]);
    assert_eq!(out.ok().trim(), "deployment.apps \"gone\" deleted");
    wait_until(
        "the ReplicaSets and Pods of `gone` to be deleted",
        DEADLINE,
        |last| {
            let out = c.kubectl(&["get", "rs,pods", "-l", "app=gone", "-o", "name"]);
            *last = format!("{}{}", out.stdout, out.stderr);
            (out.code == Some(0) && out.stdout.trim().is_empty()).then_some(())
        },
    );

    // By now the collector has handled later deletions: the orphans are still there, running.
    let out = c.kubectl(&["get", "rs", &rs]);
    assert_eq!(&row(out.ok(), &rs)[1..4], ["2", "2", "2"], "{}", out.stdout);
    assert_eq!(running_pods_on_nodes(&c, "app=kept", "default").len(), 2);
}

#[test]
fn deleting_a_namespace_deletes_everything_in_it() {
    let c = Cluster::start(Datastore::Embedded);
    let _nodes = c.simulate_nodes("ns", 2);
    wait_nodes_ready(&c, &["ns-0", "ns-1"]);
    c.kubectl(&["create", "namespace", "doomed"]).ok();
    create_and_roll_out(&c, "web", 2, "doomed");
    c.kubectl(&["create", "configmap", "cfg", "-n", "doomed", "--from-literal=k=v"])
        .ok();
    c.kubectl(&["expose", "deployment", "web", "-n", "doomed", "--port=80"])
        .ok();
    assert_eq!(running_pods_on_nodes(&c, "app=web", "doomed").len(), 2);

    let out = c.kubectl(&["delete", "namespace", "doomed", "--timeout=120s"]);
    assert_eq!(
        out.ok().trim(),
        "namespace \"doomed\" deleted",
        "{}\nserver log:\n{}",
        out.stderr,
        c.server_log_tail()
    );
    let out = c.kubectl(&["get", "namespace", "doomed"]);
    assert!(out.err().contains("NotFound"), "{}", out.stderr);
    for kind in [
        "pods",
        "replicasets",
        "deployments",
        "services",
        "configmaps",
        "endpointslices",
    ] {
        let out = c.kubectl(&["get", kind, "-n", "doomed", "-o", "name"]);
        assert_eq!(out.ok().trim(), "", "{kind} left in a deleted namespace");
    }
    let out = c.kubectl(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]);
    assert_eq!(out.ok().trim(), "");
}

/// Node loss: nodes of a killed simulator go Unknown with the unreachable taint, and their pods move to the
/// live nodes once their toleration runs out. `toleration` is the pods' own tolerationSeconds for the
/// unreachable taint; `None` relies on the API server's `--default-not-ready-toleration-seconds`.
fn node_loss(toleration: Option<u32>) {
    let c = Cluster::start_with(
        Datastore::Embedded,
        &[
            // Above the simulator's 10 s lease renewal (like the kubelet's), as Kubernetes requires: a
            // shorter grace marks live nodes Unknown between two renewals.
            "--node-monitor-grace-period",
            "20s",
            "--default-not-ready-toleration-seconds",
            "5",
        ],
    );
    let mut lost = c.simulate_nodes("a", 2);
    let _live = c.simulate_nodes("b", 2);
    wait_nodes_ready(&c, &["a-0", "a-1", "b-0", "b-1"]);

    // A third of a node's 32 CPUs each: the scheduler's LeastAllocated scoring puts the first four on four
    // empty nodes, and two of b's nodes still fit all four.
    let mut manifest = deployment("mover", 4);
    manifest.push_str("        resources:\n          requests:\n            cpu: \"10\"\n");
    if let Some(seconds) = toleration {
        manifest.push_str(&format!(
            "      tolerations:\n      - key: node.kubernetes.io/unreachable\n        operator: Exists\n        \
             effect: NoExecute\n        tolerationSeconds: {seconds}\n"
        ));
    }
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert_eq!(out.ok().trim(), "deployment.apps/mover created");
    rollout_succeeds(&c, "deployment/mover");
    let pods = running_pods_on_nodes(&c, "app=mover", "default");
    assert!(
        pods.iter().any(|(_, n)| n.starts_with("a-")) && pods.iter().any(|(_, n)| n.starts_with("b-")),
        "4 replicas on 4 nodes should use both simulators: {pods:?}"
    );
    let tolerations = jsonpath(
        &c,
        &["get", "pod", &pods[0].0],
        "{.spec.tolerations[?(@.key==\"node.kubernetes.io/unreachable\")].tolerationSeconds}",
    );
    assert_eq!(
        tolerations, "5",
        "pods should tolerate an unreachable node for 5 s (--default-not-ready-toleration-seconds 5)"
    );

    lost.kill();
    for node in ["a-0", "a-1"] {
        wait_until(
            &format!("{node} NotReady with the unreachable taint"),
            DEADLINE,
            |last| {
                let out = c.kubectl(&["get", "node", node]);
                let taints = jsonpath(&c, &["get", "node", node], "{.spec.taints[*].key}");
                *last = format!("{}{}\ntaints: {taints}", out.stdout, out.stderr);
                (row(&out.stdout, node)[1] == "NotReady" && taints.contains("node.kubernetes.io/unreachable"))
                    .then_some(())
            },
        );
        let ready = jsonpath(
            &c,
            &["get", "node", node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        assert_eq!(ready, "Unknown");
    }
    wait_until("4 running pods of mover, all on b's nodes", DEADLINE, |last| {
        let pods = running_pods_on_nodes(&c, "app=mover", "default");
        *last = format!("{pods:?}\n{}", c.server_log_tail());
        (pods.len() == 4 && pods.iter().all(|(_, n)| n.starts_with("b-"))).then_some(())
    });
    rollout_succeeds(&c, "deployment/mover");
    let out = c.kubectl(&["get", "deployment", "mover"]);
    assert_eq!(&row(out.ok(), "mover")[1..4], ["4/4", "4", "4"], "{}", out.stdout);
}

#[test]
fn node_loss_moves_pods_tolerating_the_server_default() {
    node_loss(None);
}

#[test]
fn node_loss_moves_pods_with_their_own_short_toleration() {
    node_loss(Some(5));
}

#[test]
fn the_controller_manager_lease_moves_to_the_surviving_server() {
    let etcd = EtcdServer::start().expect("starting etcd");
    let mut one = Cluster::start_on_etcd(&etcd, &[]);
    let mut two = Cluster::start_on_etcd(&etcd, &[]);
    let holder = |c: &Cluster| {
        let out = c.kubectl(&[
            "get",
            "lease",
            "rkube-controller-manager",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        (out.code == Some(0)).then(|| out.stdout.trim().to_string())
    };
    // The identity is `<node name>_<pid>`: tell the servers apart by process id.
    let pid_of = |identity: &str| identity.rsplit('_').next().and_then(|p| p.parse::<u32>().ok());
    let pids = [one.server_pid().unwrap(), two.server_pid().unwrap()];
    let first = wait_until("a controller manager to hold the lease", DEADLINE, |last| {
        let h = holder(&one)?;
        *last = h.clone();
        pid_of(&h).filter(|p| pids.contains(p))
    });
    // Both servers see the same Lease through their own API.
    assert_eq!(pid_of(&holder(&two).unwrap()), Some(first));

    let (dead, survivor) = if first == pids[0] {
        (&mut one, &mut two)
    } else {
        (&mut two, &mut one)
    };
    dead.kill();
    let survivor_pid = survivor.server_pid().unwrap();
    wait_until("the survivor to take the lease", DEADLINE, |last| {
        let h = holder(survivor)?;
        *last = h.clone();
        (pid_of(&h) == Some(survivor_pid)).then_some(())
    });

    let _nodes = survivor.simulate_nodes("survivor", 1);
    wait_nodes_ready(survivor, &["survivor-0"]);
    create_and_roll_out(survivor, "after", 2, "default");
    let pods = running_pods_on_nodes(survivor, "app=after", "default");
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|(_, n)| n == "survivor-0"), "{pods:?}");
}

const OTHER_SCHEDULER_POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: custom
spec:
  schedulerName: other
  containers:
  - name: app
    image: nginx:1.25
";

#[test]
fn a_pod_for_another_scheduler_is_left_alone() {
    let c = Cluster::start(Datastore::Embedded);
    let _nodes = c.simulate_nodes("s", 2);
    wait_nodes_ready(&c, &["s-0", "s-1"]);
    let out = c.kubectl_stdin(&["apply", "-f", "-"], OTHER_SCHEDULER_POD);
    assert_eq!(out.ok().trim(), "pod/custom created");
    let out = c.kubectl(&["run", "plain", "--image=nginx:1.25"]);
    assert_eq!(out.ok().trim(), "pod/plain created");
    let out = c.kubectl(&["wait", "--for=condition=Ready", "pod/plain", ROLLOUT_TIMEOUT]);
    assert_eq!(out.ok().trim(), "pod/plain condition met");

    // The default scheduler has placed a pod created after `custom`; `custom` is still untouched.
    let out = c.kubectl(&["get", "pods", "-o", "wide"]);
    let custom = row(out.ok(), "custom");
    assert_eq!(&custom[1..3], ["0/1", "Pending"], "{}", out.stdout);
    assert_eq!(jsonpath(&c, &["get", "pod", "custom"], "{.spec.nodeName}"), "");
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=custom",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert_eq!(
        events.ok().trim(),
        "",
        "no scheduler should have acted on `custom`"
    );
}
