//! Cluster DNS (work in progress).
