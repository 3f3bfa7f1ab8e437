//! The seed's walkthrough on real containers across three nodes (issue 6 §6): a server and two agents, each
//! in its own network namespace on a test underlay, a bootcamp image built by the suite in a registry on the
//! underlay. Clients outside the cluster are the underlay's uplink namespace; clients inside are pods.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rkube_e2e::images::{BOOTCAMP_V1, BOOTCAMP_V2};
use rkube_e2e::netns;
use rkube_e2e::nodes::{NodeCluster, RegistryPlace};
use rkube_e2e::{json, wait_until};

const APP: &str = "kubernetes-bootcamp";
const ROLLOUT_TIMEOUT: &str = "--timeout=120s";
/// LoadBalancer addresses on the underlay, so the uplink reaches them through the announcing node.
const LB_POOL: &str = "172.30.0.200-172.30.0.220";

/// Which pod answered, and with which version.
type Answer = (String, String);

/// The `Running on: <pod>` part and the version of a bootcamp answer.
fn parse_answer(text: &str) -> Option<Answer> {
    let text = text.trim();
    let rest = text.strip_prefix("Hello Kubernetes bootcamp! | Running on: ")?;
    let (pod, version) = rest.split_once(" | v=")?;
    Some((pod.to_string(), version.to_string()))
}

fn get(cluster: &NodeCluster, url: &str) -> Option<(String, String)> {
    let out = netns::http_get(&cluster.net().uplink, url);
    if out.code != Some(0) {
        return None;
    }
    parse_answer(&out.stdout)
}

fn rollout(cluster: &NodeCluster) {
    cluster
        .kubectl(&["rollout", "status", &format!("deployment/{APP}"), ROLLOUT_TIMEOUT])
        .ok();
}

/// Names of the app's pods that are Running, with the node each is on.
fn running_pods(cluster: &NodeCluster) -> Vec<(String, String)> {
    let out = cluster.kubectl(&["get", "pods", "-l", &format!("app={APP}"), "-o", "json"]);
    let Ok(list) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Requests `url` from the uplink in a loop until stopped; returns (answers, failures).
fn hammer(
    cluster: &NodeCluster,
    url: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Answer>, Vec<String>)> {
    let uplink = cluster.net().uplink.clone();
    std::thread::spawn(move || {
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let out = netns::http_get(&uplink, &url);
            match (out.code, parse_answer(&out.stdout)) {
                (Some(0), Some(a)) => answers.push(a),
                _ => failures.push(format!("{out:?}")),
            }
        }
        (answers, failures)
    })
}

#[test]
fn seed_walkthrough_on_real_containers_across_three_nodes() {
    let mut cluster = NodeCluster::start(
        3,
        RegistryPlace::Underlay,
        &[
            "--lb-ip-pool",
            LB_POOL,
            "--node-monitor-grace-period",
            "10s",
            "--default-not-ready-toleration-seconds",
            "5",
        ],
    );
    let nodes = cluster.kubectl(&["get", "nodes"]).ok().to_string();
    for i in 0..3 {
        assert!(nodes.contains(cluster.node_name(i)), "{nodes}");
    }

    // Deploy and expose.
    cluster
        .kubectl(&[
            "create",
            "deployment",
            APP,
            &format!("--image={}", cluster.image(BOOTCAMP_V1)),
        ])
        .ok();
    rollout(&cluster);
    cluster
        .kubectl(&[
            "expose",
            &format!("deployment/{APP}"),
            "--type=NodePort",
            "--port",
            "8080",
        ])
        .ok();
    let node_port = cluster
        .jsonpath("service", APP, "{.spec.ports[0].nodePort}")
        .expect("nodePort");
    let url = |i: usize| format!("http://{}:{node_port}/", cluster.node_ip(i));

    // The NodePort answers on every node, wherever the pod runs.
    for i in 0..3 {
        let (_, v) = wait_until(
            &format!("NodePort on node {i}"),
            Duration::from_secs(30),
            |last| {
                let out = netns::http_get(&cluster.net().uplink, &url(i));
                *last = format!("{out:?}");
                parse_answer(&out.stdout)
            },
        );
        assert_eq!(v, "1");
    }

    // Scale out: requests spread over the pods.
    cluster
        .kubectl(&["scale", &format!("deployments/{APP}"), "--replicas=4"])
        .ok();
    rollout(&cluster);
    let pods = running_pods(&cluster);
    assert_eq!(pods.len(), 4, "{pods:?}");
    let spread: BTreeSet<&str> = pods.iter().map(|(_, n)| n.as_str()).collect();
    assert!(spread.len() >= 2, "pods spread over the nodes: {pods:?}");
    wait_until("endpoints for all 4 pods", Duration::from_secs(30), |last| {
        let out = cluster.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={APP}"),
            "-o",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let n: usize = v["items"]
            .as_array()?
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .sum();
        *last = out.stdout.clone();
        (n == 4).then_some(())
    });
    let mut answered_by = BTreeSet::new();
    for _ in 0..40 {
        let (pod, _) = get(&cluster, &url(0)).expect("every request answered");
        answered_by.insert(pod);
    }
    assert!(answered_by.len() >= 3, "40 requests reached only {answered_by:?}");

    // Label a pod and select by it.
    let (first, _) = &pods[0];
    cluster.kubectl(&["label", "pods", first, "version=v1"]).ok();
    let labelled = cluster
        .kubectl(&["get", "pods", "-l", "version=v1", "-o", "name"])
        .ok()
        .to_string();
    assert_eq!(labelled.trim(), format!("pod/{first}"));

    // Rolling update to v2 while a client keeps asking: no failed request.
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(&cluster, url(0), stop.clone());
    cluster
        .kubectl(&[
            "set",
            "image",
            &format!("deployments/{APP}"),
            &format!("{APP}={}", cluster.image(BOOTCAMP_V2)),
        ])
        .ok();
    rollout(&cluster);
    wait_until("every answer v=2", Duration::from_secs(30), |last| {
        let answers: Vec<_> = (0..8).filter_map(|_| get(&cluster, &url(1))).collect();
        *last = format!("{answers:?}");
        (answers.len() == 8 && answers.iter().all(|(_, v)| v == "2")).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = client.join().expect("client thread");
    assert!(
        failures.is_empty(),
        "requests failed during the rollout: {failures:#?}"
    );
    assert!(answers.iter().any(|(_, v)| v == "1") && answers.iter().any(|(_, v)| v == "2"));

    // Roll back.
    cluster
        .kubectl(&["rollout", "undo", &format!("deployments/{APP}")])
        .ok();
    rollout(&cluster);
    wait_until("every answer v=1 again", Duration::from_secs(30), |last| {
        let answers: Vec<_> = (0..8).filter_map(|_| get(&cluster, &url(2))).collect();
        *last = format!("{answers:?}");
        (answers.len() == 8 && answers.iter().all(|(_, v)| v == "1")).then_some(())
    });

    // Service discovery by name from inside a pod.
    let cluster_ip = cluster
        .jsonpath("service", APP, "{.spec.clusterIP}")
        .expect("clusterIP");
    let (pod, _) = running_pods(&cluster).into_iter().next().expect("a pod");
    let lookup = wait_until(
        "the service name resolving in a pod",
        Duration::from_secs(30),
        |last| {
            let out = cluster.kubectl(&[
                "exec",
                &pod,
                "--",
                "nslookup",
                &format!("{APP}.default.svc.cluster.local"),
            ]);
            *last = format!("{out:?}");
            out.stdout.contains(&cluster_ip).then_some(out.stdout)
        },
    );
    assert!(lookup.contains(&cluster_ip), "{lookup}");
    // busybox-static's wget cannot resolve names (static glibc, no NSS modules), so the client reaches the
    // address the cluster DNS gave. (Its `-T` crashes too: `timeout` bounds it instead.)
    let by_ip = cluster
        .kubectl(&[
            "exec",
            &pod,
            "--",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{cluster_ip}:8080/"),
        ])
        .ok()
        .to_string();
    assert!(parse_answer(&by_ip).is_some(), "{by_ip}");

    // A LoadBalancer Service answers on its ingress IP.
    cluster
        .kubectl(&[
            "expose",
            &format!("deployment/{APP}"),
            "--type=LoadBalancer",
            "--port",
            "8080",
            "--name",
            "bootcamp-lb",
        ])
        .ok();
    let lb_ip = wait_until("an ingress IP", Duration::from_secs(30), |last| {
        let ip = cluster.jsonpath("service", "bootcamp-lb", "{.status.loadBalancer.ingress[0].ip}")?;
        *last = ip.clone();
        (!ip.is_empty()).then_some(ip)
    });
    let svc = cluster
        .kubectl(&["get", "service", "bootcamp-lb"])
        .ok()
        .to_string();
    assert!(svc.contains(&lb_ip), "EXTERNAL-IP shown: {svc}");
    wait_until("the LoadBalancer IP answering", Duration::from_secs(30), |last| {
        let out = netns::http_get(&cluster.net().uplink, &format!("http://{lb_ip}:8080/"));
        *last = format!("{out:?}");
        parse_answer(&out.stdout)
    });

    // ExternalName: a CNAME.
    cluster
        .kubectl(&[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name",
            "example.com",
        ])
        .ok();
    let cname = wait_until("the ExternalName CNAME", Duration::from_secs(30), |last| {
        let out = cluster.kubectl(&[
            "exec",
            &pod,
            "--",
            "nslookup",
            "-type=CNAME",
            "ext.default.svc.cluster.local",
        ]);
        *last = format!("{out:?}");
        out.stdout.contains("example.com").then_some(out.stdout)
    });
    assert!(cname.contains("canonical name = example.com"), "{cname}");

    // Delete the services by label: the NodePort stops answering, the app keeps running.
    cluster
        .kubectl(&["delete", "service", "-l", &format!("app={APP}")])
        .ok();
    let left = cluster
        .kubectl(&["get", "services", "-l", &format!("app={APP}"), "-o", "name"])
        .ok()
        .to_string();
    assert!(left.trim().is_empty(), "{left}");
    wait_until("the NodePort closed", Duration::from_secs(30), |_| {
        get(&cluster, &url(0)).is_none().then_some(())
    });
    let inside = cluster
        .kubectl(&[
            "exec",
            &pod,
            "--",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/",
        ])
        .ok()
        .to_string();
    assert!(parse_answer(&inside).is_some(), "{inside}");

    // Node loss: the last node is cut off; its pods come back on the others; the service keeps answering.
    cluster
        .kubectl(&[
            "expose",
            &format!("deployment/{APP}"),
            "--type=NodePort",
            "--port",
            "8080",
        ])
        .ok();
    let node_port = cluster
        .jsonpath("service", APP, "{.spec.ports[0].nodePort}")
        .expect("nodePort");
    let url0 = format!("http://{}:{node_port}/", cluster.node_ip(0));
    wait_until("the new NodePort answering", Duration::from_secs(30), |_| {
        get(&cluster, &url0)
    });
    let lost = cluster.node_name(2).to_string();
    if !running_pods(&cluster).iter().any(|(_, n)| *n == lost) {
        // Make sure the lost node has work to lose.
        cluster
            .kubectl(&["scale", &format!("deployments/{APP}"), "--replicas=6"])
            .ok();
        rollout(&cluster);
    }
    let replicas = running_pods(&cluster).len();
    cluster.net().cut_off(2);
    wait_until(
        "the lost node's pods running elsewhere",
        Duration::from_secs(120),
        |last| {
            let pods = running_pods(&cluster);
            *last = format!("{pods:?}");
            let elsewhere = pods.iter().filter(|(_, n)| *n != lost).count();
            (elsewhere >= replicas).then_some(())
        },
    );
    let nodes = cluster
        .kubectl(&["get", "node", &lost, "-o", "json"])
        .ok()
        .to_string();
    let ready = json(&nodes)["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("Ready condition");
    assert_ne!(ready["status"], "True", "the cut-off node is not Ready: {ready}");
    for _ in 0..10 {
        get(&cluster, &url0).expect("the service keeps answering");
    }
    cluster.kill_node(2);
}
