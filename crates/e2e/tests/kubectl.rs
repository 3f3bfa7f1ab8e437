//! The real kubectl against a real `rkube server`, on the embedded store and on etcd: every test asserts
//! what a user sees on their terminal.

use std::time::Duration;

use rkube_e2e::{Cluster, Datastore, json, row, table};

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
";

fn create_web(c: &Cluster) {
    let out = c.kubectl(&["create", "deployment", "web", "--image=nginx:1.25", "--port=8080"]);
    assert_eq!(out.ok().trim(), "deployment.apps/web created");
}

fn get_in_every_format(c: &Cluster) {
    create_web(c);
    // The deployment controller makes one up-to-date (but, with no node to run it, unavailable) replica.
    c.kubectl(&[
        "wait",
        "--for=jsonpath={.status.updatedReplicas}=1",
        "deployment/web",
        "--timeout=60s",
    ])
    .ok();
    let plain = c.kubectl(&["get", "deployments"]);
    assert_eq!(
        table(plain.ok())[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    let web = row(plain.ok(), "web");
    assert_eq!(&web[..4], ["web", "0/1", "1", "0"]);

    let wide = c.kubectl(&["get", "deploy", "-o", "wide"]);
    assert_eq!(
        table(wide.ok())[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(&row(wide.ok(), "web")[5..], ["nginx", "nginx:1.25", "app=web"]);

    let yaml = c.kubectl(&["get", "deployment", "web", "-o", "yaml"]);
    let yaml = yaml.ok();
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("  name: web\n"),
        "{yaml}"
    );
    assert!(yaml.contains("image: nginx:1.25"), "{yaml}");

    let obj = json(c.kubectl(&["get", "deployment", "web", "-o", "json"]).ok());
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(obj["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert!(obj["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(obj["metadata"]["creationTimestamp"].is_string());

    assert_eq!(
        c.kubectl(&["get", "deploy", "-o", "name"]).ok().trim(),
        "deployment.apps/web"
    );
    let jsonpath = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(jsonpath.ok(), "nginx:1.25");
}

fn get_with_selectors_and_all_namespaces(c: &Cluster) {
    c.kubectl(&["create", "namespace", "team-a"]).ok();
    for (ns, name, tier) in [
        ("default", "front-cfg", "front"),
        ("team-a", "front-a", "front"),
        ("team-a", "back-a", "back"),
    ] {
        c.kubectl(&["create", "configmap", name, "-n", ns, "--from-literal=k=v"])
            .ok();
        c.kubectl(&["label", "configmap", name, "-n", ns, &format!("tier={tier}")])
            .ok();
    }
    let all = c.kubectl(&["get", "configmaps", "-A", "-l", "tier=front"]);
    let rows = table(all.ok());
    assert_eq!(rows[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    let mut names: Vec<(String, String)> = rows[1..].iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("default".to_string(), "front-cfg".to_string()),
            ("team-a".to_string(), "front-a".to_string())
        ]
    );
    assert_eq!(row(all.ok(), "front-a")[2], "1");

    let not_front = c.kubectl(&[
        "get",
        "cm",
        "-n",
        "team-a",
        "-l",
        "tier!=front,tier",
        "-o",
        "name",
    ]);
    assert_eq!(not_front.ok().trim(), "configmap/back-a");
    let set = c.kubectl(&["get", "cm", "-A", "-l", "tier in (back)", "-o", "name"]);
    assert_eq!(set.ok().trim(), "configmap/back-a");
    let labels = c.kubectl(&["get", "cm", "back-a", "-n", "team-a", "--show-labels"]);
    assert!(
        row(labels.ok(), "back-a").last().unwrap().contains("tier=back"),
        "{}",
        labels.stdout
    );

    let namespaces = c.kubectl(&["get", "namespaces"]);
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "team-a",
    ] {
        assert_eq!(row(namespaces.ok(), ns)[1], "Active");
    }
    let none = c.kubectl(&["get", "pods"]);
    assert_eq!(none.ok(), "");
    assert!(
        none.stderr.contains("No resources found in default namespace."),
        "{}",
        none.stderr
    );
}

fn get_watch_shows_changes(c: &Cluster) {
    let mut watch = c.kubectl_stream(&["get", "pods", "-w"]);
    c.kubectl(&[
        "run",
        "w1",
        "--image=busybox:1.36",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ])
    .ok();
    let line = watch.wait_for_line(&["w1"], Duration::from_secs(30));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..4], ["w1", "0/1", "Pending", "0"], "{line}");
    let mut one = c.kubectl_stream(&["get", "pod", "w1", "-w", "-o", "name"]);
    one.wait_for_line(&["pod/w1"], Duration::from_secs(30));
    c.kubectl(&["label", "pod", "w1", "seen=yes"]).ok();
    // The label change arrives as a second row for w1.
    watch.wait_for_line(&["w1", "Pending"], Duration::from_secs(30));
    assert!(
        watch.seen().iter().filter(|l| l.starts_with("w1 ")).count() >= 2,
        "{:?}",
        watch.seen()
    );
}

fn describe_reads_like_kubectl(c: &Cluster) {
    create_web(c);
    c.kubectl(&["expose", "deployment", "web", "--port=8080"]).ok();
    let out = c.kubectl(&["describe", "deployment", "web"]);
    let text = out.ok();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert!(line("Name:").ends_with(" web"), "{text}");
    assert!(line("Namespace:").ends_with(" default"));
    assert!(line("Selector:").ends_with(" app=web"));
    assert!(line("Replicas:").contains("1 desired"), "{text}");
    assert!(text.contains("Image:") && text.contains("nginx:1.25"), "{text}");

    let svc = c.kubectl(&["describe", "service", "web"]);
    let svc = svc.ok();
    assert!(
        svc.lines()
            .any(|l| l.starts_with("Selector:") && l.ends_with("app=web")),
        "{svc}"
    );
    assert!(
        svc.lines()
            .any(|l| l.starts_with("Port:") && l.contains("8080/TCP")),
        "{svc}"
    );

    c.kubectl(&["run", "solo", "--image=busybox:1.36"]).ok();
    let pod = c.kubectl(&["describe", "pod", "solo"]);
    let pod = pod.ok();
    assert!(
        pod.lines()
            .any(|l| l.starts_with("Status:") && l.ends_with("Pending")),
        "{pod}"
    );
    assert!(pod.contains("busybox:1.36"), "{pod}");
}

fn apply_client_side(c: &Cluster) {
    let file = c.write_file("web.yaml", DEPLOYMENT);
    let file = file.to_str().unwrap();
    assert_eq!(
        c.kubectl(&["apply", "-f", file]).ok().trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        c.kubectl(&["apply", "-f", file]).ok().trim(),
        "deployment.apps/web unchanged"
    );
    let obj = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    let last_applied =
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str();
    assert!(
        last_applied.is_some_and(|a| a.contains("\"replicas\":2")),
        "{obj}"
    );

    let changed = c.write_file(
        "web2.yaml",
        &DEPLOYMENT
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    assert_eq!(
        c.kubectl(&["apply", "-f", changed.to_str().unwrap()]).ok().trim(),
        "deployment.apps/web configured"
    );
    let obj = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        obj["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
}

fn apply_server_side(c: &Cluster) {
    let file = c.write_file("web.yaml", DEPLOYMENT);
    let file = file.to_str().unwrap();
    assert_eq!(
        c.kubectl(&["apply", "--server-side", "-f", file]).ok().trim(),
        "deployment.apps/web serverside-applied"
    );
    let obj = json(
        c.kubectl(&["get", "deploy", "web", "-o", "json", "--show-managed-fields"])
            .ok(),
    );
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // Another manager takes spec.replicas; applying a different value without --force-conflicts fails.
    c.kubectl(&["scale", "deployment", "web", "--replicas=5"]).ok();
    let changed = c.write_file("web3.yaml", &DEPLOYMENT.replace("replicas: 2", "replicas: 3"));
    let changed = changed.to_str().unwrap();
    let conflict = c.kubectl(&["apply", "--server-side", "-f", changed]);
    assert!(conflict.err().contains("conflict"), "{}", conflict.stderr);
    c.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", changed])
        .ok();
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .ok(),
        "3"
    );
}

fn create_every_generator(c: &Cluster) {
    assert_eq!(
        c.kubectl(&["create", "namespace", "team-b"]).ok().trim(),
        "namespace/team-b created"
    );
    assert_eq!(
        c.kubectl(&[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team-b",
            "--from-literal=a=1",
            "--from-literal=b=2"
        ])
        .ok()
        .trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        c.kubectl(&[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "team-b",
            "--from-literal=password=s3cret"
        ])
        .ok()
        .trim(),
        "secret/creds created"
    );
    assert_eq!(
        c.kubectl(&[
            "create",
            "service",
            "nodeport",
            "np",
            "-n",
            "team-b",
            "--tcp=8080:80"
        ])
        .ok()
        .trim(),
        "service/np created"
    );
    assert_eq!(
        c.kubectl(&[
            "create",
            "deployment",
            "api",
            "-n",
            "team-b",
            "--image=nginx:1.25",
            "--replicas=3"
        ])
        .ok()
        .trim(),
        "deployment.apps/api created"
    );
    assert_eq!(
        row(c.kubectl(&["get", "cm", "cfg", "-n", "team-b"]).ok(), "cfg")[1],
        "2"
    );
    let secret = row(
        c.kubectl(&["get", "secret", "creds", "-n", "team-b"]).ok(),
        "creds",
    );
    assert_eq!(&secret[1..3], ["Opaque", "1"]);
    let password = c.kubectl(&[
        "get",
        "secret",
        "creds",
        "-n",
        "team-b",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(password.ok(), "czNjcmV0", "base64 of s3cret");
    let np = row(c.kubectl(&["get", "svc", "np", "-n", "team-b"]).ok(), "np");
    assert_eq!(np[1], "NodePort");
    assert!(
        np[2].starts_with("10.43."),
        "ClusterIP from the service CIDR: {np:?}"
    );
    let port = &np[4];
    let node_port: u16 = port
        .strip_prefix("8080:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("PORT(S) {port}"));
    assert!((30000..=32767).contains(&node_port));
    assert_eq!(
        &row(c.kubectl(&["get", "deploy", "api", "-n", "team-b"]).ok(), "api")[1],
        "0/3"
    );
}

fn run_and_expose(c: &Cluster) {
    assert_eq!(
        c.kubectl(&["run", "nginx", "--image=nginx:1.25", "--port=80"])
            .ok()
            .trim(),
        "pod/nginx created"
    );
    let pod = json(c.kubectl(&["get", "pod", "nginx", "-o", "json"]).ok());
    assert_eq!(pod["metadata"]["labels"]["run"], "nginx");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    let pods = c.kubectl(&["get", "pods"]);
    assert_eq!(&row(pods.ok(), "nginx")[..4], ["nginx", "0/1", "Pending", "0"]);

    assert_eq!(
        c.kubectl(&["expose", "pod", "nginx", "--port=80"]).ok().trim(),
        "service/nginx exposed"
    );
    let svc = row(c.kubectl(&["get", "svc", "nginx", "-o", "wide"]).ok(), "nginx");
    assert_eq!(svc[1], "ClusterIP");
    assert_eq!(svc[3], "<none>");
    assert_eq!(svc[4], "80/TCP");
    assert_eq!(svc[6], "run=nginx");

    create_web(c);
    assert_eq!(
        c.kubectl(&["expose", "deployment", "web", "--type=NodePort", "--port=8080"])
            .ok()
            .trim(),
        "service/web exposed"
    );
    let web = json(c.kubectl(&["get", "svc", "web", "-o", "json"]).ok());
    assert_eq!(web["spec"]["selector"]["app"], "web");
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        web["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p))
    );
    let kubernetes = row(c.kubectl(&["get", "svc", "kubernetes"]).ok(), "kubernetes");
    assert_eq!(&kubernetes[1..5], ["ClusterIP", "10.43.0.1", "<none>", "443/TCP"]);
}

fn label_scale_set_image(c: &Cluster) {
    create_web(c);
    assert_eq!(
        c.kubectl(&["label", "deployment", "web", "tier=front"])
            .ok()
            .trim(),
        "deployment.apps/web labeled"
    );
    assert_eq!(
        c.kubectl(&["get", "deploy", "-l", "tier=front", "-o", "name"])
            .ok()
            .trim(),
        "deployment.apps/web"
    );
    let again = c.kubectl(&["label", "deployment", "web", "tier=back"]);
    assert!(
        again.err().contains("already has a value (front)"),
        "{}",
        again.stderr
    );
    c.kubectl(&["label", "deployment", "web", "tier=back", "--overwrite"])
        .ok();
    assert_eq!(
        c.kubectl(&["label", "deployment", "web", "tier-"]).ok().trim(),
        "deployment.apps/web unlabeled"
    );
    assert_eq!(c.kubectl(&["get", "deploy", "-l", "tier", "-o", "name"]).ok(), "");

    assert_eq!(
        c.kubectl(&["scale", "deployment", "web", "--replicas=4"])
            .ok()
            .trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .ok(),
        "4"
    );
    c.kubectl(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=4",
        "--replicas=2",
    ])
    .ok();
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .ok(),
        "2"
    );
    let wrong = c.kubectl(&[
        "scale",
        "deployment",
        "web",
        "--current-replicas=7",
        "--replicas=1",
    ]);
    wrong.err();

    assert_eq!(
        c.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.26"])
            .ok()
            .trim(),
        "deployment.apps/web image updated"
    );
    let obj = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    let wide = row(c.kubectl(&["get", "deploy", "web", "-o", "wide"]).ok(), "web");
    assert_eq!(wide[6], "nginx:1.26");
}

fn patch_three_ways(c: &Cluster) {
    create_web(c);
    let merge = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    assert_eq!(merge.ok().trim(), "deployment.apps/web patched");
    let json_patch = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/team","value":"blue"},{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    json_patch.ok();
    let strategic = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#,
    ]);
    strategic.ok();
    let obj = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(obj["spec"]["replicas"], 5);
    assert_eq!(obj["metadata"]["labels"]["team"], "blue");
    let names: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["nginx", "sidecar"],
        "strategic merge adds to the containers list by name"
    );

    let no_change = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ]);
    assert_eq!(no_change.ok().trim(), "deployment.apps/web patched (no change)");
    let bad = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nope"}]"#,
    ]);
    bad.err();
}

fn replace_from_file(c: &Cluster) {
    c.kubectl(&["create", "configmap", "cfg", "--from-literal=a=1"])
        .ok();
    let yaml = c.kubectl(&["get", "configmap", "cfg", "-o", "yaml"]);
    let edited = yaml.ok().replace("a: \"1\"", "a: \"2\"\n  b: \"3\"");
    assert_ne!(edited, yaml.stdout, "the YAML holds a: \"1\": {}", yaml.stdout);
    let file = c.write_file("cfg.yaml", &edited);
    assert_eq!(
        c.kubectl(&["replace", "-f", file.to_str().unwrap()]).ok().trim(),
        "configmap/cfg replaced"
    );
    let data = json(c.kubectl(&["get", "cm", "cfg", "-o", "json"]).ok())["data"].clone();
    assert_eq!(data, serde_json::json!({"a": "2", "b": "3"}));
    // The same file again carries a stale resourceVersion: a conflict.
    let stale = c.kubectl(&["replace", "-f", file.to_str().unwrap()]);
    assert!(
        stale.err().contains("the object has been modified"),
        "{}",
        stale.stderr
    );
}

fn delete_by_label(c: &Cluster) {
    for name in ["a", "b", "c"] {
        c.kubectl(&["create", "configmap", name, "--from-literal=k=v"])
            .ok();
        c.kubectl(&["label", "configmap", name, "app=x"]).ok();
    }
    c.kubectl(&["create", "configmap", "keep", "--from-literal=k=v"])
        .ok();
    let out = c.kubectl(&["delete", "configmap", "-l", "app=x"]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "configmap \"a\" deleted",
            "configmap \"b\" deleted",
            "configmap \"c\" deleted"
        ]
    );
    let left = c.kubectl(&["get", "configmaps", "-o", "name"]);
    let left: Vec<&str> = left
        .ok()
        .lines()
        .filter(|l| !l.contains("kube-root-ca"))
        .collect();
    assert_eq!(left, ["configmap/keep"]);
    assert_eq!(
        c.kubectl(&["delete", "configmap", "keep"]).ok().trim(),
        "configmap \"keep\" deleted"
    );
    let gone = c.kubectl(&["get", "configmap", "keep"]);
    assert_eq!(
        gone.err().trim(),
        "Error from server (NotFound): configmaps \"keep\" not found"
    );
}

fn explain_and_api_resources(c: &Cluster) {
    let explain = c.kubectl(&["explain", "deployment.spec.replicas"]);
    let text = explain.ok();
    assert!(text.contains("KIND:") && text.contains("Deployment"), "{text}");
    assert!(text.contains("replicas") && text.contains("<integer>"), "{text}");

    let resources = c.kubectl(&["api-resources"]);
    let text = resources.ok();
    assert_eq!(
        table(text)[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert_eq!(
        row(text, "deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row(text, "namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );
    assert_eq!(
        row(text, "services"),
        ["services", "svc", "v1", "true", "Service"]
    );
}

fn get_all(c: &Cluster) {
    create_web(c);
    c.kubectl(&["expose", "deployment", "web", "--port=8080"]).ok();
    let out = c.kubectl(&["get", "all"]);
    let text = out.ok();
    assert!(
        text.lines().any(|l| l.starts_with("service/kubernetes ")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("service/web ")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("deployment.apps/web ")),
        "{text}"
    );
}

fn bad_input_is_reported(c: &Cluster) {
    let malformed = c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [name: x\n",
    );
    assert!(malformed.err().contains("error"), "{}", malformed.stderr);

    let raw = c.write_file(
        "broken.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": ",
    );
    let server_side = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        raw.to_str().unwrap(),
    ]);
    assert!(
        server_side.err().contains("BadRequest") || server_side.stderr.contains("400"),
        "{}",
        server_side.stderr
    );

    let unknown = c.write_file("typo.yaml", &DEPLOYMENT.replace("replicas: 2", "replicass: 2"));
    let out = c.kubectl(&["apply", "-f", unknown.to_str().unwrap()]);
    assert!(
        out.err().contains("unknown field \"spec.replicass\""),
        "{}",
        out.stderr
    );
    let out = c.kubectl(&["create", "-f", unknown.to_str().unwrap()]);
    assert!(
        out.err().contains("unknown field \"spec.replicass\""),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.kubectl(&["get", "deploy", "-o", "name"]).ok(),
        "",
        "nothing was created"
    );

    let missing = c.kubectl(&["get", "pod", "nope"]);
    assert_eq!(
        missing.err().trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );

    let bad_name = c.write_file(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let invalid = c.kubectl(&["apply", "-f", bad_name.to_str().unwrap()]);
    let stderr = invalid.err();
    assert!(stderr.contains("The Pod \"Bad_Name\" is invalid"), "{stderr}");
    assert!(
        stderr.contains(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"
        ),
        "{stderr}"
    );

    let no_containers = c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: empty\nspec:\n  containers: []\n",
    );
    assert!(
        no_containers.err().contains("spec.containers: Required value"),
        "{}",
        no_containers.stderr
    );

    c.kubectl(&["create", "namespace", "dup"]).ok();
    let dup = c.kubectl(&["create", "namespace", "dup"]);
    assert_eq!(
        dup.err().trim(),
        "Error from server (AlreadyExists): namespaces \"dup\" already exists"
    );
}

fn objects_survive_a_restart(c: &mut Cluster) {
    create_web(c);
    c.kubectl(&["create", "namespace", "keep-me"]).ok();
    c.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "keep-me",
        "--from-literal=a=1",
    ])
    .ok();
    c.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:80"])
        .ok();
    let before = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    let svc_before = json(c.kubectl(&["get", "svc", "np", "-o", "json"]).ok());

    c.restart();

    let after = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(after["spec"], before["spec"]);
    let svc_after = json(c.kubectl(&["get", "svc", "np", "-o", "json"]).ok());
    assert_eq!(svc_after["spec"]["clusterIP"], svc_before["spec"]["clusterIP"]);
    assert_eq!(
        svc_after["spec"]["ports"][0]["nodePort"],
        svc_before["spec"]["ports"][0]["nodePort"]
    );
    assert_eq!(
        row(c.kubectl(&["get", "cm", "cfg", "-n", "keep-me"]).ok(), "cfg")[1],
        "1"
    );

    // Writes after the restart get newer resourceVersions, and allocations do not reuse taken values.
    c.kubectl(&["scale", "deploy", "web", "--replicas=2"]).ok();
    let scaled = json(c.kubectl(&["get", "deploy", "web", "-o", "json"]).ok());
    let rv = |v: &serde_json::Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&scaled) > rv(&before));
    c.kubectl(&["create", "service", "nodeport", "np2", "--tcp=80:80"])
        .ok();
    let np2 = json(c.kubectl(&["get", "svc", "np2", "-o", "json"]).ok());
    assert_ne!(np2["spec"]["clusterIP"], svc_before["spec"]["clusterIP"]);
    assert_ne!(
        np2["spec"]["ports"][0]["nodePort"],
        svc_before["spec"]["ports"][0]["nodePort"]
    );
}

fn validation_speaks_kubernetes(c: &Cluster) {
    let mismatch = DEPLOYMENT.replace(
        "      labels:\n        app: web\n    spec:",
        "      labels:\n        app: api\n    spec:",
    );
    assert_ne!(mismatch, DEPLOYMENT);
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &mismatch);
    assert!(
        out.err().contains(
            "The Deployment \"web\" is invalid: spec.template.metadata.labels: Invalid value: \
             map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
        ),
        "{}",
        out.stderr
    );

    c.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT).ok();
    let moved = DEPLOYMENT.replace("app: web", "app: web2");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &moved);
    assert!(
        out.err().contains(
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web2\"}"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("field is immutable"), "{}", out.stderr);

    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 80\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], service);
    assert!(
        out.err().contains("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{}",
        out.stderr
    );

    let neg = c.kubectl(&["scale", "deployment", "web", "--replicas=-1"]);
    neg.err();
    let bad_port = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - containerPort: 70000\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], bad_port);
    let stderr = out.err();
    assert!(stderr.contains("spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"), "{stderr}");
    assert!(stderr.contains("spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""), "{stderr}");
}

fn acknowledged_writes_survive_kill_9(c: &mut Cluster) {
    for i in 0..5 {
        c.kubectl(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            &format!("--from-literal=i={i}"),
        ])
        .ok();
    }
    c.kubectl(&["label", "configmap", "cm-4", "last=yes"]).ok();
    c.crash_and_restart();
    let names = c.kubectl(&["get", "configmaps", "-o", "name"]);
    let names: Vec<&str> = names
        .ok()
        .lines()
        .filter(|l| l.starts_with("configmap/cm-"))
        .collect();
    assert_eq!(
        names,
        [
            "configmap/cm-0",
            "configmap/cm-1",
            "configmap/cm-2",
            "configmap/cm-3",
            "configmap/cm-4"
        ]
    );
    assert_eq!(
        c.kubectl(&["get", "cm", "cm-4", "-o", "jsonpath={.metadata.labels.last}"])
            .ok(),
        "yes"
    );
}

/// Each test gets its own server (and etcd) so tests can run in parallel.
macro_rules! on_both_datastores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $( #[test] fn $name() { let mut c = Cluster::start(Datastore::Embedded); super::$name(&mut c); } )*
        }
        mod etcd {
            use super::*;
            $( #[test] fn $name() { let mut c = Cluster::start(Datastore::Etcd); super::$name(&mut c); } )*
        }
    };
}

on_both_datastores!(
    get_in_every_format,
    get_with_selectors_and_all_namespaces,
    get_watch_shows_changes,
    describe_reads_like_kubectl,
    apply_client_side,
    apply_server_side,
    create_every_generator,
    run_and_expose,
    label_scale_set_image,
    patch_three_ways,
    replace_from_file,
    delete_by_label,
    explain_and_api_resources,
    get_all,
    bad_input_is_reported,
    objects_survive_a_restart,
    tables_for_pods_endpoints_and_secrets,
    validation_speaks_kubernetes,
    acknowledged_writes_survive_kill_9,
);

fn tables_for_pods_endpoints_and_secrets(c: &Cluster) {
    c.kubectl(&["run", "p1", "--image=busybox:1.36", "--labels=app=p"])
        .ok();
    let wide = c.kubectl(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        table(wide.ok())[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let p1 = row(wide.ok(), "p1");
    assert_eq!(&p1[..4], ["p1", "0/1", "Pending", "0"]);
    assert_eq!(&p1[5..], ["<none>", "<none>", "<none>", "<none>"]);

    // The `kubernetes` Endpoints name the API server's own address.
    let endpoints = c.kubectl(&["get", "endpoints", "kubernetes"]);
    let port = c.url().rsplit(':').next().unwrap();
    assert!(
        row(endpoints.ok(), "kubernetes")[1].ends_with(&format!(":{port}")),
        "{}",
        endpoints.stdout
    );

    c.kubectl(&[
        "create",
        "secret",
        "generic",
        "two",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .ok();
    let secrets = c.kubectl(&["get", "secrets"]);
    assert_eq!(table(secrets.ok())[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(&row(secrets.ok(), "two")[1..3], ["Opaque", "2"]);
    let ages: Vec<String> = table(secrets.ok())[1..].iter().map(|r| r[3].clone()).collect();
    assert!(
        ages.iter().all(|a| a.ends_with('s') || a.ends_with('m')),
        "ages like 5s: {ages:?}"
    );

    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    node-role.kubernetes.io/control-plane: \"\"\n";
    c.kubectl_stdin(&["create", "-f", "-"], node).ok();
    let nodes = c.kubectl(&["get", "nodes", "-o", "wide"]);
    assert_eq!(
        table(nodes.ok())[0],
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    let n1 = row(nodes.ok(), "n1");
    assert_eq!(
        &n1[..3],
        ["n1", "Unknown", "control-plane"],
        "a node that never reported is Unknown"
    );
    assert_eq!(
        &n1[4..],
        ["<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"],
        "no version: {n1:?}"
    );
    let describe = c.kubectl(&["describe", "node", "n1"]);
    let describe = describe.ok();
    assert!(
        describe
            .lines()
            .any(|l| l.starts_with("Name:") && l.ends_with(" n1")),
        "{describe}"
    );
    assert!(
        describe.contains("node-role.kubernetes.io/control-plane="),
        "{describe}"
    );
}

/// kubectl 1.27 … 1.33 (the dispatcher runs the one matching the server's minor; the others must work too):
/// protobuf creates, tables, strict apply, scale, JSON output and delete. Every version runs every step;
/// the failure lists each version's first failing step.
#[test]
fn every_installed_kubectl_version() {
    let versions = rkube_e2e::versioned_kubectls();
    if versions.is_empty() {
        eprintln!("SKIPPED every_installed_kubectl_version: kubectl is not the versioned dispatcher here");
        return;
    }
    let c = Cluster::start(Datastore::Embedded);
    let mut failures = Vec::new();
    for (i, kubectl) in versions.iter().enumerate() {
        let v = kubectl.file_name().unwrap().to_string_lossy().into_owned();
        if let Err(step) = one_kubectl_version(&c, kubectl, &format!("web{i}")) {
            failures.push(format!("{v}: {step}"));
        }
    }
    assert!(
        failures.is_empty(),
        "failing kubectl versions:\n{}",
        failures.join("\n")
    );
}

fn one_kubectl_version(c: &Cluster, kubectl: &std::path::Path, name: &str) -> Result<(), String> {
    let run = |args: &[&str], expect: &dyn Fn(&str) -> bool| {
        let out = c.kubectl_version(kubectl, args);
        if out.code == Some(0) && expect(&out.stdout) {
            Ok(out.stdout)
        } else {
            Err(format!(
                "`kubectl {}` printed {:?} / {:?}",
                args.join(" "),
                out.stdout.trim(),
                out.stderr.trim()
            ))
        }
    };
    run(&["create", "deployment", name, "--image=nginx:1.25"], &|o| {
        o.trim() == format!("deployment.apps/{name} created")
    })?;
    run(&["get", "deployment", name], &|o| row(o, name)[1] == "0/1")?;
    let applied = format!("{name}-applied");
    let file = c.write_file(
        &format!("{name}.yaml"),
        &DEPLOYMENT.replace("name: web", &format!("name: {applied}")),
    );
    run(&["apply", "-f", file.to_str().unwrap()], &|o| {
        o.trim() == format!("deployment.apps/{applied} created")
    })?;
    run(&["scale", "deployment", name, "--replicas=2"], &|o| {
        o.contains("scaled")
    })?;
    run(&["get", "deployment", name, "-o", "json"], &|o| {
        json(o)["spec"]["replicas"] == 2
    })?;
    run(&["delete", "deployment", name], &|o| {
        o.contains(&format!("deployment.apps \"{name}\" deleted"))
    })?;
    Ok(())
}
