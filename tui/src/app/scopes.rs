//! Console state for the versioned-text panes: an agent's scopes and a tenant's Cedar
//! policy. Each shows the text in force and its history, edits in place (`editor.rs`)
//! checked as you type with the bad line pointed at — scopes here, the policy by the
//! daemon's validator (each keystroke's check numbered, a stale answer dropped) — shows
//! the diff before publishing, and rolls back to an older version.

use super::editor::Editor;
use super::{App, Effect, Mode};
use agenfleet_protocol::policy::{PolicyCaseResult, ScopeError, Scopes, VersionHistory};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::AgentRef;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a versioned-text pane holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextKind {
    /// An agent's scopes (`agent` is `tenant/name`).
    #[default]
    Scopes,
    /// A tenant's Cedar policy (`agent` is the tenant).
    Policy,
}

/// The scopes pane of one agent, or the policy pane of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopesPane {
    pub kind: TextKind,
    /// The agent (scopes) or the tenant (policy).
    pub agent: String,
    /// The policy check last asked of the daemon, and the last one answered.
    pub checking: u64,
    pub checked: u64,
    pub history: Option<VersionHistory>,
    /// Selected row of the history (0: the newest).
    pub selected: usize,
    pub editor: Option<Editor>,
    /// What is wrong with the edited text now (checked at every keystroke).
    pub problem: Option<ScopeError>,
    /// The diff shown before publishing.
    pub diff: Option<String>,
    pub error: Option<String>,
    /// Policy: the case file last tested, and how its cases came out (or why they did not
    /// run), for the text that was shown then.
    pub cases_file: String,
    pub tested: Option<Result<Vec<PolicyCaseResult>, String>>,
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
    /// Opens the policy pane of `tenant` (`:policy [TENANT]`).
    pub(super) fn open_policy(&mut self, tenant: String) -> Vec<Effect> {
        self.scopes = Some(ScopesPane {
            kind: TextKind::Policy,
            agent: tenant.clone(),
            ..Default::default()
        });
        self.mode = Mode::Scopes;
        vec![Effect::LoadPolicy(tenant)]
    }

    /// The pane's text loaded again (after a publish).
    fn reload_text(&self) -> Vec<Effect> {
        match self.scopes.as_ref() {
            Some(p) if p.kind == TextKind::Policy => vec![Effect::LoadPolicy(p.agent.clone())],
            Some(p) => AgentRef::parse(&p.agent)
                .map(|r| vec![Effect::LoadScopes(r)])
                .unwrap_or_default(),
            None => vec![],
        }
    }

    /// The daemon's check of the policy being edited (`gen`: which keystroke's).
    pub fn policy_checked(
        &mut self,
        gen: u64,
        r: Result<Vec<agenfleet_protocol::policy::PolicyProblem>, String>,
    ) {
        let Some(p) = self.scopes.as_mut().filter(|p| p.kind == TextKind::Policy) else {
            return;
        };
        if gen != p.checking {
            return;
        }
        p.checked = gen;
        p.problem = match r {
            Ok(problems) => problems.first().map(|f| ScopeError {
                line: f.line,
                message: if problems.len() > 1 {
                    format!("{} (and {} more)", f.message, problems.len() - 1)
                } else {
                    f.message.clone()
                },
            }),
            Err(e) => Some(ScopeError {
                line: None,
                message: format!("cannot check: {e}"),
            }),
        };
        self.dirty = true;
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
        self.apply_text(TextKind::Scopes, agent, r);
    }

    /// A pane's text and history arrived.
    pub fn apply_text(&mut self, kind: TextKind, agent: &str, r: Result<VersionHistory, String>) {
        if let Some(p) = self
            .scopes
            .as_mut()
            .filter(|p| p.agent == agent && p.kind == kind)
        {
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
                let (agent, kind) = (pane.agent.clone(), pane.kind);
                let allowed = match kind {
                    TextKind::Scopes => {
                        self.may_change(Permission::ScopesWrite, &agent, "editing scopes")
                    }
                    TextKind::Policy => self.may_change_tenant(
                        Permission::PolicyWrite,
                        &agent,
                        "editing the policy",
                    ),
                };
                if !allowed {
                    return vec![];
                }
                if let Some(pane) = self.scopes.as_mut() {
                    let text = pane.current_text();
                    let empty = match kind {
                        TextKind::Scopes => "tools = []\n",
                        TextKind::Policy => {
                            "// Cedar: forbid wins over permit; scopes stay the outer bound.\n"
                        }
                    };
                    pane.editor = Some(Editor::new(if text.is_empty() { empty } else { &text }));
                    pane.problem = None;
                }
                self.mode = Mode::ScopesEdit;
            }
            KeyCode::Char('t') if pane.kind == TextKind::Policy => {
                self.mode = Mode::PolicyTestInput {
                    typed: pane.cases_file.clone(),
                    editing: false,
                };
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
                let allowed = match pane.kind {
                    TextKind::Scopes => {
                        self.may_change(Permission::ScopesWrite, &agent, "rollback")
                    }
                    TextKind::Policy => {
                        self.may_change_tenant(Permission::PolicyWrite, &agent, "rollback")
                    }
                };
                if !allowed {
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
                let problem = match pane.kind {
                    TextKind::Scopes => Scopes::parse(&text).err(),
                    TextKind::Policy if pane.checked != pane.checking => {
                        self.flash(
                            "the daemon is still checking the policy; Ctrl-S again",
                            true,
                        );
                        return vec![];
                    }
                    TextKind::Policy => pane.problem.clone(),
                };
                if let Some(e) = problem {
                    pane.problem = Some(e);
                    self.flash("fix it first (the line is marked)", true);
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
            KeyCode::Char('t') if ctrl && pane.kind == TextKind::Policy => {
                self.mode = Mode::PolicyTestInput {
                    typed: pane.cases_file.clone(),
                    editing: true,
                };
            }
            _ => {
                if ed.key(k) {
                    match pane.kind {
                        TextKind::Scopes => pane.problem = Scopes::parse(&ed.text()).err(),
                        TextKind::Policy => {
                            pane.checking += 1;
                            return vec![Effect::ValidatePolicy(pane.checking, ed.text())];
                        }
                    }
                }
            }
        }
        vec![]
    }

    /// Typing the case file to test the policy shown with (the edited text while editing,
    /// else the version in force); Enter runs the cases, Esc goes back.
    pub(super) fn on_policy_test_key(
        &mut self,
        code: KeyCode,
        typed: String,
        editing: bool,
    ) -> Vec<Effect> {
        let back = if editing {
            Mode::ScopesEdit
        } else {
            Mode::Scopes
        };
        match super::typing(code, typed, |_| true) {
            super::Typing::Cancel => self.mode = back,
            super::Typing::Submit(typed) if typed.trim().is_empty() => {
                self.flash(
                    "type the path of a case file (as `agenfleet policy test` takes)",
                    true,
                );
                self.mode = Mode::PolicyTestInput { typed, editing };
            }
            super::Typing::Submit(typed) => {
                self.mode = back;
                let Some(p) = self.scopes.as_mut() else {
                    return vec![];
                };
                p.cases_file = typed.trim().to_string();
                let candidate = if editing {
                    p.editor.as_ref().map(Editor::text)
                } else {
                    None
                };
                let effect = Effect::TestPolicy {
                    tenant: p.agent.clone(),
                    file: p.cases_file.clone(),
                    candidate,
                };
                self.flash(format!("running the cases of {}…", typed.trim()), false);
                return vec![effect];
            }
            super::Typing::Edit(typed) => self.mode = Mode::PolicyTestInput { typed, editing },
        }
        vec![]
    }

    /// How the cases came out.
    pub(super) fn policy_tested(&mut self, r: Result<Vec<PolicyCaseResult>, String>) {
        if !self
            .scopes
            .as_ref()
            .is_some_and(|p| p.kind == TextKind::Policy)
        {
            return;
        }
        match &r {
            Ok(results) => {
                let failed = results
                    .iter()
                    .filter(|r| !crate::policy_cases::passed(r))
                    .count();
                let text = format!("{} case(s), {failed} failed", results.len());
                self.flash(text, failed > 0);
            }
            Err(e) => self.flash(format!("cases not run: {e}"), true),
        }
        if let Some(p) = self.scopes.as_mut() {
            p.tested = Some(r);
        }
        self.dirty = true;
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
                let Some(text) = text else {
                    self.mode = Mode::Scopes;
                    return vec![];
                };
                let kind = self.scopes.as_ref().map(|p| p.kind).unwrap_or_default();
                if let Some(p) = self.scopes.as_mut() {
                    p.diff = None;
                }
                self.mode = Mode::ScopesEdit;
                match (kind, self.scopes_ref()) {
                    (TextKind::Policy, _) => {
                        let tenant = self
                            .scopes
                            .as_ref()
                            .map(|p| p.agent.clone())
                            .unwrap_or_default();
                        self.flash(format!("publishing the policy of {tenant}…"), false);
                        vec![Effect::PublishPolicy(tenant, text)]
                    }
                    (TextKind::Scopes, Some(r)) => {
                        self.flash(format!("publishing scopes of {r}…"), false);
                        vec![Effect::PublishScopes(r, text)]
                    }
                    (TextKind::Scopes, None) => vec![],
                }
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
        if code != KeyCode::Char('y') {
            return vec![];
        }
        match (
            self.scopes.as_ref().map(|p| (p.kind, p.agent.clone())),
            self.scopes_ref(),
        ) {
            (Some((TextKind::Policy, tenant)), _) => {
                self.flash(
                    format!("rolling the policy of {tenant} back to v{version}…"),
                    false,
                );
                vec![Effect::RollbackPolicy(tenant, version)]
            }
            (Some((TextKind::Scopes, _)), Some(r)) => {
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
                let what = match self.scopes.as_ref().map(|p| p.kind) {
                    Some(TextKind::Policy) => "the policy of",
                    _ => "scopes of",
                };
                self.flash(format!("published {what} {agent} as v{v}"), false);
                if let Some(p) = self.scopes.as_mut().filter(|p| p.agent == agent) {
                    p.editor = None;
                    p.problem = None;
                    p.selected = 0;
                }
                if matches!(self.mode, Mode::ScopesEdit) {
                    self.mode = Mode::Scopes;
                }
                self.reload_text()
            }
            Err(e) => {
                self.flash(format!("not published: {e}"), true);
                vec![]
            }
        }
    }
}
