//! Console state for the escalations queue: tool calls a policy sent to a person, refreshed
//! when the pending count in the fleet moves, approved or denied with a typed reason (the
//! decision is bound to the escalated request's hash).

use super::{typing, Action, App, Effect, Mode, Typing, View};
use agenfleet_protocol::policy::EscalationView;
use agenfleet_protocol::roles::Permission;
use crossterm::event::KeyCode;

impl App {
    /// Pending escalations of every agent the console sees.
    pub fn pending_escalations(&self) -> u32 {
        self.agents.values().map(|v| v.escalations).sum()
    }

    pub fn apply_escalations(&mut self, list: Vec<EscalationView>) {
        self.escalations = list;
        self.esc_selected = self
            .esc_selected
            .min(self.escalations.len().saturating_sub(1));
        self.dirty = true;
    }

    /// The escalations view's actions: select, approve or deny (a reason is asked), reload.
    pub(super) fn escalations_action(&mut self, a: Action) -> Vec<Effect> {
        let n = self.escalations.len();
        match a {
            Action::Down => self.esc_selected = (self.esc_selected + 1).min(n.saturating_sub(1)),
            Action::Up => self.esc_selected = self.esc_selected.saturating_sub(1),
            Action::Approve | Action::Deny => {
                let approve = a == Action::Approve;
                let Some(e) = self.escalations.get(self.esc_selected).cloned() else {
                    self.flash("no escalation selected", true);
                    return vec![];
                };
                let agent = format!("{}/{}", e.tenant, e.agent);
                let what = if approve { "approve" } else { "deny" };
                if !self.may_change(Permission::EscalationsDecide, &agent, what) {
                    return vec![];
                }
                self.mode = Mode::Decide {
                    id: e.id,
                    approve,
                    reason: String::new(),
                };
            }
            Action::Reload => return vec![Effect::LoadEscalations],
            _ => self.dirty = false,
        }
        vec![]
    }

    pub(super) fn on_decide_key(
        &mut self,
        code: KeyCode,
        id: u64,
        approve: bool,
        reason: String,
    ) -> Vec<Effect> {
        match typing(code, reason, |_| true) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(reason) if reason.trim().is_empty() => {
                self.flash("a reason is required", true);
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                };
            }
            Typing::Submit(reason) => {
                self.mode = Mode::Normal;
                let Some(request_hash) = self
                    .escalations
                    .iter()
                    .find(|e| e.id == id)
                    .map(|e| e.request_hash.clone())
                else {
                    self.flash(format!("escalation {id} is gone"), true);
                    return vec![];
                };
                self.flash(
                    format!(
                        "{} escalation {id}…",
                        if approve { "approving" } else { "denying" }
                    ),
                    false,
                );
                return vec![Effect::Decide {
                    id,
                    request_hash,
                    approve,
                    reason,
                }];
            }
            Typing::Edit(reason) => {
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                }
            }
        }
        vec![]
    }

    /// After a watch: refresh the queue when the pending count moved.
    pub(super) fn escalations_changed(&mut self, before: u32) -> Vec<Effect> {
        let now = self.pending_escalations();
        if now != before || (self.view == View::Escalations && self.escalations.len() as u32 != now)
        {
            vec![Effect::LoadEscalations]
        } else {
            vec![]
        }
    }

    /// The daemon answered a decision: say so and reload the queue.
    pub(super) fn decided(
        &mut self,
        id: u64,
        approve: bool,
        r: Result<EscalationView, String>,
    ) -> Vec<Effect> {
        match r {
            Ok(e) => self.flash(
                format!(
                    "escalation {id} {}: {} may {}make the call",
                    e.state,
                    e.agent,
                    if approve { "" } else { "not " }
                ),
                false,
            ),
            Err(e) => self.flash(format!("escalation {id}: {e}"), true),
        }
        vec![Effect::LoadEscalations]
    }
}
