//! The container runtime against the real runc: sandboxes, CRI logs, exit codes, OOM kills, graceful stops,
//! exec, survival of the creating process, and cleanup. Runs as root; the image is a layer directory made
//! from the static `/usr/bin/busybox`; the shim is the `rkube` binary next to this test (`cargo build -p
//! rkube` first; `scripts/test` does).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rkube_oci::runtime::{
    BindMount, ContainerConfig, ContainerState, POD_UID_LABEL, ProcessSpec, Resources, Runtime,
    RuntimeConfig, Sandbox, Signal, cgroups,
};

const PREFIX: &str = "rkt-oci-";

/// A runtime with its own state dir, runc root and cgroup parent (random per test), torn down on drop.
struct Env {
    dir: tempfile::TempDir,
    rt: Runtime,
    cgroup_parent: String,
    layer: PathBuf,
}

fn shim_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/runtime-<hash> → target/debug/rkube
    let bin = exe.parent().unwrap().parent().unwrap().join("rkube");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p rkube` before these tests",
        bin.display()
    );
    bin
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the runtime tests run containers with runc and must run as root"
    );
    assert!(
        Path::new("/usr/sbin/runc").exists(),
        "runc is missing (Debian package runc)"
    );
    assert!(
        Path::new("/usr/bin/busybox").exists(),
        "busybox is missing (Debian package busybox-static)"
    );
}

/// A root filesystem layer: `/bin/busybox` and a link per applet.
fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        fs::create_dir_all(layer.join(d)).unwrap();
    }
    fs::copy("/usr/bin/busybox", layer.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/usr/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::set_permissions(
        layer.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    layer
}

impl Env {
    fn new() -> Env {
        require_root();
        sweep_stale();
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().unwrap();
        let suffix = dir
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches(PREFIX);
        let cgroup_parent = format!("{PREFIX}{suffix}");
        let layer = busybox_layer(dir.path());
        let rt = Runtime::new(RuntimeConfig {
            state_dir: dir.path().join("state"),
            runc_root: dir.path().join("runc"),
            cgroup_parent: cgroup_parent.clone(),
            runc: "/usr/sbin/runc".into(),
            shim: vec![shim_binary().into(), "shim".into()],
        })
        .unwrap();
        Env {
            dir,
            rt,
            cgroup_parent,
            layer,
        }
    }

    fn container(&self, id: &str, sandbox: &Sandbox, args: &[&str]) -> ContainerConfig {
        let mut labels = BTreeMap::new();
        labels.insert(POD_UID_LABEL.to_owned(), format!("uid-{}", sandbox.id));
        labels.insert("io.kubernetes.container.name".to_owned(), id.to_owned());
        ContainerConfig {
            id: id.into(),
            sandbox: sandbox.clone(),
            labels,
            lower_dirs: vec![self.layer.clone()],
            process: ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec!["GREETING=hi".into()],
                ..Default::default()
            },
            log_path: self.dir.path().join("logs").join(id).join("0.log"),
            ..Default::default()
        }
    }

    fn run(&self, c: &ContainerConfig) {
        self.rt.create_container(c).unwrap();
        assert_eq!(self.rt.container_state(&c.id).unwrap(), ContainerState::Created);
        self.rt.start_container(&c.id).unwrap();
    }

    fn log(&self, id: &str) -> String {
        fs::read_to_string(self.dir.path().join("logs").join(id).join("0.log")).unwrap_or_default()
    }

    /// The log's content lines for one stream, without the timestamp and tag.
    fn lines(&self, id: &str, stream: &str) -> Vec<String> {
        self.log(id)
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(4, ' ');
                let ts = parts.next()?;
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                    "bad CRI timestamp in {l:?}"
                );
                (parts.next()? == stream).then_some(())?;
                assert_eq!(parts.next()?, "F");
                Some(parts.next().unwrap_or("").to_owned())
            })
            .collect()
    }

    fn wait_for_log(&self, id: &str, needle: &str) {
        wait(
            &format!("{needle:?} in the log of {id}"),
            Duration::from_secs(20),
            || self.log(id).contains(needle),
        );
    }

    fn wait_exited(&self, id: &str) -> ContainerState {
        let mut state = None;
        wait(&format!("{id} to exit"), Duration::from_secs(30), || {
            let s = self.rt.container_state(id).unwrap();
            let done = matches!(s, ContainerState::Exited { .. });
            state = Some(s);
            done
        });
        state.unwrap()
    }

    /// Removes every container and sandbox through the runtime and checks the host is clean.
    fn teardown(self) {
        for c in self.rt.list_containers().unwrap() {
            self.rt.remove_container(&c.id).unwrap();
        }
        for s in self.rt.list_sandboxes().unwrap() {
            self.rt.remove_sandbox(&s.id).unwrap();
        }
        assert!(self.rt.list_containers().unwrap().is_empty());
        assert!(self.rt.list_sandboxes().unwrap().is_empty());
        let runc_left: Vec<_> = fs::read_dir(self.dir.path().join("runc"))
            .unwrap()
            .flatten()
            .collect();
        assert!(runc_left.is_empty(), "runc still has containers: {runc_left:?}");
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        // Only the (node-level) parent may remain; every pod and container cgroup is gone.
        for root in cgroup_roots() {
            let parent = root.join(&self.cgroup_parent);
            if let Ok(entries) = fs::read_dir(&parent) {
                let children: Vec<_> = entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect();
                assert!(children.is_empty(), "cgroups left behind: {children:?}");
            }
        }
        cgroups::remove_tree(&format!("/{}", self.cgroup_parent));
        assert!(!cgroups::exists(&format!("/{}", self.cgroup_parent)));
        // `Drop` removes the directory.
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort after a failed test; `teardown` already did all of this after a passing one.
        if let Ok(list) = self.rt.list_containers() {
            for c in list {
                let _ = self.rt.remove_container(&c.id);
            }
        }
        if let Ok(list) = self.rt.list_sandboxes() {
            for s in list {
                let _ = self.rt.remove_sandbox(&s.id);
            }
        }
        cgroups::remove_tree(&format!("/{}", self.cgroup_parent));
    }
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

fn cgroup_roots() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// Leftovers of crashed runs older than ten minutes: their runc containers, mounts, cgroups, directories.
fn sweep_stale() {
    let tmp = std::env::temp_dir();
    let old = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > Duration::from_secs(600))
            .unwrap_or(false)
    };
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || !old(&path) {
            continue;
        }
        let runc_root = path.join("runc");
        for c in fs::read_dir(&runc_root).into_iter().flatten().flatten() {
            let _ = std::process::Command::new("/usr/sbin/runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(c.file_name())
                .status();
        }
        let mut mounts = mounts_under(&path);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        cgroups::remove_tree(&format!("/{name}"));
        let _ = fs::remove_dir_all(&path);
    }
    // Cgroups whose run's directory is gone altogether.
    for root in cgroup_roots() {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !tmp.join(&name).exists() {
                cgroups::remove_tree(&format!("/{name}"));
            }
        }
    }
}

fn exit_code(state: &ContainerState) -> i32 {
    match state {
        ContainerState::Exited { exit_code, .. } => *exit_code,
        other => panic!("not exited: {other:?}"),
    }
}

#[test]
fn containers_in_a_sandbox_share_hostname_network_and_volumes() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-a", "pod-a-host").unwrap();
    // Idempotent: a second create finds the same namespaces.
    assert_eq!(env.rt.create_sandbox("pod-a", "pod-a-host").unwrap(), sandbox);
    let shared = env.dir.path().join("volumes/shared");
    fs::create_dir_all(&shared).unwrap();
    let volume = BindMount {
        destination: "/shared".into(),
        source: shared.clone(),
        read_only: false,
    };

    let mut server = env.container(
        "server",
        &sandbox,
        &[
            "sh",
            "-c",
            "hostname; echo served-by-server > /shared/index.html; exec httpd -f -p 127.0.0.1:8080 -h /shared",
        ],
    );
    server.mounts.push(volume.clone());
    env.run(&server);
    env.wait_for_log("server", "pod-a-host");

    let mut client = env.container(
        "client",
        &sandbox,
        &[
            "sh",
            "-c",
            "cat /shared/index.html; \
             for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; \
             exit 1",
        ],
    );
    client.mounts.push(volume);
    env.run(&client);
    assert_eq!(
        exit_code(&env.wait_exited("client")),
        0,
        "log: {}",
        env.log("client")
    );
    // Once from the shared volume, once over the shared loopback.
    assert_eq!(
        env.lines("client", "stdout"),
        ["served-by-server", "served-by-server"]
    );
    assert_eq!(env.lines("server", "stdout"), ["pod-a-host"]);

    let listed = env.rt.list_containers().unwrap();
    let ids: Vec<_> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["client", "server"]);
    assert!(matches!(listed[1].state, ContainerState::Running { .. }));
    assert_eq!(listed[1].labels["io.kubernetes.container.name"], "server");
    assert_eq!(listed[1].sandbox_id, "pod-a");

    env.rt
        .stop_container("server", Signal::SIGTERM, Duration::from_secs(5))
        .unwrap();
    assert!(matches!(
        env.rt.container_state("server").unwrap(),
        ContainerState::Exited { .. }
    ));
    env.teardown();
}

#[test]
fn stdout_and_stderr_land_in_the_cri_log_and_the_exit_code_is_recorded() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-log", "log").unwrap();
    let c = env.container(
        "logger",
        &sandbox,
        &["sh", "-c", "echo out $GREETING; echo err >&2; exit 7"],
    );
    env.run(&c);
    let state = env.wait_exited("logger");
    let ContainerState::Exited {
        exit_code,
        started_at,
        finished_at,
        oom_killed,
        signal,
    } = state
    else {
        unreachable!()
    };
    assert_eq!((exit_code, oom_killed, signal), (7, false, None));
    assert!(started_at <= finished_at);
    assert_eq!(env.lines("logger", "stdout"), ["out hi"]);
    assert_eq!(env.lines("logger", "stderr"), ["err"]);
    // Removing keeps the log; a second remove is a no-op.
    env.rt.remove_container("logger").unwrap();
    env.rt.remove_container("logger").unwrap();
    assert!(env.log("logger").contains("out hi"));
    assert!(env.rt.container_state("logger").is_err());
    env.teardown();
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-oom", "oom").unwrap();
    let mut c = env.container(
        "hog",
        &sandbox,
        // The shell itself grows a 256 MiB variable, far over the limit.
        &[
            "sh",
            "-c",
            "echo start; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    c.resources = Resources {
        memory_limit: Some(32 << 20),
        ..Default::default()
    };
    env.run(&c);
    let state = env.wait_exited("hog");
    let ContainerState::Exited { oom_killed, .. } = state else {
        unreachable!()
    };
    assert!(oom_killed, "{state:?}, log: {}", env.log("hog"));
    assert!(!env.log("hog").contains("survived"));
    env.teardown();
}

#[test]
fn stop_sends_the_signal_then_kills_after_the_grace_period() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-stop", "stop").unwrap();
    let stubborn = env.container(
        "stubborn",
        &sandbox,
        &[
            "sh",
            "-c",
            "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let polite = env.container(
        "polite",
        &sandbox,
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    env.run(&stubborn);
    env.run(&polite);
    env.wait_for_log("stubborn", "ready");
    env.wait_for_log("polite", "ready");

    let begin = Instant::now();
    env.rt
        .stop_container("polite", Signal::SIGTERM, Duration::from_secs(30))
        .unwrap();
    assert!(
        begin.elapsed() < Duration::from_secs(10),
        "a container that exits on TERM is not waited for"
    );
    assert_eq!(exit_code(&env.rt.container_state("polite").unwrap()), 0);
    assert!(env.log("polite").contains("bye"));

    let begin = Instant::now();
    env.rt
        .stop_container("stubborn", Signal::SIGTERM, Duration::from_secs(1))
        .unwrap();
    assert!(begin.elapsed() >= Duration::from_secs(1));
    let state = env.rt.container_state("stubborn").unwrap();
    let ContainerState::Exited {
        exit_code, signal, ..
    } = state
    else {
        panic!("{state:?}")
    };
    assert_eq!((exit_code, signal), (137, Some(9)));
    env.wait_for_log("stubborn", "got-term");
    // Stopping an exited container is fine.
    env.rt
        .stop_container("stubborn", Signal::SIGTERM, Duration::from_secs(1))
        .unwrap();
    env.teardown();
}

#[test]
fn exec_returns_exit_code_and_output_and_supports_a_terminal() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-exec", "exec").unwrap();
    env.run(&env.container("sleeper", &sandbox, &["sleep", "1000"]));
    let cmd = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let (code, out) = env
        .rt
        .exec_sync(
            "sleeper",
            &cmd(&["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(code, 3);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("hi\n") && out.contains("oops\n"), "{out:?}");

    let err = env
        .rt
        .exec_sync("sleeper", &cmd(&["sleep", "30"]), Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(err, rkube_oci::runtime::RuntimeError::Timeout(_)),
        "{err}"
    );

    let mut p = env
        .rt
        .exec(
            "sleeper",
            &cmd(&[
                "sh",
                "-c",
                "echo ready; while read line; do [ \"$line\" = q ] && exit 5; tty; stty size; done",
            ]),
            true,
        )
        .unwrap();
    let mut stdout = p.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let mut read_until = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&output).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => output.extend_from_slice(&chunk),
                Err(_) => panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&output)),
            }
        }
    };
    read_until("ready");
    p.resize(123, 45).unwrap();
    // runc applies the size when it handles our SIGWINCH, which may come after the next keystroke: ask
    // again until the new size shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&output).contains("45 123") {
        assert!(
            Instant::now() < deadline,
            "size never applied: {:?}",
            String::from_utf8_lossy(&output)
        );
        use std::io::Write;
        p.stdin.as_mut().unwrap().write_all(b"\r").unwrap();
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            output.extend_from_slice(&chunk);
        }
    }
    {
        use std::io::Write;
        p.stdin.as_mut().unwrap().write_all(b"q\r").unwrap();
    }
    assert_eq!(p.wait().unwrap(), 5);
    drop(p);
    let output = String::from_utf8(output).unwrap();
    assert!(output.contains("/dev/pts/"), "{output:?}");
    assert!(output.contains("45 123"), "{output:?}");
    env.teardown();
}

#[test]
fn a_container_outlives_the_runtime_that_created_it() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-survive", "survive").unwrap();
    env.run(&env.container("survivor", &sandbox, &["sh", "-c", "echo alive; exec sleep 1000"]));
    let ContainerState::Running { pid, started_at } = env.rt.container_state("survivor").unwrap() else {
        panic!("not running")
    };
    let mut env = env;
    let cfg = env.rt.config().clone();
    // The runtime keeps nothing in memory: a new one (as after an agent restart) must find it all on disk.
    let old = std::mem::replace(&mut env.rt, Runtime::new(cfg).unwrap());
    drop(old);

    // The shim is nobody's child: not ours, so nothing dies with us.
    let shim_pid: u32 = fs::read_to_string(env.dir.path().join("state/containers/survivor/shim.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stat = fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id());

    assert_eq!(
        env.rt.container_state("survivor").unwrap(),
        ContainerState::Running { pid, started_at }
    );
    assert_eq!(env.rt.list_sandboxes().unwrap(), [sandbox]);
    let (code, out) = env
        .rt
        .exec_sync("survivor", &["hostname".to_string()], Duration::from_secs(10))
        .unwrap();
    assert_eq!((code, String::from_utf8(out).unwrap().trim()), (0, "survive"));
    env.teardown();
}

#[test]
fn remove_cleans_up_running_and_half_created_containers() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-rm", "rm").unwrap();
    env.run(&env.container("running", &sandbox, &["sleep", "1000"]));
    env.rt
        .create_container(&env.container("created", &sandbox, &["sleep", "1000"]))
        .unwrap();
    // A command that does not exist fails the create and leaves nothing.
    let err = env
        .rt
        .create_container(&env.container("broken", &sandbox, &["/no/such/binary"]))
        .unwrap_err();
    assert!(err.to_string().contains("no/such/binary"), "{err}");
    assert!(env.rt.container_state("broken").is_err());
    // A leftover directory from a crash mid-create.
    fs::create_dir_all(env.dir.path().join("state/containers/leftover/rootfs")).unwrap();
    let ids: Vec<_> = env
        .rt
        .list_containers()
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert!(
        ids.contains(&("leftover".to_string(), ContainerState::Unknown)),
        "{ids:?}"
    );
    assert!(
        ids.contains(&("created".to_string(), ContainerState::Created)),
        "{ids:?}"
    );

    env.rt.remove_container("running").unwrap();
    env.rt.remove_container("running").unwrap();
    assert!(env.rt.container_state("running").is_err());
    env.rt.remove_sandbox("pod-rm").unwrap();
    env.rt.remove_sandbox("pod-rm").unwrap();
    env.teardown();
}

/// Reads attached output until `needle` shows up (or fails after 20 s).
fn read_attached(follower: &mut rkube_oci::runtime::LogFollower, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in attached output {seen:?}"
        );
        if let Some((_, bytes)) = follower.next(Duration::from_millis(200)).unwrap() {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn attach_reaches_stdin_output_and_terminal_size() {
    use std::io::Write;
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-attach", "attach").unwrap();
    let mut piped = env.container(
        "piped",
        &sandbox,
        &["sh", "-c", "echo ready; read line; echo got:$line"],
    );
    piped.process.stdin = true;
    env.run(&piped);
    env.wait_for_log("piped", "ready");
    let mut a = env.rt.attach("piped").unwrap();
    a.stdin
        .as_mut()
        .expect("stdin was requested")
        .write_all(b"hello\n")
        .unwrap();
    let mut seen = String::new();
    read_attached(&mut a.output, &mut seen, "got:hello\n");
    assert!(
        !seen.contains("ready"),
        "attach starts at the current end of the output"
    );
    assert_eq!(exit_code(&env.wait_exited("piped")), 0);
    wait("the follower to end", Duration::from_secs(10), || {
        a.output.next(Duration::from_millis(50)).unwrap().is_none() && a.output.finished()
    });

    let mut term = env.container(
        "term",
        &sandbox,
        &["sh", "-c", "echo ready; read line; stty size; tty"],
    );
    term.process.stdin = true;
    term.process.tty = true;
    env.run(&term);
    env.wait_for_log("term", "ready");
    let mut a = env.rt.attach("term").unwrap();
    a.resize(77, 22).unwrap();
    a.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut seen = String::new();
    read_attached(&mut a.output, &mut seen, "22 77\r\n");
    read_attached(&mut a.output, &mut seen, "/dev/");
    drop(a);
    assert_eq!(exit_code(&env.wait_exited("term")), 0);
    // A container without stdin has nothing to write to, but its output can still be followed.
    let quiet = env.container("quiet", &sandbox, &["sleep", "1000"]);
    env.run(&quiet);
    assert!(env.rt.attach("quiet").unwrap().stdin.is_none());
    env.teardown();
}

#[test]
fn security_context_and_resources_reach_the_container() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-sec", "sec").unwrap();
    let mut user = env.container(
        "user",
        &sandbox,
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; touch /probe && echo writable || echo read-only; \
                       chown 0:0 /tmp 2>/dev/null && echo chown-ok || echo chown-denied",
        ],
    );
    user.process.uid = 1000;
    user.process.gid = 2000;
    user.process.additional_gids = vec![3000];
    user.read_only_rootfs = true;
    user.cap_drop = vec!["ALL".into()];
    user.resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(64),
        memory_limit: Some(64 << 20),
    };
    env.run(&user);
    // The limits, read from the host side of the container's cgroup while it exists.
    let cgroup = format!("{}/poduid-pod-sec/user", env.cgroup_parent);
    let read = |file: &str| fs::read_to_string(file).map(|s| s.trim().to_owned()).ok();
    let v1 = Path::new("/sys/fs/cgroup/memory").exists();
    if v1 {
        assert_eq!(
            read(&format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.cfs_quota_us")).as_deref(),
            Some("50000")
        );
        assert_eq!(
            read(&format!("/sys/fs/cgroup/cpu/{cgroup}/cpu.shares")).as_deref(),
            Some("512")
        );
        assert_eq!(
            read(&format!("/sys/fs/cgroup/pids/{cgroup}/pids.max")).as_deref(),
            Some("64")
        );
        assert_eq!(
            read(&format!("/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes")).as_deref(),
            Some("67108864")
        );
    } else {
        assert_eq!(
            read(&format!("/sys/fs/cgroup/{cgroup}/cpu.max")).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            read(&format!("/sys/fs/cgroup/{cgroup}/pids.max")).as_deref(),
            Some("64")
        );
        assert_eq!(
            read(&format!("/sys/fs/cgroup/{cgroup}/memory.max")).as_deref(),
            Some("67108864")
        );
    }
    assert_eq!(exit_code(&env.wait_exited("user")), 0, "{}", env.log("user"));
    assert_eq!(
        env.lines("user", "stdout"),
        ["1000", "2000", "2000 3000", "read-only", "chown-denied"]
    );

    let root = env.container(
        "root",
        &sandbox,
        &[
            "sh",
            "-c",
            "touch /probe && echo writable; chown 1:1 /tmp && echo chown-ok; \
                       ip link set lo mtu 1300 2>/dev/null && echo net-admin || echo no-net-admin",
        ],
    );
    let mut admin = root.clone();
    admin.id = "admin".into();
    admin.log_path = env.dir.path().join("logs/admin/0.log");
    admin.cap_add = vec!["NET_ADMIN".into()];
    env.run(&root);
    assert_eq!(exit_code(&env.wait_exited("root")), 0, "{}", env.log("root"));
    assert_eq!(
        env.lines("root", "stdout"),
        ["writable", "chown-ok", "no-net-admin"]
    );
    env.run(&admin);
    assert_eq!(exit_code(&env.wait_exited("admin")), 0, "{}", env.log("admin"));
    assert_eq!(
        env.lines("admin", "stdout"),
        ["writable", "chown-ok", "net-admin"]
    );

    let privileged_cfg = {
        let mut c = env.container(
            "privileged",
            &sandbox,
            &["sh", "-c", "grep CapEff /proc/self/status; ls /dev/loop-control"],
        );
        c.privileged = true;
        c
    };
    env.run(&privileged_cfg);
    assert_eq!(
        exit_code(&env.wait_exited("privileged")),
        0,
        "{}",
        env.log("privileged")
    );
    // Every capability we have ourselves.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let ours = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(env.lines("privileged", "stdout")[0], format!("CapEff:\t{ours}"));
    assert_eq!(env.lines("privileged", "stdout")[1], "/dev/loop-control");
    env.teardown();
}

#[test]
fn a_container_whose_shim_died_can_still_be_stopped_and_removed() {
    let env = Env::new();
    let sandbox = env.rt.create_sandbox("pod-orphan", "orphan").unwrap();
    env.run(&env.container("orphan", &sandbox, &["sleep", "1000"]));
    let shim_pid: i32 = fs::read_to_string(env.dir.path().join("state/containers/orphan/shim.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim_pid), Signal::SIGKILL).unwrap();
    wait("the shim to die", Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{shim_pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    // runc still runs it; nobody is left to record its end.
    assert!(matches!(
        env.rt.container_state("orphan").unwrap(),
        ContainerState::Running { .. }
    ));
    env.rt
        .stop_container("orphan", Signal::SIGTERM, Duration::from_millis(200))
        .unwrap();
    assert_eq!(env.rt.container_state("orphan").unwrap(), ContainerState::Unknown);
    env.teardown();
}
