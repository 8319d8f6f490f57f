//! Tool calls, scopes and decisions: what an agent asks its gateway before a tool call,
//! the per-agent scopes a person can read (which tools, which hosts and methods, which path
//! prefixes, which MCP servers), their parsing and validation with errors that point at the
//! line, the matching of a call against them, and the wire types of decisions, versions and
//! escalations. The daemon adds Cedar policies on top (see `daemon/src/policy`); this
//! module is pure logic, shared by the daemon, the CLI and the console's editor.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest arguments a tool call may carry (bytes of JSON).
pub const MAX_TOOL_ARGS_BYTES: usize = 16 * 1024;
/// Longest a tool name, MCP server name or host pattern may be.
const MAX_NAME: usize = 64;
const MAX_HOST: usize = 253;

/// The tools whose arguments scopes constrain; any other listed tool is allowed by name.
pub const TOOL_HTTP: &str = "http_request";
pub const TOOL_READ_FILE: &str = "read_file";
pub const TOOL_MCP: &str = "mcp";

const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

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

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Escalate => "escalate",
        })
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
    /// The agent went away (its connection closed) before anyone decided.
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

// ---------------------------------------------------------------------------------------
// Scopes

/// An agent's scopes: the outer bound of what it may call. Anything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// Tools the agent may call at all.
    #[serde(default)]
    pub tools: Vec<String>,
    /// For `http_request`: hosts (exact, or `*.example.com` for its subdomains) and methods.
    #[serde(default)]
    pub http: Vec<HttpScope>,
    /// For `read_file`: absolute path prefixes (`/data/` or `/data`, on component bounds).
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// For `mcp`: the MCP servers the agent may use.
    #[serde(default)]
    pub mcp_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpScope {
    pub host: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Only URLs whose path starts with this (on component bounds).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// A scope problem, located in the text where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeError {
    /// 1-based line of the text, when known.
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ScopeError {}

fn line_of_offset(text: &str, offset: usize) -> u32 {
    text[..offset.min(text.len())].matches('\n').count() as u32 + 1
}

/// The first line holding `needle` as a quoted string (where a value came from).
fn line_of_value(text: &str, needle: &str) -> Option<u32> {
    let quoted = [format!("\"{needle}\""), format!("'{needle}'")];
    text.lines()
        .position(|l| quoted.iter().any(|q| l.contains(q.as_str())))
        .map(|i| i as u32 + 1)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why `pattern` is not a host pattern, if it is not: a DNS name (lowercase labels of
/// letters, digits and inner hyphens), optionally `*.` before it, or an IPv4 address.
pub fn host_pattern_problem(pattern: &str) -> Option<String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if name.is_empty() || pattern.len() > MAX_HOST {
        return Some("must be a host name such as api.example.com or *.example.com".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() && !pattern.starts_with("*.") {
        return None;
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Some(format!(
                "label `{label}` is not valid (lowercase letters, digits and inner hyphens; a wildcard only as a leading `*.`)"
            ));
        }
    }
    if !name.contains('.') {
        return Some("needs a domain (a dot), e.g. api.example.com".into());
    }
    None
}

/// Why `path` is not an absolute, canonical path (as a scope entry must be), if it is
/// not: absolute, no NUL, no empty, `.` or `..` component; one trailing `/` may mark a
/// directory prefix.
pub fn path_problem(path: &str) -> Option<&'static str> {
    // Canonical, but for the one trailing `/` that marks a directory prefix.
    let canon = match canonical_file_path(path) {
        Ok(c) => c,
        Err(why) => return Some(why),
    };
    let spelled = if path.ends_with('/') && canon != "/" {
        format!("{canon}/")
    } else {
        canon
    };
    (spelled != path).then_some("has empty components (`//`)")
}

/// The one canonical spelling of the file a `read_file` path names, as the kernel
/// resolves it: runs of `/` collapse to one (Linux treats a leading `//` as `/`), a
/// trailing `/` goes (except for the root). `.` and `..` are refused, not resolved: what
/// they lead to depends on symlinks the gateway cannot see.
pub fn canonical_file_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("must be absolute");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut out = String::with_capacity(path.len());
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err("has `.` or `..` components");
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The canonical form of a URL's host: what the `url` crate gives (lowercase, IDNA,
/// IPv4 in dotted form, IPv6 in brackets) without a trailing root dot, since
/// `api.example.com.` is the same host as `api.example.com`.
fn canonical_host(host: &str) -> Result<String, &'static str> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.ends_with('.') || h.contains("..") {
        return Err("has an empty host label");
    }
    Ok(h.to_string())
}

/// The canonical form of a URL path (after the `url` crate resolved `.`/`..` and
/// `%2e` segments): percent-encoded unreserved characters are decoded, other escapes
/// get uppercase hex. An empty segment (`//`), an encoded `/` or `\\`, or an encoded
/// NUL is refused: servers differ on what they mean, so no one spelling is "the" target.
pub fn canonical_url_path(path: &str) -> Result<String, &'static str> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err("must start with `/`");
    }
    if path.len() > 1 && path[1..].split('/').rev().skip(1).any(str::is_empty) {
        return Err("has an empty segment (`//`)");
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("has a `%` that starts no escape");
            };
            let v = hi * 16 + lo;
            match v {
                b'/' | b'\\' => return Err("has an encoded `/` or `\\`"),
                0 => return Err("has an encoded NUL"),
                _ if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    out.push(v as char)
                }
                _ => {
                    out.push('%');
                    out.push_str(&format!("{v:02X}"));
                }
            }
            i += 3;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    // A decoded `.` may have made a dot segment (`/%2E/` is one to the url crate too,
    // so this only catches what it kept).
    if out.split('/').any(|s| s == "." || s == "..") {
        return Err("has a `.` or `..` segment");
    }
    Ok(out)
}

/// Whether `path` lies under `prefix` on component bounds.
fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        // What is inside the directory, not the directory itself (which is canonically
        // spelled without the slash, so `/data/reports/` is refused the same way).
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

impl Scopes {
    /// Parses and validates scopes written in TOML; errors point at the line.
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        let scopes: Scopes = toml::from_str(text).map_err(|e| ScopeError {
            line: e.span().map(|s| line_of_offset(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        scopes.validate().map_err(|(needle, message)| ScopeError {
            line: needle.and_then(|n| line_of_value(text, &n)),
            message,
        })?;
        Ok(scopes)
    }

    /// Checks every entry; on error answers the offending value (to find its line) and
    /// a message naming the field.
    pub fn validate(&self) -> Result<(), (Option<String>, String)> {
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tools.iter().enumerate() {
            if !valid_name(t) {
                return Err((
                    Some(t.clone()),
                    format!("tools[{i}]: `{t}` is not a tool name (letters, digits, `_-.`, at most {MAX_NAME})"),
                ));
            }
            if !seen.insert(t.as_str()) {
                return Err((
                    Some(t.clone()),
                    format!("tools[{i}]: `{t}` is listed twice"),
                ));
            }
        }
        for (i, h) in self.http.iter().enumerate() {
            if let Some(why) = host_pattern_problem(&h.host) {
                return Err((
                    Some(h.host.clone()),
                    format!(
                        "http[{i}].host: `{}` is not a valid host pattern: {why}",
                        h.host
                    ),
                ));
            }
            if h.methods.is_empty() {
                return Err((Some(h.host.clone()), format!("http[{i}].methods: empty")));
            }
            for m in &h.methods {
                if !HTTP_METHODS.contains(&m.as_str()) {
                    return Err((
                        Some(m.clone()),
                        format!(
                            "http[{i}].methods: `{m}` is not one of {}",
                            HTTP_METHODS.join(", ")
                        ),
                    ));
                }
            }
            if let Some(p) = &h.path_prefix {
                if let Some(why) = path_problem(p) {
                    return Err((
                        Some(p.clone()),
                        format!("http[{i}].path_prefix `{p}` {why}"),
                    ));
                }
            }
        }
        for (i, p) in self.read_paths.iter().enumerate() {
            if let Some(why) = path_problem(p) {
                return Err((Some(p.clone()), format!("read_paths[{i}]: `{p}` {why}")));
            }
        }
        for (i, s) in self.mcp_servers.iter().enumerate() {
            if !valid_name(s) {
                return Err((
                    Some(s.clone()),
                    format!("mcp_servers[{i}]: `{s}` is not a server name"),
                ));
            }
        }
        // Entries that need their tool listed (after the entries themselves are checked,
        // so that a bad value is reported where it is).
        if !self.http.is_empty() && !self.tools.iter().any(|t| t == TOOL_HTTP) {
            return Err((
                None,
                format!("http scopes are given but `{TOOL_HTTP}` is not in tools"),
            ));
        }
        if !self.read_paths.is_empty() && !self.tools.iter().any(|t| t == TOOL_READ_FILE) {
            return Err((
                None,
                format!("read_paths are given but `{TOOL_READ_FILE}` is not in tools"),
            ));
        }
        if !self.mcp_servers.is_empty() && !self.tools.iter().any(|t| t == TOOL_MCP) {
            return Err((
                None,
                format!("mcp_servers are given but `{TOOL_MCP}` is not in tools"),
            ));
        }
        Ok(())
    }

    /// Whether the scopes let `call` through; `Err` says why not.
    pub fn permits(&self, call: &ParsedCall) -> Result<(), String> {
        if !self.tools.iter().any(|t| t == &call.tool) {
            return Err(format!("tool `{}` is not in the agent's scopes", call.tool));
        }
        match &call.target {
            Target::Http { method, host, path } => {
                let fits = self.http.iter().any(|h| {
                    host_matches(&h.host, host)
                        && h.methods.iter().any(|m| m == method)
                        && h.path_prefix
                            .as_deref()
                            .is_none_or(|p| under_prefix(path, p))
                });
                if fits {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} {host}{path} is outside the agent's http scopes"
                    ))
                }
            }
            Target::File { path } => {
                if self.read_paths.iter().any(|p| under_prefix(path, p)) {
                    Ok(())
                } else {
                    Err(format!("{path} is outside the agent's read_paths"))
                }
            }
            Target::Mcp { server, .. } => {
                if self.mcp_servers.iter().any(|s| s == server) {
                    Ok(())
                } else {
                    Err(format!(
                        "MCP server `{server}` is outside the agent's scopes"
                    ))
                }
            }
            Target::Other => Ok(()),
        }
    }
}

/// A tool call whose arguments were checked: what scopes and policies look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub tool: String,
    pub target: Target,
    /// The arguments, re-encoded canonically (sorted keys, no spaces).
    pub canonical_args: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http {
        method: String,
        host: String,
        path: String,
    },
    File {
        path: String,
    },
    Mcp {
        server: String,
        tool: String,
    },
    Other,
}

fn arg<'a>(
    args: &'a serde_json::Map<String, serde_json::Value>,
    tool: &str,
    name: &str,
) -> Result<&'a str, String> {
    match args.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{tool}: argument `{name}` must be a string")),
        None => Err(format!("{tool}: argument `{name}` is missing")),
    }
}

/// Checks a call's shape: the tool name, the arguments' size and JSON, and for the tools
/// scopes constrain, the arguments they need (a URL with a host, a normalised absolute
/// path, a server name). Errors say what is wrong.
pub fn parse_call(call: &ToolCall) -> Result<ParsedCall, String> {
    if !valid_name(&call.tool) {
        return Err(format!(
            "`{}` is not a tool name",
            call.tool.chars().take(80).collect::<String>()
        ));
    }
    if call.args_json.len() > MAX_TOOL_ARGS_BYTES {
        return Err(format!(
            "arguments too large: {} bytes (at most {MAX_TOOL_ARGS_BYTES})",
            call.args_json.len()
        ));
    }
    let mut value: serde_json::Value = serde_json::from_str(&call.args_json)
        .map_err(|e| format!("malformed arguments (not JSON): {e}"))?;
    let serde_json::Value::Object(args) = &mut value else {
        return Err("malformed arguments: must be a JSON object".into());
    };
    // The target in its one canonical spelling; the canonical arguments are rewritten to it,
    // so scopes, policies, the request hash and an approval all see the same thing whatever
    // spelling the agent used.
    let tool = call.tool.as_str();
    let target = match tool {
        TOOL_HTTP => {
            let method = arg(args, tool, "method")?.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&method.as_str()) {
                return Err(format!("{tool}: `{method}` is not an HTTP method"));
            }
            let raw = arg(args, tool, "url")?;
            let mut url = url::Url::parse(raw).map_err(|e| format!("{tool}: bad url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{tool}: url scheme must be http or https"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("{tool}: url must not carry credentials"));
            }
            let host = url
                .host_str()
                .ok_or_else(|| format!("{tool}: url has no host"))?;
            let host = canonical_host(host).map_err(|why| format!("{tool}: url host {why}"))?;
            let path =
                canonical_url_path(url.path()).map_err(|why| format!("{tool}: url path {why}"))?;
            if url.host_str() != Some(host.as_str()) {
                url.set_host(Some(&host))
                    .map_err(|e| format!("{tool}: url host: {e}"))?;
            }
            url.set_path(&path);
            url.set_fragment(None);
            args.insert("method".into(), method.clone().into());
            args.insert("url".into(), url.as_str().into());
            Target::Http { method, host, path }
        }
        TOOL_READ_FILE => {
            let path = canonical_file_path(arg(args, tool, "path")?)
                .map_err(|why| format!("{tool}: path {why}"))?;
            args.insert("path".into(), path.clone().into());
            Target::File { path }
        }
        TOOL_MCP => {
            let server = arg(args, tool, "server")?.to_string();
            let name = arg(args, tool, "tool")?.to_string();
            for (what, v) in [("server", &server), ("tool", &name)] {
                if !valid_name(v) {
                    return Err(format!(
                        "{tool}: `{what}` must be a name (letters, digits, `_-.`, at most {MAX_NAME})"
                    ));
                }
            }
            Target::Mcp { server, tool: name }
        }
        _ => Target::Other,
    };
    let mut canonical_args = String::with_capacity(call.args_json.len());
    canonical_json(&value, &mut canonical_args);
    Ok(ParsedCall {
        tool: call.tool.clone(),
        target,
        canonical_args,
    })
}

/// Writes `v` with object keys sorted at every level and no spaces, whatever order the
/// map type keeps: the same arguments always give the same text (and request hash).
pub fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tool: &str, args: serde_json::Value) -> ToolCall {
        ToolCall {
            tool: tool.into(),
            args_json: args.to_string(),
        }
    }

    const SCOPES: &str = r#"
tools = ["http_request", "read_file", "mcp", "search"]
read_paths = ["/data/reports/", "/etc/app"]
mcp_servers = ["github"]

[[http]]
host = "api.example.com"
methods = ["GET", "POST"]

[[http]]
host = "*.internal.example"
path_prefix = "/v1"
"#;

    fn decide(s: &Scopes, c: ToolCall) -> Result<(), String> {
        s.permits(&parse_call(&c)?)
    }

    #[test]
    fn scopes_allow_what_they_list_and_nothing_else() {
        let s = Scopes::parse(SCOPES).expect("valid");
        let ok = |c| assert!(decide(&s, c).is_ok());
        let no = |c: ToolCall| {
            let r = decide(&s, c.clone());
            assert!(r.is_err(), "{c:?} should be denied");
        };
        ok(call(
            "http_request",
            serde_json::json!({"method": "post", "url": "https://api.example.com/x"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "DELETE", "url": "https://api.example.com/x"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://evil.com/api.example.com"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://api.example.com.evil.com/"}),
        ));
        ok(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://a.b.internal.example/v1/x"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://internal.example/v1/x"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://a.internal.example/v10"}),
        ));
        no(call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://a.internal.example/v1/../admin"}),
        ));
        ok(call(
            "read_file",
            serde_json::json!({"path": "/data/reports/q3.csv"}),
        ));
        ok(call("read_file", serde_json::json!({"path": "/etc/app"})));
        ok(call(
            "read_file",
            serde_json::json!({"path": "/etc/app/conf"}),
        ));
        no(call(
            "read_file",
            serde_json::json!({"path": "/etc/application"}),
        ));
        no(call(
            "read_file",
            serde_json::json!({"path": "/data/reports/../../etc/shadow"}),
        ));
        no(call(
            "read_file",
            serde_json::json!({"path": "/data/reportsX"}),
        ));
        ok(call(
            "mcp",
            serde_json::json!({"server": "github", "tool": "list_issues"}),
        ));
        no(call(
            "mcp",
            serde_json::json!({"server": "gitlab", "tool": "list_issues"}),
        ));
        ok(call("search", serde_json::json!({"q": "anything"})));
        no(call("shell", serde_json::json!({"cmd": "rm -rf /"})));
    }

    #[test]
    fn bad_scopes_name_the_field_and_the_line() {
        let e = Scopes::parse("tools = [\"http_request\"]\n[[http]]\nhost = \"exa mple.com\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("http[0].host"), "{e}");
        let e = Scopes::parse("tools = [\"x\"]\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = Scopes::parse("tools = [\"read_file\"]\nread_paths = [\"/a/../b\"]\n").unwrap_err();
        assert!(e.message.contains("read_paths[0]"), "{e}");
        let e = Scopes::parse(
            "tools = [\"http_request\"]\n[[http]]\nhost = \"a.com\"\nmethods = [\"FETCH\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        for bad in [
            "*", "*.com.*", "a..b", "-a.com", "A.com", "foo", "*.", "a.com/x",
        ] {
            assert!(host_pattern_problem(bad).is_some(), "{bad}");
        }
        for good in ["a.com", "*.a.com", "10.0.0.1", "x-1.y.example"] {
            assert!(host_pattern_problem(good).is_none(), "{good}");
        }
    }

    #[test]
    fn malformed_and_oversized_calls_are_refused_with_a_reason() {
        let big = ToolCall {
            tool: "search".into(),
            args_json: format!("{{\"q\":\"{}\"}}", "x".repeat(MAX_TOOL_ARGS_BYTES)),
        };
        assert!(parse_call(&big).unwrap_err().contains("too large"));
        let bad = ToolCall {
            tool: "search".into(),
            args_json: "{not json".into(),
        };
        assert!(parse_call(&bad).unwrap_err().contains("not JSON"));
        assert!(
            parse_call(&call("read_file", serde_json::json!({"path": 3})))
                .unwrap_err()
                .contains("must be a string")
        );
        assert!(parse_call(&call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "ftp://x.com/"})
        ))
        .unwrap_err()
        .contains("scheme"));
        assert!(parse_call(&call("bad tool!", serde_json::json!({})))
            .unwrap_err()
            .contains("not a tool name"));
        let a = parse_call(&call("search", serde_json::json!({"b": 1, "a": 2}))).unwrap();
        assert_eq!(a.canonical_args, r#"{"a":2,"b":1}"#);
    }

    fn target_of(tool: &str, args: serde_json::Value) -> Result<ParsedCall, String> {
        parse_call(&call(tool, args))
    }

    #[test]
    fn every_spelling_of_a_file_path_is_seen_in_its_canonical_form() {
        for spelled in [
            "//data/secrets/a",
            "///data/secrets/a",
            "/data//secrets/a",
            "/data/secrets//a/",
            "/data/secrets/a/",
        ] {
            let p = target_of("read_file", serde_json::json!({ "path": spelled })).unwrap();
            assert_eq!(
                p.target,
                Target::File {
                    path: "/data/secrets/a".into()
                },
                "{spelled}"
            );
            assert_eq!(
                p.canonical_args, r#"{"path":"/data/secrets/a"}"#,
                "{spelled}"
            );
        }
        for bad in ["data/x", "/data/./x", "/data/../x", "/a\0b"] {
            assert!(
                target_of("read_file", serde_json::json!({ "path": bad })).is_err(),
                "{bad}"
            );
        }
        assert_eq!(canonical_file_path("//").unwrap(), "/");
        // Scope entries must already be canonical (a leading `//` would match nothing).
        assert!(path_problem("//data/").is_some());
        assert!(path_problem("/data/").is_none());
        let s = Scopes::parse(SCOPES).unwrap();
        // A `dir/` prefix admits what is inside, not the directory, however it is spelled.
        for p in ["/data/reports/", "//data/reports", "/data/reports"] {
            assert!(decide(&s, call("read_file", serde_json::json!({ "path": p }))).is_err());
        }
        assert!(decide(
            &s,
            call(
                "read_file",
                serde_json::json!({"path": "//data/reports//a"})
            )
        )
        .is_ok());
    }

    #[test]
    fn every_spelling_of_a_url_is_seen_in_its_canonical_form() {
        let http = |url: &str| {
            target_of(
                "http_request",
                serde_json::json!({"method": "get", "url": url}),
            )
        };
        let want = Target::Http {
            method: "GET".into(),
            host: "api.example.com".into(),
            path: "/v1/admin".into(),
        };
        for spelled in [
            "https://api.example.com/v1/admin",
            "https://API.Example.COM/v1/admin",
            "https://api.example.com./v1/admin",
            "https://api.example.com:443/v1/admin",
            "https://api.example.com/v1/%61dmin",
            "https://api.example.com/v1/%2e/admin",
            "https://api.example.com/v1/x/%2E%2E/admin",
            "https://api.example.com/v1/admin#frag",
        ] {
            let p = http(spelled).unwrap_or_else(|e| panic!("{spelled}: {e}"));
            assert_eq!(p.target, want, "{spelled}");
            assert_eq!(
                p.canonical_args, r#"{"method":"GET","url":"https://api.example.com/v1/admin"}"#,
                "{spelled}"
            );
        }
        let p = http("https://api.example.com/a%7cb%c3%a9").unwrap();
        assert_eq!(
            p.target,
            Target::Http {
                method: "GET".into(),
                host: "api.example.com".into(),
                path: "/a%7Cb%C3%A9".into()
            }
        );
        for bad in [
            "https://api.example.com//v1/admin",
            "https://api.example.com/v1//admin",
            "https://api.example.com/v1%2fadmin",
            "https://api.example.com/v1%5cadmin",
            "https://api.example.com/v1/%00",
            "https://api.example.com../x",
            "https://user:pw@api.example.com/x",
        ] {
            assert!(http(bad).is_err(), "{bad} should be refused");
        }
        assert!(target_of("mcp", serde_json::json!({"server": "git hub", "tool": "x"})).is_err());
    }

    mod spellings {
        use super::*;
        use proptest::prelude::*;

        /// Respells a canonical file path: extra slashes anywhere between components, at
        /// the start, and a trailing slash.
        fn respell_path(canon: &str, extra: &[u8]) -> String {
            let mut out = String::new();
            for (i, c) in canon.split('/').skip(1).enumerate() {
                let n = 1 + usize::from(extra.get(i).copied().unwrap_or(0) % 3);
                out.push_str(&"/".repeat(n));
                out.push_str(c);
            }
            if extra.last().is_some_and(|x| x % 2 == 1) {
                out.push('/');
            }
            out
        }

        /// Respells a URL path: unreserved characters percent-encoded (upper or lower hex).
        fn respell_url_path(canon: &str, enc: &[bool]) -> String {
            canon
                .chars()
                .enumerate()
                .map(|(i, c)| match enc.get(i % enc.len().max(1)) {
                    Some(true) if c.is_ascii_alphanumeric() || "-._~".contains(c) => {
                        if i % 2 == 0 {
                            format!("%{:02X}", c as u8)
                        } else {
                            format!("%{:02x}", c as u8)
                        }
                    }
                    _ => c.to_string(),
                })
                .collect()
        }

        fn segment() -> impl Strategy<Value = String> {
            "[a-z0-9_~-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
        }

        const POLICY_SCOPES: &str = r#"
tools = ["http_request", "read_file"]
read_paths = ["/data/"]
[[http]]
host = "*.example.com"
methods = ["GET", "POST"]
path_prefix = "/v1"
"#;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn file_paths(
                segs in prop::collection::vec(segment(), 1..6),
                extra in prop::collection::vec(any::<u8>(), 0..8),
                secret in any::<bool>(),
            ) {
                let mut canon = String::from(if secret { "/data/secrets" } else { "/data" });
                for s in &segs { canon.push('/'); canon.push_str(s); }
                let spelled = respell_path(&canon, &extra);
                let a = target_of("read_file", serde_json::json!({ "path": canon })).unwrap();
                let b = target_of("read_file", serde_json::json!({ "path": spelled }))
                    .unwrap();
                // Every context field is its own canonical form.
                let Target::File { path } = &b.target else { panic!("not a file target") };
                prop_assert_eq!(&canonical_file_path(path).unwrap(), path);
                prop_assert!(path_problem(path).is_none());
                // Both spellings get one target, one hash input and one decision.
                prop_assert_eq!(&a, &b);
                let s = Scopes::parse(POLICY_SCOPES).unwrap();
                prop_assert_eq!(s.permits(&a), s.permits(&b));
                // And a `like "/data/secrets*"` rule sees the secret ones.
                prop_assert_eq!(path.starts_with("/data/secrets/"), secret);
            }

            #[test]
            fn urls(
                sub in "[a-z]{1,6}",
                segs in prop::collection::vec(segment(), 0..5),
                enc in prop::collection::vec(any::<bool>(), 1..8),
                upper_host in any::<bool>(),
                dot in any::<bool>(),
                port in any::<bool>(),
                method in prop::sample::select(vec!["get", "GET", "Post", "delete"]),
            ) {
                let mut canon_path = String::from("/v1");
                for s in &segs { canon_path.push('/'); canon_path.push_str(s); }
                let host = format!("{sub}.example.com");
                let canon = format!("https://{host}{canon_path}");
                let mut h = if upper_host { host.to_uppercase() } else { host.clone() };
                if dot { h.push('.'); }
                if port { h.push_str(":443"); }
                let spelled = format!("https://{h}{}", respell_url_path(&canon_path, &enc));
                let a = target_of("http_request", serde_json::json!({"method": method, "url": canon})).unwrap();
                let b = target_of("http_request", serde_json::json!({"method": method, "url": spelled}))
                    .unwrap();
                let Target::Http { method: m, host: hb, path: pb } = &b.target else {
                    panic!("not an http target")
                };
                prop_assert_eq!(&canonical_url_path(pb).unwrap(), pb);
                prop_assert_eq!(&canonical_host(hb).unwrap(), hb);
                prop_assert_eq!(hb, &host);
                prop_assert_eq!(m, &m.to_ascii_uppercase());
                prop_assert_eq!(&a, &b);
                let s = Scopes::parse(POLICY_SCOPES).unwrap();
                prop_assert_eq!(s.permits(&a), s.permits(&b));
            }
        }
    }
}
