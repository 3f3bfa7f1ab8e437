//! The node agent on real containers (issue 5 §7): a one-node cluster — `rkube server` with its embedded
//! agent inside a test-made network namespace — pulling busybox-based images from a `docker-registry` on
//! that node's 127.0.0.1, driven by the real kubectl. Run as root (scripts/test).

use std::time::{Duration, Instant};

use rkube_e2e::images::{BOOTCAMP_V1, BUSYBOX};
use rkube_e2e::nodes::{NodeCluster, RegistryPlace};
use rkube_e2e::{json, wait_until};

/// Pulling and starting a pod on an idle node.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod's JSON, or `None` while kubectl cannot get it.
fn pod(cluster: &NodeCluster, name: &str) -> Option<serde_json::Value> {
    let out = cluster.kubectl(&["get", "pod", name, "-o", "json"]);
    (out.code == Some(0)).then(|| json(&out.stdout))
}

fn container_status(pod: &serde_json::Value, index: usize) -> &serde_json::Value {
    &pod["status"]["containerStatuses"][index]
}

/// Events of one pod as `reason: message` lines.
fn events(cluster: &NodeCluster, pod: &str) -> String {
    let out = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    out.stdout
}

#[test]
fn pod_serves_http_on_its_pod_ip_with_logs_and_exec_through_kubectl() {
    let cluster = NodeCluster::single();
    let image = cluster.image(BOOTCAMP_V1);
    cluster
        .kubectl(&["run", "web", &format!("--image={image}"), "--port=8080"])
        .ok();
    let ip = cluster.wait_pod_ready("web", POD_TIMEOUT);

    let answer = wait_until("the pod answering on its IP", Duration::from_secs(20), |last| {
        let out = cluster.http_get(0, &format!("http://{ip}:8080/"));
        *last = format!("{out:?}");
        (out.code == Some(0)).then_some(out.stdout)
    });
    assert_eq!(
        answer.trim(),
        "Hello Kubernetes bootcamp! | Running on: web | v=1"
    );

    let pod = pod(&cluster, "web").expect("pod");
    assert_eq!(pod["spec"]["nodeName"], cluster.node_name(0));
    assert_eq!(pod["status"]["hostIP"], cluster.node_ip(0).to_string());
    let status = container_status(&pod, 0);
    assert_eq!(status["restartCount"], 0);
    assert_eq!(status["ready"], true);
    assert!(status["state"]["running"]["startedAt"].is_string(), "{status}");
    assert!(
        !status["containerID"].as_str().unwrap_or("").is_empty(),
        "{status}"
    );
    assert!(
        status["imageID"].as_str().unwrap_or("").contains("sha256:"),
        "{status}"
    );
    let wide = cluster
        .kubectl(&["get", "pod", "web", "-o", "wide"])
        .ok()
        .to_string();
    assert!(
        wide.contains(&ip) && wide.contains(cluster.node_name(0)),
        "{wide}"
    );

    // What the container printed, through the API server's pods/log → the kubelet API.
    let logs = cluster.kubectl(&["logs", "web"]).ok().to_string();
    assert!(logs.contains("Kubernetes Bootcamp App Started At"), "{logs}");

    // exec: output, hostname = pod name, and the exit code comes back as kubectl's own.
    let hostname = cluster
        .kubectl(&["exec", "web", "--", "hostname"])
        .ok()
        .to_string();
    assert_eq!(hostname.trim(), "web");
    let exit = cluster.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(exit.code, Some(3), "kubectl exec … exit 3: {exit:?}");
    let stdin = cluster.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], "through stdin\n");
    assert_eq!(stdin.ok(), "through stdin\n");

    // logs -f follows lines written after it started.
    cluster
        .kubectl(&[
            "run",
            "ticker",
            &format!("--image={}", cluster.image(BUSYBOX)),
            "--",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        ])
        .ok();
    cluster.wait_pod_ready("ticker", POD_TIMEOUT);
    let mut follow = cluster.kubectl_stream(&["logs", "-f", "ticker"]);
    follow.wait_for_line(&["tick "], Duration::from_secs(20));
    let started = Instant::now();
    let first: u32 = follow.seen()[0]
        .trim_start_matches("tick ")
        .trim()
        .parse()
        .expect("tick N");
    follow.wait_for_line(&[&format!("tick {}", first + 3)], Duration::from_secs(20));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "lines arrive as written"
    );

    let tail = cluster.kubectl(&["logs", "ticker", "--tail=1"]).ok().to_string();
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let stamped = cluster
        .kubectl(&["logs", "ticker", "--timestamps", "--tail=1"])
        .ok()
        .to_string();
    assert!(
        stamped.starts_with("20") && stamped.contains("Z tick "),
        "{stamped}"
    );
}

#[test]
fn sidecar_reads_the_main_containers_log_through_an_empty_dir_and_reaches_it_on_localhost() {
    let cluster = NodeCluster::single();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  volumes:
  - name: shared
    emptyDir: {{}}
  containers:
  - name: main
    image: {main}
    command: ["sh", "-c", "mkdir -p /tmp/www; echo main-page > /tmp/www/index.html; (i=0; while true; do echo main line $i >> /var/log/app/main.log; i=$((i+1)); sleep 1; done) & exec httpd -f -p 8080 -h /tmp/www"]
    volumeMounts:
    - name: shared
      mountPath: /var/log/app
  - name: sidecar
    image: {side}
    command: ["sh", "-c", "while true; do tail -n 1 /logs/main.log; timeout 5 wget -q -O - http://127.0.0.1:8080/; sleep 1; done"]
    volumeMounts:
    - name: shared
      mountPath: /logs
"#,
        main = cluster.image(BOOTCAMP_V1),
        side = cluster.image(BUSYBOX),
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest).ok();
    cluster.wait_pod_ready("duo", POD_TIMEOUT);

    let pod = pod(&cluster, "duo").expect("pod");
    assert_eq!(
        pod["status"]["containerStatuses"].as_array().map(Vec::len),
        Some(2)
    );
    wait_until(
        "the sidecar printing the main container's log line and page",
        Duration::from_secs(30),
        |last| {
            let out = cluster.kubectl(&["logs", "duo", "-c", "sidecar"]);
            *last = format!("{out:?}");
            (out.stdout.contains("main line") && out.stdout.contains("main-page")).then_some(())
        },
    );
    // The same file seen from both containers.
    let seen_by_sidecar = cluster
        .kubectl(&[
            "exec",
            "duo",
            "-c",
            "sidecar",
            "--",
            "head",
            "-n",
            "1",
            "/logs/main.log",
        ])
        .ok()
        .to_string();
    let seen_by_main = cluster
        .kubectl(&[
            "exec",
            "duo",
            "-c",
            "main",
            "--",
            "head",
            "-n",
            "1",
            "/var/log/app/main.log",
        ])
        .ok()
        .to_string();
    assert_eq!(seen_by_sidecar.trim(), "main line 0");
    assert_eq!(seen_by_main, seen_by_sidecar);
}

#[test]
fn probes_restart_unhealthy_containers_and_gate_readiness() {
    let cluster = NodeCluster::single();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: live
spec:
  containers:
  - name: c
    image: {busybox}
    command: ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: ready
spec:
  containers:
  - name: c
    image: {bootcamp}
    readinessProbe:
      httpGet:
        path: /index.html
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
    startupProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#,
        busybox = cluster.image(BUSYBOX),
        bootcamp = cluster.image(BOOTCAMP_V1),
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest).ok();
    cluster.wait_pod_ready("live", POD_TIMEOUT);
    cluster.wait_pod_ready("ready", POD_TIMEOUT);
    let before = pod(&cluster, "live").expect("pod");
    assert_eq!(container_status(&before, 0)["restartCount"], 0);

    // Liveness: the probed file goes away → the container is killed and started again (which recreates it).
    cluster
        .kubectl(&["exec", "live", "--", "rm", "/tmp/healthy"])
        .ok();
    wait_until(
        "the liveness probe restarting the container",
        Duration::from_secs(60),
        |last| {
            let p = pod(&cluster, "live")?;
            *last = format!("{}", container_status(&p, 0));
            (container_status(&p, 0)["restartCount"].as_u64()? >= 1).then_some(())
        },
    );
    cluster.wait_pod_ready("live", POD_TIMEOUT);
    let ev = events(&cluster, "live");
    assert!(ev.contains("Unhealthy"), "an Unhealthy event: {ev}");
    assert!(ev.contains("Killing"), "a Killing event: {ev}");

    // Readiness: the page disappears → not Ready (but not restarted); it comes back → Ready again.
    cluster
        .kubectl(&["exec", "ready", "--", "rm", "/tmp/www/index.html"])
        .ok();
    wait_until("the readiness probe failing", Duration::from_secs(30), |last| {
        let p = pod(&cluster, "ready")?;
        *last = format!("{}", p["status"]);
        (container_status(&p, 0)["ready"] == false).then_some(())
    });
    cluster
        .kubectl(&[
            "exec",
            "ready",
            "--",
            "sh",
            "-c",
            "echo back > /tmp/www/index.html",
        ])
        .ok();
    cluster.wait_pod_ready("ready", POD_TIMEOUT);
    let p = pod(&cluster, "ready").expect("pod");
    assert_eq!(
        container_status(&p, 0)["restartCount"],
        0,
        "readiness never restarts"
    );
}

#[test]
fn memory_limit_kills_with_oom_killed() {
    let cluster = NodeCluster::single();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {busybox}
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]
    resources:
      limits:
        memory: 32Mi
"#,
        busybox = cluster.image(BUSYBOX),
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest).ok();
    let terminated = wait_until("the container OOM-killed", POD_TIMEOUT, |last| {
        let p = pod(&cluster, "hog")?;
        *last = format!("{}", p["status"]);
        let t = container_status(&p, 0)["state"]["terminated"].clone();
        (!t.is_null()).then_some((t, p["status"]["phase"].clone()))
    });
    assert_eq!(terminated.0["reason"], "OOMKilled", "{}", terminated.0);
    assert_eq!(terminated.0["exitCode"], 137, "{}", terminated.0);
    assert_eq!(terminated.1, "Failed");
}

#[test]
fn crashing_container_backs_off_with_growing_delays() {
    let cluster = NodeCluster::single();
    cluster
        .kubectl(&[
            "run",
            "crash",
            &format!("--image={}", cluster.image(BUSYBOX)),
            "--",
            "sh",
            "-c",
            "echo crashing; exit 1",
        ])
        .ok();
    // Every change of restartCount, timestamped as the watch delivers it (a watch the server ends is
    // started again).
    let watch_args = [
        "get",
        "pod",
        "crash",
        "--watch",
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}{\"\\n\"}",
    ];
    let mut watch = cluster.kubectl_stream(&watch_args);
    let mut at: Vec<(u64, Instant)> = Vec::new();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    while at.last().is_none_or(|(n, _)| *n < 3) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "restartCount did not reach 3; saw {lines:?}\npod: {}\nevents:\n{}\nlog:\n{}",
            pod(&cluster, "crash")
                .map(|p| p["status"].to_string())
                .unwrap_or_default(),
            events(&cluster, "crash"),
            cluster.log_tail(0)
        );
        let Some(line) = watch.next_line(left) else {
            watch = cluster.kubectl_stream(&watch_args);
            continue;
        };
        lines.push(line.clone());
        let Ok(n) = line.trim().parse::<u64>() else {
            continue;
        };
        if at.last().is_none_or(|(last, _)| n > *last) {
            at.push((n, Instant::now()));
        }
    }
    let when = |n: u64| at.iter().find(|(c, _)| *c == n).map(|(_, t)| *t);
    let (Some(r1), Some(r2), Some(r3)) = (when(1), when(2), when(3)) else {
        panic!("every restart is seen one by one: {at:?}");
    };
    let first_gap = r2 - r1;
    let second_gap = r3 - r2;
    // Kubernetes: 10 s after the second crash, doubling (10 s, 20 s, … 5 min).
    assert!(
        first_gap >= Duration::from_secs(8),
        "back-off before the 2nd restart: {first_gap:?}"
    );
    assert!(
        second_gap >= first_gap + Duration::from_secs(5),
        "the back-off grows: {first_gap:?} then {second_gap:?}"
    );
    wait_until(
        "CrashLoopBackOff shown while waiting",
        Duration::from_secs(30),
        |last| {
            let p = pod(&cluster, "crash")?;
            *last = format!("{}", p["status"]);
            (container_status(&p, 0)["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(())
        },
    );
    let ev = events(&cluster, "crash");
    assert!(ev.contains("BackOff"), "a BackOff event: {ev}");
    let p = pod(&cluster, "crash").expect("pod");
    assert_eq!(container_status(&p, 0)["lastState"]["terminated"]["exitCode"], 1);
    let previous = cluster.kubectl(&["logs", "crash", "--previous"]).ok().to_string();
    assert_eq!(previous.trim(), "crashing");
}

#[test]
fn missing_image_reports_err_image_pull_then_image_pull_back_off() {
    let cluster = NodeCluster::single();
    let missing = cluster.image("rkube-test/no-such-image:1");
    cluster
        .kubectl(&["run", "nope", &format!("--image={missing}")])
        .ok();
    let mut reasons = std::collections::BTreeSet::new();
    wait_until("ImagePullBackOff after ErrImagePull", POD_TIMEOUT, |last| {
        let p = pod(&cluster, "nope")?;
        *last = format!("{}", p["status"]);
        if let Some(r) = container_status(&p, 0)["state"]["waiting"]["reason"].as_str() {
            reasons.insert(r.to_string());
        }
        reasons.contains("ImagePullBackOff").then_some(())
    });
    let p = pod(&cluster, "nope").expect("pod");
    assert_eq!(p["status"]["phase"], "Pending");
    let ev = events(&cluster, "nope");
    assert!(ev.contains("Pulling"), "{ev}");
    assert!(ev.contains("Failed: ") && ev.contains("ErrImagePull"), "{ev}");
    assert!(ev.contains("BackOff"), "{ev}");
}

#[test]
fn restarting_the_agent_keeps_containers_running() {
    let mut cluster = NodeCluster::single();
    cluster
        .kubectl(&[
            "run",
            "steady",
            &format!("--image={}", cluster.image(BUSYBOX)),
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 3600",
        ])
        .ok();
    cluster.wait_pod_ready("steady", POD_TIMEOUT);
    let before = pod(&cluster, "steady").expect("pod");
    let before = container_status(&before, 0).clone();

    // The server with its embedded agent goes down and comes back on the same data.
    assert!(
        cluster.stop_node(0),
        "server exits cleanly on SIGTERM:\n{}",
        cluster.log_tail(0)
    );
    cluster.restart_node(0);
    cluster.wait_nodes_ready();
    cluster.wait_pod_ready("steady", POD_TIMEOUT);
    let after = pod(&cluster, "steady").expect("pod");
    let after = container_status(&after, 0);
    assert_eq!(after["restartCount"], 0, "{after}");
    assert_eq!(
        after["containerID"], before["containerID"],
        "the same container, adopted"
    );
    assert_eq!(
        after["state"]["running"]["startedAt"],
        before["state"]["running"]["startedAt"]
    );
    let logs = cluster.kubectl(&["logs", "steady"]).ok().to_string();
    assert_eq!(logs.trim(), "started", "printed once: never started again");
    cluster.kubectl(&["exec", "steady", "--", "true"]).ok();
}

#[test]
fn pod_deleted_while_its_agent_is_down_is_cleaned_up_when_it_returns() {
    let mut cluster = NodeCluster::start(2, RegistryPlace::Underlay, &[]);
    let node = cluster.node_name(1).to_string();
    cluster
        .kubectl(&[
            "run",
            "orphan",
            &format!("--image={}", cluster.image(BUSYBOX)),
            &format!("--overrides={{\"spec\":{{\"nodeName\":\"{node}\"}}}}"),
            "--",
            "sleep",
            "3600",
        ])
        .ok();
    cluster.wait_pod_ready("orphan", POD_TIMEOUT);
    let uid = cluster.jsonpath("pod", "orphan", "{.metadata.uid}").expect("uid");
    cluster.kill_node(1);
    cluster
        .kubectl(&["delete", "pod", "orphan", "--grace-period=0", "--force"])
        .ok();
    cluster.restart_node(1);
    let runc_root = cluster.data_dir(1).join("agent/runc");
    wait_until("the orphaned containers removed", POD_TIMEOUT, |last| {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
            .ok()?;
        let list = String::from_utf8_lossy(&out.stdout).into_owned();
        *last = list.clone();
        let cgroups_gone = pod_cgroups(&node, &uid).is_empty();
        (list.trim().is_empty() && cgroups_gone).then_some(())
    });
}

/// The pod's cgroup directories in every hierarchy (`rkube-<node>/pod<uid>`).
fn pod_cgroups(node: &str, uid: &str) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .flat_map(|h| {
            let parent = h.path().join(format!("rkube-{node}"));
            std::fs::read_dir(parent)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(uid)))
        .collect()
}

#[test]
fn deleted_pods_release_their_resources_and_teardown_leaves_nothing_on_the_host() {
    let mut cluster = NodeCluster::single();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: scratch
spec:
  volumes:
  - name: mem
    emptyDir:
      medium: Memory
  containers:
  - name: c
    image: {busybox}
    command: ["sh", "-c", "echo data > /scratch/file; exec sleep 3600"]
    volumeMounts:
    - name: mem
      mountPath: /scratch
"#,
        busybox = cluster.image(BUSYBOX),
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest).ok();
    cluster.wait_pod_ready("scratch", POD_TIMEOUT);
    let uid = cluster
        .jsonpath("pod", "scratch", "{.metadata.uid}")
        .expect("uid");
    let node = cluster.node_name(0).to_string();
    assert!(
        !pod_cgroups(&node, &uid).is_empty(),
        "the pod has cgroups while it runs"
    );
    cluster.kubectl(&["delete", "pod", "scratch", "--wait=true"]).ok();
    wait_until(
        "the pod's cgroups and mounts released",
        Duration::from_secs(30),
        |last| {
            let cgroups = pod_cgroups(&node, &uid);
            let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&uid))
                .map(str::to_string)
                .collect();
            *last = format!("cgroups {cgroups:?}\nmounts {mounts:?}");
            (cgroups.is_empty() && mounts.is_empty()).then_some(())
        },
    );

    // A pod still running when the cluster goes away: teardown removes it all.
    cluster
        .kubectl(&[
            "run",
            "left",
            &format!("--image={}", cluster.image(BUSYBOX)),
            "--",
            "sleep",
            "3600",
        ])
        .ok();
    cluster.wait_pod_ready("left", POD_TIMEOUT);
    let left_uid = cluster.jsonpath("pod", "left", "{.metadata.uid}").expect("uid");
    wait_until("the harness knowing the pod", Duration::from_secs(10), |_| {
        cluster.pod_uids().contains(&left_uid).then_some(())
    });
    let log_dirs = || -> Vec<String> {
        std::fs::read_dir("/var/log/pods")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(&left_uid))
            .collect()
    };
    assert_eq!(log_dirs().len(), 1, "the running pod has its log dir");
    let left = cluster.teardown();
    assert!(left.is_empty(), "left on the host: {left:#?}");
    assert!(log_dirs().is_empty(), "{:?}", log_dirs());
    assert!(pod_cgroups(&node, &left_uid).is_empty());
}

#[test]
fn imported_image_runs_without_a_registry() {
    let cluster = NodeCluster::single();
    let archive = cluster.write_file("imported.tar", "");
    rkube_e2e::images::write_docker_save(&archive, "rkube-test/imported:1");
    let data_dir = cluster.data_dir(0);
    let rkube = |args: &[&str]| {
        let out = std::process::Command::new(rkube_e2e::rkube_binary())
            .args(["image"])
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("running rkube image");
        assert!(
            out.status.success(),
            "rkube image {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rkube(&["import", archive.to_str().expect("utf-8 path")]);
    let listed = rkube(&["ls"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("docker.io/rkube-test/imported "))
        .unwrap_or_else(|| panic!("imported image listed:\n{listed}"));
    assert!(row.split_whitespace().nth(1) == Some("1"), "{row}");
    assert!(listed.starts_with("IMAGE"), "{listed}");

    // Never pulled: the node must use what was imported.
    cluster
        .kubectl(&[
            "run",
            "offline",
            "--image=rkube-test/imported:1",
            "--image-pull-policy=Never",
            "--",
            "sh",
            "-c",
            "echo offline; exec sleep 3600",
        ])
        .ok();
    cluster.wait_pod_ready("offline", POD_TIMEOUT);
    let logs = cluster.kubectl(&["logs", "offline"]).ok().to_string();
    assert_eq!(logs.trim(), "offline");
}
