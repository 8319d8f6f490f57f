//! agenfleet-protocol: the contract between the daemon (`agenfleetd`) and its clients.
//!
//! It owns the `Fleet` tarpc service that operators and scripts call, the wire types
//! (ids, specs, status, watch deltas, logs), the error type with its stable codes, the
//! protocol version, and the framing limits of the Unix-socket transport.

pub mod audit;
pub mod backup;
pub mod error;
pub mod gateway;
pub mod incidents;
pub mod memory;
pub mod names;
pub mod policy;
pub mod pulse;
pub mod relay;
pub mod roles;
pub mod runs;
pub mod secret;
pub mod service;
pub mod spec;
pub mod time;
pub mod transport;
pub mod triggers;
pub mod types;
pub mod upstream;
pub mod vault;

pub use audit::{AuditEntry, AuditEvent, AuditQuery, AuditStatus, Checkpoint, VerifyReport};
pub use backup::{BackupChunk, BackupInfo};
pub use error::{ApiError, ErrorCode};
pub use secret::SecretValue;
pub use service::{Fleet, FleetClient};
pub use spec::{
    AgentKind, AgentSpec, CredentialRefresh, CredentialUse, Delivery, FileSpec, Limits,
    NetworkMode, NetworkSpec, RestartMode, RestartSpec, RunsSpec, SpecError, Workload,
    WorkspaceSpec, BUILTIN_IMAGE,
};
pub use types::*;
pub use upstream::{Injection, UpstreamClass, UpstreamKind, UpstreamSpec, UpstreamView};
pub use vault::{CredentialInfo, CredentialVersion, VaultState, VaultStatus};

/// Version of the wire protocol. A client and a daemon with different versions refuse to
/// talk (`hello` answers `VersionMismatch`), rather than misread each other's frames.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default state directory and operator socket, for root (`/var/lib/agenfleet`,
/// `/run/agenfleet/agenfleet.sock`) or another user (`$XDG_DATA_HOME/agenfleet` and
/// `$XDG_RUNTIME_DIR/agenfleet/agenfleet.sock`, under the data dir when there is no
/// runtime dir). The daemon and the client both ask here.
pub fn default_paths(root: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::path::PathBuf;
    if root {
        return (
            PathBuf::from("/var/lib/agenfleet"),
            PathBuf::from("/run/agenfleet/agenfleet.sock"),
        );
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/share"));
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data.join("agenfleet"));
    (
        data.join("agenfleet"),
        runtime.join("agenfleet").join("agenfleet.sock"),
    )
}

/// Default maximum size of one frame on the operator socket.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// The largest build context (a tar) that travels to the daemon in one request: a frame,
/// less room for the rest of it.
pub const MAX_BUILD_CONTEXT_BYTES: usize = DEFAULT_MAX_FRAME_BYTES - 64 * 1024;

/// Longest a `watch` or `logs` call may wait for news before answering empty.
pub const MAX_WAIT_MS: u64 = 60_000;

/// Version of the software (the workspace version).
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
