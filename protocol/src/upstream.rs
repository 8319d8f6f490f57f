//! Providers (model APIs) and connections (tool APIs): tenant-level upstreams the gateway
//! calls on an agent's behalf with a key the agent never holds. Their wire types, the
//! ways a key is injected, and the validation every field gets (the daemon validates again
//! whatever a client sends). The key itself travels only in `upstreams_put`, as a
//! `SecretValue`, and is never part of a view.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the placeholder key variables hold, so SDKs that insist on a key start.
pub const PLACEHOLDER_KEY: &str = "agf-placeholder";
/// The local API's address inside an agent's container.
pub const LOCAL_API_BASE: &str = "http://127.0.0.1:4180";
/// The tool a model call is decided as (Cedar sees provider, model and path).
pub const TOOL_MODEL: &str = "model.call";
/// Longest fallback chain.
pub const MAX_FALLBACKS: usize = 8;
/// How much of each body a call's record holds when `record_bodies` is on.
pub const RECORDED_BODY_BYTES: usize = 16 * 1024;
/// Largest CA bundle accepted for `ca_pem`.
pub const MAX_CA_PEM: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamClass {
    /// A model API, reached at `/providers/<name>/…` on the local API.
    Provider,
    /// A tool API, reached at `/connections/<name>/…`.
    Connection,
}

impl UpstreamClass {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamClass::Provider => "provider",
            UpstreamClass::Connection => "connection",
        }
    }
    /// The local API's path segment (`providers`, `connections`).
    pub fn route(self) -> &'static str {
        match self {
            UpstreamClass::Provider => "providers",
            UpstreamClass::Connection => "connections",
        }
    }
}

impl fmt::Display for UpstreamClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// OpenAI-shaped: `Authorization: Bearer`, `usage.prompt_tokens`/`completion_tokens`.
    Openai,
    /// Anthropic-shaped: `x-api-key`, `usage.input_tokens`/`output_tokens`.
    Anthropic,
    Generic,
    /// A workflow the client builds and a tool provider hosts (n8n, Zapier…), called as a
    /// connection: its failures are the client's (the responsibility table's n8n row).
    Workflow,
}

impl UpstreamKind {
    pub fn parse(s: &str) -> Option<UpstreamKind> {
        match s {
            "openai" => Some(UpstreamKind::Openai),
            "anthropic" => Some(UpstreamKind::Anthropic),
            "generic" => Some(UpstreamKind::Generic),
            "workflow" => Some(UpstreamKind::Workflow),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::Generic => "generic",
            UpstreamKind::Workflow => "workflow",
        }
    }
    /// The injection its vendor's API expects.
    pub fn default_auth(self) -> Injection {
        match self {
            UpstreamKind::Anthropic => Injection::XApiKey,
            _ => Injection::Bearer,
        }
    }
    /// The variables the vendor's SDK reads for its base URL and key, and the path the
    /// SDK appends its routes to (OpenAI's base URL ends in `/v1`, Anthropic's does not).
    pub fn sdk_vars(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            UpstreamKind::Openai => Some(("OPENAI_BASE_URL", "OPENAI_API_KEY", "/v1")),
            UpstreamKind::Anthropic => Some(("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "")),
            UpstreamKind::Generic | UpstreamKind::Workflow => None,
        }
    }
}

impl fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the key is put on the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    /// `Authorization: Bearer {value}`.
    Bearer,
    /// `x-api-key: {value}`.
    XApiKey,
    /// `{name}: {value}`.
    Header(String),
    /// `?{name}={value}` on the URL.
    Query(String),
}

impl Injection {
    /// `bearer`, `x-api-key`, `header:NAME`, `query:NAME`.
    pub fn parse(s: &str) -> Result<Injection, String> {
        let i = match s {
            "bearer" => Injection::Bearer,
            "x-api-key" => Injection::XApiKey,
            _ => match s.split_once(':') {
                Some(("header", n)) => Injection::Header(n.to_ascii_lowercase()),
                Some(("query", n)) => Injection::Query(n.to_string()),
                _ => {
                    return Err(format!(
                        "auth `{s}` is not one of bearer, x-api-key, header:NAME, query:NAME"
                    ))
                }
            },
        };
        i.check()?;
        Ok(i)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Injection::Header(n) => {
                let token = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
                if !token {
                    return Err(format!(
                        "auth header `{n}` must be 1–64 of letters, digits, `-` and `_`"
                    ));
                }
                if HOP_HEADERS.contains(&n.as_str()) || n == "host" || n == "content-length" {
                    return Err(format!("auth header `{n}` is managed by HTTP itself"));
                }
                Ok(())
            }
            Injection::Query(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "auth query parameter `{n}` must be 1–64 of letters, digits, `-`, `_` and `.`"
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// The header the key goes in (None: the query).
    pub fn header(&self) -> Option<&str> {
        match self {
            Injection::Bearer => Some("authorization"),
            Injection::XApiKey => Some("x-api-key"),
            Injection::Header(n) => Some(n),
            Injection::Query(_) => None,
        }
    }
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injection::Bearer => f.write_str("bearer"),
            Injection::XApiKey => f.write_str("x-api-key"),
            Injection::Header(n) => write!(f, "header:{n}"),
            Injection::Query(n) => write!(f, "query:{n}"),
        }
    }
}

/// Headers that belong to one hop and are never forwarded.
pub const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What an admin declares about one provider or connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub class: UpstreamClass,
    pub tenant: String,
    pub name: String,
    pub kind: UpstreamKind,
    /// `https://host[:port][/prefix]`: the agent's path is appended to it.
    pub base_url: String,
    /// PEM certificates trusted for this upstream besides the system and webpki roots.
    #[serde(default)]
    pub ca_pem: Option<String>,
    pub auth: Injection,
    /// Providers only: the providers tried in order when this one answers 429 or 5xx,
    /// times out or cannot be reached.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// How long the upstream has to answer with its status line (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connections only: an agent that reaches this host:port itself over https (through
    /// its egress proxy, CONNECT) has its TLS terminated by the daemon with a CA of its
    /// own (`/run/agenfleet/ca.pem` in the agent), so each request inside is decided by
    /// path and gets the key like a call at `/connections/NAME/…`.
    #[serde(default)]
    pub tls_inspect: bool,
    /// Whether each call's record also holds the first 16 KiB of the request and of the
    /// answer (prompts and completions). Off: only sizes and SHA-256.
    #[serde(default)]
    pub record_bodies: bool,
}

pub fn default_timeout_ms() -> u64 {
    60_000
}

/// Upstream names: 1–64 of lowercase letters, digits and `-`, starting with a letter (they
/// become URL segments and, upper-cased, environment variable names).
pub fn check_upstream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` must be 1–64 of a-z 0-9 - and start with a letter"
        ))
    }
}

/// The variable holding an upstream's base URL for the program:
/// `AGENFLEET_PROVIDER_OPENAI_MAIN_BASE_URL` for provider `openai-main`.
pub fn base_url_var(class: UpstreamClass, name: &str) -> String {
    format!(
        "AGENFLEET_{}_{}_BASE_URL",
        class.as_str().to_ascii_uppercase(),
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl UpstreamSpec {
    /// Every problem with the spec, or Ok.
    pub fn validate(&self) -> Result<(), String> {
        crate::names::check_name("tenant", &self.tenant)?;
        check_upstream_name(&self.name)?;
        let url = url::Url::parse(&self.base_url)
            .map_err(|e| format!("base_url `{}`: {e}", self.base_url))?;
        if url.scheme() != "https" {
            return Err(format!(
                "base_url `{}` must be https (the key would travel in the clear)",
                self.base_url
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("base_url `{}` has no host", self.base_url));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("base_url must not carry credentials (the key is injected)".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("base_url must not have a query or a fragment".into());
        }
        if let Some(pem) = &self.ca_pem {
            if pem.len() > MAX_CA_PEM || !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "ca_file must hold PEM certificates (at most {MAX_CA_PEM} bytes)"
                ));
            }
        }
        self.auth.check()?;
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err("timeout_ms must be 100 to 600000".into());
        }
        if self.class == UpstreamClass::Provider && self.tls_inspect {
            return Err(
                "tls_inspect is for connections; a provider is reached at /providers/NAME".into(),
            );
        }
        if self.class == UpstreamClass::Connection && !self.fallbacks.is_empty() {
            return Err("fallbacks are for providers; a connection has none".into());
        }
        if self.fallbacks.len() > MAX_FALLBACKS {
            return Err(format!("at most {MAX_FALLBACKS} fallbacks"));
        }
        for (i, f) in self.fallbacks.iter().enumerate() {
            check_upstream_name(f).map_err(|e| format!("fallbacks[{i}]: {e}"))?;
            if f == &self.name {
                return Err(format!(
                    "fallbacks[{i}]: a provider cannot fall back to itself"
                ));
            }
            if self.fallbacks[..i].contains(f) {
                return Err(format!("fallbacks[{i}]: `{f}` is listed twice"));
            }
        }
        Ok(())
    }

    /// `host:port` of the base URL (the port its scheme's when it names none).
    pub fn authority(&self) -> Option<(String, u16)> {
        let u = url::Url::parse(&self.base_url).ok()?;
        Some((u.host_str()?.to_string(), u.port_or_known_default()?))
    }

    /// The base URL's path without its trailing `/` ("" for none).
    pub fn base_path(&self) -> String {
        url::Url::parse(&self.base_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    /// The upstream URL for the agent's `path_and_query` (which starts with `/`).
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_url.trim_end_matches('/'))
    }
}

/// One provider or connection as operators see it: never the key, only its HMAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamView {
    pub spec: UpstreamSpec,
    /// The version of the definition (every change is one).
    pub version: u32,
    /// The version of the key (a new key is one).
    pub key_version: u32,
    /// HMAC-SHA256 of the key under the vault's HMAC key (first 16 hex).
    pub key_hmac: String,
    pub created_ms: u64,
    pub author: String,
    pub note: String,
}

/// Model calls, their errors and tokens over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub calls: u64,
    /// Calls answered with a status of 400 or more, or not answered.
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

impl UsageTotals {
    pub fn tokens(&self) -> u64 {
        self.tokens_in + self.tokens_out
    }
    pub fn add(&mut self, o: &UsageTotals) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
    }
}

/// One agent's (or, with `agent` empty, one tenant's) model usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub tenant: String,
    /// Empty: the tenant's total.
    pub agent: String,
    pub last_hour: UsageTotals,
    pub last_day: UsageTotals,
    pub last_30_days: UsageTotals,
    /// Since 00:00 UTC (what `tokens_per_day` is held against).
    pub today: UsageTotals,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UpstreamSpec {
        UpstreamSpec {
            class: UpstreamClass::Provider,
            tenant: "default".into(),
            name: "openai".into(),
            kind: UpstreamKind::Openai,
            base_url: "https://api.openai.com".into(),
            ca_pem: None,
            auth: Injection::Bearer,
            fallbacks: vec![],
            timeout_ms: 60_000,
            tls_inspect: false,
            record_bodies: false,
        }
    }

    #[test]
    fn a_plain_provider_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        type Change = fn(&mut UpstreamSpec);
        let cases: Vec<(Change, &str)> = vec![
            (
                |s| s.base_url = "http://api.openai.com".into(),
                "must be https",
            ),
            (
                |s| s.base_url = "https://k:v@x.example".into(),
                "credentials",
            ),
            (|s| s.base_url = "https://x.example/?a=1".into(), "query"),
            (|s| s.name = "Open_AI".into(), "name `Open_AI`"),
            (|s| s.fallbacks = vec!["openai".into()], "itself"),
            (|s| s.fallbacks = vec!["a".into(), "a".into()], "twice"),
            (
                |s| s.auth = Injection::Header("connection".into()),
                "managed by HTTP",
            ),
            (|s| s.ca_pem = Some("nope".into()), "PEM"),
            (
                |s| {
                    s.class = UpstreamClass::Connection;
                    s.fallbacks = vec!["b".into()];
                },
                "a connection has none",
            ),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            let e = s.validate().expect_err(want);
            assert!(e.contains(want), "{e} does not say {want}");
        }
    }

    #[test]
    fn injections_parse_and_print_back() {
        for s in ["bearer", "x-api-key", "header:x-goog-api-key", "query:key"] {
            assert_eq!(
                Injection::parse(s).map(|i| i.to_string()),
                Ok(s.to_string())
            );
        }
        assert!(Injection::parse("cookie").is_err());
        assert!(Injection::parse("header:a b").is_err());
    }

    #[test]
    fn base_url_vars_are_shell_names() {
        assert_eq!(
            base_url_var(UpstreamClass::Provider, "openai-main"),
            "AGENFLEET_PROVIDER_OPENAI_MAIN_BASE_URL"
        );
    }
}
