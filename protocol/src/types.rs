//! Wire types: agent references, views of agents and of the daemon, watch deltas, logs.
//! Everything here is plain data (bincode-friendly: no untagged or internally tagged enums).

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::names::{DEFAULT_PROJECT, DEFAULT_TENANT};

/// How a caller names an agent: `name` or `tenant/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentRef {
    pub tenant: Option<String>,
    pub name: String,
}

impl AgentRef {
    /// Parses `name` or `tenant/name`.
    pub fn parse(s: &str) -> Result<AgentRef, String> {
        let s = s.trim();
        let (tenant, name) = match s.split_once('/') {
            Some((t, n)) => (Some(t.to_string()), n.to_string()),
            None => (None, s.to_string()),
        };
        crate::names::check_name("agent", &name)?;
        if let Some(t) = &tenant {
            crate::names::check_name("tenant", t)?;
        }
        Ok(AgentRef { tenant, name })
    }
}

impl fmt::Display for AgentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{t}/{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// What the operator wants the agent to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What the agent is actually doing, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum AgentState {
    /// Accepted; the container is being prepared (image, network, create).
    Pending,
    /// Container started and running.
    Running,
    /// Exited; waiting for the backoff delay before the next restart.
    BackingOff,
    /// Stopped by an operator; stays stopped.
    Stopped,
    /// Past its restart budget (or could not be created); stays down until `reset`.
    Failed,
    /// The engine cannot be reached; the last known state is stale.
    Unknown,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Pending => "pending",
            AgentState::Running => "running",
            AgentState::BackingOff => "backing-off",
            AgentState::Stopped => "stopped",
            AgentState::Failed => "failed",
            AgentState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the agent's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: i64,
    pub oom_killed: bool,
    /// Killed by the supervisor after failing its health check.
    #[serde(default)]
    pub unhealthy: bool,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Why it ended when no exit code says (swarm mode: Swarm's word on a task that was
    /// rejected or never started, "No such image: …" on a node without the image).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One agent as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub tenant: String,
    pub project: String,
    pub name: String,
    pub image: String,
    pub state: AgentState,
    pub desired: DesiredState,
    pub container_id: Option<String>,
    /// Unix ms when the current container run started.
    pub started_at_ms: Option<u64>,
    /// Restarts done by the supervisor since the agent was created or last reset.
    pub restarts: u32,
    /// Restarts inside the current policy window / attempts the policy allows.
    pub restarts_in_window: u32,
    pub restart_budget: u32,
    /// Unix ms of the next scheduled restart (state `BackingOff`).
    pub next_restart_at_ms: Option<u64>,
    pub last_exit: Option<ExitInfo>,
    /// A sentence for the operator: why it failed, what it waits for.
    pub message: Option<String>,
    /// CPU use in percent of one core (sampled).
    pub cpu_percent: Option<f32>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: u64,
    pub spec_hash: String,
    /// The version of the spec in force (`agents history`).
    #[serde(default)]
    pub spec_version: u32,
    /// The spec's description.
    #[serde(default)]
    pub description: String,
    pub created_at_ms: u64,
    /// Tool calls of this agent waiting for a person (escalations).
    #[serde(default)]
    pub escalations: u32,
    /// The spec's `command` (empty: the image's own program), `workdir` and `env`.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub workdir: String,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// `network.mode = "egress"`: it reaches hosts around the gateway, undecided and
    /// unaudited (shown as UNGOVERNED EGRESS).
    #[serde(default)]
    pub ungoverned_egress: bool,
    /// The engine's verdict on a running agent with a `[health]` check: "healthy" or
    /// "unhealthy" (None: no check, or no verdict yet).
    #[serde(default)]
    pub health: Option<String>,
    /// Each credential and how it reaches the program (never a value).
    #[serde(default)]
    pub credentials: Vec<CredentialView>,
    /// Its model calls since 00:00 UTC, through its providers (published at most once a
    /// second while they change).
    #[serde(default)]
    pub usage_today: crate::upstream::UsageTotals,
    /// The spec's `[[files]]`: where each comes from and where the program sees it.
    #[serde(default)]
    pub files: Vec<FileView>,
    /// The size of the agent's `/workspace` in MiB (None: no workspace).
    #[serde(default)]
    pub workspace_mb: Option<u64>,
    /// The providers and connections it may call through the gateway, as
    /// `provider NAME` / `connection NAME` (+ ` (tls_inspect)`; ` (missing)` when the
    /// tenant no longer has it).
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Swarm mode: the node its task runs on (hostname; None in container mode or while
    /// no task is placed).
    #[serde(default)]
    pub node: Option<String>,
    /// Swarm mode: its current task's id, and that task's state as Swarm reports it
    /// (`running`, `pending`, `failed`…).
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub task_state: Option<String>,
}

impl AgentView {
    /// An agent known by its names, image and state only: meant to run, no container
    /// yet, nothing sampled or counted (what tests, benches and synthetic fleets start
    /// from; the daemon fills in every field of the views it serves).
    pub fn new(tenant: &str, project: &str, name: &str, image: &str, state: AgentState) -> Self {
        AgentView {
            tenant: tenant.into(),
            project: project.into(),
            name: name.into(),
            image: image.into(),
            state,
            desired: DesiredState::Running,
            container_id: None,
            started_at_ms: None,
            restarts: 0,
            restarts_in_window: 0,
            restart_budget: 0,
            next_restart_at_ms: None,
            last_exit: None,
            message: None,
            cpu_percent: None,
            memory_bytes: None,
            memory_limit_bytes: 0,
            spec_hash: String::new(),
            spec_version: 1,
            description: String::new(),
            created_at_ms: 0,
            escalations: 0,
            command: Vec::new(),
            workdir: String::new(),
            env: Default::default(),
            ungoverned_egress: false,
            health: None,
            credentials: Vec::new(),
            usage_today: Default::default(),
            files: Vec::new(),
            workspace_mb: None,
            upstreams: Vec::new(),
            node: None,
            task: None,
            task_state: None,
        }
    }
}

/// One of an agent's credentials, as `agents show` lists it: its name, how it is
/// delivered (`api`, `file`, `env`) and where (the file's path or the variable's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub name: String,
    #[serde(rename = "as")]
    pub delivery: crate::spec::Delivery,
    pub to: Option<String>,
}

impl CredentialView {
    pub fn of(c: &crate::spec::CredentialUse) -> CredentialView {
        use crate::spec::Delivery;
        CredentialView {
            name: c.name.clone(),
            delivery: c.delivery,
            to: match c.delivery {
                Delivery::Api => None,
                Delivery::File => Some(c.file_path()),
                Delivery::Env => Some(c.env_var()),
            },
        }
    }

    /// For people: `api`, `file /run/agenfleet/secrets/x`, `env X`.
    pub fn describe(&self) -> String {
        match &self.to {
            Some(to) => format!("{} {to}", self.delivery.as_str()),
            None => self.delivery.as_str().to_string(),
        }
    }
}

/// One of an agent's read-only files, as `agents show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub source: String,
    pub target: String,
    pub bytes: u64,
    /// The first 16 hex digits of the content's SHA-256.
    pub sha256: String,
}

impl FileView {
    pub fn of(f: &crate::spec::FileSpec) -> FileView {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&f.content);
        FileView {
            source: f.source.clone(),
            target: f.target.clone(),
            bytes: f.content.len() as u64,
            sha256: d[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl AgentView {
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }
}

/// start | stop | restart | reset | rotate-token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentAction {
    Start,
    Stop,
    Restart,
    Reset,
    /// Swarm mode: a new gateway token (a new Swarm secret, the task replaced to mount
    /// it); the old one is refused from that moment.
    RotateToken,
}

impl AgentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAction::Start => "start",
            AgentAction::Stop => "stop",
            AgentAction::Restart => "restart",
            AgentAction::Reset => "reset",
            AgentAction::RotateToken => "rotate-token",
        }
    }
}

/// Who the daemon thinks the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerInfo {
    pub uid: u32,
    pub operator: String,
    /// `platform_admin`, `member` (roles in `bindings`), or `none` (unknown uid).
    pub role: String,
    pub bindings: Vec<RoleBinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub daemon_version: String,
    pub caller: CallerInfo,
    pub max_frame_bytes: u64,
}

/// Where the daemon keeps things on its host, for `agenfleet info` (platform admins;
/// others see only what every operator sees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub daemon_version: String,
    pub protocol_version: u32,
    pub instance_id: String,
    /// The config file in force (None: built-in defaults, no file at the default path).
    pub config_file: Option<String>,
    pub state_dir: Option<String>,
    pub audit_dir: Option<String>,
    pub socket: Option<String>,
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://…`).
    pub engine_address: Option<String>,
    pub engine_version: Option<String>,
    pub engine_api_version: Option<String>,
    /// Where the vault's master key and the audit signing key live.
    pub keyring: String,
}

/// What the daemon keeps, for how long, and what goes when (`agenfleet retention`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Deleted agents' data is purged this long after the deletion (0: at once).
    pub purge_after_secs: u64,
    /// Resolved incidents are removed this long after their resolution (0: kept).
    pub incident_retention_days: f64,
    /// Deleted agents whose data waits: (tenant/agent, when it goes).
    pub agent_purges: Vec<(String, u64)>,
    /// Deleted tenants whose projects and record wait for their agents' purges.
    pub tenant_purges: Vec<String>,
    /// Resolved incidents kept now, and when the oldest of them goes (None: never).
    pub resolved_incidents: u32,
    pub next_incident_removal_ms: Option<u64>,
    /// Audit segments go when every record in them is past this many days (0: kept).
    pub audit_retention_days: f64,
    /// Tenants with an audit retention of their own: (tenant, days; 0: for ever).
    pub audit_tenant_retention: Vec<(String, f64)>,
    /// Segments kept now, the one being written included.
    pub audit_segments: u32,
    /// Where the kept log starts, if retention removed its beginning.
    pub audit_anchor: Option<crate::audit::Checkpoint>,
    /// When the oldest kept segment goes (None: never, or it is the one being written).
    pub next_audit_removal_ms: Option<u64>,
    /// What is kept with no time limit yet, said plainly.
    pub kept: Vec<String>,
}

/// A tenant's own settings (`agenfleet tenants set`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantSettings {
    pub tenant: String,
    /// Its records' audit retention in days (None: the platform's; 0: for ever).
    pub audit_retention_days: Option<f64>,
}

/// A tenant as `agenfleet tenants list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub tenant: String,
    /// `standard` (rows in the shared database, behind the tenant guard) or `dedicated`
    /// (a database file of its own).
    pub tier: String,
    /// Its database file (dedicated), relative to the state dir.
    pub file: Option<String>,
    /// Agents in it (not counting deleted ones waiting for their purge).
    pub agents: u32,
    /// Its records' audit retention in days (None: the platform's; 0: for ever).
    pub audit_retention_days: Option<f64>,
}

/// One table of a tenant's move: the same row count and digest on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedTable {
    pub table: String,
    pub rows: u64,
    /// SHA-256 over every value of every row, in one fixed order.
    pub sha256: String,
}

/// What `agenfleet tenants move` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantMoved {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub tables: Vec<MovedTable>,
    /// How long every other database statement waited for the move.
    pub held_ms: u64,
}

/// The container engine as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub connected: bool,
    pub version: Option<String>,
    pub api_version: Option<String>,
    /// Why it is not connected.
    pub error: Option<String>,
}

/// Daemon-level facts that the console shows in its header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub started_at_ms: u64,
    pub instance_id: String,
    pub engine: EngineInfo,
    /// Labelled containers that no agent owns, pending removal.
    pub orphans: Vec<String>,
    /// False once the audit log failed or found damage: every mutation is refused.
    pub audit_writable: bool,
    pub audit_problem: Option<String>,
    /// Sealed, unsealed or uninitialised.
    pub vault: crate::vault::VaultState,
    /// Long operations in progress (image builds, the agents' resync after an unseal).
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// A long operation in progress, as far as it has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    /// What it is, for a person ("building image acme/bot:1", "unseal: resyncing agents").
    pub what: String,
    pub done: u64,
    /// 0: not known yet.
    pub total: u64,
    /// What is counted ("steps", "agents", "bytes").
    pub unit: String,
    pub started_ms: u64,
}

impl Operation {
    /// "3/7 steps" ("3 steps" while the total is not known).
    pub fn progress(&self) -> String {
        if self.total == 0 {
            format!("{} {}", self.done, self.unit)
        } else {
            format!("{}/{} {}", self.done, self.total, self.unit)
        }
    }

    /// Done as a fraction of the total (0 while it is not known).
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateCount {
    pub state: AgentState,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub daemon: DaemonInfo,
    pub caller: CallerInfo,
    pub revision: u64,
    pub counts: Vec<StateCount>,
    pub agents: Vec<AgentView>,
}

/// One change to the fleet state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// The agent was created or changed; this is its whole new view.
    Agent(Box<AgentView>),
    /// The agent was deleted.
    Removed { tenant: String, name: String },
    /// Daemon-level facts changed.
    Daemon(DaemonInfo),
    /// An incident was raised or changed; this is its whole new view.
    Incident(Box<crate::incidents::Incident>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReply {
    /// Identifies one run of the daemon; revisions restart with it.
    pub epoch: u64,
    pub revision: u64,
    /// When true, `changes` is a full snapshot: forget what you had.
    pub reset: bool,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    /// Unix ms, from the engine's timestamp.
    pub ts_ms: u64,
    pub stream: LogStream,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub lines: Vec<LogLine>,
    /// Ask for this next.
    pub next_seq: u64,
    /// Lines the caller asked for that the ring buffer had already dropped.
    pub missed: u64,
    /// Lines dropped by this agent's ring buffer since the daemon started.
    pub dropped_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub tag: String,
    pub id: String,
    pub built: bool,
    pub size_bytes: u64,
    /// The last lines the engine printed while building (empty when nothing was built).
    #[serde(default)]
    pub log: Vec<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ref_parses_both_forms_and_rejects_bad_names() {
        assert_eq!(
            AgentRef::parse("web-1").unwrap(),
            AgentRef {
                tenant: None,
                name: "web-1".into()
            }
        );
        let r = AgentRef::parse("acme/web-1").unwrap();
        assert_eq!(r.tenant.as_deref(), Some("acme"));
        assert_eq!(r.to_string(), "acme/web-1");
        assert!(AgentRef::parse("Web 1").is_err());
        assert!(AgentRef::parse("a/b/c").is_err());
        assert!(AgentRef::parse("").is_err());
    }
}

/// A role held by an operator, at a tenant or at one project of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleBinding {
    /// `tenant_admin`, `project_admin`, `project_contributor` or `project_viewer`.
    pub role: String,
    pub tenant: String,
    /// None for tenant-wide roles.
    pub project: Option<String>,
}

impl fmt::Display for RoleBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{} on {}/{p}", self.role, self.tenant),
            None => write!(f, "{} on {}", self.role, self.tenant),
        }
    }
}

/// An operator known to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    pub uid: u32,
    pub name: String,
    pub platform_admin: bool,
    pub bindings: Vec<RoleBinding>,
}

/// A personal access token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// Who created it (uid); it can never do more than they could.
    pub creator_uid: u32,
    pub tenant: String,
    pub project: Option<String>,
    pub permissions: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// A token just created: the secret is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub info: TokenInfo,
    pub secret: crate::secret::SecretValue,
}
