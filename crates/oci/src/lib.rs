//! The node's image store: pulls images from OCI distribution registries, keeps their blobs content-addressed
//! and verified, unpacks each layer once for overlayfs, and imports image archives for air-gapped hosts.
//!
//! Start at [`store::ImageStore`] (the on-disk layout); [`unpack`] holds the tar rules (sanitized paths,
//! whiteouts).

pub mod digest;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use store::{ImageRecord, ImageStore, LayerRecord, StoreError};
pub mod manifest;
pub mod policy;
pub mod pull;
