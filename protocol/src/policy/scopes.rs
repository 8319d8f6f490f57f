//! An agent's scopes: which tools, which hosts, methods and path prefixes, which files,
//! which MCP servers — parsed from TOML with errors that point at the line, and matched
//! against a parsed call (on the canonical spelling of its target).

use super::call::{ParsedCall, Target};
use super::canonical::{canonical_file_path, host_matches, under_prefix};
use super::{HTTP_METHODS, MAX_HOST, MAX_NAME, TOOL_HTTP, TOOL_MCP, TOOL_READ_FILE};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    /// Ports the rule admits (the URL's, or its scheme's 80/443).
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// Whether the host may resolve to a loopback, link-local, private or the daemon host's
    /// own address (the egress proxy refuses those otherwise).
    #[serde(default)]
    pub private: bool,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

fn default_ports() -> Vec<u16> {
    vec![80, 443]
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

pub(super) fn valid_name(s: &str) -> bool {
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

impl Scopes {
    /// Whether a rule that admits this very request (`method` on `host`:`port`, `path`)
    /// also lets the host resolve to a private address.
    pub fn allows_private(&self, host: &str, port: u16, method: &str, path: &str) -> bool {
        self.http.iter().any(|h| {
            h.private
                && h.ports.contains(&port)
                && host_matches(&h.host, host)
                && h.methods.iter().any(|m| m == method)
                && h.path_prefix
                    .as_deref()
                    .is_none_or(|p| method != "CONNECT" && under_prefix(path, p))
        })
    }

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
            if h.ports.is_empty() || h.ports.contains(&0) {
                return Err((
                    Some(h.host.clone()),
                    format!("http[{i}].ports: must list ports from 1 to 65535"),
                ));
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
        if let Target::Model { .. } = call.target {
            // Bounded by the spec's `providers`, which the gateway checks before it asks.
            return Ok(());
        }
        if !self.tools.iter().any(|t| t == &call.tool) {
            return Err(format!("tool `{}` is not in the agent's scopes", call.tool));
        }
        match &call.target {
            Target::Http {
                method,
                host,
                port,
                path,
            } => {
                let connect = method == "CONNECT";
                let near = |h: &&HttpScope| {
                    host_matches(&h.host, host)
                        && h.methods.iter().any(|m| m == method)
                        && h.ports.contains(port)
                };
                let fits = self.http.iter().filter(near).any(|h| match &h.path_prefix {
                    None => true,
                    Some(p) => !connect && under_prefix(path, p),
                });
                if fits {
                    Ok(())
                } else if connect && self.http.iter().any(|h| near(&h)) {
                    Err(format!(
                        "CONNECT {host}:{port}: the rules for this host have a path_prefix, and the paths inside a tunnel cannot be seen — a CONNECT needs a rule without one"
                    ))
                } else if connect {
                    Err(format!(
                        "CONNECT {host}:{port} is outside the agent's http scopes (a tunnel needs a rule for the host and port with \"CONNECT\" in its methods)"
                    ))
                } else if *port != 80 && *port != 443 {
                    Err(format!(
                        "{method} {host}:{port}{path} is outside the agent's http scopes"
                    ))
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
            Target::Model { .. } | Target::Other => Ok(()),
        }
    }
}
