//! `agenfleet audit verify|tail|search|export|note|status|pin`: the tamper-evident trail.
//! `status` and `verify` check every signed checkpoint they receive against the key this
//! client pinned for the daemon at first contact and the newest checkpoint it verified
//! (`pins.rs`): a log rolled back or cut short, or signed by another key, exits 12.
//! `verify --offline DIR` checks an audit directory with no daemon running.

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
        /// A checkpoint to check against (default: the newest this client verified).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Do not remember the newest checkpoint afterwards.
        #[arg(long)]
        no_remember: bool,
        /// Check an audit directory (`<state_dir>/audit`, or a copy) with no daemon:
        /// checksums, chain, signatures, against the pinned key and newest checkpoint.
        #[arg(long, value_name = "DIR")]
        offline: Option<PathBuf>,
    },
    /// The signing key this client pinned for the daemon and the newest checkpoint it
    /// verified; `--forget` pins again at the next contact (after a restore or a key
    /// change that is yours).
    Pin {
        #[arg(long)]
        forget: bool,
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

/// The checkpoint checked against this client's pin for `place`: exit 12 with the banner
/// when the log went back, or another key signed it.
async fn check_pin(
    conn: &Conn,
    place: &str,
    cp: &Checkpoint,
    remember: bool,
) -> Result<(), CliError> {
    let verdict = crate::pins::Pins::default()
        .check_live(conn, place, cp, remember)
        .await;
    match verdict.alarm() {
        Some(alarm) => Err(CliError::new(EXIT_AUDIT_INVALID, "audit_invalid", alarm)),
        None => Ok(()),
    }
}

/// `audit pin [--forget]`.
fn pin(out: &Out, place: &str, forget: bool) -> Result<(), CliError> {
    let pins = crate::pins::Pins::default();
    if forget {
        let had = pins
            .forget(place)
            .map_err(|e| CliError::new(74, "io", e.to_string()))?;
        return out.print(
            &serde_json::json!({"place": place, "forgotten": had}),
            || {
                if had {
                    format!("forgot the audit key pinned for {place}; the next contact pins again")
                } else {
                    format!("no audit key was pinned for {place}")
                }
            },
        );
    }
    let p = pins.load(place);
    out.print(&p, || match &p {
        Some(p) => format!(
            "{place}
pinned key {} (since {})
newest     record {} at {} ({}…)",
            p.public_key,
            fmt::timestamp(p.first_seen_ms),
            p.newest.seq,
            fmt::timestamp(p.newest.time_ms),
            &p.newest.hash[..16.min(p.newest.hash.len())]
        ),
        None => format!("no audit key pinned for {place} yet (`audit status` pins it)"),
    })
}

/// `audit verify --offline DIR`: the daemon's own verifier (`agenfleetd verify-audit`,
/// beside this binary or on PATH) run as a tool — no daemon needed — against the
/// checkpoint given or the newest this client verified for `place`.
pub fn verify_offline(
    dir: &std::path::Path,
    checkpoint: Option<&std::path::Path>,
    place: &str,
    json: bool,
) -> Result<(), CliError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("agenfleetd")))
        .filter(|p| p.is_file());
    let tool = beside.unwrap_or_else(|| PathBuf::from("agenfleetd"));
    let scratch = tempfile::tempdir().map_err(|e| CliError::new(74, "io", e.to_string()))?;
    let kept = match checkpoint {
        Some(p) => Some(p.to_path_buf()),
        None => match crate::pins::Pins::default().load(place) {
            Some(pin) => {
                let f = scratch.path().join("pinned.json");
                std::fs::write(&f, serde_json::to_vec(&pin.newest).unwrap_or_default())
                    .map_err(|e| CliError::new(74, "io", e.to_string()))?;
                Some(f)
            }
            None => None,
        },
    };
    let mut c = std::process::Command::new(&tool);
    c.arg("verify-audit").arg(dir);
    if let Some(k) = &kept {
        c.arg("--checkpoint").arg(k);
    }
    let outp = c.output().map_err(|e| {
        CliError::new(
            3,
            "not_found",
            format!(
                "cannot run {} verify-audit (installed with the daemon): {e}",
                tool.display()
            ),
        )
    })?;
    let text = String::from_utf8_lossy(&outp.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&outp.stderr).trim().to_string();
    let valid = outp.status.success();
    if json {
        println!(
            "{}",
            serde_json::json!({"valid": valid, "dir": dir, "checked_against": kept, "report": text, "error": (!err.is_empty()).then_some(&err)})
        );
    } else {
        println!("{text}");
    }
    if valid {
        return Ok(());
    }
    Err(CliError::new(
        outp.status.code().unwrap_or(EXIT_AUDIT_INVALID),
        "audit_invalid",
        if err.is_empty() { text } else { err },
    ))
}

pub async fn run(conn: &Conn, out: &Out, cmd: &AuditCmd, place: &str) -> Result<(), CliError> {
    match cmd {
        AuditCmd::Pin { forget } => pin(out, place, *forget),
        AuditCmd::Status => {
            let st = conn.client.audit_status(conn.ctx()).await??;
            let pinned = match &st.last_checkpoint {
                Some(cp) => check_pin(conn, place, cp, true).await,
                None => Ok(()),
            };
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
            })?;
            pinned
        }
        AuditCmd::Verify {
            checkpoint,
            no_remember,
            ..
        } => {
            let kept = match checkpoint {
                Some(p) => Some(read_checkpoint(p)?),
                None => crate::pins::Pins::default().load(place).map(|p| p.newest),
            };
            let report = conn
                .client
                .audit_verify(conn.ctx_wait(Duration::from_secs(600)), kept.clone())
                .await??;
            // The daemon's newest checkpoint, checked here with the pinned key.
            let st = conn.client.audit_status(conn.ctx()).await??;
            let pinned = match &st.last_checkpoint {
                Some(cp) => check_pin(conn, place, cp, report.valid && !no_remember).await,
                None => Ok(()),
            };
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
            pinned?;
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
