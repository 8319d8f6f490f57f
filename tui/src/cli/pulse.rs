//! `agenfleet pulse`: the fleet's last ten minutes (or one agent's CPU and memory) as
//! sparklines, the figure now and the peak; `--json` answers the buckets themselves.

use super::{CliError, Out};
use crate::client::Conn;
use crate::pulse::{self, Series};
use agenfleet_protocol::AgentRef;
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PulseArgs {
    /// One agent's CPU and memory instead of the fleet.
    #[arg(long)]
    agent: Option<String>,
    /// Wait for the bucket being filled now to close, then answer (up to 10 s).
    #[arg(long)]
    wait: bool,
}

fn table(rows: &[Series], span: String) -> String {
    let mut s = format!("{:<17} {:>10} {:>10}  {span}\n", "", "NOW", "PEAK");
    for r in rows {
        s += &format!(
            "{:<17} {:>10} {:>10}  {}\n",
            r.label,
            r.now,
            r.peak,
            pulse::sparkline(&r.values, r.values.len())
        );
    }
    s.pop();
    s
}

pub async fn run(conn: &Conn, out: &Out, a: &PulseArgs) -> Result<(), CliError> {
    // "Now" is the newest closed bucket: with --wait, the one closing next.
    let (after, wait) = if a.wait {
        let now = agenfleet_protocol::now_ms();
        let b = agenfleet_protocol::pulse::BUCKET_MS;
        (now / b * b - b, Duration::from_millis(b + 1_000))
    } else {
        (u64::MAX, Duration::ZERO)
    };
    let ctx = conn.ctx_wait(wait);
    let ms = wait.as_millis() as u64;
    match &a.agent {
        Some(name) => {
            let agent = AgentRef::parse(name).map_err(|e| {
                CliError::new(6, "invalid_argument", format!("bad agent name: {e}"))
            })?;
            let h = conn.client.agent_history(ctx, agent, after, ms).await??;
            out.print(&h, || {
                table(&pulse::agent(&h), pulse::span(h.bucket_ms, h.points.len()))
            })
        }
        None => {
            let p = conn.client.pulse(ctx, after, ms).await??;
            out.print(&p, || {
                table(&pulse::fleet(&p), pulse::span(p.bucket_ms, p.buckets.len()))
            })
        }
    }
}
