//! The service proxy: Services + EndpointSlices compiled into one nftables table (`ip rkube`) and applied
//! as atomic `nft -f` transactions — what kube-proxy's nftables mode does, run inside every node agent.
//!
//! Start reading at [`compile`] (the pure function from a [`Model`] to the `nft -f` text; its module docs
//! describe the table layout), then [`compile::diff`] (incremental updates) and [`run`] (the watch-and-sync
//! loop). Side effects (nft, conntrack) go through [`kernel::Kernel`].

pub mod compile;
pub mod kernel;
pub mod model;
mod run;

pub use compile::{Ruleset, ServiceRules, compile, diff};
pub use kernel::{Kernel, KernelError, NftCli};
pub use model::{Model, NodeInfo, ServiceKey};
pub use run::{ProxyConfig, ProxyError, run, run_with_kernel};
