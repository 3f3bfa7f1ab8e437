//! The node agent (kubelet): registers its Node, watches the pods bound to it and runs them through
//! [`rkube_oci::runtime`], reports their status, and serves the kubelet HTTPS API ([`server`]).
//!
//! Work in progress: see `/work/TEAM.md` for who owns which module.

pub mod server;
