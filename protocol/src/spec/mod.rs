//! Agent specs: the file an operator writes (`agents create -f FILE`), its parsing, and its
//! validation. Every error names the field and the reason; a spec that fails validation is
//! never stored. The daemon validates again whatever a client sends.

use serde::{Deserialize, Serialize};
use std::fmt;

mod change;
mod program;
mod validate;
pub use change::*;
pub use program::*;

/// The image the daemon builds itself from the embedded `agenfleet-agent` shim.
pub const BUILTIN_IMAGE: &str = "agenfleet/agent";

/// What an operator declares about one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_project")]
    pub project: String,
    /// What the agent is for, in a line (`agents spec`; changed in place).
    #[serde(default)]
    pub description: String,
    /// `agenfleet/agent` for the built-in image, or an image present on the engine.
    pub image: String,
    /// The program to run and its arguments (argv, no shell), in place of the image's own
    /// entrypoint and command; empty: the image's own. Not for the built-in image, which
    /// runs its `[workload]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// The working directory of the program (absolute); empty: the image's own.
    #[serde(default)]
    pub workdir: String,
    /// Environment variables for the program: values that are not secret (secrets go in
    /// `credentials`). Shown by `agents show` and visible in the engine's container config.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// A health check the engine runs in the container; failing `retries` times in a row
    /// counts as an exit (restart policy, budget).
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Read-only files copied from the operator's spec directory into the container.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// A writable volume of the agent's own at `/workspace`, kept across restarts and
    /// removed when the agent is purged.
    #[serde(default)]
    pub workspace: Option<WorkspaceSpec>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub restart: RestartSpec,
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default)]
    pub workload: Workload,
    /// The credentials the agent needs, and how each reaches its program: it is held back
    /// while the vault is sealed. A plain name (`"api-key"`) is delivered through the local
    /// API only; `{ name = "db", as = "file" }` as `/run/agenfleet/secrets/db`;
    /// `{ name = "openai", as = "env", var = "OPENAI_API_KEY" }` in the program's
    /// environment, set by the shim at exec (never in the container's config).
    #[serde(default)]
    pub credentials: Vec<CredentialUse>,
    /// How a running agent gets a rotated credential: `restart` (default) or `refresh`
    /// (the shim is handed the new value in place, without a restart).
    #[serde(default)]
    pub credential_refresh: CredentialRefresh,
    /// Model providers the agent falls back to when its primary one fails or rate-limits
    /// (a rate limit without a fallback is the client's incident, with one the provider's).
    #[serde(default)]
    pub model_fallbacks: Vec<String>,
    /// The tenant's providers (model APIs) the agent may call through the gateway, which
    /// holds their keys: nothing named, nothing reachable.
    #[serde(default)]
    pub providers: Vec<String>,
    /// The tenant's connections (tool APIs) the agent may call the same way.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Limits on the agent's model calls, enforced by the gateway.
    #[serde(default)]
    pub budget: Budget,
    /// How it takes runs (units of work handed to it; see `runs`).
    #[serde(default)]
    pub runs: RunsSpec,
    /// Where Swarm may place it (`engine_mode = "swarm"` only).
    #[serde(default)]
    pub placement: PlacementSpec,
}

/// Where Swarm may place an agent's task: every constraint must hold on the node
/// (`node.labels.zone==eu`, `node.role!=manager`, `node.hostname==h1`…), and tasks
/// spread over the values of `spread` (a node label, `node.labels.zone`). Swarm mode
/// only: a daemon that runs agents as containers on its own host refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSpec {
    pub constraints: Vec<String>,
    pub spread: String,
}

impl PlacementSpec {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.spread.is_empty()
    }
}

/// How an agent takes runs: at most `max_concurrent` at once, each timed out after
/// `timeout_secs`, at most `queue` waiting (more are refused with the reason); as a
/// long-running service that asks for them, or as a job — a fresh container per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsSpec {
    pub max_concurrent: u32,
    pub timeout_secs: u64,
    pub queue: u32,
    pub kind: AgentKind,
}

impl Default for RunsSpec {
    fn default() -> Self {
        RunsSpec {
            max_concurrent: 1,
            timeout_secs: 600,
            queue: 100,
            kind: AgentKind::Service,
        }
    }
}

/// `service`: one long-running container that takes runs through its local API (`GET
/// /v1/runs/next`). `job`: no container between runs; each run gets a fresh hardened one,
/// its input at `/run/agenfleet/run/input.json`, removed when it exits (its logs and
/// outcome are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    #[default]
    Service,
    Job,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Service => "service",
            AgentKind::Job => "job",
        }
    }
}

/// Limits on an agent's model calls; 0 is no limit. Over one, the gateway answers 429
/// with the reason, records it, and raises a client incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Tokens (in + out) per UTC day.
    pub tokens_per_day: u64,
    /// Model calls per minute.
    pub calls_per_minute: u32,
}

impl Budget {
    pub fn is_unlimited(&self) -> bool {
        *self == Budget::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialRefresh {
    #[default]
    Restart,
    Refresh,
}

fn default_tenant() -> String {
    crate::names::DEFAULT_TENANT.to_string()
}
fn default_project() -> String {
    crate::names::DEFAULT_PROJECT.to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory limit in MiB (no swap beyond it).
    pub memory_mb: u64,
    /// CPU limit in cores (0.5 = half a core).
    pub cpus: f64,
    /// Maximum number of processes/threads.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 256,
            cpus: 1.0,
            pids: 128,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// Past the budget, the agent is `Failed` until an operator resets it.
    Fail,
    /// Past the budget, wait until the window has room again, then restart.
    Delay,
}

/// Restart policy: `attempts` restarts per `interval_secs`, with a delay that doubles from
/// `delay_ms` up to `max_delay_ms`, with ±20% jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartSpec {
    pub mode: RestartMode,
    pub attempts: u32,
    pub interval_secs: u64,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            mode: RestartMode::Fail,
            attempts: 5,
            interval_secs: 300,
            delay_ms: 1000,
            max_delay_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network at all (the gateway is a Unix socket).
    None,
    /// Its own bridge network, no route out.
    Internal,
    /// Its own bridge network with egress, around the gateway: only where the daemon's
    /// config allows it (`allow_direct_egress`), and shown as ungoverned.
    Egress,
    /// Loopback only; HTTP(S) leaves through the egress proxy in the gateway, each request
    /// decided and audited. The default.
    Gateway,
}

/// `[health]`: a command run in the container (exit 0: healthy), or an HTTP GET of `http`
/// (a path) on `127.0.0.1:port` in the container (2xx/3xx: healthy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_health_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_health_retries")]
    pub retries: u32,
    /// Failures in the first seconds after a start do not count.
    #[serde(default)]
    pub start_period_secs: u64,
}

fn default_health_interval() -> u64 {
    30
}
fn default_health_timeout() -> u64 {
    5
}
fn default_health_retries() -> u32 {
    3
}

impl NetworkMode {
    /// Whether the agent gets a bridge network of its own (else loopback only).
    pub fn has_own_network(self) -> bool {
        matches!(self, NetworkMode::Internal | NetworkMode::Egress)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            mode: NetworkMode::Gateway,
        }
    }
}

/// The scripted workload the `agenfleet-agent` shim runs (demos and tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Text of the periodic log line.
    pub message: String,
    /// Print a log line every N ms (0: only at start).
    pub log_interval_ms: u64,
    /// Exit after this many ms (0: never).
    pub exit_after_ms: u64,
    /// The exit code when `exit_after_ms` elapses.
    pub exit_code: i32,
    /// Allocate and touch this many MiB per second (0: none) — to meet the memory limit.
    pub alloc_mb_per_sec: u64,
    /// Tool calls the shim makes in order, each one decided by the gateway first.
    pub tool_calls: Vec<ToolStep>,
    /// Pause between two tool calls, in ms.
    pub tool_call_interval_ms: u64,
    /// Run the list of tool calls this many times (0: forever).
    pub tool_call_rounds: u32,
    /// Model calls the shim makes in a loop (a real HTTP POST each, `{gateway}` in a URL
    /// standing for the host), each outcome reported to the gateway.
    pub model_calls: Vec<ModelStep>,
    pub model_call_interval_ms: u64,
}

/// One scripted model call, with an optional fallback provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStep {
    pub provider: String,
    pub url: String,
    #[serde(default)]
    pub fallback: Option<ModelTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTarget {
    pub provider: String,
    pub url: String,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            message: "working".to_string(),
            log_interval_ms: 1000,
            exit_after_ms: 0,
            exit_code: 0,
            alloc_mb_per_sec: 0,
            tool_calls: Vec::new(),
            tool_call_interval_ms: 1000,
            tool_call_rounds: 1,
            model_calls: Vec::new(),
            model_call_interval_ms: 1000,
        }
    }
}

/// One scripted tool call: `{ tool = "read_file", args = { path = "/data/x" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolStep {
    pub tool: String,
    /// The arguments as JSON text (written as a table in a spec file).
    #[serde(default = "empty_args", with = "json_text")]
    pub args: String,
}

fn empty_args() -> String {
    "{}".into()
}

/// Arguments travel as JSON text: a table or object in human-readable formats (TOML,
/// JSON), a plain string in bincode.
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let value: serde_json::Value =
                serde_json::from_str(v).map_err(serde::ser::Error::custom)?;
            value.serialize(s)
        } else {
            s.serialize_str(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            let value = serde_json::Value::deserialize(d)?;
            Ok(value.to_string())
        } else {
            String::deserialize(d)
        }
    }
}

/// A spec problem: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

fn err(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

pub use crate::names::check_name;

impl AgentSpec {
    /// Parses a TOML spec. Unknown fields, wrong types and missing required fields are errors
    /// that name the field (and the line).
    pub fn from_toml(text: &str) -> Result<AgentSpec, String> {
        toml::from_str::<AgentSpec>(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The memory limit in bytes.
    pub fn memory_limit_bytes(&self) -> u64 {
        self.limits.memory_mb * 1024 * 1024
    }

    /// A stable digest of the spec (hex), recorded on the container's labels.
    pub fn hash(&self) -> String {
        // JSON of a struct has a fixed field order, so this is stable for one version. A
        // spec that leaves the fields added since the first version at their defaults is
        // hashed as the first version did, so it keeps its hash — and its running
        // container — across an upgrade of the daemon.
        #[derive(Serialize)]
        struct First<'a> {
            name: &'a str,
            tenant: &'a str,
            project: &'a str,
            image: &'a str,
            limits: &'a Limits,
            restart: &'a RestartSpec,
            network: &'a NetworkSpec,
            workload: &'a Workload,
            credentials: &'a [CredentialUse],
            credential_refresh: CredentialRefresh,
            model_fallbacks: &'a [String],
        }
        let json = if self.command.is_empty()
            && self.workdir.is_empty()
            && self.env.is_empty()
            && self.health.is_none()
            && self.files.is_empty()
            && self.workspace.is_none()
            && self.providers.is_empty()
            && self.connections.is_empty()
            && self.budget.is_unlimited()
            && self.description.is_empty()
            && self.runs == RunsSpec::default()
            && self.placement.is_empty()
        {
            serde_json::to_vec(&First {
                name: &self.name,
                tenant: &self.tenant,
                project: &self.project,
                image: &self.image,
                limits: &self.limits,
                restart: &self.restart,
                network: &self.network,
                workload: &self.workload,
                credentials: &self.credentials,
                credential_refresh: self.credential_refresh,
                model_fallbacks: &self.model_fallbacks,
            })
        } else {
            serde_json::to_vec(&Hashed(self))
        };
        fnv1a_hex(&json.unwrap_or_default())
    }
}

/// A spec as its hash sees it: every field in declaration order, as the derived
/// `Serialize` writes them, except that the fields added after `model_fallbacks` are left
/// out while they hold their defaults — so a spec that does not use them keeps the hash it
/// had before they existed. (The wire and the store carry every field: bincode cannot skip
/// one.)
struct Hashed<'a>(&'a AgentSpec);

impl Serialize for Hashed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let a = self.0;
        let mut st = s.serialize_struct("AgentSpec", 20)?;
        st.serialize_field("name", &a.name)?;
        st.serialize_field("tenant", &a.tenant)?;
        st.serialize_field("project", &a.project)?;
        st.serialize_field("image", &a.image)?;
        st.serialize_field("command", &a.command)?;
        st.serialize_field("workdir", &a.workdir)?;
        st.serialize_field("env", &a.env)?;
        st.serialize_field("health", &a.health)?;
        st.serialize_field("files", &a.files)?;
        st.serialize_field("workspace", &a.workspace)?;
        st.serialize_field("limits", &a.limits)?;
        st.serialize_field("restart", &a.restart)?;
        st.serialize_field("network", &a.network)?;
        st.serialize_field("workload", &a.workload)?;
        st.serialize_field("credentials", &a.credentials)?;
        st.serialize_field("credential_refresh", &a.credential_refresh)?;
        st.serialize_field("model_fallbacks", &a.model_fallbacks)?;
        if !a.providers.is_empty() {
            st.serialize_field("providers", &a.providers)?;
        }
        if !a.connections.is_empty() {
            st.serialize_field("connections", &a.connections)?;
        }
        if !a.budget.is_unlimited() {
            st.serialize_field("budget", &a.budget)?;
        }
        if !a.description.is_empty() {
            st.serialize_field("description", &a.description)?;
        }
        if a.runs != RunsSpec::default() {
            st.serialize_field("runs", &HashedRuns(&a.runs))?;
        }
        if !a.placement.is_empty() {
            st.serialize_field("placement", &a.placement)?;
        }
        st.end()
    }
}

/// `runs` as its hash sees it: `kind` only when it is not the default (`service`), so a
/// spec from before job agents keeps its hash.
struct HashedRuns<'a>(&'a RunsSpec);

impl Serialize for HashedRuns<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let mut st = s.serialize_struct("RunsSpec", 4)?;
        st.serialize_field("max_concurrent", &r.max_concurrent)?;
        st.serialize_field("timeout_secs", &r.timeout_secs)?;
        st.serialize_field("queue", &r.queue)?;
        if r.kind != AgentKind::Service {
            st.serialize_field("kind", &r.kind)?;
        }
        st.end()
    }
}

/// Whether an environment variable's name says it holds a secret: `*_KEY`, `*_TOKEN`,
/// `*_SECRET`, anything with `PASSWORD`/`PASSWD` (any case), and the bare words.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "APIKEY", "CREDENTIALS"]
        .iter()
        .any(|w| n == *w || n.ends_with(&format!("_{w}")))
        || n.contains("PASSWORD")
        || n.contains("PASSWD")
}

/// 64-bit FNV-1a, hex. Only for change detection, not for security.
fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
