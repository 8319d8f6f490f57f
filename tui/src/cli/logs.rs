//! `agenfleet logs AGENT [-f]`: the agent's log ring, then (with -f) new lines as they come.

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::{AgentRef, LogLine, LogStream};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub agent: String,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of what is buffered.
    #[arg(long)]
    pub tail: Option<usize>,
}

pub(super) fn print(out: &Out, l: &LogLine) -> Result<(), CliError> {
    out.line(l, || match l.stream {
        LogStream::Stdout => l.text.clone(),
        LogStream::Stderr => format!("[stderr] {}", l.text),
    })
}

pub async fn run(conn: &Conn, out: &Out, a: &LogsArgs) -> Result<(), CliError> {
    let agent = AgentRef::parse(&a.agent)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))?;
    // First drain what is buffered.
    let mut since = 0u64;
    let mut buffered = Vec::new();
    loop {
        let chunk = conn
            .client
            .logs(conn.ctx(), agent.clone(), since, 0)
            .await??;
        since = chunk.next_seq;
        if chunk.lines.is_empty() {
            break;
        }
        buffered.extend(chunk.lines);
    }
    let skip = a
        .tail
        .map(|t| buffered.len().saturating_sub(t))
        .unwrap_or(0);
    for l in &buffered[skip..] {
        print(out, l)?;
    }
    if !a.follow {
        return Ok(());
    }
    let wait = Duration::from_secs(25);
    loop {
        let chunk = conn
            .client
            .logs(
                conn.ctx_wait(wait),
                agent.clone(),
                since,
                wait.as_millis() as u64,
            )
            .await??;
        if chunk.missed > 0 && !out.json {
            eprintln!(
                "[{} lines dropped by the ring buffer before they were read]",
                chunk.missed
            );
        }
        for l in &chunk.lines {
            print(out, l)?;
        }
        since = chunk.next_seq;
    }
}
