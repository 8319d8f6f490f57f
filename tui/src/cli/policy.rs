//! `agenfleet scopes show|edit|diff|publish|rollback`, `agenfleet policy
//! show|validate|test|publish|rollback` and `agenfleet escalations list|approve|deny`:
//! what each agent may call, the tenant's Cedar policies on top, and the tool calls that
//! wait for a person. Scopes are checked here before they are sent (the daemon checks
//! again); policies are checked by the daemon against its schema.

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::policy::{EscalationView, PolicyVersion, Scopes, VersionHistory};
use agenfleet_protocol::AgentRef;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// Exit code of `policy test` when a case did not come out as expected.
pub const EXIT_CASES_FAILED: i32 = 13;

#[derive(Subcommand, Debug)]
pub enum ScopesCmd {
    /// The scopes in force (or `--version N`) and the version history.
    Show {
        agent: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Edit the scopes in $EDITOR, check them, show the diff, publish on confirmation.
    Edit {
        agent: String,
        /// Publish without asking.
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The difference between two versions, or between the scopes in force and FILE.
    Diff {
        agent: String,
        file: Option<PathBuf>,
        #[arg(long)]
        from: Option<u32>,
        #[arg(long)]
        to: Option<u32>,
    },
    /// Check FILE (TOML) and publish it as the agent's next version.
    Publish {
        agent: String,
        file: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Publish a copy of an earlier version.
    Rollback { agent: String, version: u32 },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// A tenant's Cedar policy in force and its version history.
    Show {
        #[arg(default_value = agenfleet_protocol::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Check a Cedar policy file against the schema (nothing is stored).
    Validate { file: PathBuf },
    /// Run the cases of a test file (TOML) against the policy in force, or `--policy FILE`.
    Test {
        file: PathBuf,
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Check and publish a policy file as the tenant's next version.
    Publish {
        tenant: String,
        file: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Publish a copy of an earlier version.
    Rollback { tenant: String, version: u32 },
}

#[derive(Subcommand, Debug)]
pub enum EscalationsCmd {
    /// Tool calls waiting for a person (`--all`: with the recently decided ones).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Approve one escalated call (this exact request only; policies stay as they are).
    Approve {
        id: u64,
        #[arg(long)]
        reason: String,
        /// The request hash shown by `list`; by default the escalation's own.
        #[arg(long)]
        request: Option<String>,
    },
    /// Deny one escalated call.
    Deny {
        id: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        request: Option<String>,
    },
}

fn invalid(msg: impl Into<String>) -> CliError {
    CliError::new(6, "invalid_argument", msg)
}

fn parse_ref(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s).map_err(|e| invalid(format!("bad agent name: {e}")))
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))
}

fn check_scopes(text: &str, origin: &str) -> Result<(), CliError> {
    Scopes::parse(text)
        .map(|_| ())
        .map_err(|e| invalid(format!("{origin}: invalid scopes: {e}")))
}

/// A unified diff of two texts (empty when they are equal).
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

fn history_lines(h: &VersionHistory) -> String {
    h.versions
        .iter()
        .rev()
        .map(|v| {
            format!(
                "{} v{:<3} {}  {}  {}{}",
                if v.version == h.current { "*" } else { " " },
                v.version,
                &v.hash[..v.hash.len().min(12)],
                crate::fmt::timestamp(v.created_ms),
                v.author,
                if v.note.is_empty() {
                    String::new()
                } else {
                    format!("  — {}", v.note)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pick<'a>(
    h: &'a VersionHistory,
    v: Option<u32>,
    what: &str,
) -> Result<Option<&'a PolicyVersion>, CliError> {
    match v {
        None => Ok(h.current()),
        Some(n) => h
            .versions
            .iter()
            .find(|x| x.version == n)
            .map(Some)
            .ok_or_else(|| CliError::new(5, "not_found", format!("{what} has no version {n}"))),
    }
}

fn published(v: &PolicyVersion, what: &str) -> String {
    format!(
        "published {what} v{} ({})",
        v.version,
        &v.hash[..v.hash.len().min(12)]
    )
}

pub async fn run_scopes(conn: &Conn, out: &Out, cmd: &ScopesCmd) -> Result<(), CliError> {
    match cmd {
        ScopesCmd::Show { agent, version } => {
            let h = conn
                .client
                .scopes_show(conn.ctx(), parse_ref(agent)?)
                .await??;
            let shown = pick(&h, *version, agent)?;
            out.print(&h, || match shown {
                None => format!("{agent}: no scopes published — every tool call is denied"),
                Some(v) => format!(
                    "# scopes of {agent}, v{} of {}\n{}\n\n# history\n{}",
                    v.version,
                    h.current,
                    v.text.trim_end(),
                    history_lines(&h)
                ),
            })
        }
        ScopesCmd::Diff {
            agent,
            file,
            from,
            to,
        } => {
            let h = conn
                .client
                .scopes_show(conn.ctx(), parse_ref(agent)?)
                .await??;
            let text_of = |n: u32| -> Result<(String, String), CliError> {
                if n == 0 {
                    return Ok((String::new(), format!("{agent} (none)")));
                }
                let v = pick(&h, Some(n), agent)?;
                Ok((
                    v.map(|v| v.text.clone()).unwrap_or_default(),
                    format!("{agent} v{n}"),
                ))
            };
            let ((old, old_name), (new, new_name)) = match file {
                Some(f) => (text_of(h.current)?, (read(f)?, f.display().to_string())),
                None => {
                    let to = to.unwrap_or(h.current);
                    (text_of(from.unwrap_or(to.saturating_sub(1)))?, text_of(to)?)
                }
            };
            let d = diff(&old, &new, &old_name, &new_name);
            out.print(
                &serde_json::json!({"from": old_name, "to": new_name, "diff": d}),
                || {
                    if d.is_empty() {
                        "no difference".into()
                    } else {
                        d.trim_end().to_string()
                    }
                },
            )
        }
        ScopesCmd::Publish { agent, file, note } => {
            let text = read(file)?;
            check_scopes(&text, &file.display().to_string())?;
            let v = conn
                .client
                .scopes_publish(conn.ctx(), parse_ref(agent)?, text, note.clone())
                .await??;
            out.print(&v, || published(&v, &format!("scopes of {agent}")))
        }
        ScopesCmd::Rollback { agent, version } => {
            let v = conn
                .client
                .scopes_rollback(conn.ctx(), parse_ref(agent)?, *version)
                .await??;
            out.print(&v, || {
                format!(
                    "{} (a copy of v{version})",
                    published(&v, &format!("scopes of {agent}"))
                )
            })
        }
        ScopesCmd::Edit { agent, yes, note } => edit(conn, out, agent, *yes, note).await,
    }
}

/// `scopes edit`: $EDITOR on the scopes in force, checked locally, diff, confirm, publish.
async fn edit(conn: &Conn, out: &Out, agent: &str, yes: bool, note: &str) -> Result<(), CliError> {
    let r = parse_ref(agent)?;
    let h = conn.client.scopes_show(conn.ctx(), r.clone()).await??;
    let before = h
        .current()
        .map(|v| v.text.clone())
        .unwrap_or_else(|| "# tools this agent may call, e.g.\ntools = []\n".into());
    // A new file of our own (O_EXCL, mode 0600, a random name): nobody can have put a
    // link or a file there first. Kept after the edit, so a rejected edit is not lost.
    let internal = |e: std::io::Error| {
        CliError::new(
            70,
            "internal",
            format!("cannot write a temporary file for the edit: {e}"),
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix(&format!("agenfleet-scopes-{}-", agent.replace('/', ".")))
        .suffix(".toml")
        .tempfile()
        .map_err(internal)?;
    std::io::Write::write_all(&mut file, before.as_bytes()).map_err(internal)?;
    let (_, path) = file.keep().map_err(|e| internal(e.error))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| CliError::new(70, "internal", format!("cannot run {editor}: {e}")))?;
    if !status.success() {
        return Err(CliError::new(
            8,
            "failed_precondition",
            format!("{editor} failed; nothing published ({})", path.display()),
        ));
    }
    let after = read(&path)?;
    if let Err(e) = check_scopes(&after, &path.display().to_string()) {
        return Err(CliError::new(
            e.exit_code,
            "invalid_argument",
            format!(
                "{}; nothing published (your edit is kept in {})",
                e.message,
                path.display()
            ),
        ));
    }
    let d = diff(
        &before,
        &after,
        &format!("{agent} v{}", h.current),
        "edited",
    );
    if d.is_empty() {
        let _ = std::fs::remove_file(&path);
        return out.print(&serde_json::json!({"published": false}), || {
            "no change; nothing published".into()
        });
    }
    if !out.json {
        eprintln!("{}", d.trim_end());
    }
    if !yes {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(invalid(format!(
                "not publishing without confirmation (use --yes); your edit is in {}",
                path.display()
            )));
        }
        eprint!("publish these scopes as v{}? [y/N] ", h.current + 1);
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(CliError::new(
                8,
                "failed_precondition",
                format!("not published; your edit is in {}", path.display()),
            ));
        }
    }
    let v = conn
        .client
        .scopes_publish(conn.ctx(), r, after, note.to_string())
        .await??;
    let _ = std::fs::remove_file(&path);
    out.print(&v, || published(&v, &format!("scopes of {agent}")))
}

pub async fn run_policy(conn: &Conn, out: &Out, cmd: &PolicyCmd) -> Result<(), CliError> {
    match cmd {
        PolicyCmd::Show { tenant, version } => {
            let h = conn
                .client
                .policy_show(conn.ctx(), tenant.clone())
                .await??;
            let shown = pick(&h, *version, &format!("tenant {tenant}"))?;
            out.print(&h, || match shown {
                None => format!("tenant {tenant}: no policy published — scopes alone decide"),
                Some(v) => format!(
                    "// policy of tenant {tenant}, v{} of {}\n{}\n\n// history\n{}",
                    v.version,
                    h.current,
                    v.text.trim_end(),
                    history_lines(&h)
                ),
            })
        }
        PolicyCmd::Validate { file } => {
            let text = read(file)?;
            let problems = conn.client.policy_validate(conn.ctx(), text).await??;
            let name = file.display().to_string();
            let ok = problems.is_empty();
            out.print(
                &serde_json::json!({"valid": ok, "problems": problems}),
                || {
                    if ok {
                        format!("{name}: valid")
                    } else {
                        problems
                            .iter()
                            .map(|p| format!("{name}: {p}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                },
            )?;
            if ok {
                Ok(())
            } else {
                Err(CliError::new(
                    6,
                    "invalid_argument",
                    format!("{name}: {} problem(s)", problems.len()),
                ))
            }
        }
        PolicyCmd::Test { file, policy } => {
            let text = read(file)?;
            let tf = crate::policy_cases::parse(&text)
                .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
            let candidate_path = policy.clone().or_else(|| {
                tf.policy
                    .as_ref()
                    .map(|p| file.parent().unwrap_or(Path::new(".")).join(p))
            });
            let candidate = candidate_path.as_deref().map(read).transpose()?;
            let results = conn
                .client
                .policy_test(conn.ctx(), tf.tenant, candidate, tf.cases)
                .await??;
            let failed = results
                .iter()
                .filter(|r| !crate::policy_cases::passed(r))
                .count();
            out.print(&results, || {
                let mut lines: Vec<String> = results
                    .iter()
                    .map(crate::policy_cases::result_line)
                    .collect();
                lines.push(format!("{} case(s), {failed} failed", results.len()));
                lines.join("\n")
            })?;
            if failed > 0 {
                Err(CliError::new(
                    EXIT_CASES_FAILED,
                    "cases_failed",
                    format!("{failed} case(s) failed"),
                ))
            } else {
                Ok(())
            }
        }
        PolicyCmd::Publish { tenant, file, note } => {
            let text = read(file)?;
            let v = conn
                .client
                .policy_publish(conn.ctx(), tenant.clone(), text, note.clone())
                .await??;
            out.print(&v, || published(&v, &format!("policy of tenant {tenant}")))
        }
        PolicyCmd::Rollback { tenant, version } => {
            let v = conn
                .client
                .policy_rollback(conn.ctx(), tenant.clone(), *version)
                .await??;
            out.print(&v, || {
                format!(
                    "{} (a copy of v{version})",
                    published(&v, &format!("policy of tenant {tenant}"))
                )
            })
        }
    }
}

/// One escalation for people.
pub fn describe(e: &EscalationView) -> String {
    let now = agenfleet_protocol::now_ms();
    let when = match e.state {
        agenfleet_protocol::policy::EscalationState::Pending => format!(
            "waits, denied in {}",
            crate::fmt::duration_ms(e.deadline_ms.saturating_sub(now))
        ),
        s => format!(
            "{s}{}",
            e.reviewer
                .as_deref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default()
        ),
    };
    format!(
        "#{} {}/{} {} {}  [{}] {} — {when}\n    request {}",
        e.id,
        e.tenant,
        e.agent,
        e.tool,
        e.args_json,
        e.policies.join(", "),
        e.reason,
        e.request_hash
    )
}

pub async fn run_escalations(conn: &Conn, out: &Out, cmd: &EscalationsCmd) -> Result<(), CliError> {
    match cmd {
        EscalationsCmd::List { all } => {
            let list = conn.client.escalations_list(conn.ctx(), *all).await??;
            out.print(&list, || {
                if list.is_empty() {
                    "no escalations waiting".into()
                } else {
                    list.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            })
        }
        EscalationsCmd::Approve {
            id,
            reason,
            request,
        }
        | EscalationsCmd::Deny {
            id,
            reason,
            request,
        } => {
            let approve = matches!(cmd, EscalationsCmd::Approve { .. });
            let hash = match request {
                Some(h) => h.clone(),
                None => conn
                    .client
                    .escalations_list(conn.ctx(), true)
                    .await??
                    .into_iter()
                    .find(|e| e.id == *id)
                    .map(|e| e.request_hash)
                    .ok_or_else(|| CliError::new(5, "not_found", format!("no escalation {id}")))?,
            };
            let v = conn
                .client
                .escalation_decide(conn.ctx(), *id, hash, approve, reason.clone())
                .await??;
            out.print(&v, || describe(&v))
        }
    }
}
