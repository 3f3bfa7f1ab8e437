//! Crash tests run the store in a child process: this test binary re-executed with one `#[ignore]`d test
//! selected, which writes under load and reports each acknowledged write on stdout. The parent reads the
//! reports, kills the child with SIGKILL whenever it likes, and checks what survived.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkube_store::{Backend, Revision, WriteResult};

/// A child orphaned by a crashed parent stops on its own after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

/// One acknowledged write as the child reports it: `ack <key> <revision> <value>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub key: String,
    pub revision: Revision,
    pub value: String,
}

impl Ack {
    fn parse(line: &str) -> Option<Ack> {
        let mut parts = line.strip_prefix("ack ")?.split(' ');
        let (key, revision, value) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Ack {
            key: key.into(),
            revision: revision.parse().ok()?,
            value: value.into(),
        })
    }
}

/// What the parent learned from one child run.
pub struct ChildRun {
    pub acks: Vec<Ack>,
    /// `error …` lines: writes that failed (their outcome is unknown).
    pub errors: Vec<String>,
    pub status: ExitStatus,
    pub killed: bool,
}

/// Runs the ignored test `test` of this binary as a child with `env`, and SIGKILLs it as soon as
/// `kill_when(acks so far, errors so far)` says so. Only complete lines count: a line cut off by the kill
/// was not reported.
pub fn run_child(
    test: &str,
    env: &[(&str, String)],
    mut kill_when: impl FnMut(&[Ack], &[String]) -> bool,
) -> ChildRun {
    let mut command = Command::new(std::env::current_exe().unwrap());
    // Expected panics in the child (fault injection) need no backtrace in the parent's output.
    command.env("RUST_BACKTRACE", "0");
    command
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the child");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("read the child's output") == 0 {
            break;
        }
        let Some(complete) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some(ack) = Ack::parse(complete) {
            acks.push(ack);
        } else if let Some(error) = complete.strip_prefix("error ") {
            errors.push(error.to_string());
        }
        if !killed && kill_when(&acks, &errors) {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    ChildRun {
        acks,
        errors,
        status,
        killed,
    }
}

/// The child's work: eight writers, each cycling through its own 50 keys under `/durable/<round>/` (create,
/// then guarded updates), reporting each acknowledgement — flushed before the next write starts. A writer
/// whose write fails reports `error <message>` and stops.
pub async fn write_and_report(store: Arc<dyn Backend>, round: &str) {
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (store, stdout, round) = (store.clone(), stdout.clone(), round.to_string());
        writers.spawn(async move {
            let mut mod_revisions: BTreeMap<String, Revision> = BTreeMap::new();
            for seq in 0u64.. {
                if started.elapsed() > CHILD_LIFETIME {
                    return;
                }
                let key = format!("/durable/{round}/{w}/{}", seq % 50);
                let value = format!("{round}-{w}-{seq}");
                let result = match mod_revisions.get(&key) {
                    None => store.create(key.as_bytes(), Bytes::from(value.clone())).await,
                    Some(&expected) => {
                        store
                            .update(key.as_bytes(), Bytes::from(value.clone()), expected)
                            .await
                    }
                };
                let line = match result {
                    Ok(WriteResult::Done { revision, .. }) => {
                        mod_revisions.insert(key.clone(), revision);
                        format!("ack {key} {revision} {value}")
                    }
                    Ok(WriteResult::Conflict { current }) => {
                        panic!("child: nobody else writes {key}: {current:?}")
                    }
                    Err(e) => format!("error {key}: {e}"),
                };
                let failed = line.starts_with("error");
                let mut out = stdout.lock().unwrap();
                // The parent is gone (broken pipe): stop.
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() || failed {
                    return;
                }
            }
        });
    }
    writers.join_all().await;
}

/// Checks, on the reopened store, that every acknowledged write is there (at its revision, and not rolled
/// back since), and returns the current revision.
pub async fn assert_acknowledged_writes_present(store: &dyn Backend, acks: &[Ack]) -> Revision {
    let mut latest: BTreeMap<&str, &Ack> = BTreeMap::new();
    for ack in acks {
        latest.insert(&ack.key, ack);
    }
    let current = store.current_revision().await.unwrap();
    let max_acked = acks.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(
        current >= max_acked,
        "revision {current} is below the acknowledged {max_acked}"
    );
    for ack in latest.values() {
        let kv = store.get(ack.key.as_bytes(), ack.revision).await.unwrap();
        let kv = kv.unwrap_or_else(|| panic!("acknowledged {ack:?} is missing"));
        assert_eq!(
            (kv.mod_revision, &kv.value[..]),
            (ack.revision, ack.value.as_bytes()),
            "{ack:?}"
        );
        let now = store.get(ack.key.as_bytes(), 0).await.unwrap().unwrap();
        assert!(
            now.mod_revision >= ack.revision,
            "{ack:?} was rolled back to {now:?}"
        );
    }
    current
}
