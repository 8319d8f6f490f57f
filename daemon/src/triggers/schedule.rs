//! Schedules: one task sleeps until the earliest due time of every live schedule (woken
//! early when one is added or revoked; nothing polls) and starts each due schedule's run.
//! A schedule's run is not started while its previous one is still queued or running,
//! unless the schedule allows overlap (`trigger.skipped` is recorded instead). Due times
//! that passed while the daemon was down are, per schedule, skipped (`trigger.missed`,
//! with how many) or made up for by one run at start (`trigger.catch-up`).
//!
//! The due time handled is stored before its run is queued: a crash between the two loses
//! that run rather than starting it twice.

use super::{next_due, Triggers};
use agenfleet_protocol::triggers::{CatchUp, TriggerView};
use agenfleet_protocol::{now_ms, AuditEvent};
use rusqlite::params;
use std::sync::Arc;

/// Missed due times counted at most (a per-second schedule down for a year stops here).
const MAX_MISSED: u64 = 100_000;

/// Due times at most this far in the past when the loop first sees a schedule are on
/// time (a restart just after one); older ones were missed while the daemon was down.
const LATE_MS: u64 = 1000;

/// One schedule due now: its run is due at `due`, `missed` due times before it were
/// missed, and `late`: its due times passed while the daemon was down.
pub(super) struct Due {
    pub(super) due: u64,
    pub(super) missed: u64,
    pub(super) late: bool,
}

impl Triggers {
    /// Starts the schedules' loop.
    pub fn spawn_scheduler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let changed = me.schedules_changed.notified();
                let now = now_ms();
                for (v, due) in me.due(now) {
                    me.handle(&v, due).await;
                }
                let next = me.earliest();
                match next {
                    Some(at) => {
                        let wait = std::time::Duration::from_millis(at.saturating_sub(now_ms()));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = changed => {}
                        }
                    }
                    None => changed.await,
                }
            }
        })
    }

    /// The earliest next due time of the live schedules.
    fn earliest(&self) -> Option<u64> {
        self.lock()
            .live
            .values()
            .filter_map(|l| l.view.next_due_ms)
            .min()
    }

    /// The schedules due at `now` (each one's next due time set past `now`), and the ones
    /// seen for the first time, whose missed due times are handled at once.
    pub(super) fn due(&self, now: u64) -> Vec<(TriggerView, Due)> {
        let mut out = Vec::new();
        let mut inner = self.lock();
        for l in inner.live.values_mut() {
            let Some(cron) = &l.cron else { continue };
            let first_sight = l.view.next_due_ms.is_none();
            let base = l.view.last_due_ms.unwrap_or(l.view.created_ms);
            let first = match l.view.next_due_ms {
                Some(d) => d,
                None => match next_due(cron, base) {
                    Some(d) => d,
                    None => continue,
                },
            };
            if first > now {
                l.view.next_due_ms = Some(first);
                continue;
            }
            // Due; and every later due time up to now is missed.
            let (mut last, mut missed) = (first, 0u64);
            while let Some(d) = next_due(cron, last) {
                if d > now || missed >= MAX_MISSED {
                    break;
                }
                last = d;
                missed += 1;
            }
            l.view.next_due_ms = next_due(cron, now);
            l.view.last_due_ms = Some(last);
            out.push((
                l.view.clone(),
                Due {
                    due: last,
                    missed,
                    late: first_sight && now.saturating_sub(first) > LATE_MS,
                },
            ));
        }
        out
    }

    pub(super) async fn handle(&self, v: &TriggerView, due: Due) {
        let Due { due, missed, late } = due;
        // Stored first (see the module's header).
        if let Err(e) = self.store.tenant(&v.tenant).with(|c| {
            c.execute(
                "UPDATE t_triggers SET last_due_ms = ?2 WHERE id = ?1",
                params![v.id, due as i64],
            )
        }) {
            tracing::error!(trigger = %v.id, error = %e, "cannot store the schedule's due time; not starting its run");
            return;
        }
        let record = |action: &str, outcome: &str, detail: serde_json::Value| AuditEvent {
            actor: format!("trigger {}", v.id),
            action: action.into(),
            tenant: Some(v.tenant.clone()),
            agent: Some(v.agent.clone()),
            outcome: outcome.into(),
            detail: detail.to_string(),
        };
        if late && v.catch_up == CatchUp::Skip {
            let ev = record(
                "trigger.missed",
                "skipped",
                serde_json::json!({
                    "missed": missed + 1,
                    "last_due_ms": due,
                    "catch_up": "skip",
                    "why": "the daemon was not running at the due time",
                }),
            );
            if let Err(e) = self.audit.record(&ev).await {
                tracing::error!(trigger = %v.id, error = %e, "cannot record the missed runs");
            }
            return;
        }
        if !v.overlap && self.runs.open_by(&format!("trigger {}", v.id)) > 0 {
            let ev = record(
                "trigger.skipped",
                "skipped",
                serde_json::json!({
                    "due_ms": due,
                    "why": "its previous run is still queued or running (overlap = false)",
                }),
            );
            if let Err(e) = self.audit.record(&ev).await {
                tracing::error!(trigger = %v.id, error = %e, "cannot record the skipped run");
            }
            return;
        }
        if late {
            let ev = record(
                "trigger.catch-up",
                "observed",
                serde_json::json!({
                    "missed": missed + 1,
                    "last_due_ms": due,
                    "catch_up": "once",
                }),
            );
            if let Err(e) = self.audit.record(&ev).await {
                tracing::error!(trigger = %v.id, error = %e, "cannot record the catch-up; not starting its run");
                return;
            }
        } else if missed > 0 {
            // Late while running (a stalled host): the run starts once, the rest recorded.
            let ev = record(
                "trigger.missed",
                "skipped",
                serde_json::json!({"missed": missed, "last_due_ms": due, "why": "due times passed while the daemon was stalled"}),
            );
            if let Err(e) = self.audit.record(&ev).await {
                tracing::error!(trigger = %v.id, error = %e, "cannot record the missed runs");
            }
        }
        let extra = serde_json::json!({"due_ms": due, "catch_up": late});
        match self.start_run(v, "schedule", &v.input_json, extra).await {
            Ok(r) => {
                tracing::info!(trigger = %v.id, run = r.id, agent = %v.agent_ref(), "scheduled run queued")
            }
            Err(e) => {
                tracing::warn!(trigger = %v.id, error = %e.message, "scheduled run not started")
            }
        }
    }
}
