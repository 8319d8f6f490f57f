//! Console state for incidents: the open incidents from the live watch, grouped by the
//! responsible party (triggered first, then by severity, newest first), the keys that
//! acknowledge, resolve, reassign and silence them, and the jumps from an incident to its
//! agent and to its audit evidence.

use super::{typing, Action, App, Effect, Mode, Typing, View};
use agenfleet_protocol::incidents::{Incident, IncidentState, Party};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::AgentRef;
use crossterm::event::KeyCode;

/// What an operator does to an incident from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentAction {
    Ack,
    Resolve,
    Silence(u64),
    Reassign(Party, String),
}

impl App {
    /// Open incidents that pass the view's filter, in display order: by party, triggered
    /// before acknowledged, by severity, newest first.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        let f = self.filters.get(&View::Incidents).filter(|f| !f.is_empty());
        let mut buf = String::new();
        let mut v: Vec<&Incident> = self
            .incidents
            .values()
            .filter(|i| i.state != IncidentState::Resolved)
            .filter(|i| {
                f.is_none_or(|f| {
                    use std::fmt::Write;
                    buf.clear();
                    let _ = write!(
                        buf,
                        "{} {} {} {}/{} {} {}",
                        i.party,
                        i.severity,
                        i.state,
                        i.tenant.as_deref().unwrap_or(""),
                        i.agent.as_deref().unwrap_or(""),
                        i.scenario,
                        i.title
                    );
                    f.matches(&buf)
                })
            })
            .collect();
        v.sort_by(|a, b| {
            (a.party, a.state, a.severity, std::cmp::Reverse(a.last_ms)).cmp(&(
                b.party,
                b.state,
                b.severity,
                std::cmp::Reverse(b.last_ms),
            ))
        });
        v
    }

    /// Open incidents per party, in the matrix's order.
    pub fn incident_counts(&self) -> Vec<(Party, usize)> {
        Party::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    self.incidents
                        .values()
                        .filter(|i| i.party == *p && i.state != IncidentState::Resolved)
                        .count(),
                )
            })
            .collect()
    }

    pub fn selected_incident(&self) -> Option<&Incident> {
        self.open_incidents().get(self.inc_selected).copied()
    }

    fn incident_change_allowed(&mut self, what: &str) -> Option<u64> {
        let Some(i) = self.selected_incident() else {
            self.flash("no incident selected", true);
            return None;
        };
        let id = i.id;
        // An agent's incident is managed where the agent lives (others: the daemon decides).
        let agent = match (&i.tenant, &i.agent) {
            (Some(t), Some(a)) => format!("{t}/{a}"),
            _ => String::new(),
        };
        self.may_change(Permission::IncidentsManage, &agent, what)
            .then_some(id)
    }

    /// The incidents view's actions: select, acknowledge, resolve (asks), reassign,
    /// silence, and the jumps to the agent and to the audit evidence.
    pub(super) fn incidents_action(&mut self, a: Action) -> Vec<Effect> {
        let n = self.open_incidents().len();
        match a {
            Action::Down => self.inc_selected = (self.inc_selected + 1).min(n.saturating_sub(1)),
            Action::Up => self.inc_selected = self.inc_selected.saturating_sub(1),
            Action::Ack => {
                if let Some(id) = self.incident_change_allowed("acknowledge") {
                    return vec![Effect::Incident(id, IncidentAction::Ack)];
                }
            }
            Action::Resolve => {
                if let Some(id) = self.incident_change_allowed("resolve") {
                    self.mode = Mode::ResolveIncident { id };
                }
            }
            Action::Silence => {
                if let Some(id) = self.incident_change_allowed("silence") {
                    self.mode = Mode::SilenceFor {
                        id,
                        typed: String::new(),
                    };
                }
            }
            Action::Note => {
                if let Some(id) = self.incident_change_allowed("note") {
                    self.mode = Mode::IncidentNote {
                        id,
                        text: String::new(),
                    };
                }
            }
            Action::Reassign => {
                if let Some(id) = self.incident_change_allowed("reassign") {
                    let current = self
                        .selected_incident()
                        .map(|i| i.party)
                        .unwrap_or(Party::Platform);
                    let next = Party::ALL
                        .iter()
                        .position(|p| *p == current)
                        .map(|i| Party::ALL[(i + 1) % Party::ALL.len()])
                        .unwrap_or(Party::Client);
                    self.mode = Mode::Reassign {
                        id,
                        party: next,
                        reason: String::new(),
                    };
                }
            }
            Action::Open => {
                let Some((t, a)) = self
                    .selected_incident()
                    .and_then(|i| i.tenant.clone().zip(i.agent.clone()))
                else {
                    self.flash("this incident is not about one agent", true);
                    return vec![];
                };
                self.show(View::Fleet);
                self.context = None;
                self.filter_mut().clear();
                self.selected = Some((t.clone(), a.clone()));
                self.detail_open = true;
                self.logs.clear();
                self.logs_for = self.selected.clone();
                return vec![Effect::FollowLogs(Some(AgentRef {
                    tenant: Some(t),
                    name: a,
                }))];
            }
            Action::Evidence => {
                let Some(i) = self.selected_incident() else {
                    return vec![];
                };
                if i.evidence.is_empty() {
                    self.flash("no audit evidence recorded for this incident", true);
                    return vec![];
                }
                let f: Vec<String> = i.evidence.iter().map(|e| format!("#{}", e.seq)).collect();
                self.show(View::Audit);
                self.filter_mut().set(f.join(" "));
                self.audit_scroll = 0;
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    pub(super) fn on_reassign_key(
        &mut self,
        code: KeyCode,
        id: u64,
        party: Party,
        reason: String,
    ) -> Vec<Effect> {
        if code == KeyCode::Tab {
            let i = Party::ALL.iter().position(|p| *p == party).unwrap_or(0);
            self.mode = Mode::Reassign {
                id,
                party: Party::ALL[(i + 1) % Party::ALL.len()],
                reason,
            };
            return vec![];
        }
        match typing(code, reason, |_| true) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(reason) if reason.trim().is_empty() => {
                self.flash("a reason is required", true);
                self.mode = Mode::Reassign { id, party, reason };
            }
            Typing::Submit(reason) => {
                self.mode = Mode::Normal;
                return vec![Effect::Incident(
                    id,
                    IncidentAction::Reassign(party, reason),
                )];
            }
            Typing::Edit(reason) => self.mode = Mode::Reassign { id, party, reason },
        }
        vec![]
    }

    /// Typing how long to silence: `90s`, `30m`, `2h`, `1d`; empty is an hour.
    pub(super) fn on_silence_key(&mut self, code: KeyCode, id: u64, typed: String) -> Vec<Effect> {
        match typing(code, typed, |c| c.is_ascii_alphanumeric()) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(typed) => {
                let secs = if typed.trim().is_empty() {
                    Ok(3600)
                } else {
                    crate::fmt::duration_secs(typed.trim())
                };
                match secs {
                    Ok(s) if s > 0 => {
                        self.mode = Mode::Normal;
                        return vec![Effect::Incident(id, IncidentAction::Silence(s))];
                    }
                    Ok(_) => self.flash("a silence must last longer than 0s", true),
                    Err(e) => self.flash(e, true),
                }
                self.mode = Mode::SilenceFor { id, typed };
            }
            Typing::Edit(typed) => self.mode = Mode::SilenceFor { id, typed },
        }
        vec![]
    }

    /// Typing a note on an incident; Enter records it (in the audit log, with the id).
    pub(super) fn on_note_key(&mut self, code: KeyCode, id: u64, text: String) -> Vec<Effect> {
        match typing(code, text, |_| true) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(text) if text.trim().is_empty() => {
                self.flash("an empty note is not recorded", true);
                self.mode = Mode::IncidentNote { id, text };
            }
            Typing::Submit(text) => {
                self.mode = Mode::Normal;
                return vec![Effect::NoteIncident(id, text.trim().to_string())];
            }
            Typing::Edit(text) => self.mode = Mode::IncidentNote { id, text },
        }
        vec![]
    }

    /// Confirming a resolve: only `y` goes ahead.
    pub(super) fn on_resolve_key(&mut self, code: KeyCode, id: u64) -> Vec<Effect> {
        self.mode = Mode::Normal;
        match code {
            KeyCode::Char('y') => {
                vec![Effect::Incident(id, IncidentAction::Resolve)]
            }
            _ => vec![],
        }
    }

    /// Keeps the selection in range when incidents come and go.
    pub(super) fn fix_incident_selection(&mut self) {
        let n = self.open_incidents().len();
        self.inc_selected = self.inc_selected.min(n.saturating_sub(1));
    }

    /// The daemon answered an incident action.
    pub(super) fn incident_done(&mut self, id: u64, r: Result<Incident, String>) {
        match r {
            Ok(i) => self.flash(
                format!("incident #{id}: {} (with {})", i.state, i.party),
                false,
            ),
            Err(e) => self.flash(format!("incident #{id}: {e}"), true),
        }
    }
}
