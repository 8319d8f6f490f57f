//! Console state for the scopes pane of one agent: the scopes in force, the version
//! history, an in-place editor (`editor.rs`) that validates as you type and points at the
//! line, a diff before publish, rollback to an older version.

use super::editor::Editor;
use super::{App, Effect, Mode};
use agenfleet_protocol::policy::{ScopeError, Scopes, VersionHistory};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::AgentRef;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The scopes pane of one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopesPane {
    pub agent: String,
    pub history: Option<VersionHistory>,
    /// Selected row of the history (0: the newest).
    pub selected: usize,
    pub editor: Option<Editor>,
    /// What is wrong with the edited text now (checked at every keystroke).
    pub problem: Option<ScopeError>,
    /// The diff shown before publishing.
    pub diff: Option<String>,
    pub error: Option<String>,
}

impl ScopesPane {
    pub fn current_text(&self) -> String {
        self.history
            .as_ref()
            .and_then(|h| h.current())
            .map(|v| v.text.clone())
            .unwrap_or_default()
    }

    /// The version selected in the history list.
    pub fn selected_version(&self) -> Option<u32> {
        let h = self.history.as_ref()?;
        h.versions
            .iter()
            .rev()
            .nth(self.selected)
            .map(|v| v.version)
    }
}

/// A unified diff of two texts.
pub fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header("in force", "edited")
        .to_string()
}

impl App {
    /// Opens the scopes pane of the selected agent.
    pub(super) fn open_scopes(&mut self) -> Vec<Effect> {
        let Some((agent, r)) = self.selected_ref() else {
            return vec![];
        };
        self.scopes = Some(ScopesPane {
            agent,
            ..Default::default()
        });
        self.mode = Mode::Scopes;
        vec![Effect::LoadScopes(r)]
    }

    pub fn apply_scopes(&mut self, agent: &str, r: Result<VersionHistory, String>) {
        if let Some(p) = self.scopes.as_mut().filter(|p| p.agent == agent) {
            match r {
                Ok(h) => {
                    p.history = Some(h);
                    p.error = None;
                }
                Err(e) => p.error = Some(e),
            }
            self.dirty = true;
        }
    }

    fn scopes_ref(&self) -> Option<AgentRef> {
        self.scopes
            .as_ref()
            .and_then(|p| AgentRef::parse(&p.agent).ok())
    }

    pub(super) fn on_scopes_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Some(pane) = self.scopes.as_mut() else {
            self.mode = Mode::Normal;
            return vec![];
        };
        let n = pane.history.as_ref().map(|h| h.versions.len()).unwrap_or(0);
        match k.code {
            KeyCode::Esc | KeyCode::Char('q') => {
                self.mode = Mode::Normal;
                self.scopes = None;
            }
            KeyCode::Char('j') | KeyCode::Down => {
                pane.selected = (pane.selected + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('k') | KeyCode::Up => pane.selected = pane.selected.saturating_sub(1),
            KeyCode::Char('e') => {
                let agent = pane.agent.clone();
                if !self.may_change(Permission::ScopesWrite, &agent, "editing scopes") {
                    return vec![];
                }
                if let Some(pane) = self.scopes.as_mut() {
                    let text = pane.current_text();
                    pane.editor = Some(Editor::new(if text.is_empty() {
                        "tools = []\n"
                    } else {
                        &text
                    }));
                    pane.problem = None;
                }
                self.mode = Mode::ScopesEdit;
            }
            KeyCode::Char('R') => {
                let agent = pane.agent.clone();
                let Some(version) = pane.selected_version() else {
                    self.flash("no version to roll back to", true);
                    return vec![];
                };
                if Some(version) == pane.history.as_ref().map(|h| h.current) {
                    self.flash(format!("v{version} is already in force"), true);
                    return vec![];
                }
                if !self.may_change(Permission::ScopesWrite, &agent, "rollback") {
                    return vec![];
                }
                self.mode = Mode::ScopesRollback { version };
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    pub(super) fn on_scopes_edit_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Some(pane) = self.scopes.as_mut() else {
            self.mode = Mode::Normal;
            return vec![];
        };
        let Some(ed) = pane.editor.as_mut() else {
            self.mode = Mode::Scopes;
            return vec![];
        };
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Esc => {
                pane.editor = None;
                pane.problem = None;
                self.mode = Mode::Scopes;
            }
            KeyCode::Char('s') if ctrl => {
                let text = ed.text();
                if let Err(e) = Scopes::parse(&text) {
                    pane.problem = Some(e);
                    self.flash("fix the scopes first (the line is marked)", true);
                    return vec![];
                }
                let d = diff(&pane.current_text(), &text);
                if d.is_empty() {
                    self.flash("no change to publish", true);
                    return vec![];
                }
                pane.diff = Some(d);
                self.mode = Mode::ScopesConfirm;
            }
            _ => {
                if ed.key(k) {
                    pane.problem = Scopes::parse(&ed.text()).err();
                }
            }
        }
        vec![]
    }

    /// The diff before publishing: only `y` publishes; Enter, `n` and Esc go back to
    /// the editor.
    pub(super) fn on_scopes_confirm_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Char('y') => {
                let text = self
                    .scopes
                    .as_ref()
                    .and_then(|p| p.editor.as_ref())
                    .map(Editor::text);
                let (Some(r), Some(text)) = (self.scopes_ref(), text) else {
                    self.mode = Mode::Scopes;
                    return vec![];
                };
                if let Some(p) = self.scopes.as_mut() {
                    p.diff = None;
                }
                self.mode = Mode::ScopesEdit;
                self.flash(format!("publishing scopes of {r}…"), false);
                vec![Effect::PublishScopes(r, text)]
            }
            KeyCode::Char('n') | KeyCode::Esc | KeyCode::Enter => {
                if let Some(p) = self.scopes.as_mut() {
                    p.diff = None;
                }
                self.mode = Mode::ScopesEdit;
                vec![]
            }
            _ => vec![],
        }
    }

    pub(super) fn on_rollback_key(&mut self, code: KeyCode, version: u32) -> Vec<Effect> {
        self.mode = Mode::Scopes;
        match (code, self.scopes_ref()) {
            (KeyCode::Char('y'), Some(r)) => {
                self.flash(format!("rolling {r} back to v{version}…"), false);
                vec![Effect::RollbackScopes(r, version)]
            }
            _ => vec![],
        }
    }

    /// The daemon answered a publish or rollback.
    pub fn scopes_published(&mut self, agent: &str, r: Result<u32, String>) -> Vec<Effect> {
        match r {
            Ok(v) => {
                self.flash(format!("published scopes of {agent} as v{v}"), false);
                if let Some(p) = self.scopes.as_mut().filter(|p| p.agent == agent) {
                    p.editor = None;
                    p.problem = None;
                    p.selected = 0;
                }
                if matches!(self.mode, Mode::ScopesEdit) {
                    self.mode = Mode::Scopes;
                }
                AgentRef::parse(agent)
                    .map(|r| vec![Effect::LoadScopes(r)])
                    .unwrap_or_default()
            }
            Err(e) => {
                self.flash(format!("not published: {e}"), true);
                vec![]
            }
        }
    }
}
