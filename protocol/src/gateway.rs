//! The `Gateway` service: what an agent's shim can ask the daemon, over the Unix socket
//! bind-mounted into that agent's container alone. The socket names the agent; the daemon
//! also checks that the caller's process lives in that agent's container.

use crate::error::ApiError;
use crate::policy::{AgentReport, Decision, ToolCall};
use crate::secret::SecretValue;
use serde::{Deserialize, Serialize};

/// Where the gateway socket appears inside an agent's container.
pub const GATEWAY_DIR_IN_CONTAINER: &str = "/run/agenfleet";
pub const GATEWAY_SOCKET_NAME: &str = "gateway.sock";
/// The agent's local API (HTTP/1.1 + JSON), beside the gateway socket; the shim relays
/// `LOCAL_API_ADDR` inside the container to it.
pub const API_SOCKET_NAME: &str = "api.sock";
pub const LOCAL_API_ADDR: &str = "127.0.0.1:4180";
/// The egress proxy of an agent in `gateway` network mode; the shim relays
/// `EGRESS_PROXY_ADDR` to it and points the program's `HTTP(S)_PROXY` there.
pub const PROXY_SOCKET_NAME: &str = "proxy.sock";
pub const EGRESS_PROXY_ADDR: &str = "127.0.0.1:3128";
/// Where the daemon mounts the static shim (read-only) in the container of an agent whose
/// image is not ours; it is that container's init: `agenfleet-agent run -- PROGRAM…`.
pub const SHIM_IN_CONTAINER: &str = "/run/agenfleet/bin/agenfleet-agent";
/// Swarm mode: where the shim sits in an agent's init image (its image with the shim
/// added, so a task on any node needs nothing of the daemon's host).
pub const SHIM_IN_IMAGE: &str = "/.agenfleet/agenfleet-agent";

/// Swarm mode: the agent's task reaches its gateway over its overlay network. The shim
/// serves the same three sockets in `GATEWAY_DIR_IN_CONTAINER` (a tmpfs there) and relays
/// each connection to the daemon's gateway endpoint, named by this variable as
/// `HOST:PORT` (`;proxy` after it when the agent has an egress proxy).
pub const REMOTE_GATEWAY_ENV: &str = "AGENFLEET_GATEWAY_REMOTE";
/// The endpoint's name on every agent's overlay network, and its port.
pub const ENDPOINT_ALIAS: &str = "agenfleet-gateway";
pub const ENDPOINT_PORT: u16 = 4190;
/// The agent's gateway token, a Swarm secret mounted here (tmpfs, its user only).
pub const GATEWAY_TOKEN_PATH: &str = "/run/secrets/agenfleet-gateway";
/// The first line of a connection to the endpoint: `AGF-GW1 <token> <channel>\n`, the
/// channel one of `GATEWAY_CHANNELS`; the daemon then serves that socket's protocol — or,
/// on `logs`, takes the task's output: lines `<1|2> <text>\n` (stdout, stderr), each
/// text at most `LOG_LINE_MAX` bytes (the shim cuts longer ones), and its cgroup's
/// readings, `s <cpu ns used> <memory bytes>\n`, every `STATS_INTERVAL_ENV` ms, and `o\n`
/// when the kernel's OOM killer ended the program.
pub const REMOTE_HELLO: &str = "AGF-GW1";
pub const GATEWAY_CHANNELS: [&str; 4] = ["gateway", "api", "proxy", "logs"];
pub const LOG_LINE_MAX: usize = 16 * 1024;
/// How often (ms) the shim of a task reads its cgroup for the daemon.
pub const STATS_INTERVAL_ENV: &str = "AGENFLEET_STATS_INTERVAL_MS";
/// The endpoint's line before the agent's: `AGF-EP1 <its address the agent reached>\n`
/// (which overlay network, so which agent's, the connection came in on).
pub const ENDPOINT_HELLO: &str = "AGF-EP1";
/// The longest of those lines.
pub const REMOTE_LINE_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayHello {
    pub protocol_version: u32,
    pub tenant: String,
    pub agent: String,
}

/// One credential as delivered to its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredCredential {
    pub name: String,
    pub version: u32,
    pub value: SecretValue,
}

#[tarpc::service]
pub trait Gateway {
    /// Checks versions; tells the shim which agent it is.
    async fn hello(protocol_version: u32) -> Result<GatewayHello, ApiError>;
    /// The current value of each of this agent's credentials.
    async fn credentials() -> Result<Vec<DeliveredCredential>, ApiError>;
    /// Waits (up to `max_wait_ms`) until the agent's credentials differ from `held`
    /// (name, version pairs), then answers the current set; answers `None` on timeout.
    async fn wait_credentials(
        held: Vec<(String, u32)>,
        max_wait_ms: u64,
    ) -> Result<Option<Vec<DeliveredCredential>>, ApiError>;
    /// Decides one tool call against the agent's scopes and its tenant's policies. An
    /// escalated call waits here until a person decides or the policy's timeout denies it.
    /// The decision is in the audit log before the answer leaves.
    async fn authorize(call: ToolCall) -> Result<Decision, ApiError>;
    /// Records what the agent observed (a model or tool provider's outcome); answers the
    /// audit sequence number.
    async fn report(report: AgentReport) -> Result<u64, ApiError>;
}

/// The largest request body the agent's local API takes (a memory value included).
pub const MAX_LOCAL_API_BODY: usize = 1024 * 1024;
