//! Console state for the audit view: the newest records followed live, the filter (text,
//! or `#seq …` for an incident's evidence), scrolling, and the log's status.

use super::{Action, App, Effect, View, AUDIT_TAIL};
use agenfleet_protocol::{AuditEntry, AuditStatus};

impl App {
    /// Audit records that pass the audit view's filter, oldest first.
    pub fn audit_visible(&self) -> Vec<&AuditEntry> {
        let Some(f) = self.filters.get(&View::Audit).filter(|f| !f.is_empty()) else {
            return self.audit.iter().collect();
        };
        // `#12 #15`: exactly these records (an incident's evidence).
        if f.text().starts_with('#') {
            let seqs: Vec<u64> = f
                .text()
                .split_whitespace()
                .filter_map(|t| t.trim_start_matches('#').parse().ok())
                .collect();
            return self
                .audit
                .iter()
                .filter(|e| seqs.contains(&e.seq))
                .collect();
        }
        let mut buf = String::new();
        self.audit
            .iter()
            .filter(|e| {
                use std::fmt::Write;
                let ev = &e.event;
                buf.clear();
                let _ = write!(
                    buf,
                    "{} {} {}/{} {} {}",
                    ev.actor,
                    ev.action,
                    ev.tenant.as_deref().unwrap_or(""),
                    ev.agent.as_deref().unwrap_or(""),
                    ev.outcome,
                    ev.detail
                );
                f.matches(&buf)
            })
            .collect()
    }

    /// New audit records (and the log's status) from the daemon.
    pub fn apply_audit(&mut self, entries: Vec<AuditEntry>, status: Option<AuditStatus>) {
        let last = self.audit.back().map(|e| e.seq).unwrap_or(0);
        let mut added = false;
        for e in entries.into_iter().filter(|e| e.seq > last) {
            added = true;
            if self.audit.len() == AUDIT_TAIL {
                self.audit.pop_front();
            }
            self.audit.push_back(e);
            if self.audit_scroll > 0 {
                self.audit_scroll += 1;
            }
        }
        let status_moved = status.is_some() && status != self.audit_status;
        if status.is_some() {
            self.audit_status = status;
        }
        // Only the audit view shows the trail and the log's status.
        self.dirty |= self.view == View::Audit && (added || status_moved);
    }

    /// The audit view's actions: scrolling (0 is the newest, followed live).
    pub(super) fn audit_action(&mut self, a: Action) -> Vec<Effect> {
        let n = self.audit_visible().len();
        let oldest = n.saturating_sub(1);
        match a {
            Action::Up => self.audit_scroll = (self.audit_scroll + 1).min(oldest),
            Action::Down => self.audit_scroll = self.audit_scroll.saturating_sub(1),
            Action::PageUp => self.audit_scroll = (self.audit_scroll + 10).min(oldest),
            Action::PageDown => self.audit_scroll = self.audit_scroll.saturating_sub(10),
            Action::Top => self.audit_scroll = oldest,
            Action::Bottom => self.audit_scroll = 0,
            _ => self.dirty = false,
        }
        vec![]
    }
}
