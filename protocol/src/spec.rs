//! Agent specs: the file an operator writes (`agents create -f FILE`), its parsing, and its
//! validation. Every error names the field and the reason; a spec that fails validation is
//! never stored. The daemon validates again whatever a client sends.

use serde::{Deserialize, Serialize};
use std::fmt;

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
}

/// Where an agent's workspace is mounted in its container.
pub const WORKSPACE_IN_CONTAINER: &str = "/workspace";
/// At most this many `[[files]]`, each at most `MAX_FILE_BYTES`, all together at most
/// `MAX_FILES_BYTES` (a spec travels in one frame).
pub const MAX_FILES: usize = 64;
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
pub const MAX_FILES_BYTES: usize = 2 * 1024 * 1024;

/// One read-only file for the container: `source` is read by the CLI, relative to the
/// spec file's directory, and travels in `content`; `target` is where the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub source: String,
    pub target: String,
    /// The file's bytes (base64 in JSON and TOML); filled by the CLI from `source`.
    #[serde(default, with = "base64_bytes")]
    pub content: Vec<u8>,
}

/// `[workspace]`: the size of the agent's writable volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// Its size in MiB: a write beyond it fails with "no space left on device".
    pub size_mb: u64,
}

/// Bytes as base64 text in human-readable formats, as bytes in bincode.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom)
        } else {
            Vec::<u8>::deserialize(d)
        }
    }
}

/// Where the tmpfs of `file` credentials is mounted in the container of an agent whose
/// image is not ours.
pub const SECRETS_DIR_IN_CONTAINER: &str = "/run/agenfleet/secrets";

/// One credential an agent needs, and how its program gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialUse {
    pub name: String,
    pub delivery: Delivery,
    /// For `env`: the variable's name; None: derived from the credential's name
    /// (`db-password` → `DB_PASSWORD`).
    pub var: Option<String>,
}

/// How a credential reaches the agent's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Through the local API (`GET /v1/credentials/NAME`) and the gateway; rotated in place.
    #[default]
    Api,
    /// A file of its own on a tmpfs (mode 0400); replaced atomically on rotation.
    File,
    /// A variable in the program's environment; on rotation the shim restarts the program
    /// (not the container).
    Env,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Api => "api",
            Delivery::File => "file",
            Delivery::Env => "env",
        }
    }
}

impl CredentialUse {
    /// A credential delivered through the API.
    pub fn api(name: &str) -> Self {
        CredentialUse {
            name: name.to_string(),
            delivery: Delivery::Api,
            var: None,
        }
    }

    /// The variable an `env` credential is put in.
    pub fn env_var(&self) -> String {
        self.var.clone().unwrap_or_else(|| {
            self.name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        })
    }

    /// Where a `file` credential appears in the container.
    pub fn file_path(&self) -> String {
        format!("{SECRETS_DIR_IN_CONTAINER}/{}", self.name)
    }

    /// How it is delivered, for people: `api`, `file /run/agenfleet/secrets/x`, `env X`.
    pub fn describe(&self) -> String {
        match self.delivery {
            Delivery::Api => "api".into(),
            Delivery::File => format!("file {}", self.file_path()),
            Delivery::Env => format!("env {}", self.env_var()),
        }
    }
}

/// A spec file writes a credential as a plain name (delivered through the API) or as a
/// table `{ name, as, var }`; bincode carries all three fields.
mod credential_use_serde {
    use super::{CredentialUse, Delivery};
    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        name: String,
        #[serde(rename = "as", default)]
        delivery: Delivery,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct Wire(String, Delivery, Option<String>);

    impl Serialize for CredentialUse {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if !s.is_human_readable() {
                return Wire(self.name.clone(), self.delivery, self.var.clone()).serialize(s);
            }
            if self.delivery == Delivery::Api && self.var.is_none() {
                // As the first version wrote it: the spec's hash stays the same.
                return s.serialize_str(&self.name);
            }
            Table {
                name: self.name.clone(),
                delivery: self.delivery,
                var: self.var.clone(),
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for CredentialUse {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if !d.is_human_readable() {
                let Wire(name, delivery, var) = Wire::deserialize(d)?;
                return Ok(CredentialUse {
                    name,
                    delivery,
                    var,
                });
            }
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = CredentialUse;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a credential name, or a table { name, as = \"api\"|\"file\"|\"env\", var }")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<CredentialUse, E> {
                    Ok(CredentialUse::api(v))
                }
                fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<CredentialUse, A::Error> {
                    let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                    Ok(CredentialUse {
                        name: t.name,
                        delivery: t.delivery,
                        var: t.var,
                    })
                }
            }
            d.deserialize_any(V)
        }
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

    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("agent", &self.name).map_err(|r| err("name", r))?;
        check_name("tenant", &self.tenant).map_err(|r| err("tenant", r))?;
        check_name("project", &self.project).map_err(|r| err("project", r))?;
        let image = self.image.trim();
        if image.is_empty() {
            return Err(err(
                "image",
                "is empty; use `agenfleet/agent` for the built-in image",
            ));
        }
        if image.len() > 255 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "image",
                format!("`{image}` is not a valid image reference"),
            ));
        }
        self.validate_program()?;
        let l = &self.limits;
        if !(16..=65_536).contains(&l.memory_mb) {
            return Err(err(
                "limits.memory_mb",
                format!("{} is out of range (16 to 65536 MiB)", l.memory_mb),
            ));
        }
        if !l.cpus.is_finite() || !(0.01..=64.0).contains(&l.cpus) {
            return Err(err(
                "limits.cpus",
                format!("{} is out of range (0.01 to 64 cores)", l.cpus),
            ));
        }
        if !(8..=32_768).contains(&l.pids) {
            return Err(err(
                "limits.pids",
                format!("{} is out of range (8 to 32768)", l.pids),
            ));
        }
        let r = &self.restart;
        if r.attempts > 1000 {
            return Err(err(
                "restart.attempts",
                format!("{} is out of range (0 to 1000)", r.attempts),
            ));
        }
        if !(1..=86_400).contains(&r.interval_secs) {
            return Err(err(
                "restart.interval_secs",
                format!("{} is out of range (1 to 86400)", r.interval_secs),
            ));
        }
        if !(10..=3_600_000).contains(&r.delay_ms) {
            return Err(err(
                "restart.delay_ms",
                format!("{} is out of range (10 to 3600000)", r.delay_ms),
            ));
        }
        if r.max_delay_ms < r.delay_ms || r.max_delay_ms > 3_600_000 {
            return Err(err(
                "restart.max_delay_ms",
                format!(
                    "{} must be at least restart.delay_ms ({}) and at most 3600000",
                    r.max_delay_ms, r.delay_ms
                ),
            ));
        }
        for (i, cu) in self.credentials.iter().enumerate() {
            let c = &cu.name;
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
                && c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphanumeric());
            if !ok {
                return Err(err(
                    &format!("credentials[{i}]"),
                    format!("`{c}` is not a credential name (1–64 of A-Z a-z 0-9 - _ ., starting with a letter or digit)"),
                ));
            }
            self.validate_delivery(i, cu)?;
        }
        let w = &self.workload;
        if w.message.len() > 1024 {
            return Err(err("workload.message", "is longer than 1024 bytes"));
        }
        if w.log_interval_ms != 0 && w.log_interval_ms < 10 {
            return Err(err(
                "workload.log_interval_ms",
                "must be 0 (off) or at least 10",
            ));
        }
        if !(0..=255).contains(&w.exit_code) {
            return Err(err("workload.exit_code", "must be between 0 and 255"));
        }
        if w.alloc_mb_per_sec > 4096 {
            return Err(err("workload.alloc_mb_per_sec", "must be at most 4096"));
        }
        for (i, m) in w.model_calls.iter().enumerate() {
            let targets = std::iter::once((m.provider.as_str(), m.url.as_str())).chain(
                m.fallback
                    .iter()
                    .map(|f| (f.provider.as_str(), f.url.as_str())),
            );
            for (p, u) in targets {
                if p.is_empty() || p.len() > 64 {
                    return Err(err(
                        &format!("workload.model_calls[{i}].provider"),
                        "must be 1 to 64 bytes",
                    ));
                }
                if !u.starts_with("http://") {
                    return Err(err(
                        &format!("workload.model_calls[{i}].url"),
                        format!("`{u}` must be an http:// URL"),
                    ));
                }
            }
        }
        if w.model_call_interval_ms < 10 {
            return Err(err(
                "workload.model_call_interval_ms",
                "must be at least 10",
            ));
        }
        for (i, f) in self.model_fallbacks.iter().enumerate() {
            if f.is_empty() || f.len() > 64 {
                return Err(err(
                    &format!("model_fallbacks[{i}]"),
                    "must be 1 to 64 bytes",
                ));
            }
        }
        if w.tool_calls.len() > 1000 {
            return Err(err("workload.tool_calls", "at most 1000 calls"));
        }
        for (i, step) in w.tool_calls.iter().enumerate() {
            // `{gateway}` stands for the host; the shim puts its address in before asking.
            let call = crate::policy::ToolCall {
                tool: step.tool.clone(),
                args_json: step.args.replace("{gateway}", "192.0.2.1"),
            };
            if let Err(why) = crate::policy::parse_call(&call) {
                return Err(err(&format!("workload.tool_calls[{i}]"), why));
            }
        }
        Ok(())
    }

    /// How credential `i` reaches the program: one entry per name; `file` and `env` only
    /// where the shim is the init; a variable that names nothing else.
    fn validate_delivery(&self, i: usize, cu: &CredentialUse) -> Result<(), SpecError> {
        let field = format!("credentials[{i}]");
        if self.credentials[..i].iter().any(|o| o.name == cu.name) {
            return Err(err(&field, format!("`{}` is listed twice", cu.name)));
        }
        if cu.var.is_some() && cu.delivery != Delivery::Env {
            return Err(err(
                &format!("{field}.var"),
                "is for a credential delivered `as = \"env\"`",
            ));
        }
        if cu.delivery != Delivery::Api && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                &format!("{field}.as"),
                format!(
                    "the built-in image `{BUILTIN_IMAGE}` takes its credentials over the gateway; \
                     `as = \"{}\"` is for an image of your own",
                    cu.delivery.as_str()
                ),
            ));
        }
        if cu.delivery == Delivery::Env {
            let var = cu.env_var();
            let name_ok = !var.is_empty()
                && var.len() <= 128
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && var.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !name_ok {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is not a variable name (1–128 of A-Z a-z 0-9 _, not starting with a digit)"),
                ));
            }
            let upper = var.to_ascii_uppercase();
            if upper.starts_with("AGENFLEET_")
                || ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].contains(&upper.as_str())
            {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is set by the agent's init"),
                ));
            }
            if self.env.contains_key(&var) {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is also set in `env`; a variable holds one value"),
                ));
            }
            if self.credentials[..i]
                .iter()
                .any(|o| o.delivery == Delivery::Env && o.env_var() == var)
            {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` already holds another credential"),
                ));
            }
        }
        Ok(())
    }

    /// `[[files]]`: a source that stays in the spec's directory, a target that is an
    /// absolute path the agent's own mounts do not claim, limits on count and size.
    fn validate_files(&self) -> Result<(), SpecError> {
        if self.files.len() > MAX_FILES {
            return Err(err("files", format!("has more than {MAX_FILES} files")));
        }
        if !self.files.is_empty() && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                "files",
                format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; `files` are for an image of your own"),
            ));
        }
        let mut total = 0usize;
        for (i, f) in self.files.iter().enumerate() {
            let s = &f.source;
            if s.is_empty()
                || s.starts_with('/')
                || s.contains('\0')
                || s.split('/').any(|c| c == "..")
            {
                return Err(err(
                    &format!("files[{i}].source"),
                    format!(
                        "`{s}` must be a path inside the spec file's directory (relative, no `..`)"
                    ),
                ));
            }
            let t = &f.target;
            let parts: Vec<&str> = t.split('/').skip(1).collect();
            if !t.starts_with('/')
                || t.len() > 4096
                || t.contains(['\0', ':', ','])
                || parts
                    .iter()
                    .any(|c| c.is_empty() || *c == "." || *c == "..")
            {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!(
                        "`{t}` is not an absolute path to a file (no `.`, `..` or empty parts, no `:` or `,`)"
                    ),
                ));
            }
            let reserved = [
                "/run/agenfleet",
                "/proc",
                "/sys",
                "/dev",
                "/tmp",
                WORKSPACE_IN_CONTAINER,
            ];
            if let Some(r) = reserved
                .iter()
                .find(|r| t == *r || t.starts_with(&format!("{r}/")))
            {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!("`{t}` is under {r}, which the container's own mounts hold"),
                ));
            }
            if self.files[..i].iter().any(|o| &o.target == t) {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!("`{t}` is the target of another file"),
                ));
            }
            if f.content.len() > MAX_FILE_BYTES {
                return Err(err(
                    &format!("files[{i}].source"),
                    format!("`{s}` is larger than {} KiB", MAX_FILE_BYTES / 1024),
                ));
            }
            total += f.content.len();
        }
        if total > MAX_FILES_BYTES {
            return Err(err(
                "files",
                format!(
                    "{total} bytes in all, more than {} KiB",
                    MAX_FILES_BYTES / 1024
                ),
            ));
        }
        Ok(())
    }

    /// `command`, `workdir` and `env`.
    fn validate_program(&self) -> Result<(), SpecError> {
        if !self.command.is_empty() && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                "command",
                format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; `command` is for an image of your own"),
            ));
        }
        if self.command.len() > 256 {
            return Err(err("command", "has more than 256 arguments"));
        }
        for (i, a) in self.command.iter().enumerate() {
            if i == 0 && a.trim().is_empty() {
                return Err(err("command[0]", "the program to run is empty"));
            }
            if a.len() > 4096 || a.contains('\0') {
                return Err(err(
                    &format!("command[{i}]"),
                    "must be at most 4096 bytes, without NUL",
                ));
            }
        }
        let w = &self.workdir;
        if !w.is_empty() && (!w.starts_with('/') || w.len() > 4096 || w.contains('\0')) {
            return Err(err(
                "workdir",
                format!("`{w}` is not an absolute path (at most 4096 bytes)"),
            ));
        }
        if let Some(h) = &self.health {
            match (h.command.is_empty(), h.http.is_empty()) {
                (true, true) | (false, false) => return Err(err(
                    "health",
                    "give either `command` (run in the container) or `http` (a path, with `port`)",
                )),
                (false, true) => {
                    if h.command[0].trim().is_empty()
                        || h.command.len() > 64
                        || h.command.iter().any(|a| a.len() > 4096 || a.contains('\0'))
                    {
                        return Err(err(
                            "health.command",
                            "must name a program, with at most 64 arguments of 4096 bytes, without NUL",
                        ));
                    }
                }
                (true, false) => {
                    if !h.http.starts_with('/')
                        || h.http.len() > 1024
                        || h.http.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(err(
                            "health.http",
                            format!("`{}` is not a path such as /healthz", h.http),
                        ));
                    }
                    if h.port == 0 {
                        return Err(err(
                            "health.port",
                            "the port the program serves `http` on (1 to 65535)",
                        ));
                    }
                }
            }
            for (field, v, lo, hi) in [
                ("health.interval_secs", h.interval_secs, 1, 3600),
                ("health.timeout_secs", h.timeout_secs, 1, 600),
                ("health.retries", u64::from(h.retries), 1, 100),
                ("health.start_period_secs", h.start_period_secs, 0, 3600),
            ] {
                if !(lo..=hi).contains(&v) {
                    return Err(err(field, format!("{v} is out of range ({lo} to {hi})")));
                }
            }
        }
        self.validate_files()?;
        if let Some(w) = &self.workspace {
            if self.image.trim() == BUILTIN_IMAGE {
                return Err(err(
                    "workspace",
                    format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; a workspace is for an image of your own"),
                ));
            }
            if !(1..=1_048_576).contains(&w.size_mb) {
                return Err(err(
                    "workspace.size_mb",
                    format!("{} is out of range (1 to 1048576 MiB)", w.size_mb),
                ));
            }
        }
        if self.env.len() > 256 {
            return Err(err("env", "has more than 256 variables"));
        }
        for (k, v) in &self.env {
            let field = format!("env.{k}");
            let name_ok = k.len() <= 128
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !name_ok {
                return Err(err(
                    &field,
                    "is not a variable name (1–128 of A-Z a-z 0-9 _, not starting with a digit)",
                ));
            }
            if k.to_ascii_uppercase().starts_with("AGENFLEET_") {
                return Err(err(
                    &field,
                    "names starting with AGENFLEET_ are set by the agent's init, not by a spec",
                ));
            }
            if looks_secret(k) {
                return Err(err(
                    &field,
                    format!(
                        "`{k}` looks like a secret: `env` is visible in the engine's container config and in `agents show`. \
                         Store the value in the vault (`agenfleet creds set`) and list it under `credentials`"
                    ),
                ));
            }
            if v.len() > 32 * 1024 || v.contains('\0') {
                return Err(err(&field, "the value must be at most 32 KiB, without NUL"));
            }
        }
        Ok(())
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
            serde_json::to_vec(self)
        };
        fnv1a_hex(&json.unwrap_or_default())
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
mod tests {
    use super::*;

    fn base() -> &'static str {
        "name = \"web-1\"\nimage = \"agenfleet/agent\"\n"
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = AgentSpec::from_toml(base()).unwrap();
        s.validate().unwrap();
        assert_eq!(s.tenant, "default");
        assert_eq!(s.limits.memory_mb, 256);
        assert_eq!(s.network.mode, NetworkMode::Gateway);
        assert_eq!(s.restart.mode, RestartMode::Fail);
    }

    #[test]
    fn credentials_are_names_or_tables_and_travel_whole_in_bincode() {
        let s = AgentSpec::from_toml(
            "name = \"a\"\nimage = \"x/y\"\ncredentials = [\"k\", { name = \"db\", as = \"file\" }, { name = \"open-ai\", as = \"env\" }]\n",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.credentials[0], CredentialUse::api("k"));
        assert_eq!(s.credentials[1].delivery, Delivery::File);
        assert_eq!(s.credentials[1].file_path(), "/run/agenfleet/secrets/db");
        assert_eq!(s.credentials[2].env_var(), "OPEN_AI");
        // JSON (the store) writes a plain name as before; bincode (the wire) keeps all.
        let json = serde_json::to_string(&s.credentials).unwrap();
        assert!(
            json.starts_with("[\"k\",{\"name\":\"db\",\"as\":\"file\"}"),
            "{json}"
        );
        let back: Vec<CredentialUse> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s.credentials);
        let mut codec: tokio_serde::formats::Bincode<AgentSpec, AgentSpec> = Default::default();
        let bytes = tokio_serde::Serializer::serialize(std::pin::Pin::new(&mut codec), &s).unwrap();
        let mut codec: tokio_serde::formats::Bincode<AgentSpec, AgentSpec> = Default::default();
        let again: AgentSpec = tokio_serde::Deserializer::deserialize(
            std::pin::Pin::new(&mut codec),
            &bytes::BytesMut::from(&bytes[..]),
        )
        .unwrap();
        assert_eq!(again, s);
        // Plain names hash as they did before deliveries existed.
        let old = AgentSpec::from_toml(&format!("{}credentials = [\"k\"]\n", base())).unwrap();
        assert_eq!(old.hash(), {
            let mut o = old.clone();
            o.credentials = vec![CredentialUse::api("k")];
            o.hash()
        });
    }

    #[test]
    fn deliveries_and_files_that_cannot_work_are_named() {
        for (extra, field) in [
            (
                "credentials = [{ name = \"k\", as = \"file\" }]",
                "credentials[0].as",
            ),
            (
                "credentials = [{ name = \"k\", var = \"K\" }]",
                "credentials[0].var",
            ),
            ("credentials = [\"k\", \"k\"]", "credentials[1]"),
            ("[[files]]\nsource = \"a\"\ntarget = \"/etc/x\"", "files"),
            ("[workspace]\nsize_mb = 8", "workspace"),
        ] {
            let e = AgentSpec::from_toml(&format!("{}{extra}\n", base()))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
        let own = "name = \"a\"\nimage = \"x/y\"\n";
        for (extra, field) in [
            ("env = { K2 = \"v\" }\ncredentials = [{ name = \"k\", as = \"env\", var = \"K2\" }]", "credentials[0].var"),
            ("credentials = [{ name = \"k\", as = \"env\", var = \"HTTP_PROXY\" }]", "credentials[0].var"),
            ("credentials = [{ name = \"k\", as = \"env\", var = \"1X\" }]", "credentials[0].var"),
            ("[[files]]\nsource = \"../a\"\ntarget = \"/x\"", "files[0].source"),
            ("[[files]]\nsource = \"a\"\ntarget = \"/x:/y\"", "files[0].target"),
            ("[[files]]\nsource = \"a\"\ntarget = \"/workspace/x\"", "files[0].target"),
            ("[[files]]\nsource = \"a\"\ntarget = \"/x/../y\"", "files[0].target"),
            ("[[files]]\nsource = \"a\"\ntarget = \"/x\"\n[[files]]\nsource = \"b\"\ntarget = \"/x\"", "files[1].target"),
            ("[workspace]\nsize_mb = 0", "workspace.size_mb"),
        ] {
            let e = AgentSpec::from_toml(&format!("{own}{extra}\n"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let e = AgentSpec::from_toml(&format!("{}colour = \"red\"\n", base())).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = AgentSpec::from_toml(&format!("{}[limits]\nmemroy_mb = 3\n", base())).unwrap_err();
        assert!(e.contains("memroy_mb"), "{e}");
    }

    #[test]
    fn missing_image_is_named() {
        let e = AgentSpec::from_toml("name = \"x\"\n").unwrap_err();
        assert!(e.contains("image"), "{e}");
    }

    #[test]
    fn bad_limit_names_field_and_reason() {
        let s = AgentSpec::from_toml(&format!("{}[limits]\nmemory_mb = 1\n", base())).unwrap();
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "limits.memory_mb");
        assert!(e.reason.contains("out of range"));
        let s = AgentSpec::from_toml(&format!("{}[limits]\ncpus = 0.0\n", base())).unwrap();
        assert_eq!(s.validate().unwrap_err().field, "limits.cpus");
        let s = AgentSpec::from_toml(&format!(
            "{}[restart]\ndelay_ms = 5000\nmax_delay_ms = 100\n",
            base()
        ))
        .unwrap();
        assert_eq!(s.validate().unwrap_err().field, "restart.max_delay_ms");
    }

    #[test]
    fn bad_names_are_refused() {
        let s = AgentSpec::from_toml("name = \"Bad_Name\"\nimage = \"x\"\n").unwrap();
        assert_eq!(s.validate().unwrap_err().field, "name");
        let s = AgentSpec::from_toml("name = \"ok\"\nimage = \" \"\n").unwrap();
        assert_eq!(s.validate().unwrap_err().field, "image");
    }

    #[test]
    fn program_fields_are_checked_and_named() {
        let own = "name = \"a\"\nimage = \"mine/app:1\"\n";
        let s = AgentSpec::from_toml(&format!(
            "{own}command = [\"python3\", \"/app/agent.py\"]\nworkdir = \"/app\"\n[env]\nLOG_LEVEL = \"info\"\n"
        ))
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.command, ["python3", "/app/agent.py"]);
        let field = |extra: &str| {
            AgentSpec::from_toml(&format!("{own}{extra}"))
                .unwrap()
                .validate()
                .unwrap_err()
        };
        for (extra, want) in [
            ("command = [\"\"]\n", "command[0]"),
            ("workdir = \"app\"\n", "workdir"),
            ("[env]\nOPENAI_API_KEY = \"sk-1\"\n", "env.OPENAI_API_KEY"),
            ("[env]\ndb_password = \"x\"\n", "env.db_password"),
            ("[env]\nGITHUB_TOKEN = \"x\"\n", "env.GITHUB_TOKEN"),
            ("[env]\nAGENFLEET_API = \"x\"\n", "env.AGENFLEET_API"),
            ("[env]\n\"1X\" = \"x\"\n", "env.1X"),
            ("[env]\n\"A-B\" = \"x\"\n", "env.A-B"),
            ("[health]\n", "health"),
            ("[health]\nhttp = \"/h\"\ncommand = [\"x\"]\n", "health"),
            ("[health]\nhttp = \"healthz\"\nport = 80\n", "health.http"),
            ("[health]\nhttp = \"/healthz\"\n", "health.port"),
            (
                "[health]\ncommand = [\"true\"]\nretries = 0\n",
                "health.retries",
            ),
            (
                "[health]\ncommand = [\"true\"]\ninterval_secs = 0\n",
                "health.interval_secs",
            ),
        ] {
            assert_eq!(field(extra).field, want, "{extra}");
        }
        assert!(field("[env]\nAWS_SECRET = \"x\"\n")
            .reason
            .contains("credentials"));
        // Names that only look alike are fine.
        let s = AgentSpec::from_toml(&format!(
            "{own}[env]\nKEYBOARD = \"us\"\nTOKENIZER = \"bpe\"\n"
        ))
        .unwrap();
        s.validate().unwrap();
        // The built-in image runs its workload, not a command.
        let s = AgentSpec::from_toml(&format!("{}command = [\"sh\"]\n", base())).unwrap();
        assert_eq!(s.validate().unwrap_err().field, "command");
    }

    #[test]
    fn a_spec_without_the_program_fields_keeps_its_hash() {
        // The hash the daemon before `command`, `workdir` and `env` put on this spec's
        // container (read from its label): after an upgrade it is adopted, not replaced.
        // (Such a spec is stored with the network mode of its day, `none`.)
        let s = AgentSpec::from_toml(&format!("{}[network]\nmode = \"none\"\n", base())).unwrap();
        assert_eq!(s.hash(), "31f6ef097bc0d9b5");
        for change in [
            |t: &mut AgentSpec| t.command = vec!["x".into()],
            |t: &mut AgentSpec| t.workdir = "/w".into(),
            |t: &mut AgentSpec| {
                t.env.insert("A".into(), "1".into());
            },
        ] {
            let mut t = s.clone();
            change(&mut t);
            assert_ne!(s.hash(), t.hash());
        }
    }

    #[test]
    fn hash_changes_with_content() {
        let a = AgentSpec::from_toml(base()).unwrap();
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.limits.pids = 64;
        assert_ne!(a.hash(), b.hash());
    }
}
