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
            let entries = conn.client.memory_export(conn.ctx(), agent(a)?).await??;
            if out.json {
                for e in &entries {
                    let v = e.value.expose();
                    let value = match (e.kind.as_str(), std::str::from_utf8(v)) {
                        ("bytes", _) | (_, Err(_)) => {
                            serde_json::json!({"value_hex": hex::encode(v)})
                        }
                        (_, Ok(t)) => serde_json::json!({"value": t}),
                    };
                    let mut o = serde_json::json!({
                        "key": e.key, "kind": e.kind, "updated_ms": e.updated_ms,
                    });
                    if let (Some(o), Some(v)) = (o.as_object_mut(), value.as_object()) {
                        o.extend(v.clone());
                    }
                    out.raw(&o.to_string());
                }
                return Ok(());
            }
            let mut lines = Vec::new();
            for e in &entries {
                let v = e.value.expose();
                let shown = match (e.kind.as_str(), std::str::from_utf8(v)) {
                    ("bytes", _) | (_, Err(_)) => format!("hex:{}", hex::encode(v)),
                    (_, Ok(t)) => t.to_string(),
                };
                lines.push(format!("{}\t{}\t{shown}", e.key, e.kind));
            }
            if lines.is_empty() {
                lines.push("(the agent's memory is empty)".into());
            }
            out.raw(&lines.join("\n"));
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
