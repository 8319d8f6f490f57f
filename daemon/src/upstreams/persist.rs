//! The usage meters across daemon restarts: each tenant's series saved as JSON with the
//! audit sequence number they are complete up to (`usage_snapshots`, written every few
//! seconds for the tenants counted since, and at a clean stop), and at start put back and
//! brought up to date from the `model.call` records after that number — so a budget is
//! not reset by a restart, and `kill -9` loses nothing the audit log holds. The meter is
//! copied before the head is read, so a record counted in the copy is never replayed; a
//! call whose record turned durable in the same instant may be missed once.

use super::{UpstreamError, Upstreams};
use agenfleet_protocol::upstream::UsageTotals;
use agenfleet_protocol::{now_ms, AuditQuery};
use rusqlite::params;
use std::collections::HashMap;

/// Records read per page while replaying.
const PAGE: u32 = 10_000;

impl Upstreams {
    /// Saves the series of every tenant counted since the last save; `head` answers the
    /// audit log's durable head. Answers how many tenants were saved.
    pub fn save_usage(&self, head: impl Fn() -> u64) -> Result<usize, UpstreamError> {
        let tenants = self.meter.take_dirty();
        for t in &tenants {
            let json = self.meter.snapshot(t);
            let seq = head();
            self.store.tenant(t).with(|c| {
                c.execute(
                    "INSERT OR REPLACE INTO t_usage_snapshots (seq, body_json, saved_ms) VALUES (?1, ?2, ?3)",
                    params![seq as i64, json, now_ms() as i64],
                )
            })?;
        }
        Ok(tenants.len())
    }

    /// Puts the saved series back and replays the `model.call` records after them.
    /// Answers (tenants restored, calls replayed).
    pub fn restore_usage(
        &self,
        audit: &crate::audit::AuditLog,
    ) -> Result<(usize, usize), UpstreamError> {
        let rows: Vec<(String, i64, String)> = self.store.with(|c| {
            let mut st = c.prepare("SELECT tenant_id, seq, body_json FROM usage_snapshots")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect();
            rows
        })?;
        let mut upto: HashMap<String, u64> = HashMap::new();
        for (tenant, seq, json) in &rows {
            match self.meter.restore(tenant, json) {
                Ok(()) => {
                    upto.insert(tenant.clone(), *seq as u64);
                }
                // A snapshot that does not parse: that tenant is rebuilt from the log.
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "usage snapshot unreadable; replaying the audit log for it")
                }
            }
        }
        // A tenant without a snapshot is replayed from the start of the log.
        let mut after = if upto.len() == rows.len() && !rows.is_empty() {
            upto.values().copied().min().unwrap_or(0)
        } else {
            0
        };
        let since = now_ms().saturating_sub(31 * 86_400_000);
        let mut replayed = 0;
        loop {
            let q = AuditQuery {
                action: Some("model.call".into()),
                after_seq: after,
                since_ms: Some(since),
                limit: PAGE,
                ..AuditQuery::default()
            };
            let page = audit
                .query(&q, &|_| true)
                .map_err(|e| UpstreamError::Store(format!("replaying usage: {e}")))?;
            for e in &page {
                after = after.max(e.seq);
                let (Some(tenant), Some(agent)) = (&e.event.tenant, &e.event.agent) else {
                    continue;
                };
                if e.seq <= upto.get(tenant).copied().unwrap_or(0) {
                    continue;
                }
                let d: serde_json::Value =
                    serde_json::from_str(&e.event.detail).unwrap_or_default();
                // Calls refused before they went out (no decision) were never counted.
                if d.get("decision").is_none() {
                    continue;
                }
                let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                self.meter.record(
                    tenant,
                    agent,
                    e.time_ms,
                    &UsageTotals {
                        calls: 1,
                        errors: u64::from(e.event.outcome != "ok"),
                        tokens_in: n("tokens_in"),
                        tokens_out: n("tokens_out"),
                    },
                );
                replayed += 1;
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        Ok((upto.len(), replayed))
    }
}
