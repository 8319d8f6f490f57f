//! Daemon configuration: the TOML file (`--config`), its defaults, and the default paths
//! (XDG directories for a user, `/etc/agenfleet` and `/var/lib/agenfleet` for root). A
//! leaf: raw values and the checks that need nothing else; the values other modules own
//! (the subnet pool, the incident matrix) are parsed by them in `agenfleet_daemon::prepare`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: field `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The longest `purge_after_secs`: 30 days.
pub const MAX_PURGE_AFTER_SECS: u64 = 30 * 86_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the daemon keeps its database and files.
    pub state_dir: PathBuf,
    /// The operator socket.
    pub socket: PathBuf,
    /// Permission bits of the operator socket.
    pub socket_mode: u32,
    /// The group the socket (and a socket directory the daemon creates) belongs to, so
    /// the operators in it connect with no manual step; empty: the daemon's own group.
    pub socket_group: String,
    /// `host:port` where Prometheus scrapes `GET /metrics` (plain HTTP, no auth: keep it
    /// on loopback or a monitoring network); empty: off.
    pub metrics_listen: String,
    /// Largest frame accepted on the operator socket, in bytes.
    pub max_frame_bytes: usize,
    /// Connections the operator socket holds open at once, in all…
    pub max_connections: usize,
    /// …and per uid (a console, a few scripts and watches fit easily).
    pub max_connections_per_uid: usize,
    /// An operator connection with nothing read or written for this long is closed.
    pub idle_timeout_secs: u64,
    /// A request frame must arrive whole within this long of its first byte, and a peer
    /// must read its answers (a write that makes no progress this long closes); both
    /// sockets, operator and gateway.
    pub frame_timeout_secs: u64,
    /// Engine address; empty: `DOCKER_HOST` or the default socket.
    pub docker_host: String,
    /// How agents run: `containers` (each a container on this host) or `swarm` (each a
    /// replicated service of one task, placed, restarted and networked by Docker Swarm;
    /// the daemon runs on a Swarm manager).
    pub engine_mode: EngineMode,
    /// Swarm mode: the volume driver of agents' workspaces (`local`: a volume of the node
    /// the task runs on, left behind when Swarm moves the task; a driver whose volumes
    /// follow a task keeps the workspace across nodes).
    pub swarm_volume_driver: String,
    /// Swarm mode: whether agents' overlay networks are encrypted (IPsec between nodes;
    /// the nodes' kernels must offer ESP with AES-GCM). Off, what crosses between nodes —
    /// gateway tokens and credentials delivered over the gateway included — is in clear
    /// on the network between them: only for an underlay that is encrypted itself (a
    /// WireGuard mesh, say). Applies to networks made after the change.
    pub swarm_overlay_encrypted: bool,
    /// Log lines kept per agent.
    pub log_ring_lines: usize,
    /// How often CPU and memory of running agents are sampled (from their cgroups).
    pub stats_interval_ms: u64,
    /// Labelled containers that no agent owns are removed after this many seconds.
    pub orphan_grace_secs: u64,
    /// Seconds an agent gets to exit after SIGTERM before SIGKILL.
    pub stop_timeout_secs: u32,
    /// The pool from which per-agent networks get their subnets (IPv4 CIDR).
    pub network_pool: String,
    /// Prefix length of each agent's subnet.
    pub network_prefix: u8,
    /// Whether specs may ask for `network.mode = "egress"` (a network around the gateway:
    /// its traffic is neither decided nor audited).
    pub allow_direct_egress: bool,
    /// The uid and gid agents run as inside their containers.
    pub agent_user: String,
    /// Where the audit log lives; empty: `<state_dir>/audit`.
    pub audit_dir: PathBuf,
    /// A signed checkpoint every this many audit records…
    pub audit_checkpoint_every: u64,
    /// …or every this many seconds, whichever comes first. The records appended are read
    /// back and checked for tampering at the same interval.
    pub audit_checkpoint_secs: u64,
    /// A new audit segment is started past this size (retention removes whole segments).
    pub audit_segment_bytes: u64,
    /// The whole audit log is verified in the background this often (0: only at start
    /// and on `agenfleet audit verify`).
    pub audit_verify_secs: u64,
    /// A deleted agent's data (record, credentials, workspace, memory) is purged this many
    /// seconds after the deletion (its container, network and gateway go at once). 0: at
    /// once; at most 30 days (the data-isolation promise).
    pub purge_after_secs: u64,
    /// Each agent's memory (`/v1/memory`): the largest value, and its quota in keys and
    /// in bytes of values.
    pub memory_max_value_bytes: u64,
    pub memory_max_keys: u64,
    pub memory_max_bytes: u64,
    /// An approved escalation also allows a retry of the very same request for this long.
    pub approval_ttl_secs: u64,
    /// An operator's file of extra incident scenarios (same shape as
    /// `assets/responsibility.toml`); empty: the built-in matrix only.
    pub incident_matrix: PathBuf,
    /// A crash loop: this many exits of one agent…
    pub crash_loop_exits: u32,
    /// …within this many seconds.
    pub crash_loop_window_secs: u64,
    /// A denial spike: this many denied tool calls of one agent…
    pub denial_spike: u32,
    /// …within this many seconds.
    pub denial_window_secs: u64,
    /// Resolved incidents (and deliveries given up) are removed this many days after
    /// (fractions allowed); 0: kept.
    pub incident_retention_days: f64,
    /// Whole audit segments whose every record is older than this many days (a tenant's
    /// own setting, `tenants set T --audit-retention-days N`, for its records) are removed,
    /// the log then starting at a signed anchor; 0: kept.
    pub audit_retention_days: f64,
    /// How often the audit retention is applied.
    pub audit_retention_check_secs: u64,
    /// Where each party's incidents go (and, `party = "reviewers"`, escalations).
    pub incident_route: Vec<RouteConfig>,
    /// When unacknowledged incidents are delivered again.
    pub escalation: EscalationDelays,
    /// The inbound webhook listener (`[http]`; off unless `listen` is set).
    pub http: HttpConfig,
    /// The file this config was read from (named in errors); not a config key.
    #[serde(skip)]
    pub source: PathBuf,
}

/// How agents run (`engine_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineMode {
    /// Each agent a container on the daemon's own host.
    #[default]
    Containers,
    /// Each agent a Swarm service with one replica.
    Swarm,
}

/// One destination of a party's incidents (or of escalations, `party = "reviewers"`): a
/// webhook (http or https) or a local command. Which route an incident goes to: among the
/// routes of its party that match it (tenant, provider or connection, minimum severity),
/// the most specific — provider or connection first, then tenant, then the party's own.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// How deliveries and `agenfleet incidents routes` name it (default: made from the
    /// party and the target). Unique.
    #[serde(default)]
    pub name: String,
    /// platform | model_provider | tool_provider | client, or `reviewers` (escalated
    /// tool calls waiting for a person).
    pub party: String,
    /// Only this tenant's incidents (or escalations).
    #[serde(default)]
    pub tenant: String,
    /// Only this project's escalations (`reviewers` routes, with `tenant`).
    #[serde(default)]
    pub project: String,
    /// Only incidents about this provider…
    #[serde(default)]
    pub provider: String,
    /// …or this connection.
    #[serde(default)]
    pub connection: String,
    /// Only incidents at least this severe (critical, error, warning, info).
    #[serde(default)]
    pub min_severity: String,
    /// `http(s)://host[:port]/path` (IPv6 literals in brackets): POSTed each event. With
    /// `format = "pagerduty"` it defaults to PagerDuty's Events v2 enqueue endpoint.
    #[serde(default)]
    pub webhook: String,
    /// A file holding the webhook's HMAC secret (never in this config); required for the
    /// `agenfleet` format, optional for the others (sent when given).
    #[serde(default)]
    pub secret_file: PathBuf,
    /// PEM certificates trusted for this webhook besides the system roots.
    #[serde(default)]
    pub ca_file: PathBuf,
    /// `agenfleet` (default: our JSON), `pagerduty` (Events v2) or `chat` (`{"text": …}`
    /// for Slack, Mattermost, Teams and most chat webhooks).
    #[serde(default)]
    pub format: String,
    /// PagerDuty routing key, for `format = "pagerduty"`.
    #[serde(default)]
    pub routing_key: String,
    /// A command run with the event as JSON on stdin (instead of a webhook).
    #[serde(default)]
    pub command: Vec<String>,
    /// Delivery attempts before giving up (default 8; backoff 1 s doubling to 60 s).
    #[serde(default)]
    pub max_attempts: u32,
}

/// PagerDuty's Events v2 endpoint, where a `pagerduty` route without a `webhook` sends.
pub const PAGERDUTY_ENQUEUE: &str = "https://events.pagerduty.com/v2/enqueue";

/// When an unacknowledged incident is delivered again, per severity (0: never).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationDelays {
    /// A critical incident goes to its party again after this many minutes…
    pub critical_repeat_mins: u64,
    /// …and to the platform after this many (when it is not the platform's already).
    pub critical_platform_mins: u64,
    pub error_repeat_mins: u64,
    pub warning_repeat_mins: u64,
    /// A reminder of a pending escalation this many seconds before its deadline (when its
    /// timeout is longer than twice that); 0: none.
    pub review_reminder_secs: u64,
}

impl Default for EscalationDelays {
    fn default() -> Self {
        EscalationDelays {
            critical_repeat_mins: 5,
            critical_platform_mins: 15,
            error_repeat_mins: 30,
            warning_repeat_mins: 0,
            review_reminder_secs: 60,
        }
    }
}

/// The daemon's inbound webhook listener: where subscriptions' signed requests start runs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port`; empty: no listener (webhooks refused by construction).
    pub listen: String,
    /// PEM certificate chain and private key: the listener speaks TLS (direct exposure).
    /// Empty: plain HTTP (loopback, or behind a reverse proxy that terminates TLS).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The URL senders reach the listener at (a proxy's, say), shown by `triggers add`.
    pub public_url: String,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// How far a request's `X-AgenFleet-Timestamp` may be from now, either way.
    pub skew_secs: u64,
    /// Take the source address recorded with a rejection from `X-Forwarded-For` (set it
    /// only behind a proxy that overwrites that header).
    pub forwarded_for: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            public_url: String::new(),
            max_body_bytes: agenfleet_protocol::runs::MAX_RUN_INPUT,
            skew_secs: 300,
            forwarded_for: false,
        }
    }
}

impl HttpConfig {
    /// The base URL shown with a subscription: `public_url`, else the listener's own.
    pub fn base_url(&self) -> Option<String> {
        if !self.public_url.is_empty() {
            return Some(self.public_url.trim_end_matches('/').to_string());
        }
        if self.listen.is_empty() {
            return None;
        }
        let scheme = if self.tls_cert.as_os_str().is_empty() {
            "http"
        } else {
            "https"
        };
        Some(format!("{scheme}://{}", self.listen))
    }

    fn check(&self) -> Result<(), String> {
        if !self.listen.is_empty() {
            self.listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| format!("listen `{}` is not host:port: {e}", self.listen))?;
        }
        if self.tls_cert.as_os_str().is_empty() != self.tls_key.as_os_str().is_empty() {
            return Err("give both `tls_cert` and `tls_key`, or neither".into());
        }
        if !self.public_url.is_empty() {
            let u = url::Url::parse(&self.public_url)
                .map_err(|e| format!("public_url `{}` is not a URL: {e}", self.public_url))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!(
                    "public_url `{}` is not http or https",
                    self.public_url
                ));
            }
        }
        if !(1024..=agenfleet_protocol::runs::MAX_RUN_INPUT).contains(&self.max_body_bytes) {
            return Err(format!(
                "max_body_bytes must be between 1024 and {} (a run's largest input)",
                agenfleet_protocol::runs::MAX_RUN_INPUT
            ));
        }
        if !(1..=3600).contains(&self.skew_secs) {
            return Err("skew_secs must be between 1 and 3600".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        let (state_dir, socket) = default_paths();
        Config {
            state_dir,
            socket,
            socket_mode: 0o660,
            socket_group: String::new(),
            metrics_listen: String::new(),
            max_frame_bytes: agenfleet_protocol::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            max_connections_per_uid: 64,
            idle_timeout_secs: 300,
            frame_timeout_secs: 15,
            docker_host: String::new(),
            log_ring_lines: 2000,
            stats_interval_ms: 2000,
            orphan_grace_secs: 60,
            stop_timeout_secs: 5,
            network_pool: "10.213.0.0/16".into(),
            network_prefix: 28,
            allow_direct_egress: false,
            engine_mode: EngineMode::Containers,
            swarm_volume_driver: "local".into(),
            swarm_overlay_encrypted: true,
            agent_user: "65534:65534".into(),
            audit_dir: PathBuf::new(),
            audit_checkpoint_every: 1000,
            audit_checkpoint_secs: 10,
            audit_segment_bytes: crate::audit::SEGMENT_BYTES,
            audit_verify_secs: 3600,
            purge_after_secs: 0,
            memory_max_value_bytes: 256 * 1024,
            memory_max_keys: 100_000,
            memory_max_bytes: 256 * 1024 * 1024,
            approval_ttl_secs: 600,
            incident_matrix: PathBuf::new(),
            crash_loop_exits: 3,
            crash_loop_window_secs: 300,
            denial_spike: 20,
            denial_window_secs: 60,
            incident_route: Vec::new(),
            incident_retention_days: 90.0,
            audit_retention_days: 0.0,
            audit_retention_check_secs: 3600,
            escalation: EscalationDelays::default(),
            http: HttpConfig::default(),
            source: PathBuf::new(),
        }
    }
}

/// Largest config, matrix or secret file read: a path that names a device or a huge file
/// (`/dev/zero`) is an error, not a hang.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file of at most `MAX_FILE_BYTES`.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(buf)
}

/// Reads a UTF-8 text file of at most `MAX_FILE_BYTES`.
pub fn read_text_bounded(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Default state dir and socket for this user.
pub fn default_paths() -> (PathBuf, PathBuf) {
    agenfleet_protocol::default_paths(is_root())
}

/// Default config file path for this user.
pub fn default_config_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/agenfleet/agenfleetd.toml");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"))
        .join("agenfleet")
        .join("agenfleetd.toml")
}

impl RouteConfig {
    /// Whether it carries escalations to reviewers (else incidents to a party).
    pub fn for_reviewers(&self) -> bool {
        self.party == "reviewers"
    }

    /// The webhook it posts to (PagerDuty's endpoint by default for that format).
    pub fn webhook_url(&self) -> &str {
        if self.webhook.is_empty() && self.format == "pagerduty" && self.command.is_empty() {
            PAGERDUTY_ENQUEUE
        } else {
            &self.webhook
        }
    }

    /// Checks the route; the reason names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let reviewers = self.for_reviewers();
        if !reviewers && agenfleet_protocol::incidents::Party::parse(&self.party).is_none() {
            return Err(format!(
                "unknown party `{}` (platform, model_provider, tool_provider, client, or reviewers for escalations)",
                self.party
            ));
        }
        if !self.tenant.is_empty() {
            agenfleet_protocol::names::check_name("tenant", &self.tenant)?;
        }
        if !self.project.is_empty() {
            if !reviewers || self.tenant.is_empty() {
                return Err("`project` is for reviewers routes, with a `tenant`".into());
            }
            agenfleet_protocol::names::check_name("project", &self.project)?;
        }
        if !self.provider.is_empty() && !self.connection.is_empty() {
            return Err("give a `provider` or a `connection`, not both".into());
        }
        for (field, v) in [
            ("provider", &self.provider),
            ("connection", &self.connection),
        ] {
            if v.is_empty() {
                continue;
            }
            if reviewers {
                return Err(format!("`{field}` is for incident routes, not reviewers"));
            }
            agenfleet_protocol::names::check_name(field, v)?;
        }
        if !self.min_severity.is_empty() {
            if reviewers {
                return Err("`min_severity` is for incident routes, not reviewers".into());
            }
            if agenfleet_protocol::incidents::Severity::parse(&self.min_severity).is_none() {
                return Err(format!(
                    "min_severity `{}` is not critical, error, warning or info",
                    self.min_severity
                ));
            }
        }
        if !matches!(
            self.format.as_str(),
            "" | "agenfleet" | "pagerduty" | "chat"
        ) {
            return Err(format!(
                "format `{}` is not agenfleet, pagerduty or chat",
                self.format
            ));
        }
        if self.format == "pagerduty" && self.routing_key.trim().is_empty() {
            return Err("format `pagerduty` needs a `routing_key`".into());
        }
        let webhook = self.webhook_url();
        match (webhook.is_empty(), self.command.is_empty()) {
            (true, true) => return Err("give a `webhook` URL or a `command`".into()),
            (false, false) => return Err("give a `webhook` or a `command`, not both".into()),
            _ => {}
        }
        if !webhook.is_empty() {
            let url = url::Url::parse(webhook)
                .map_err(|e| format!("webhook `{webhook}` is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "webhook `{webhook}`: scheme `{}` is not http or https",
                    url.scheme()
                ));
            }
            if url.host_str().is_none() {
                return Err(format!("webhook `{webhook}` has no host"));
            }
            let signed = matches!(self.format.as_str(), "" | "agenfleet");
            if self.secret_file.as_os_str().is_empty() {
                if signed {
                    return Err(
                        "a webhook in the agenfleet format needs `secret_file` (its HMAC secret)"
                            .into(),
                    );
                }
            } else {
                let secret = read_bounded(&self.secret_file).map_err(|e| {
                    format!(
                        "cannot read secret_file {}: {e}",
                        self.secret_file.display()
                    )
                })?;
                if secret.iter().filter(|b| !b.is_ascii_whitespace()).count() < 16 {
                    return Err(format!(
                        "secret_file {} holds less than 16 bytes",
                        self.secret_file.display()
                    ));
                }
            }
            if !self.ca_file.as_os_str().is_empty() {
                if url.scheme() != "https" {
                    return Err("`ca_file` is for https webhooks".into());
                }
                let pem = read_text_bounded(&self.ca_file)
                    .map_err(|e| format!("cannot read ca_file {}: {e}", self.ca_file.display()))?;
                crate::upstreams::parse_ca(&pem)
                    .map_err(|e| format!("{}: {e}", self.ca_file.display()))?;
            }
        } else if !self.ca_file.as_os_str().is_empty() || !self.secret_file.as_os_str().is_empty() {
            return Err("`ca_file` and `secret_file` are for webhooks, not commands".into());
        }
        if self.max_attempts > 100 {
            return Err("max_attempts must be at most 100".into());
        }
        Ok(())
    }
}

impl Config {
    /// The audit log's directory.
    pub fn audit_dir(&self) -> PathBuf {
        if self.audit_dir.as_os_str().is_empty() {
            self.state_dir.join("audit")
        } else {
            self.audit_dir.clone()
        }
    }

    /// Loads `path`; a missing file at the *default* path means "all defaults".
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_config_path(), false),
        };
        let text = match read_text_bounded(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config {
                    source: path,
                    ..Config::default()
                })
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&text, path)
    }

    /// Parses and validates a config's text (`path` names it in errors).
    pub fn parse(text: &str, path: PathBuf) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate()
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: path.clone(),
                field: field.into(),
                reason,
            })?;
        cfg.source = path;
        Ok(cfg)
    }

    /// An error about `field` of this config.
    pub fn invalid(&self, field: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            field: field.into(),
            reason,
        }
    }

    /// Checks the values this module can judge alone; the subnet pool and the incident
    /// matrix are parsed (and judged) by their owners, once, in `agenfleet_daemon::prepare`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_frame_bytes < 4096 || self.max_frame_bytes > 256 * 1024 * 1024 {
            return Err((
                "max_frame_bytes",
                "must be between 4096 and 268435456".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(("max_connections", "must be between 1 and 1000000".into()));
        }
        if self.max_connections_per_uid == 0 || self.max_connections_per_uid > self.max_connections
        {
            return Err((
                "max_connections_per_uid",
                format!(
                    "must be between 1 and max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        if !(30..=86_400).contains(&self.idle_timeout_secs) {
            return Err((
                "idle_timeout_secs",
                "must be between 30 and 86400 (a console's watch is silent up to 25 s)".into(),
            ));
        }
        if self.swarm_volume_driver.is_empty()
            || !self
                .swarm_volume_driver
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
        {
            return Err((
                "swarm_volume_driver",
                "must be a volume driver's name (`local`, or a plugin's `name[:tag]`)".into(),
            ));
        }
        if !(1..=3600).contains(&self.frame_timeout_secs) {
            return Err(("frame_timeout_secs", "must be between 1 and 3600".into()));
        }
        if self.log_ring_lines == 0 || self.log_ring_lines > 1_000_000 {
            return Err(("log_ring_lines", "must be between 1 and 1000000".into()));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.audit_segment_bytes) {
            return Err((
                "audit_segment_bytes",
                "must be between 65536 and 1073741824".into(),
            ));
        }
        if self.audit_checkpoint_every == 0 || self.audit_checkpoint_secs == 0 {
            return Err((
                "audit_checkpoint_every",
                "checkpoints need a record count and an interval above 0".into(),
            ));
        }
        if self.stats_interval_ms < 200 {
            return Err(("stats_interval_ms", "must be at least 200".into()));
        }
        if self.purge_after_secs > MAX_PURGE_AFTER_SECS {
            return Err((
                "purge_after_secs",
                format!(
                    "must be at most {MAX_PURGE_AFTER_SECS} (30 days: a deleted agent's data, its memory included, goes within 30 days)"
                ),
            ));
        }
        if !(1..=agenfleet_protocol::gateway::MAX_LOCAL_API_BODY as u64)
            .contains(&self.memory_max_value_bytes)
        {
            return Err((
                "memory_max_value_bytes",
                format!(
                    "must be between 1 and {} (the local API's largest body)",
                    agenfleet_protocol::gateway::MAX_LOCAL_API_BODY
                ),
            ));
        }
        if self.memory_max_keys == 0 || self.memory_max_bytes < self.memory_max_value_bytes {
            return Err((
                "memory_max_keys",
                "memory_max_keys must be above 0 and memory_max_bytes at least memory_max_value_bytes".into(),
            ));
        }
        if self.crash_loop_exits < 2 || self.denial_spike < 2 {
            return Err((
                "crash_loop_exits",
                "crash_loop_exits and denial_spike must be at least 2".into(),
            ));
        }
        if !(0.0..=36_500.0).contains(&self.audit_retention_days) {
            return Err((
                "audit_retention_days",
                "must be between 0 (keep) and 36500".into(),
            ));
        }
        if !(1..=86_400).contains(&self.audit_retention_check_secs) {
            return Err((
                "audit_retention_check_secs",
                "must be between 1 and 86400".into(),
            ));
        }
        if !(0.0..=36_500.0).contains(&self.incident_retention_days) {
            return Err((
                "incident_retention_days",
                "must be between 0 (keep) and 36500".into(),
            ));
        }
        if !self.metrics_listen.is_empty() {
            self.metrics_listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| {
                    (
                        "metrics_listen",
                        format!("`{}` is not host:port: {e}", self.metrics_listen),
                    )
                })?;
        }
        self.http.check().map_err(|e| ("http", e))?;
        if !self.socket_group.is_empty() {
            crate::service::group_id(&self.socket_group).map_err(|e| ("socket_group", e))?;
        }
        let mut names = std::collections::HashMap::new();
        for (i, r) in self.incident_route.iter().enumerate() {
            r.check().map_err(|why| {
                (
                    "incident_route",
                    format!("[{i}] (party {}): {why}", r.party),
                )
            })?;
            if !r.name.is_empty() {
                if let Some(j) = names.insert(r.name.as_str(), i) {
                    return Err((
                        "incident_route",
                        format!("[{i}]: name `{}` is taken by incident_route[{j}]", r.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("agf-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "stat_dir = \"/x\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("stat_dir"), "{e}");
        std::fs::write(&p, "idle_timeout_secs = 5\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("idle_timeout_secs"), "{e}");
        std::fs::write(&p, "log_ring_lines = 50\n").unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().log_ring_lines, 50);
        let missing = dir.join("missing.toml");
        assert!(
            Config::load(Some(&missing)).is_err(),
            "explicit missing file must fail"
        );
    }
}
