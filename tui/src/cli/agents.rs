//! `agenfleet agents list|show|create -f FILE|apply -f FILE|spec|history|rollback|start|
//! stop|restart|reset|delete`.

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
    /// Create an agent, or change it in place (like `kubectl apply`): shows the diff
    /// against the spec in force and what the change does (in place, or a new container),
    /// asks, and stores the spec as the agent's next version. Credentials, scopes,
    /// workspace and history are kept.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Do not ask.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Show the diff and what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The spec in force (or version N) as TOML; `--json`: as the daemon stores it.
    Spec {
        agent: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Every version of an agent's spec: who stored it, when, and what it changed.
    History { agent: String },
    /// Put a copy of version N in force as the next version (shows the diff, asks).
    Rollback {
        agent: String,
        version: u32,
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Start a stopped agent.
    Start { agent: String },
    /// Stop an agent; it stays stopped.
    Stop { agent: String },
    /// Stop and start an agent (not counted against its restart budget).
    Restart { agent: String },
    /// Clear a failed agent's restart budget and run it again.
    Reset { agent: String },
    /// Swarm mode: give the agent a new gateway token (a new Swarm secret; its task is
    /// replaced to mount it). The old token is refused from that moment.
    RotateToken { agent: String },
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
    // Swarm mode: the node each agent's task runs on.
    let nodes = agents.iter().any(|a| a.node.is_some());
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut row = vec![
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
            ];
            if nodes {
                row.push(a.node.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut header = vec![
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
    if nodes {
        header.push("NODE");
    }
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
    push(header.clone());
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
    if !a.description.is_empty() {
        kv("description", a.description.clone());
    }
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
    if a.node.is_some() || a.task.is_some() {
        kv(
            "node",
            format!(
                "{} (task {}, {})",
                a.node.as_deref().unwrap_or("-"),
                a.task
                    .as_deref()
                    .map(|t| t.chars().take(12).collect::<String>())
                    .unwrap_or_else(|| "-".into()),
                a.task_state.as_deref().unwrap_or("-")
            ),
        );
    }
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
    kv(
        "spec",
        format!(
            "version {} (hash {}; `agenfleet agents history {}`)",
            a.spec_version,
            a.spec_hash,
            a.qualified_name()
        ),
    );
    s.trim_end().to_string()
}

fn invalid(msg: String) -> CliError {
    CliError::new(6, "invalid_argument", msg)
}

/// `agents apply -f FILE`.
async fn apply(
    conn: &Conn,
    out: &Out,
    file: &std::path::Path,
    yes: bool,
    dry_run: bool,
) -> Result<(), CliError> {
    let spec = read_spec(file)?;
    let r = AgentRef {
        tenant: Some(spec.tenant.clone()),
        name: spec.name.clone(),
    };
    let named = |mut e: CliError| {
        e.message = format!("{}: {}", file.display(), e.message);
        e
    };
    let current = match conn.client.agents_spec(conn.ctx(), r.clone(), None).await? {
        Ok(v) => Some(v),
        Err(e) if e.code == agenfleet_protocol::ErrorCode::NotFound => None,
        Err(e) => return Err(CliError::from(e)),
    };
    let expected = match &current {
        Some(cur) => {
            let change = spec
                .change_from(&cur.spec)
                .map_err(|e| invalid(format!("{}: cannot apply: {e}", file.display())))?;
            if change.is_empty() {
                return out.print(
                    &serde_json::json!({"action": "unchanged", "version": cur.version}),
                    || format!("{r}: no change (version {} is in force)", cur.version),
                );
            }
            show_change(out, cur, &spec, &file.display().to_string(), &change);
            Some(cur.version)
        }
        None => {
            if !out.json {
                let d = super::policy::diff(
                    "",
                    &spec.to_display_toml(),
                    "(none)",
                    &file.display().to_string(),
                );
                eprintln!(
                    "{}\n{r} does not exist: it is created (version 1) and started",
                    d.trim_end()
                );
            }
            Some(0)
        }
    };
    if dry_run {
        return out.print(
            &serde_json::json!({"dry_run": true, "expected_version": expected}),
            || "dry run: nothing changed".into(),
        );
    }
    confirm(yes, &format!("apply {} to {r}", file.display()))?;
    // Creating may build the agent image first; a new container waits for its start.
    let o = conn
        .client
        .agents_apply(conn.ctx_wait(Duration::from_secs(300)), spec, expected)
        .await?
        .map_err(|e| named(CliError::from(e)))?;
    out.print(&o, || outcome_line(&o))
}

/// The diff of the spec in force against a new one, and what applying it does (stderr,
/// so that `--json` output stays one document).
fn show_change(
    out: &Out,
    cur: &agenfleet_protocol::spec::SpecVersion,
    new: &AgentSpec,
    new_name: &str,
    change: &agenfleet_protocol::spec::SpecChange,
) {
    if out.json {
        return;
    }
    let d = super::policy::diff(
        &cur.spec.to_display_toml(),
        &new.to_display_toml(),
        &format!(
            "{} version {} (in force)",
            cur.spec.qualified_name(),
            cur.version
        ),
        new_name,
    );
    let effect = if change.recreate {
        "the container is replaced: the agent restarts with the new spec"
    } else {
        "the running container is not touched"
    };
    eprintln!(
        "{}\nversion {} → {}: {} — {effect}; credentials, scopes, workspace and history are kept",
        d.trim_end(),
        cur.version,
        cur.version + 1,
        change.describe()
    );
}

/// Asks on the terminal unless `yes`; without a terminal, `--yes` is required.
fn confirm(yes: bool, what: &str) -> Result<(), CliError> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(invalid(format!(
            "not going to {what} without confirmation: stdin is not a terminal (use --yes)"
        )));
    }
    eprint!("{what}? [y/N] ");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new(
            8,
            "failed_precondition",
            format!("not confirmed; nothing changed ({what})"),
        ))
    }
}

fn outcome_line(o: &agenfleet_protocol::spec::ApplyOutcome) -> String {
    use agenfleet_protocol::spec::ApplyAction;
    let what = match o.action {
        ApplyAction::Created | ApplyAction::Unchanged => o.action.as_str().to_string(),
        _ => format!("{}: {}", o.action.as_str(), o.change.describe()),
    };
    format!(
        "{} version {} {what} ({})",
        o.agent.qualified_name(),
        o.version,
        o.agent.state
    )
}

fn history_lines(h: &agenfleet_protocol::spec::SpecHistory) -> String {
    h.versions
        .iter()
        .rev()
        .map(|v| {
            format!(
                "{} v{:<3} {}  {}  {}  {}",
                if v.version == h.current { "*" } else { " " },
                v.version,
                v.hash,
                fmt::timestamp(v.created_ms),
                v.author,
                v.note
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        AgentsCmd::Apply { file, yes, dry_run } => {
            return apply(conn, out, file, *yes, *dry_run).await;
        }
        AgentsCmd::Spec { agent, version } => {
            let v = conn
                .client
                .agents_spec(conn.ctx(), parse_ref(agent)?, *version)
                .await??;
            return out.print(&v, || {
                format!(
                    "# {} version {} by {}, {}: {}\n{}",
                    v.spec.qualified_name(),
                    v.version,
                    v.author,
                    fmt::timestamp(v.created_ms),
                    v.note,
                    v.spec.to_display_toml().trim_end()
                )
            });
        }
        AgentsCmd::History { agent } => {
            let h = conn
                .client
                .agents_history(conn.ctx(), parse_ref(agent)?)
                .await??;
            return out.print(&h, || history_lines(&h));
        }
        AgentsCmd::Rollback {
            agent,
            version,
            yes,
        } => {
            let r = parse_ref(agent)?;
            let (current, target) = tokio::try_join!(
                conn.client.agents_spec(conn.ctx(), r.clone(), None),
                conn.client
                    .agents_spec(conn.ctx(), r.clone(), Some(*version)),
            )?;
            let (current, target) = (current?, target?);
            let change = target
                .spec
                .change_from(&current.spec)
                .map_err(|e| invalid(format!("cannot roll back to version {version}: {e}")))?;
            if change.is_empty() {
                return out.print(
                    &serde_json::json!({"action": "unchanged", "version": current.version}),
                    || {
                        format!(
                            "version {version} is the spec in force (version {}); nothing to do",
                            current.version
                        )
                    },
                );
            }
            show_change(
                out,
                &current,
                &target.spec,
                &format!("version {version}"),
                &change,
            );
            confirm(*yes, &format!("roll {r} back to version {version}"))?;
            let o = conn
                .client
                .agents_rollback(conn.ctx_wait(Duration::from_secs(300)), r, *version)
                .await??;
            return out.print(&o, || outcome_line(&o));
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
        AgentsCmd::RotateToken { agent } => action(agent, AgentAction::RotateToken)?,
    };
    let v = conn
        .client
        .agent_action(conn.ctx_wait(Duration::from_secs(120)), agent, act)
        .await??;
    out.print(&v, || {
        format!("{} {}: {}", act.as_str(), v.qualified_name(), v.state)
    })
}
