//! Console state for the audit view: the newest records followed live, the filter (text,
//! or `#seq …` for an incident's evidence), scrolling, and the log's status.

use super::{App, Effect, AUDIT_TAIL};
use agenfleet_protocol::{AuditEntry, AuditStatus};
use crossterm::event::KeyCode;

impl App {
    /// Audit records that pass the filter, oldest first.
    pub fn audit_visible(&self) -> Vec<&AuditEntry> {
        // `#12 #15`: exactly these records (an incident's evidence).
        if self.filter.starts_with('#') {
            let seqs: Vec<u64> = self
                .filter
                .split_whitespace()
                .filter_map(|t| t.trim_start_matches('#').parse().ok())
                .collect();
            return self
                .audit
                .iter()
                .filter(|e| seqs.contains(&e.seq))
                .collect();
        }
        let f = self.filter.to_lowercase();
        self.audit
            .iter()
            .filter(|e| {
                f.is_empty() || {
                    let ev = &e.event;
                    format!(
                        "{} {} {}/{} {} {}",
                        ev.actor,
                        ev.action,
                        ev.tenant.as_deref().unwrap_or(""),
                        ev.agent.as_deref().unwrap_or(""),
                        ev.outcome,
                        ev.detail
                    )
                    .to_lowercase()
                    .contains(&f)
                }
            })
            .collect()
    }

    /// New audit records (and the log's status) from the daemon.
    pub fn apply_audit(&mut self, entries: Vec<AuditEntry>, status: Option<AuditStatus>) {
        let last = self.audit.back().map(|e| e.seq).unwrap_or(0);
        for e in entries.into_iter().filter(|e| e.seq > last) {
            if self.audit.len() == AUDIT_TAIL {
                self.audit.pop_front();
            }
            self.audit.push_back(e);
            if self.audit_scroll > 0 {
                self.audit_scroll += 1;
            }
        }
        if status.is_some() {
            self.audit_status = status;
        }
        self.dirty = true;
    }

    /// Keys the audit view handles itself (the rest are shared with the fleet view).
    fn is_audit_key(code: KeyCode) -> bool {
        matches!(
            code,
            KeyCode::Char('j' | 'k' | 'g' | 'G' | 'r' | 's' | 'u' | 'x')
                | KeyCode::Up
                | KeyCode::Down
                | KeyCode::PageUp
                | KeyCode::PageDown
                | KeyCode::Home
                | KeyCode::End
                | KeyCode::Esc
                | KeyCode::Enter
        )
    }

    /// The audit view's own keys (None: not one of them).
    pub(super) fn on_audit_key(&mut self, code: KeyCode) -> Option<Vec<Effect>> {
        Self::is_audit_key(code).then(|| self.audit_key(code))
    }

    fn audit_key(&mut self, code: KeyCode) -> Vec<Effect> {
        let n = self.audit_visible().len();
        match code {
            KeyCode::Char('k') | KeyCode::Up => {
                self.audit_scroll = (self.audit_scroll + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.audit_scroll = self.audit_scroll.saturating_sub(1)
            }
            KeyCode::PageUp => {
                self.audit_scroll = (self.audit_scroll + 10).min(n.saturating_sub(1))
            }
            KeyCode::PageDown => self.audit_scroll = self.audit_scroll.saturating_sub(10),
            KeyCode::Char('g') | KeyCode::Home => self.audit_scroll = n.saturating_sub(1),
            KeyCode::Char('G') | KeyCode::End => self.audit_scroll = 0,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('r') | KeyCode::Char('s') | KeyCode::Char('u') | KeyCode::Char('x') => {
                self.flash("agent actions live in the fleet view (press 1)", true)
            }
            _ => self.dirty = false,
        }
        vec![]
    }
}
