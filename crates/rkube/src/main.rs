//! The `rkube` binary: flag parsing and wiring only. Each subcommand lives in its own module
//! (`server.rs` …); the work is done by the library crates. Invoked through a link named `kubectl`, the
//! binary behaves as `rkube kubectl`.

mod agent;
mod components;
mod duration;
mod image;
mod kubectl;
mod server;
mod shim;
mod simulate_nodes;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rkube", version, about = "Kubernetes in one small binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (and, later, the rest of the control plane and a node agent).
    Server(server::ServerArgs),
    /// Run a node agent that joins an existing cluster.
    Agent(agent::AgentArgs),
    /// The node's image store.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The per-container monitor process the agent starts (internal).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Register simulated nodes (like kwok) that run pods without containers, until stopped.
    SimulateNodes(simulate_nodes::SimulateNodesArgs),
    /// The kubectl-compatible CLI (not implemented yet).
    #[command(disable_help_flag = true)]
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os().next().unwrap_or_default();
    if kubectl::invoked_as_kubectl(&invoked_as) {
        return kubectl::run();
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RKUBE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::SimulateNodes(args) => simulate_nodes::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Image(command) => image::run(command),
        Command::Shim { args } => shim::run(args),
        Command::Kubectl { .. } => return kubectl::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rkube: {e:#}");
            ExitCode::FAILURE
        }
    }
}
