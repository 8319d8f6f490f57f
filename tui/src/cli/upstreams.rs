//! `agenfleet providers|connections add|set|show|list|remove` and `agenfleet usage`.
//! A provider's or connection's key is read from a masked prompt or stdin, never from the
//! command line, and never shown again (its HMAC is). `set` changes only the options
//! given; `--key` replaces the key too.

use super::secret_input::read_secret;
use super::Out;
use crate::client::{CliError, Conn};
use crate::fmt;
use agenfleet_protocol::upstream::UsageRow;
use agenfleet_protocol::{Injection, UpstreamClass, UpstreamKind, UpstreamSpec, UpstreamView};
use clap::{Args, Subcommand};

#[derive(Args, Debug, Default)]
pub struct Options {
    /// openai, anthropic, generic, or workflow (a connection to a workflow the client
    /// builds, e.g. n8n: its failures are routed to the client).
    #[arg(long)]
    kind: Option<String>,
    /// https://host[:port][/prefix]; the agent's path is appended.
    #[arg(long)]
    base_url: Option<String>,
    /// How the key is sent: bearer, x-api-key, header:NAME, query:NAME (default: the
    /// kind's — x-api-key for anthropic, bearer otherwise).
    #[arg(long)]
    auth: Option<String>,
    /// PEM certificates trusted for this upstream besides the system roots.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Stop trusting the CA given earlier (`set`).
    #[arg(long, conflicts_with = "ca_file")]
    no_ca: bool,
    /// Providers: the next provider to try on 429, 5xx, timeout or no connection (repeat
    /// for a chain, in order).
    #[arg(long = "fallback")]
    fallbacks: Vec<String>,
    /// `set`: remove every fallback.
    #[arg(long, conflicts_with = "fallbacks")]
    no_fallbacks: bool,
    /// Milliseconds the upstream has to answer with its status line.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Connections: terminate the agent's own https to this host:port in its egress proxy
    /// (the daemon's CA, given to the agent), so paths are decided and the key injected.
    #[arg(long)]
    tls_inspect: Option<bool>,
    /// Keep the first 16 KiB of each request and answer in the call's audit record
    /// (prompts and completions); off by default: sizes and SHA-256 only.
    #[arg(long)]
    record_bodies: Option<bool>,
    /// Why (kept with the version).
    #[arg(long, default_value = "")]
    note: String,
}

#[derive(Subcommand, Debug)]
pub enum UpstreamsCmd {
    /// Add one (its key is read from a masked prompt or stdin).
    Add {
        name: String,
        #[arg(long, default_value = agenfleet_protocol::names::DEFAULT_TENANT)]
        tenant: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Change the options given; `--key` also replaces the key (prompt or stdin).
    Set {
        name: String,
        #[arg(long, default_value = agenfleet_protocol::names::DEFAULT_TENANT)]
        tenant: String,
        /// Read a new key.
        #[arg(long)]
        key: bool,
        #[command(flatten)]
        opts: Options,
    },
    /// Every version of one (never the key; its HMAC).
    Show {
        name: String,
        #[arg(long, default_value = agenfleet_protocol::names::DEFAULT_TENANT)]
        tenant: String,
    },
    /// The ones in force in the tenants you see.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove one: agents that name it can no longer reach it.
    Remove {
        name: String,
        #[arg(long, default_value = agenfleet_protocol::names::DEFAULT_TENANT)]
        tenant: String,
    },
}

fn bad(m: impl Into<String>) -> CliError {
    CliError::new(6, "invalid_argument", m)
}

/// `spec` with the options given applied.
fn apply(mut spec: UpstreamSpec, o: &Options) -> Result<UpstreamSpec, CliError> {
    if let Some(k) = &o.kind {
        let kind = UpstreamKind::parse(k).ok_or_else(|| {
            bad(format!(
                "--kind `{k}`: one of openai, anthropic, generic, workflow"
            ))
        })?;
        if o.auth.is_none() && spec.auth == spec.kind.default_auth() {
            spec.auth = kind.default_auth();
        }
        spec.kind = kind;
    }
    if let Some(u) = &o.base_url {
        spec.base_url = u.clone();
    }
    if let Some(a) = &o.auth {
        spec.auth = Injection::parse(a).map_err(|e| bad(format!("--auth: {e}")))?;
    }
    if let Some(p) = &o.ca_file {
        let pem = std::fs::read_to_string(p)
            .map_err(|e| bad(format!("--ca-file {}: {e}", p.display())))?;
        spec.ca_pem = Some(pem);
    }
    if o.no_ca {
        spec.ca_pem = None;
    }
    if !o.fallbacks.is_empty() {
        spec.fallbacks = o.fallbacks.clone();
    }
    if o.no_fallbacks {
        spec.fallbacks.clear();
    }
    if let Some(t) = o.timeout_ms {
        spec.timeout_ms = t;
    }
    if let Some(i) = o.tls_inspect {
        spec.tls_inspect = i;
    }
    if let Some(r) = o.record_bodies {
        spec.record_bodies = r;
    }
    spec.validate()
        .map_err(|e| bad(format!("{} `{}`: {e}", spec.class, spec.name)))?;
    Ok(spec)
}

fn line(v: &UpstreamView) -> String {
    let s = &v.spec;
    let mut out = format!(
        "{:<10} {:<16} {:<10} {:<9} {:<34} v{:<3} key v{} (hmac {})",
        s.class.as_str(),
        format!("{}/{}", s.tenant, s.name),
        s.kind.as_str(),
        s.auth.to_string(),
        s.base_url,
        v.version,
        v.key_version,
        v.key_hmac
    );
    if !s.fallbacks.is_empty() {
        out.push_str(&format!("  falls back to {}", s.fallbacks.join(" → ")));
    }
    if s.ca_pem.is_some() {
        out.push_str("  own CA");
    }
    if s.tls_inspect {
        out.push_str("  tls_inspect");
    }
    if s.record_bodies {
        out.push_str("  records bodies");
    }
    out
}

fn key_prompt(class: UpstreamClass, name: &str) -> String {
    format!("key of {class} {name}")
}

pub async fn run(
    conn: &Conn,
    out: &Out,
    class: UpstreamClass,
    cmd: &UpstreamsCmd,
) -> Result<(), CliError> {
    match cmd {
        UpstreamsCmd::Add { name, tenant, opts } => {
            let kind = match &opts.kind {
                Some(k) => UpstreamKind::parse(k).ok_or_else(|| {
                    bad(format!(
                        "--kind `{k}`: one of openai, anthropic, generic, workflow"
                    ))
                })?,
                None => return Err(bad("add needs --kind (openai, anthropic or generic)")),
            };
            if opts.base_url.is_none() {
                return Err(bad("add needs --base-url https://…"));
            }
            let spec = apply(
                UpstreamSpec {
                    class,
                    tenant: tenant.clone(),
                    name: name.clone(),
                    kind,
                    base_url: String::new(),
                    ca_pem: None,
                    auth: kind.default_auth(),
                    fallbacks: vec![],
                    timeout_ms: agenfleet_protocol::upstream::default_timeout_ms(),
                    tls_inspect: false,
                    record_bodies: false,
                },
                opts,
            )?;
            let key = read_secret(&key_prompt(class, name))?;
            let v = conn
                .client
                .upstreams_put(conn.ctx(), spec, Some(key), true, opts.note.clone())
                .await??;
            out.print(&v, || format!("added {}", line(&v)))
        }
        UpstreamsCmd::Set {
            name,
            tenant,
            key,
            opts,
        } => {
            let history = conn
                .client
                .upstreams_history(conn.ctx(), class, tenant.clone(), name.clone())
                .await??;
            let Some(cur) = history.last() else {
                return Err(bad(format!(
                    "tenant {tenant} has no {class} named `{name}`"
                )));
            };
            let spec = apply(cur.spec.clone(), opts)?;
            let key = if *key {
                Some(read_secret(&key_prompt(class, name))?)
            } else {
                None
            };
            let v = conn
                .client
                .upstreams_put(conn.ctx(), spec, key, false, opts.note.clone())
                .await??;
            out.print(&v, || format!("changed {}", line(&v)))
        }
        UpstreamsCmd::Show { name, tenant } => {
            let history = conn
                .client
                .upstreams_history(conn.ctx(), class, tenant.clone(), name.clone())
                .await??;
            out.print(&history, || {
                let mut s = String::new();
                for v in &history {
                    s.push_str(&format!(
                        "{}\n    {} by {}{}{}\n",
                        line(v),
                        fmt::timestamp(v.created_ms),
                        v.author,
                        if v.note.is_empty() { "" } else { ": " },
                        v.note
                    ));
                }
                s.trim_end().to_string()
            })
        }
        UpstreamsCmd::List { tenant } => {
            let all = conn
                .client
                .upstreams_list(conn.ctx(), tenant.clone())
                .await??;
            let mine: Vec<&UpstreamView> = all.iter().filter(|v| v.spec.class == class).collect();
            out.print(&mine, || {
                if mine.is_empty() {
                    format!("no {}", class.route())
                } else {
                    mine.iter().map(|v| line(v)).collect::<Vec<_>>().join("\n")
                }
            })
        }
        UpstreamsCmd::Remove { name, tenant } => {
            let v = conn
                .client
                .upstreams_remove(conn.ctx(), class, tenant.clone(), name.clone())
                .await??;
            out.print(&v, || {
                format!("removed {class} {tenant}/{name} (version {})", v.version)
            })
        }
    }
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// One JSON object per line (agents and tenants' totals), for export.
    #[arg(long)]
    jsonl: bool,
}

fn totals(t: &agenfleet_protocol::upstream::UsageTotals) -> String {
    format!("{:>7} {:>6} {:>10}", t.calls, t.errors, t.tokens())
}

pub async fn usage(conn: &Conn, out: &Out, a: &UsageArgs) -> Result<(), CliError> {
    let rows: Vec<UsageRow> = conn.client.usage(conn.ctx(), a.tenant.clone()).await??;
    if a.jsonl {
        for r in &rows {
            out.raw(&serde_json::to_string(r).unwrap_or_default());
        }
        return Ok(());
    }
    out.print(&rows, || {
        if rows.is_empty() {
            return "no model calls yet".into();
        }
        let mut s = format!(
            "{:<28} {:>7} {:>6} {:>10}   {:>7} {:>6} {:>10}   {:>7} {:>6} {:>10}   {:>10}\n",
            "AGENT",
            "1H CALLS",
            "ERR",
            "TOKENS",
            "24H",
            "ERR",
            "TOKENS",
            "30D",
            "ERR",
            "TOKENS",
            "TODAY"
        );
        for r in &rows {
            let who = if r.agent.is_empty() {
                format!("{} (tenant total)", r.tenant)
            } else {
                format!("{}/{}", r.tenant, r.agent)
            };
            s.push_str(&format!(
                "{:<28} {}   {}   {}   {:>10}\n",
                who,
                totals(&r.last_hour),
                totals(&r.last_day),
                totals(&r.last_30_days),
                r.today.tokens()
            ));
        }
        s.trim_end().to_string()
    })
}
