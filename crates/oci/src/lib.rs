//! The node's image store: pulls images from OCI distribution registries, keeps their blobs content-addressed
//! and verified, unpacks each layer once for overlayfs, and imports image archives for air-gapped hosts.
//!
//! Start at [`store::ImageStore`] (the on-disk layout), then [`pull::Puller::pull`] (registry → store) and
//! [`policy::decide`] (whether a container needs a pull at all). [`unpack`] holds the tar rules (sanitized
//! paths, whiteouts); [`import::import_archive`] is `rkube image import`; [`manifest`] the JSON shapes.
//! [`runtime::Runtime`] runs containers from those layers with runc; [`image_config`] holds how an image
//! wants to be run.

pub mod credentials;
pub mod digest;
pub mod gc;
pub mod image_config;
pub mod import;
pub mod manifest;
pub mod policy;
pub mod pull;
pub mod runtime;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use store::{ImageRecord, ImageStore, LayerRecord, StoreError};
