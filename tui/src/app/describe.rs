//! Console state for describing one agent (`d`): what the live view says (state, limits,
//! network, credentials by name and mode, last exit) plus what is loaded once when it
//! opens — the spec in force, the scopes version in force, its memory's stats and its
//! last runs — and its CPU and memory over the last ten minutes (`pulse.rs`).

use super::{Action, App, Effect, Key, View};
use agenfleet_protocol::spec::SpecVersion;
use agenfleet_protocol::AgentRef;

#[derive(Debug, Clone)]
pub struct DescribePane {
    pub agent: Key,
    pub spec: Option<SpecVersion>,
    /// The scopes version in force (0: none published).
    pub scopes_version: Option<u32>,
    pub error: Option<String>,
    pub scroll: usize,
    /// CPU and memory over the last ten minutes (followed while shown).
    pub history: Option<agenfleet_protocol::pulse::AgentHistory>,
    /// What its private memory holds (or why that is not known).
    pub memory: Option<Result<agenfleet_protocol::memory::MemoryStats, String>>,
    /// Its last runs, newest first (or why they are not known).
    pub runs: Option<Result<Vec<agenfleet_protocol::runs::RunView>, String>>,
}

impl App {
    /// `d`: describe the selected agent.
    pub(super) fn open_describe(&mut self) -> Vec<Effect> {
        let Some(key) = self.selected.clone() else {
            self.flash("no agent selected", true);
            return vec![];
        };
        self.describe = Some(DescribePane {
            agent: key.clone(),
            spec: None,
            scopes_version: None,
            error: None,
            scroll: 0,
            history: None,
            memory: None,
            runs: None,
        });
        let mut fx = self.show(View::Describe);
        fx.push(Effect::LoadDescribe(AgentRef {
            tenant: Some(key.0),
            name: key.1,
        }));
        fx
    }

    /// The describe pane if it shows `agent` (as the console names it): an answer for an
    /// agent described before goes nowhere.
    pub(super) fn describing(&mut self, agent: &str) -> Option<&mut DescribePane> {
        self.describe
            .as_mut()
            .filter(|p| format!("{}/{}", p.agent.0, p.agent.1) == agent)
    }

    pub(super) fn apply_describe(&mut self, agent: &str, r: Result<(SpecVersion, u32), String>) {
        let Some(p) = self.describing(agent) else {
            return;
        };
        match r {
            Ok((spec, scopes)) => {
                p.spec = Some(spec);
                p.scopes_version = Some(scopes);
                p.error = None;
            }
            Err(e) => p.error = Some(e),
        }
        self.dirty = true;
    }

    /// The describe view's actions: scrolling, and the agent's logs or spec.
    pub(super) fn describe_action(&mut self, a: Action) -> Vec<Effect> {
        let Some(p) = self.describe.as_mut() else {
            return self.show(View::Fleet);
        };
        match a {
            Action::Down => p.scroll += 1,
            Action::Up => p.scroll = p.scroll.saturating_sub(1),
            Action::PageDown => p.scroll += 10,
            Action::PageUp => p.scroll = p.scroll.saturating_sub(10),
            Action::Runs => {
                let agent = p.agent.clone();
                return self.open_runs(Some(agent));
            }
            Action::Logs | Action::Spec => {
                self.selected = Some(p.agent.clone());
                return if a == Action::Logs {
                    self.open_logs()
                } else {
                    self.open_spec()
                };
            }
            _ => self.dirty = false,
        }
        vec![]
    }
}
