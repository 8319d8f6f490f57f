//! Console state for tool-call policy: the escalations queue (refreshed when the pending
//! count in the fleet changes, decided with a reason) and the scopes pane of one agent
//! (the scopes in force, the version history, an in-place editor that validates as you
//! type and points at the line, a diff before publish, rollback to an older version).

use super::{App, Effect, Mode, View};
use agenfleet_protocol::policy::{EscalationView, ScopeError, Scopes, VersionHistory};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::{AgentRef, AgentView};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A small multi-line text editor (lines of chars, a cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    pub lines: Vec<String>,
    pub row: usize,
    /// Cursor column in chars.
    pub col: usize,
}

fn byte_at(s: &str, col: usize) -> usize {
    s.char_indices().nth(col).map(|(i, _)| i).unwrap_or(s.len())
}

impl Editor {
    pub fn new(text: &str) -> Editor {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Editor {
            lines,
            ..Default::default()
        }
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    fn line_len(&self) -> usize {
        self.lines
            .get(self.row)
            .map(|l| l.chars().count())
            .unwrap_or(0)
    }

    /// Applies an editing key; answers whether the text changed.
    pub fn key(&mut self, k: KeyEvent) -> bool {
        match k.code {
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.insert(at, c);
                self.col += 1;
                true
            }
            KeyCode::Tab => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.insert_str(at, "  ");
                self.col += 2;
                true
            }
            KeyCode::Enter => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                let rest = line.split_off(at);
                self.lines.insert(self.row + 1, rest);
                self.row += 1;
                self.col = 0;
                true
            }
            KeyCode::Backspace => {
                if self.col > 0 {
                    let line = &mut self.lines[self.row];
                    let at = byte_at(line, self.col - 1);
                    line.remove(at);
                    self.col -= 1;
                    true
                } else if self.row > 0 {
                    let line = self.lines.remove(self.row);
                    self.row -= 1;
                    self.col = self.line_len();
                    self.lines[self.row].push_str(&line);
                    true
                } else {
                    false
                }
            }
            KeyCode::Delete => {
                if self.col < self.line_len() {
                    let line = &mut self.lines[self.row];
                    let at = byte_at(line, self.col);
                    line.remove(at);
                    true
                } else if self.row + 1 < self.lines.len() {
                    let next = self.lines.remove(self.row + 1);
                    self.lines[self.row].push_str(&next);
                    true
                } else {
                    false
                }
            }
            KeyCode::Left => {
                if self.col > 0 {
                    self.col -= 1;
                } else if self.row > 0 {
                    self.row -= 1;
                    self.col = self.line_len();
                }
                false
            }
            KeyCode::Right => {
                if self.col < self.line_len() {
                    self.col += 1;
                } else if self.row + 1 < self.lines.len() {
                    self.row += 1;
                    self.col = 0;
                }
                false
            }
            KeyCode::Up => {
                self.row = self.row.saturating_sub(1);
                self.col = self.col.min(self.line_len());
                false
            }
            KeyCode::Down => {
                self.row = (self.row + 1).min(self.lines.len() - 1);
                self.col = self.col.min(self.line_len());
                false
            }
            KeyCode::Home => {
                self.col = 0;
                false
            }
            KeyCode::End => {
                self.col = self.line_len();
                false
            }
            _ => false,
        }
    }
}

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
    /// Pending escalations of every agent the console sees.
    pub fn pending_escalations(&self) -> u32 {
        self.agents.values().map(|v| v.escalations).sum()
    }

    fn agent_view(&self, qualified: &str) -> Option<AgentView> {
        qualified
            .split_once('/')
            .and_then(|(t, n)| self.agents.get(&(t.to_string(), n.to_string())))
            .cloned()
    }

    /// Whether a mutation may go ahead: the role, --readonly, the connection.
    pub(super) fn may_change(&mut self, perm: Permission, agent: &str, what: &str) -> bool {
        if let Some(v) = self.agent_view(agent) {
            if let Err(why) = self.may(perm, &v) {
                self.flash(why, true);
                return false;
            }
        }
        if self.readonly {
            self.flash(
                format!("read-only console: {what} is turned off (--readonly)"),
                true,
            );
            return false;
        }
        true
    }

    pub fn apply_escalations(&mut self, list: Vec<EscalationView>) {
        self.escalations = list;
        self.esc_selected = self
            .esc_selected
            .min(self.escalations.len().saturating_sub(1));
        self.dirty = true;
    }

    pub(super) fn on_escalations_key(&mut self, code: KeyCode) -> Vec<Effect> {
        let n = self.escalations.len();
        match code {
            KeyCode::Char('j') | KeyCode::Down => {
                self.esc_selected = (self.esc_selected + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.esc_selected = self.esc_selected.saturating_sub(1)
            }
            KeyCode::Char('a') | KeyCode::Char('d') => {
                let approve = code == KeyCode::Char('a');
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
            KeyCode::Char('r') => return vec![Effect::LoadEscalations],
            _ => self.dirty = false,
        }
        vec![]
    }

    pub(super) fn on_decide_key(
        &mut self,
        code: KeyCode,
        id: u64,
        approve: bool,
        mut reason: String,
    ) -> Vec<Effect> {
        match code {
            KeyCode::Esc => self.mode = Mode::Normal,
            KeyCode::Enter if reason.trim().is_empty() => {
                self.flash("a reason is required", true);
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                };
            }
            KeyCode::Enter => {
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
            KeyCode::Backspace => {
                reason.pop();
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                };
            }
            KeyCode::Char(c) => {
                reason.push(c);
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                };
            }
            _ => {
                self.mode = Mode::Decide {
                    id,
                    approve,
                    reason,
                }
            }
        }
        vec![]
    }

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

    pub(super) fn on_scopes_confirm_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Char('y') | KeyCode::Enter => {
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
            KeyCode::Char('n') | KeyCode::Esc => {
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
            (KeyCode::Char('y') | KeyCode::Enter, Some(r)) => {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn the_editor_edits_lines() {
        let mut e = Editor::new("ab\ncd");
        e.key(key(KeyCode::End));
        e.key(key(KeyCode::Enter));
        for c in "xy".chars() {
            e.key(key(KeyCode::Char(c)));
        }
        assert_eq!(e.text(), "ab\nxy\ncd\n");
        e.key(key(KeyCode::Home));
        e.key(key(KeyCode::Backspace));
        assert_eq!(e.text(), "abxy\ncd\n");
        e.key(key(KeyCode::Down));
        e.key(key(KeyCode::Home));
        e.key(key(KeyCode::Delete));
        assert_eq!(e.text(), "abxy\nd\n");
    }
}
