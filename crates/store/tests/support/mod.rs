//! Helpers shared by the store's integration tests. Each test binary uses a different part of them.
#![allow(dead_code)]

pub mod backends;
pub mod child;
pub mod history;
pub mod linearizability;
pub mod load;
