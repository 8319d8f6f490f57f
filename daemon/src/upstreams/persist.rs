//! The usage meters across daemon restarts: each tenant's series saved as JSON with the
//! audit sequence number they are complete up to (`usage_snapshots`, written every few
//! seconds for the tenants counted since, and at a clean stop), and at start put back and
//! brought up to date from the `model.call` records after that number — so a budget is
//! not reset by a restart, and `kill -9` loses nothing the audit log holds. The meter is
//! copied before the head is read, so a record counted in the copy is never replayed. A
//! call is counted when admitted (after its decision) and its tokens when it ends: a call
//! still answering at a save is in the copy as a call, and its record after the save adds
//! only its tokens. What falls in the microseconds between the copy and the read of the
//! head may be missed once.

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
                let saved = upto.get(tenant).copied().unwrap_or(0);
                if e.seq <= saved {
                    continue;
                }
                let d: serde_json::Value =
                    serde_json::from_str(&e.event.detail).unwrap_or_default();
                // Calls refused before they went out (no decision) were never counted.
                let Some(decision) = d.get("decision").and_then(serde_json::Value::as_u64) else {
                    continue;
                };
                let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                self.meter.record(
                    tenant,
                    agent,
                    e.time_ms,
                    &UsageTotals {
                        // A call is counted when it is admitted, just after its decision:
                        // one decided before the save was already in it (still answering).
                        calls: u64::from(decision > saved),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Options};
    use agenfleet_protocol::AuditEvent;
    use std::sync::Arc;

    fn decision() -> AuditEvent {
        AuditEvent {
            action: "tool.decide".into(),
            detail: "{}".into(),
            ..call_record(0, 0)
        }
    }

    fn call_record(decision: u64, tokens: u64) -> AuditEvent {
        AuditEvent {
            actor: "agent t/a".into(),
            action: "model.call".into(),
            tenant: Some("t".into()),
            agent: Some("a".into()),
            outcome: "ok".into(),
            detail: serde_json::json!({
                "provider": "p", "decision": decision, "status": 200,
                "tokens_in": tokens, "tokens_out": 0,
            })
            .to_string(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_brings_back_the_save_and_the_calls_after_it_once_each() {
        crate::keyring::join_for_this_thread().expect("a session keyring");
        let dir = std::env::temp_dir().join(format!("agf-usage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = AuditLog::open(&dir, None, "none".into(), Options::default()).unwrap();
        let store = crate::store::Store::open_in_memory().unwrap();
        store
            .tenant("t")
            .with(|c| {
                c.execute(
                    "INSERT INTO t_tenants (id, created_at_ms) VALUES ('t', 0)",
                    [],
                )
            })
            .unwrap();
        let vault = Arc::new(crate::vault::Vault::open(store.clone(), "u".into()));
        let ups = Upstreams::new(store.clone(), vault.clone());
        let now = now_ms();
        let budget = agenfleet_protocol::spec::Budget::default();
        // Call 1: admitted and finished before the save.
        let d1 = log.record(&decision()).await.unwrap();
        ups.meter.admit("t", "a", &budget, now).unwrap();
        log.record(&call_record(d1, 10)).await.unwrap();
        ups.meter.record(
            "t",
            "a",
            now,
            &UsageTotals {
                tokens_in: 10,
                ..Default::default()
            },
        );
        // Call 2: admitted before the save, still answering at it.
        let d2 = log.record(&decision()).await.unwrap();
        ups.meter.admit("t", "a", &budget, now).unwrap();
        let head = log.status().head_seq;
        assert_eq!(ups.save_usage(|| head).unwrap(), 1);
        // After the save: call 2 ends; call 3 is decided, admitted and ends.
        log.record(&call_record(d2, 20)).await.unwrap();
        let d3 = log.record(&decision()).await.unwrap();
        log.record(&call_record(d3, 30)).await.unwrap();
        let again = Upstreams::new(store, vault);
        let (tenants, replayed) = again.restore_usage(&log).unwrap();
        assert_eq!((tenants, replayed), (1, 2), "calls 2 and 3 replayed");
        let row = again.meter.row("t", "a", now);
        assert_eq!(row.today.calls, 3, "{row:?}");
        assert_eq!(row.today.tokens_in, 60, "{row:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
