//! rkube-bench: rkube's benchmarks. Each subcommand measures one part of the system, prints
//! human-readable lines and then, as its last line, one JSON object with the results (for scripts and CI).
//!
//! Start reading at [`Command`]: one module per subcommand (`store` today; `api`, `scheduler`,
//! `pod-startup` later), each with its own clap `Args` and an async `run`.

use clap::{Parser, Subcommand};

mod api;
mod dns;
mod pod_startup;
mod proxy;
mod scheduler;
mod store;

#[derive(Parser)]
#[command(
    name = "rkube-bench",
    about = "rkube benchmarks; the last line of output is one JSON object"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The key-value store: guarded writes, reads and watch fan-out against SQLite or etcd.
    Store(store::StoreArgs),
    /// The API server: readiness, idle memory, pod creates, a 10k-pod Table list and watch fan-out.
    Api(api::ApiArgs),
    /// The scheduler's binding rate with the real API server on simulated nodes (SchedulingBasic's shape).
    Scheduler(scheduler::SchedulerArgs),
    /// Pods created at once on a real node until Running and Ready; the agent's idle memory.
    PodStartup(pod_startup::PodStartupArgs),
    /// Cluster DNS: queries per second and p99 latency for in-cluster names, load generator on the same machine.
    Dns(dns::DnsArgs),
    /// The service proxy: full sync and API-write-to-kernel incremental sync of many Services (root; netns).
    Proxy(proxy::ProxyArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Store(args) => runtime.block_on(store::run(args)),
        Command::Api(args) => runtime.block_on(api::run(args)),
        Command::Scheduler(args) => runtime.block_on(scheduler::run(args)),
        Command::PodStartup(args) => runtime.block_on(pod_startup::run(args)),
        Command::Dns(args) => runtime.block_on(dns::run(args)),
        Command::Proxy(args) => runtime.block_on(proxy::run(args)),
    }
}
