//! `agenfleet watch`: fleet changes as they happen (long-poll on the daemon's revisions).

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::Change;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Stop after this many changes.
    #[arg(long)]
    pub count: Option<u64>,
    /// Skip the initial snapshot; print only what changes from now on.
    #[arg(long)]
    pub changes_only: bool,
}

pub async fn run(conn: &Conn, out: &Out, a: &WatchArgs) -> Result<(), CliError> {
    let (mut epoch, mut since) = (0u64, 0u64);
    let mut printed = 0u64;
    let mut first = true;
    loop {
        let wait = Duration::from_secs(25);
        let r = conn
            .client
            .watch(conn.ctx_wait(wait), epoch, since, wait.as_millis() as u64)
            .await??;
        let skip = first && a.changes_only;
        first = false;
        epoch = r.epoch;
        since = r.revision;
        if skip {
            continue;
        }
        for c in &r.changes {
            out.line(
                &serde_json::json!({"revision": r.revision, "reset": r.reset, "change": c}),
                || match c {
                    Change::Agent(v) => format!(
                        "rev {:<6} {:<28} {:<12} restarts {} {}",
                        r.revision,
                        v.qualified_name(),
                        v.state.as_str(),
                        v.restarts,
                        v.message.clone().unwrap_or_default()
                    ),
                    Change::Removed { tenant, name } => {
                        format!("rev {:<6} {tenant}/{name} removed", r.revision)
                    }
                    Change::Daemon(d) => format!(
                        "rev {:<6} daemon: engine {}",
                        r.revision,
                        if d.engine.connected {
                            "connected"
                        } else {
                            "DISCONNECTED"
                        }
                    ),
                    Change::Incident(i) => format!(
                        "rev {:<6} incident #{} {} {} → {} ×{}: {}",
                        r.revision, i.id, i.state, i.severity, i.party, i.count, i.title
                    ),
                },
            )?;
            printed += 1;
            if a.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
}
