//! Console state for the spec pane of one agent (`y`): the spec in force as TOML, its
//! version history (who stored each version, when, what it changed), and any older
//! version shown with its diff against the one in force. Read-only: changes go through
//! `agenfleet agents apply`, which shows the diff and asks.

use super::{App, Effect, Mode};
use agenfleet_protocol::spec::{SpecHistory, SpecVersion};
use crossterm::event::KeyCode;

/// The spec pane of one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecPane {
    pub agent: String,
    pub history: Option<SpecHistory>,
    /// The spec in force (shown, or compared against).
    pub in_force: Option<SpecVersion>,
    /// The version on show when it is not the one in force.
    pub shown: Option<SpecVersion>,
    /// Selected row of the history (0: the newest).
    pub selected: usize,
    /// Lines scrolled down in the text.
    pub scroll: u16,
    pub error: Option<String>,
}

impl SpecPane {
    /// The version selected in the history list.
    pub fn selected_version(&self) -> Option<u32> {
        let h = self.history.as_ref()?;
        h.versions
            .iter()
            .rev()
            .nth(self.selected)
            .map(|v| v.version)
    }

    /// What the text area shows: its title and lines (the spec in force as TOML, or an
    /// older version as a diff against it).
    pub fn text(&self) -> (String, String) {
        let Some(cur) = &self.in_force else {
            return ("loading…".into(), String::new());
        };
        match &self.shown {
            Some(old) if old.version != cur.version => (
                format!("v{} → v{} (in force)", old.version, cur.version),
                super::scopes::diff(&old.spec.to_display_toml(), &cur.spec.to_display_toml()),
            ),
            _ => (
                format!("v{} in force", cur.version),
                cur.spec.to_display_toml(),
            ),
        }
    }
}

impl App {
    /// `y`: opens the spec pane of the selected agent.
    pub(super) fn open_spec(&mut self) -> Vec<Effect> {
        let Some((agent, r)) = self.selected_ref() else {
            return vec![];
        };
        self.spec = Some(SpecPane {
            agent,
            ..Default::default()
        });
        self.mode = Mode::Spec;
        vec![Effect::LoadSpec(r, None)]
    }

    /// The daemon's answer to `LoadSpec` (`version` None: the one in force).
    pub fn apply_spec(
        &mut self,
        agent: &str,
        version: Option<u32>,
        r: Result<(SpecHistory, SpecVersion), String>,
    ) {
        let Some(p) = self.spec.as_mut().filter(|p| p.agent == agent) else {
            return;
        };
        match r {
            Ok((h, v)) => {
                p.history = Some(h);
                if version.is_none() {
                    p.in_force = Some(v);
                    p.shown = None;
                } else {
                    p.shown = Some(v);
                }
                p.error = None;
            }
            Err(e) => p.error = Some(e),
        }
        self.dirty = true;
    }

    pub(super) fn on_spec_key(&mut self, code: KeyCode) -> Vec<Effect> {
        let Some(p) = self.spec.as_mut() else {
            self.mode = Mode::Normal;
            return vec![];
        };
        let rows = p.history.as_ref().map(|h| h.versions.len()).unwrap_or(0);
        let before = p.selected;
        match code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('y') => {
                self.spec = None;
                self.mode = Mode::Normal;
                return vec![];
            }
            KeyCode::Down | KeyCode::Char('j') => {
                p.selected = (p.selected + 1).min(rows.saturating_sub(1))
            }
            KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
            KeyCode::PageDown => p.scroll = p.scroll.saturating_add(10),
            KeyCode::PageUp => p.scroll = p.scroll.saturating_sub(10),
            _ => {
                self.dirty = false;
                return vec![];
            }
        }
        if p.selected == before {
            return vec![];
        }
        p.scroll = 0;
        let Ok(r) = agenfleet_protocol::AgentRef::parse(&p.agent) else {
            return vec![];
        };
        match p.selected_version() {
            Some(v) if Some(v) != p.in_force.as_ref().map(|c| c.version) => {
                vec![Effect::LoadSpec(r, Some(v))]
            }
            _ => {
                p.shown = None;
                vec![]
            }
        }
    }
}
