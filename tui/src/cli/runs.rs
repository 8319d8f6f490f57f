//! `agenfleet runs`: start a run of an agent (`start`, with `--wait` for its end), list
//! runs (`list`, newest first; `--failed`, `--since`), show one (`show`, its input,
//! timeline and outcome), cancel one (`cancel`), print its output (`logs`).

use super::{CliError, Out};
use crate::client::Conn;
use agenfleet_protocol::runs::{RunQuery, RunState, RunView};
use agenfleet_protocol::AgentRef;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// Queue a run of AGENT (runs.trigger); its input is a JSON file (`-`: stdin), `{}`
    /// when none is given. `--wait`: until it ends (exit 14 when it did not succeed).
    Start {
        agent: String,
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        wait: bool,
    },
    /// Runs you can see, newest first.
    List {
        agent: Option<String>,
        /// Only runs that failed or timed out.
        #[arg(long)]
        failed: bool,
        /// Only runs queued in the last DURATION (`90s`, `15m`, `12h`, `30d`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: who started it and how, its input, when it was queued, started and ended,
    /// its outcome, and its timeline from the audit log (start, each tool decision and model
    /// or connection call its agent made for it, end). `--wait`: once it has ended.
    Show {
        id: u64,
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a queued or running run (runs.trigger).
    Cancel { id: u64 },
    /// A run's output: a job's (kept with the run, redacted; so far, while it runs), or
    /// what a service agent printed while the run ran (`--json`: one line per object).
    Logs { id: u64 },
}

/// Exit code of `runs start --wait` / `runs show --wait` when the run did not succeed.
pub const EXIT_RUN_FAILED: i32 = 14;

/// How long `--wait` waits for a run's end.
const WAIT: Duration = Duration::from_secs(600);

fn agent(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))
}

fn since_ms(s: &str) -> Result<u64, CliError> {
    let secs = super::duration_secs(s)?;
    Ok(agenfleet_protocol::now_ms().saturating_sub(secs * 1000))
}

fn line(v: &RunView) -> String {
    let took = match (v.started_ms, v.ended_ms) {
        (Some(s), Some(e)) => crate::fmt::duration_ms(e.saturating_sub(s)),
        _ => "-".into(),
    };
    format!(
        "{:>8}  {:<28} {:<10} {:<9} {:>8}  {}{}",
        v.id,
        v.agent_ref(),
        v.state.as_str(),
        v.trigger,
        took,
        crate::fmt::timestamp(v.created_ms),
        v.error
            .as_deref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default()
    )
}

fn describe(v: &RunView) -> String {
    let t = |ms: Option<u64>| ms.map(crate::fmt::timestamp).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "run {} of {} ({})\n  state      {}\n  trigger    {} by {}\n  queued     {}\n  started    {}\n  ended      {}",
        v.id,
        v.agent_ref(),
        v.project,
        v.state,
        v.trigger,
        v.requested_by,
        crate::fmt::timestamp(v.created_ms),
        t(v.started_ms),
        t(v.ended_ms),
    );
    if let (Some(d), false) = (v.deadline_ms, v.state.ended()) {
        s.push_str(&format!("\n  times out  {}", crate::fmt::timestamp(d)));
    }
    s.push_str(&format!("\n  input      {}", v.input_json));
    if let Some(r) = &v.result_json {
        s.push_str(&format!("\n  result     {r}"));
    }
    if let Some(e) = &v.error {
        s.push_str(&format!("\n  error      {e}"));
    }
    s
}

/// One line of a run's timeline: when, what, and the detail's telling fields.
fn event_line(e: &agenfleet_protocol::AuditEntry) -> String {
    format!(
        "  {}  {:<16} {:<9} {}",
        crate::fmt::timestamp(e.time_ms),
        e.event.action,
        e.event.outcome,
        crate::fmt::run_event_detail(&e.event.detail)
    )
}

/// Prints the run with its timeline; after a wait, a run that did not succeed is exit 14.
async fn show_run(conn: &Conn, out: &Out, v: &RunView, waited: bool) -> Result<(), CliError> {
    let timeline = conn.client.runs_timeline(conn.ctx(), v.id).await??;
    if out.json {
        let mut j = serde_json::to_value(v).unwrap_or_default();
        j["timeline"] = serde_json::to_value(&timeline).unwrap_or_default();
        out.raw(&j.to_string());
    } else {
        let mut s = describe(v);
        s.push_str("\n  timeline");
        for e in &timeline {
            s.push('\n');
            s.push_str(&event_line(e));
        }
        out.raw(&s);
    }
    finish(v, waited)
}

/// Prints the run; after a wait, a run that did not succeed is exit 14.
fn print_run(out: &Out, v: &RunView, waited: bool) -> Result<(), CliError> {
    out.print(v, || describe(v))?;
    finish(v, waited)
}

/// A run waited for that did not succeed: exit 14.
fn finish(v: &RunView, waited: bool) -> Result<(), CliError> {
    if waited && v.state != RunState::Succeeded {
        return Err(CliError::new(
            EXIT_RUN_FAILED,
            "run_failed",
            format!("run {} {}", v.id, v.state),
        ));
    }
    Ok(())
}

pub async fn run(conn: &Conn, out: &Out, cmd: &RunsCmd) -> Result<(), CliError> {
    match cmd {
        RunsCmd::Start {
            agent: a,
            input,
            wait,
        } => {
            let input_json = match input {
                None => "{}".to_string(),
                Some(p) if p.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
                        CliError::new(6, "invalid_argument", format!("cannot read stdin: {e}"))
                    })?;
                    s
                }
                Some(p) => std::fs::read_to_string(p).map_err(|e| {
                    CliError::new(
                        6,
                        "invalid_argument",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?,
            };
            let v = conn
                .client
                .runs_start(conn.ctx(), agent(a)?, input_json)
                .await??;
            if !wait {
                return out.print(&v, || format!("run {} of {} queued", v.id, v.agent_ref()));
            }
            let v = conn
                .client
                .runs_get(conn.ctx_wait(WAIT), v.id, WAIT.as_millis() as u64)
                .await??;
            print_run(out, &v, true)
        }
        RunsCmd::List {
            agent: a,
            failed,
            since,
            limit,
        } => {
            let q = RunQuery {
                agent: a.as_deref().map(agent).transpose()?,
                failed: *failed,
                since_ms: since.as_deref().map(since_ms).transpose()?,
                limit: *limit,
            };
            let list = conn.client.runs_list(conn.ctx(), q).await??;
            out.print(&list, || {
                let mut s = format!(
                    "{:>8}  {:<28} {:<10} {:<9} {:>8}  {}",
                    "RUN", "AGENT", "STATE", "TRIGGER", "TOOK", "QUEUED"
                );
                for v in &list {
                    s.push('\n');
                    s.push_str(&line(v));
                }
                s
            })
        }
        RunsCmd::Show { id, wait } => {
            let (ctx, ms) = match wait {
                true => (conn.ctx_wait(WAIT), WAIT.as_millis() as u64),
                false => (conn.ctx(), 0),
            };
            let v = conn.client.runs_get(ctx, *id, ms).await??;
            show_run(conn, out, &v, *wait).await
        }
        RunsCmd::Logs { id } => {
            let chunk = conn.client.runs_logs(conn.ctx(), *id).await??;
            for l in &chunk.lines {
                super::logs::print(out, l)?;
            }
            Ok(())
        }
        RunsCmd::Cancel { id } => {
            let v = conn.client.runs_cancel(conn.ctx(), *id).await??;
            out.print(&v, || {
                format!("run {} of {} cancelled", v.id, v.agent_ref())
            })
        }
    }
}
