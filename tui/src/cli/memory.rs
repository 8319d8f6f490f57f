//! `agenfleet memory`: how much an agent's private memory holds (`stats`, never values),
//! an admin's export of its values (`export`, audited as a reveal), and an explicit copy
//! from one agent's memory into another's of the same tenant (`handoff`, audited with
//! its reason).

use super::{CliError, Out};
use crate::client::Conn;
use agenfleet_protocol::AgentRef;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum MemoryCmd {
    /// Keys, bytes and the last write of an agent's memory, against its quota.
    Stats { agent: String },
    /// Every value of an agent's memory, decrypted (memory.export; recorded as a reveal).
    /// One JSON object per key with `--json`; text values as text, others as hex.
    Export { agent: String },
    /// Copy the values whose keys start with PREFIX from one agent's memory into
    /// another's of the same tenant (memory.handoff on both).
    Handoff {
        from: String,
        to: String,
        /// Keys starting with this ("" : every key).
        #[arg(long)]
        keys: String,
        /// Why (recorded in the audit log with what was copied).
        #[arg(long)]
        reason: String,
    },
}

fn agent(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))
}

/// One exported value: a JSON object (`--json`: text values as `value`, others as
/// `value_hex`) or `KEY<TAB>KIND<TAB>VALUE` (others as `hex:…`).
fn export_line(e: &agenfleet_protocol::memory::MemoryEntry, json: bool) -> String {
    let v = e.value.expose();
    let text = match (e.kind.as_str(), std::str::from_utf8(v)) {
        ("bytes", _) | (_, Err(_)) => None,
        (_, Ok(t)) => Some(t),
    };
    if !json {
        let shown = text
            .map(str::to_string)
            .unwrap_or_else(|| format!("hex:{}", hex::encode(v)));
        return format!("{}\t{}\t{shown}", e.key, e.kind);
    }
    let mut o = serde_json::json!({"key": e.key, "kind": e.kind, "updated_ms": e.updated_ms});
    if let Some(o) = o.as_object_mut() {
        match text {
            Some(t) => o.insert("value".into(), t.into()),
            None => o.insert("value_hex".into(), hex::encode(v).into()),
        };
    }
    o.to_string()
}

pub async fn run(conn: &Conn, out: &Out, cmd: &MemoryCmd) -> Result<(), CliError> {
    match cmd {
        MemoryCmd::Stats { agent: a } => {
            let s = conn.client.memory_stats(conn.ctx(), agent(a)?).await??;
            out.print(&s, || {
                format!(
                    "{}: {} of {} keys, {} of {} (values up to {}); last write {}",
                    s.agent,
                    s.keys,
                    s.max_keys,
                    crate::fmt::bytes(s.bytes),
                    crate::fmt::bytes(s.max_bytes),
                    crate::fmt::bytes(s.max_value_bytes),
                    s.last_write_ms
                        .map(crate::fmt::timestamp)
                        .unwrap_or_else(|| "never".into())
                )
            })
        }
        MemoryCmd::Export { agent: a } => {
            // Page by page (each recorded as a reveal), printed as they come.
            let who = agent(a)?;
            let (mut after, mut any) = (String::new(), false);
            loop {
                let page = conn
                    .client
                    .memory_export(conn.ctx(), who.clone(), after.clone())
                    .await??;
                for e in &page.entries {
                    any = true;
                    out.raw(&export_line(e, out.json));
                }
                match page.next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            if !any && !out.json {
                out.raw("(the agent's memory is empty)");
            }
            Ok(())
        }
        MemoryCmd::Handoff {
            from,
            to,
            keys,
            reason,
        } => {
            let h = conn
                .client
                .memory_handoff(
                    conn.ctx(),
                    agent(from)?,
                    agent(to)?,
                    keys.clone(),
                    reason.clone(),
                )
                .await??;
            out.print(&h, || {
                format!(
                    "copied {} keys ({}) from {} to {} (audit record #{}): {}",
                    h.keys.len(),
                    crate::fmt::bytes(h.bytes),
                    h.from,
                    h.to,
                    h.audit_seq,
                    h.keys.join(", ")
                )
            })
        }
    }
}
