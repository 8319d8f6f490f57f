//! `agenfleet status`: the daemon, the engine, counts by state, model use today, and every
//! agent.

use super::Out;
use crate::client::{CliError, Conn};

pub async fn run(conn: &Conn, out: &Out) -> Result<(), CliError> {
    let st = conn.client.status(conn.ctx()).await??;
    out.print(&st, || {
        let d = &st.daemon;
        let engine = if d.engine.connected {
            format!(
                "connected (engine {}, API {})",
                d.engine.version.clone().unwrap_or_default(),
                d.engine.api_version.clone().unwrap_or_default()
            )
        } else {
            format!("DISCONNECTED: {}", d.engine.error.clone().unwrap_or_default())
        };
        let counts: Vec<String> = st
            .counts
            .iter()
            .map(|c| format!("{} {}", c.count, c.state))
            .collect();
        let mut s = format!(
            "daemon   agenfleetd {} (pid {}, up {}, instance {})\nengine   {}\nvault    {}\naudit    {}\ncaller   {} (uid {}, {})\nagents   {}\n",
            d.version,
            d.pid,
            crate::fmt::duration_ms(agenfleet_protocol::now_ms().saturating_sub(d.started_at_ms)),
            d.instance_id,
            engine,
            d.vault.as_str(),
            if d.audit_writable {
                "writable".to_string()
            } else {
                format!("CLOSED: {}", d.audit_problem.clone().unwrap_or_default())
            },
            st.caller.operator,
            st.caller.uid,
            st.caller.role,
            if counts.is_empty() { "none".to_string() } else { counts.join(", ") }
        );
        let mut today = agenfleet_protocol::upstream::UsageTotals::default();
        for a in &st.agents {
            today.add(&a.usage_today);
        }
        if today.calls > 0 {
            s.push_str(&format!(
                "models   today {} calls, {} errors, {} tokens (`agenfleet usage`)\n",
                today.calls,
                today.errors,
                today.tokens()
            ));
        }
        if !d.orphans.is_empty() {
            s.push_str(&format!("orphans  {} (removed after the grace period)\n", d.orphans.join(", ")));
        }
        if !st.agents.is_empty() {
            s.push('\n');
            s.push_str(&super::agents::table(&st.agents));
        }
        s.trim_end().to_string()
    })
}
