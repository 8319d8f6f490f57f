//! `agenfleet audit verify|tail|search|export|note|status`: the tamper-evident trail.
//! `verify` remembers the newest signed checkpoint it has seen (per daemon instance) and
//! checks the log against it next time, so a log rolled back or cut short is caught.

use super::Out;
use crate::client::{CliError, Conn};
use crate::fmt;
use agenfleet_protocol::{now_ms, AuditEntry, AuditQuery, Checkpoint};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code of `audit verify` when the log is not valid.
pub const EXIT_AUDIT_INVALID: i32 = 12;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check checksums, the hash chain and the signed checkpoints; exit 12 if invalid.
    Verify {
        /// A checkpoint to check against (default: the one this client kept last time).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Do not remember the newest checkpoint afterwards.
        #[arg(long)]
        no_remember: bool,
    },
    /// The newest records (`-f` to follow).
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Records that match every filter given.
    Search(SearchArgs),
    /// Every record, one JSON object per line (for SIEM tools).
    Export {
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
    /// Write a note into the trail.
    Note { text: String },
    /// Writable or not, head, last checkpoint, signing key.
    Status,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[arg(long)]
    pub actor: Option<String>,
    /// `name` or `tenant/name`.
    #[arg(long)]
    pub agent: Option<String>,
    /// Exact action, or a prefix ending in `.` (e.g. `agent.`).
    #[arg(long)]
    pub action: Option<String>,
    /// Unix ms, 2026-11-22T01:30 (UTC), or an age like 15m.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

pub fn line(e: &AuditEntry) -> String {
    let target = fmt::audit_target(&e.event);
    format!(
        "#{:<6} {} {:<18} {:<18} {:<22} {:<9} {}",
        e.seq,
        fmt::timestamp(e.time_ms),
        e.event.actor,
        e.event.action,
        target,
        e.event.outcome,
        e.event.detail
    )
}

fn state_file(instance: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("agenfleet")
        .join(format!("checkpoint-{instance}.json"))
}

fn read_checkpoint(p: &std::path::Path) -> Result<Checkpoint, CliError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::new(
            6,
            "invalid_argument",
            format!("{}: not a checkpoint: {e}", p.display()),
        )
    })
}

pub async fn run(conn: &Conn, out: &Out, cmd: &AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::Status => {
            let st = conn.client.audit_status(conn.ctx()).await??;
            out.print(&st, || {
                let cp = st
                    .last_checkpoint
                    .as_ref()
                    .map(|c| format!("record {} at {}", c.seq, fmt::timestamp(c.time_ms)))
                    .unwrap_or_else(|| "none yet".into());
                format!(
                    "audit log  {}\nhead       record {} ({}…)\nverified   up to record {} at daemon start\ncheckpoint {}\nsigning    {}",
                    if st.writable { "writable".to_string() } else { format!("CLOSED: {}", st.problem.clone().unwrap_or_default()) },
                    st.head_seq,
                    &st.head_hash[..16.min(st.head_hash.len())],
                    st.verified_to,
                    cp,
                    st.signing
                )
            })
        }
        AuditCmd::Verify {
            checkpoint,
            no_remember,
        } => {
            let status = conn.client.status(conn.ctx()).await??;
            let remembered = state_file(&status.daemon.instance_id);
            let kept = match checkpoint {
                Some(p) => Some(read_checkpoint(p)?),
                None => read_checkpoint(&remembered).ok(),
            };
            let report = conn
                .client
                .audit_verify(conn.ctx_wait(Duration::from_secs(600)), kept.clone())
                .await??;
            if report.valid && !no_remember {
                let st = conn.client.audit_status(conn.ctx()).await??;
                if let Some(cp) = st.last_checkpoint {
                    if kept.as_ref().is_none_or(|k| cp.seq >= k.seq) {
                        if let Some(dir) = remembered.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = std::fs::write(
                            &remembered,
                            serde_json::to_vec_pretty(&cp).unwrap_or_default(),
                        );
                    }
                }
            }
            out.print(&report, || {
                let mut s = if report.valid {
                    format!(
                        "VALID: {} records ({}), chain intact up to record {}, {} signed checkpoints verified ({:.3} s)",
                        report.records,
                        fmt::bytes(report.bytes),
                        report.head_seq,
                        report.checkpoints_verified,
                        report.seconds
                    )
                } else {
                    format!(
                        "INVALID: {}\n{} records verified before it",
                        report.first_bad.clone().unwrap_or_default(),
                        report.records
                    )
                };
                if let Some(c) = &report.checkpoint_check {
                    s.push_str(&format!("\nkept checkpoint: {c}"));
                }
                if let Some(t) = &report.torn_tail {
                    s.push_str(&format!("\ntorn tail: {t}"));
                }
                s
            })?;
            if !report.valid {
                return Err(CliError::new(
                    EXIT_AUDIT_INVALID,
                    "audit_invalid",
                    format!(
                        "the audit log is not valid: {}",
                        report.first_bad.unwrap_or_default()
                    ),
                ));
            }
            Ok(())
        }
        AuditCmd::Tail { lines, follow } => {
            let q = AuditQuery {
                limit: (*lines).max(1),
                newest: true,
                ..Default::default()
            };
            let mut entries = conn.client.audit_query(conn.ctx(), q, 0).await??;
            let mut after = 0;
            loop {
                for e in &entries {
                    out.line(e, || line(e))?;
                    after = e.seq;
                }
                if !follow {
                    return Ok(());
                }
                let wait = Duration::from_secs(25);
                let q = AuditQuery {
                    after_seq: after,
                    limit: 1000,
                    ..Default::default()
                };
                entries = conn
                    .client
                    .audit_query(conn.ctx_wait(wait), q, wait.as_millis() as u64)
                    .await??;
            }
        }
        AuditCmd::Search(a) => {
            let now = now_ms();
            let t = |v: &Option<String>| -> Result<Option<u64>, CliError> {
                v.as_deref()
                    .map(|s| fmt::parse_time(s, now))
                    .transpose()
                    .map_err(|e| CliError::new(6, "invalid_argument", e))
            };
            let q = AuditQuery {
                actor: a.actor.clone(),
                agent: a.agent.clone(),
                action: a.action.clone(),
                since_ms: t(&a.since)?,
                until_ms: t(&a.until)?,
                after_seq: 0,
                limit: a.limit,
                newest: false,
            };
            let found = conn
                .client
                .audit_query(conn.ctx_wait(Duration::from_secs(60)), q, 0)
                .await??;
            out.print(&found, || {
                if found.is_empty() {
                    "no matching records".into()
                } else {
                    found.iter().map(line).collect::<Vec<_>>().join("\n")
                }
            })
        }
        AuditCmd::Export { format } => {
            if format != "jsonl" {
                return Err(CliError::new(
                    6,
                    "invalid_argument",
                    format!("unknown export format `{format}` (supported: jsonl)"),
                ));
            }
            let mut after = 0;
            loop {
                let q = AuditQuery {
                    after_seq: after,
                    limit: 5000,
                    ..Default::default()
                };
                let page = conn
                    .client
                    .audit_query(conn.ctx_wait(Duration::from_secs(60)), q, 0)
                    .await??;
                if page.is_empty() {
                    return Ok(());
                }
                for e in &page {
                    let s = serde_json::to_string(e)
                        .map_err(|err| CliError::new(70, "internal", err.to_string()))?;
                    out.raw(&s);
                    after = e.seq;
                }
            }
        }
        AuditCmd::Note { text } => {
            let seq = conn.client.audit_note(conn.ctx(), text.clone()).await??;
            out.print(&serde_json::json!({"seq": seq}), || {
                format!("noted as record {seq}")
            })
        }
    }
}
