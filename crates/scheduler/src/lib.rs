//! rkube's scheduler: places each pending pod whose `spec.schedulerName` is ours on a node, the way
//! kube-scheduler does, talking to the API server only through its HTTP API.
//!
//! Start reading at [`framework`] (the extension-point traits plugins implement), then [`core::schedule_one`]
//! (one pure scheduling cycle over a [`snapshot::Snapshot`]), then [`plugins`] (the default plugins).
//! The moving parts around the core: [`cache`] keeps the snapshot current from watches (with pods assumed
//! between Reserve and their binding being observed), [`queue`] decides which pod is tried next, and
//! [`scheduler::run`] is the I/O shell (watches, binding, events, leader election via [`leader`]).
//!
//! Embedding: `rkube_scheduler::run(client, SchedulerOptions::default(), shutdown)` runs `default-scheduler`
//! with kube's default plugins (including DefaultPreemption), leader-elected on the Lease
//! `kube-system/rkube-scheduler`. `examples/custom_scheduler.rs` builds a second scheduler with a custom
//! plugin; `examples/scheduler_load.rs` and `examples/core_throughput.rs` measure throughput.

pub mod cache;
pub mod core;
pub mod events;
pub mod framework;
pub mod leader;
pub mod plugins;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod snapshot;

pub use scheduler::{DEFAULT_SCHEDULER_NAME, SchedulerError, SchedulerOptions, run};

#[cfg(test)]
mod testing;
