//! The runtime: the daemon's hub (`hub.rs`) and everything that touches the container
//! engine — the connection and its event stream, spec → hardened container, the per-agent
//! runners and their restart arithmetic, the agent image, networks, per-agent log rings,
//! CPU/memory sampling, an agent's files and workspace on the host, and swarm mode's
//! services, gateway endpoint, task data and job runs. Nothing here imports `rpc/`.

pub mod container;
pub mod endpoint;
pub mod engine;
pub mod hub;
pub mod image;
pub mod jobs;
pub mod logs;
pub mod network;
pub mod restart;
pub mod retention;
pub mod runner;
pub mod stats;
pub mod swarm;
pub mod swarm_data;
pub mod swarm_jobs;
pub mod volumes;

pub use hub::{GatewayStarter, Parts, Runtime};
pub use runner::Cmd;
