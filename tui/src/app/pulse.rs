//! Console state of the pictures: the fleet's last ten minutes (`:pulse`) and the
//! described agent's CPU and memory history, each followed while its view is shown (the
//! daemon answers as each 10-second bucket closes).

use super::{App, Effect, View};
use agenfleet_protocol::pulse::{AgentHistory, Pulse};
use agenfleet_protocol::AgentRef;

/// Whose history to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PulseOf {
    Fleet,
    Agent(AgentRef),
}

impl App {
    /// The follow that `view` needs (the describe view: its agent's history).
    pub(super) fn pulse_follow(&self, view: View) -> Vec<Effect> {
        match view {
            View::Pulse => vec![Effect::FollowPulse(Some(PulseOf::Fleet))],
            View::Describe => match &self.describe {
                Some(p) => vec![Effect::FollowPulse(Some(PulseOf::Agent(AgentRef {
                    tenant: Some(p.agent.0.clone()),
                    name: p.agent.1.clone(),
                })))],
                None => vec![],
            },
            _ => vec![],
        }
    }

    pub(super) fn apply_pulse(&mut self, p: Pulse) {
        self.dirty |= self.view == View::Pulse && self.pulse.as_ref() != Some(&p);
        self.pulse = Some(p);
    }

    pub(super) fn apply_history(&mut self, agent: &str, h: AgentHistory) {
        let Some(p) = self.describing(agent) else {
            return;
        };
        if p.history.as_ref() != Some(&h) {
            p.history = Some(h);
            self.dirty |= self.view == View::Describe;
        }
    }
}
