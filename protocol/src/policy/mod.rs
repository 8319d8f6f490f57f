//! Tool calls, scopes and decisions: what an agent asks its gateway before a tool call,
//! the per-agent scopes a person can read (which tools, which hosts and methods, which path
//! prefixes, which MCP servers), their parsing and validation with errors that point at the
//! line, the matching of a call against them, and the wire types of decisions, versions and
//! escalations. The daemon adds Cedar policies on top (see `daemon/src/policy`); this
//! module is pure logic, shared by the daemon, the CLI and the console's editor.
//!
//! Here: the wire types. `scopes.rs`: scopes, their validation and matching. `call.rs`:
//! a tool call's arguments checked and reduced to its target. `canonical.rs`: the one
//! spelling of every path, host and JSON value that scopes and policies see.

use serde::{Deserialize, Serialize};
use std::fmt;

mod call;
mod canonical;
mod scopes;
#[cfg(test)]
mod tests;

pub use call::{parse_call, ParsedCall, Target};
pub use canonical::{canonical_file_path, canonical_json, canonical_url_path};
pub use scopes::{host_pattern_problem, path_problem, HttpScope, ScopeError, Scopes};

/// Largest arguments a tool call may carry (bytes of JSON).
pub const MAX_TOOL_ARGS_BYTES: usize = 16 * 1024;
/// Longest a tool name, MCP server name or host pattern may be.
const MAX_NAME: usize = 64;
const MAX_HOST: usize = 253;

/// The tools whose arguments scopes constrain; any other listed tool is allowed by name.
pub const TOOL_HTTP: &str = "http_request";
pub const TOOL_READ_FILE: &str = "read_file";
pub const TOOL_MCP: &str = "mcp";
/// A call to one of the tenant's model providers, made by the gateway for the agent: the
/// spec's `providers` binding is its outer bound (in place of scopes); Cedar sees the
/// provider, the model and the path. An agent cannot ask for it through `authorize`.
pub const TOOL_MODEL: &str = crate::upstream::TOOL_MODEL;

/// `CONNECT` is what the egress proxy asks for an https tunnel (`url` `https://host:port`):
/// a scope admits it only by naming it, and only without a `path_prefix`.
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
];

/// One tool call, as the agent asks for it: the tool's name and its arguments (a JSON
/// object, as text, so that it crosses bincode unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub tool: String,
    pub args_json: String,
}

/// What the rules say about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    /// A forbid marked for escalation matched: a person decides.
    Escalate,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Escalate => "escalate",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The final answer to one `authorize`, after any escalation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The audit sequence number of the decision record (durable before this answer).
    pub decision_id: u64,
    /// Whether the agent may make the call.
    pub allowed: bool,
    /// What the rules said (`Escalate` when a person, or the timeout, decided).
    pub verdict: Verdict,
    pub reason: String,
    /// The policies that decided (Cedar ids, or `scopes`).
    pub policies: Vec<String>,
    /// Which scopes and policy versions decided: `scopes vN <hash> · policy vM <hash>`.
    pub policy_version: String,
    /// Who approved or denied an escalated call.
    pub reviewer: Option<String>,
    /// Time spent deciding (without any wait for a person), in µs.
    pub latency_us: u64,
    /// SHA-256 of the exact request (tenant, agent, tool, canonical arguments).
    pub request_hash: String,
}

/// One published version of an agent's scopes or a tenant's policy. Versions are
/// immutable; a rollback publishes a copy of an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u32,
    /// SHA-256 of the text.
    pub hash: String,
    pub text: String,
    pub created_ms: u64,
    pub author: String,
    pub note: String,
}

/// Every version of an agent's scopes or of a tenant's policy, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionHistory {
    /// The version in force (0: none published).
    pub current: u32,
    pub versions: Vec<PolicyVersion>,
}

impl VersionHistory {
    pub fn current(&self) -> Option<&PolicyVersion> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}

/// One problem in a policy: which policy, where, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyProblem {
    /// 1-based line in the policy text, when known.
    pub line: Option<u32>,
    pub policy: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if let Some(p) = &self.policy {
            write!(f, "policy {p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A case of `policy test`: a call by one agent and the verdict expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCase {
    pub name: String,
    pub agent: String,
    pub call: ToolCall,
    pub expect: Verdict,
}

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCaseResult {
    pub name: String,
    pub expect: Verdict,
    pub got: Verdict,
    pub reason: String,
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationState {
    Pending,
    Approved,
    Denied,
    /// Nobody decided before the policy's timeout: denied.
    TimedOut,
    /// The agent was deleted before anyone decided.
    Abandoned,
}

impl fmt::Display for EscalationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EscalationState::Pending => "pending",
            EscalationState::Approved => "approved",
            EscalationState::Denied => "denied",
            EscalationState::TimedOut => "timed out",
            EscalationState::Abandoned => "abandoned",
        })
    }
}

/// An escalated tool call, as a reviewer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationView {
    pub id: u64,
    pub tenant: String,
    pub project: String,
    pub agent: String,
    pub tool: String,
    pub args_json: String,
    /// The approval is bound to this hash: it allows this exact request and no other.
    pub request_hash: String,
    /// The policies that asked for a person.
    pub policies: Vec<String>,
    pub reason: String,
    pub created_ms: u64,
    /// When the waiting call is denied if nobody decides.
    pub deadline_ms: u64,
    pub state: EscalationState,
    pub reviewer: Option<String>,
    pub review_reason: Option<String>,
    pub decided_ms: Option<u64>,
    /// Until when an approval also allows the same request again (a retry).
    pub approval_expires_ms: Option<u64>,
}

/// What an agent observed and reports to its gateway (incidents use these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub kind: ReportKind,
    /// The model provider or the tool endpoint concerned.
    pub provider: String,
    pub outcome: ReportOutcome,
    /// HTTP status, when there was one.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Whether the agent fell back to another provider.
    pub fallback_used: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    ModelCall,
    ToolCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    Ok,
    ServerError,
    RateLimited,
    Timeout,
    Unreachable,
    Malicious,
}

impl fmt::Display for ReportOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportOutcome::Ok => "ok",
            ReportOutcome::ServerError => "server error",
            ReportOutcome::RateLimited => "rate limited",
            ReportOutcome::Timeout => "timeout",
            ReportOutcome::Unreachable => "unreachable",
            ReportOutcome::Malicious => "malicious data",
        })
    }
}
