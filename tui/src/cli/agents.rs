//! `agenfleet agents list|show|create -f FILE|start|stop|restart|reset|delete`.

use super::Out;
use crate::client::{CliError, Conn};
use crate::fmt;
use agenfleet_protocol::{now_ms, AgentAction, AgentRef, AgentSpec, AgentView};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// Every agent you can see.
    List,
    /// One agent in detail.
    Show { agent: String },
    /// Create an agent from a spec file (TOML) and start it.
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Start a stopped agent.
    Start { agent: String },
    /// Stop an agent; it stays stopped.
    Stop { agent: String },
    /// Stop and start an agent (not counted against its restart budget).
    Restart { agent: String },
    /// Clear a failed agent's restart budget and run it again.
    Reset { agent: String },
    /// Stop an agent and remove it.
    Delete { agent: String },
}

fn parse_ref(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))
}

/// The fleet table for people.
pub fn table(agents: &[AgentView]) -> String {
    let now = now_ms();
    let rows: Vec<[String; 9]> = agents
        .iter()
        .map(|a| {
            [
                a.qualified_name(),
                a.project.clone(),
                match (a.health.as_deref(), a.ungoverned_egress) {
                    (Some("unhealthy"), false) => format!("{} unhealthy", a.state),
                    (Some("unhealthy"), true) => {
                        format!("{} unhealthy UNGOVERNED EGRESS", a.state)
                    }
                    (_, true) => format!("{} UNGOVERNED EGRESS", a.state),
                    _ => a.state.to_string(),
                },
                fmt::uptime(a, now),
                fmt::restarts(a),
                fmt::cpu(a),
                fmt::memory(a),
                fmt::model_today(&a.usage_today),
                fmt::exit(a),
            ]
        })
        .collect();
    let header = [
        "AGENT",
        "PROJECT",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CPU",
        "MEM",
        "MODEL TODAY",
        "LAST EXIT",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut s = String::new();
    let mut push = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    };
    push(header.to_vec());
    for r in &rows {
        push(r.iter().map(|c| c.as_str()).collect());
    }
    s
}

pub fn detail(a: &AgentView) -> String {
    let now = now_ms();
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{k:<13}{v}\n"));
    kv("agent", a.qualified_name());
    kv("project", a.project.clone());
    kv(
        "state",
        format!("{} (desired: {:?})", a.state, a.desired).to_lowercase(),
    );
    if let Some(m) = &a.message {
        kv("message", m.clone());
    }
    kv("image", a.image.clone());
    if a.usage_today.calls > 0 {
        let u = &a.usage_today;
        kv(
            "model today",
            format!(
                "{} calls, {} errors, {} tokens in, {} out (`agenfleet usage` for more)",
                u.calls, u.errors, u.tokens_in, u.tokens_out
            ),
        );
    }
    if a.ungoverned_egress {
        kv(
            "network",
            "egress — UNGOVERNED EGRESS: it reaches hosts around the gateway; nothing it sends is decided or audited".into(),
        );
    }
    if !a.command.is_empty() {
        kv("command", shell_words(&a.command));
    }
    if !a.workdir.is_empty() {
        kv("workdir", a.workdir.clone());
    }
    for (k, v) in &a.env {
        kv("env", format!("{k}={v}"));
    }
    for c in &a.credentials {
        kv("credential", format!("{} ({})", c.name, c.describe()));
    }
    for f in &a.files {
        kv(
            "file",
            format!(
                "{} ← {} ({} bytes, sha256 {}, read-only)",
                f.target, f.source, f.bytes, f.sha256
            ),
        );
    }
    if !a.upstreams.is_empty() {
        kv("calls via", a.upstreams.join(", "));
    }
    if let Some(mb) = a.workspace_mb {
        kv(
            "workspace",
            format!(
                "{} ({mb} MiB, kept across restarts, removed on purge)",
                agenfleet_protocol::spec::WORKSPACE_IN_CONTAINER
            ),
        );
    }
    kv(
        "container",
        a.container_id
            .clone()
            .map(|c| c.chars().take(12).collect())
            .unwrap_or_else(|| "-".into()),
    );
    if let Some(h) = &a.health {
        kv("health", h.clone());
    }
    kv("uptime", fmt::uptime(a, now));
    kv(
        "restarts",
        format!(
            "{} total, {} of {} in the window",
            a.restarts, a.restarts_in_window, a.restart_budget
        ),
    );
    if let Some(at) = a.next_restart_at_ms {
        kv(
            "next restart",
            format!("in {}", fmt::duration_ms(at.saturating_sub(now))),
        );
    }
    kv("last exit", fmt::exit(a));
    kv("cpu", fmt::cpu(a));
    kv(
        "memory",
        format!("{} of {}", fmt::memory(a), fmt::bytes(a.memory_limit_bytes)),
    );
    kv("spec hash", a.spec_hash.clone());
    s.trim_end().to_string()
}

/// An argv as one line a shell would split back the same way.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads and checks a spec file; errors name the file, the field and the reason.
pub fn read_spec(path: &std::path::Path) -> Result<AgentSpec, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            6,
            "invalid_argument",
            format!("{}: cannot read: {e}", path.display()),
        )
    })?;
    let spec = AgentSpec::from_toml(&text).map_err(|e| {
        CliError::new(
            6,
            "invalid_argument",
            format!("{}: invalid spec: {e}", path.display()),
        )
    })?;
    let mut spec = spec;
    // `[[files]]` travel with the spec: read here, relative to the spec's directory.
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    for (i, f) in spec.files.iter_mut().enumerate() {
        if f.source.starts_with('/') || f.source.split('/').any(|c| c == "..") {
            // Validation below says why.
            continue;
        }
        let p = base.join(&f.source);
        let bad = |why: String| {
            CliError::new(
                6,
                "invalid_argument",
                format!(
                    "{}: invalid spec: files[{i}].source: {}{why}",
                    path.display(),
                    p.display()
                ),
            )
        };
        let meta = std::fs::metadata(&p).map_err(|e| bad(format!(": {e}")))?;
        if !meta.is_file() || meta.len() > agenfleet_protocol::spec::MAX_FILE_BYTES as u64 {
            return Err(bad(format!(
                " is not a file of at most {} KiB",
                agenfleet_protocol::spec::MAX_FILE_BYTES / 1024
            )));
        }
        f.content = std::fs::read(&p).map_err(|e| bad(format!(": {e}")))?;
    }
    spec.validate().map_err(|e| {
        CliError::new(
            6,
            "invalid_argument",
            format!("{}: invalid spec: {e}", path.display()),
        )
    })?;
    Ok(spec)
}

pub async fn run(conn: &Conn, out: &Out, cmd: &AgentsCmd) -> Result<(), CliError> {
    let action = |a: &String, act: AgentAction| -> Result<(AgentRef, AgentAction), CliError> {
        Ok((parse_ref(a)?, act))
    };
    let (agent, act) = match cmd {
        AgentsCmd::List => {
            let list = conn.client.list_agents(conn.ctx()).await??;
            return out.print(&list, || {
                if list.is_empty() {
                    "no agents".into()
                } else {
                    table(&list).trim_end().to_string()
                }
            });
        }
        AgentsCmd::Show { agent } => {
            let v = conn
                .client
                .get_agent(conn.ctx(), parse_ref(agent)?)
                .await??;
            return out.print(&v, || detail(&v));
        }
        AgentsCmd::Create { file } => {
            let spec = read_spec(file)?;
            // Creating may build the agent image first.
            let v = conn
                .client
                .create_agent(conn.ctx_wait(Duration::from_secs(300)), spec)
                .await?
                .map_err(|e| {
                    let mut c = CliError::from(e);
                    c.message = format!("{}: {}", file.display(), c.message);
                    c
                })?;
            return out.print(&v, || {
                format!("created {} ({})", v.qualified_name(), v.state)
            });
        }
        AgentsCmd::Delete { agent } => {
            let r = parse_ref(agent)?;
            conn.client
                .delete_agent(conn.ctx_wait(Duration::from_secs(60)), r.clone())
                .await??;
            return out.print(&serde_json::json!({"deleted": r.to_string()}), || {
                format!("deleted {r}")
            });
        }
        AgentsCmd::Start { agent } => action(agent, AgentAction::Start)?,
        AgentsCmd::Stop { agent } => action(agent, AgentAction::Stop)?,
        AgentsCmd::Restart { agent } => action(agent, AgentAction::Restart)?,
        AgentsCmd::Reset { agent } => action(agent, AgentAction::Reset)?,
    };
    let v = conn
        .client
        .agent_action(conn.ctx_wait(Duration::from_secs(120)), agent, act)
        .await??;
    out.print(&v, || {
        format!("{} {}: {}", act.as_str(), v.qualified_name(), v.state)
    })
}
