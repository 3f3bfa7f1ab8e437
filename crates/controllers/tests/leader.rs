//! Leader election against a real API server: of several electors on one Lease only the holder runs its
//! `lead` future; a graceful stop releases the lease and another takes over at once; a crash (no release)
//! hands over once the lease expires. (`rkube server` runs its own controller manager on the default Lease, so
//! this test uses a Lease of its own.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use rkube_controllers::leader::{LeaderElectionConfig, LeaderElector};
use support::{DEADLINE, Server};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const LEASE: &str = "leader-election-test";

/// Clears the flag when the lead future is dropped (leadership ended).
struct Leading(Arc<AtomicBool>);

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Elector {
    leading: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(client: &Client, identity: &str) -> Elector {
    let config = LeaderElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
        ..LeaderElectionConfig::new("kube-system", LEASE, identity)
    };
    let mut elector = LeaderElector::new(client.clone(), config);
    let leading = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flag = leading.clone();
    let task = tokio::spawn(async move {
        let lead = || {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                let _leading = Leading(flag);
                std::future::pending::<()>().await
            }
        };
        elector
            .run(lead, async {
                let _ = stopped.await;
            })
            .await;
    });
    Elector { leading, stop, task }
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

async fn wait_until_leading(client: &Client, e: &Elector, identity: &str) {
    let start = Instant::now();
    while !(e.leading.load(Ordering::SeqCst) && holder(client).await.as_deref() == Some(identity)) {
        assert!(
            start.elapsed() < DEADLINE,
            "{identity} never led (holder {:?})",
            holder(client).await
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_moves_on_release_and_on_crash() {
    let mut server = Server::start();
    let client = server.client().await;

    let a = start(&client, "elector-a");
    wait_until_leading(&client, &a, "elector-a").await;
    let b = start(&client, "elector-b");
    // B retries every 200 ms; A renews every 200 ms, so over more than a lease duration nothing changes.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert!(
            a.leading.load(Ordering::SeqCst) && !b.leading.load(Ordering::SeqCst),
            "two leaders or none"
        );
        assert_eq!(holder(&client).await.as_deref(), Some("elector-a"));
        sleep(Duration::from_millis(250)).await;
    }

    // A graceful stop ends A's lead future and releases the lease: B takes over well within a lease duration.
    let released_at = Instant::now();
    a.stop.send(()).unwrap();
    a.task.await.unwrap();
    assert!(!a.leading.load(Ordering::SeqCst));
    wait_until_leading(&client, &b, "elector-b").await;
    assert!(
        released_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        released_at.elapsed()
    );

    // A crash releases nothing: C waits for the lease to expire, then takes over.
    let c = start(&client, "elector-c");
    b.task.abort();
    let _ = b.task.await;
    let crashed_at = Instant::now();
    wait_until_leading(&client, &c, "elector-c").await;
    assert!(
        crashed_at.elapsed() >= Duration::from_secs(2),
        "took over a live-looking lease early"
    );

    drop(b.stop);
    c.stop.send(()).unwrap();
    c.task.await.unwrap();
    assert_eq!(
        holder(&client).await.as_deref(),
        None,
        "a graceful stop leaves the lease free"
    );
}
