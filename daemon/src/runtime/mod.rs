//! The runtime: everything that touches the container engine — the connection and its
//! event stream, spec → hardened container, the supervisor, the agent image, networks,
//! per-agent log rings, and CPU/memory sampling.

pub mod container;
pub mod engine;
pub mod image;
pub mod logs;
pub mod network;
pub mod restart;
pub mod stats;
pub mod supervisor;

pub use supervisor::{Cmd, Runtime};
