//! Console state for the credentials pane of one agent: metadata and versions (never a
//! value), the runs since the last rotation, and rotation with a masked input that is
//! zeroed on drop and confirmed before it is sent.

use super::{typing, App, Effect, Mode, Typing};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::{AgentRef, AuditEntry, CredentialInfo, SecretValue};
use crossterm::event::KeyCode;

/// A value being typed: zeroed on drop, never shown, never in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MaskedInput(zeroize::Zeroizing<String>);

impl std::fmt::Debug for MaskedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MaskedInput([redacted], {} chars)",
            self.0.chars().count()
        )
    }
}

impl MaskedInput {
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn push(&mut self, c: char) {
        self.0.push(c);
    }
    fn pop(&mut self) {
        self.0.pop();
    }
    pub fn to_secret(&self) -> SecretValue {
        SecretValue::new(self.0.as_bytes().to_vec())
    }
}

/// What the credentials pane shows for one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredsPane {
    pub agent: String,
    pub list: Vec<CredentialInfo>,
    /// The agent's runs (`agent.started` records) since its last rotation.
    pub runs: Vec<AuditEntry>,
    pub selected: usize,
    pub loaded: bool,
}

impl App {
    pub(super) fn on_creds_key(&mut self, code: KeyCode) -> Vec<Effect> {
        let n = self.creds.as_ref().map(|c| c.list.len()).unwrap_or(0);
        match code {
            KeyCode::Esc | KeyCode::Char('q') => {
                self.mode = Mode::Normal;
                self.creds = None;
            }
            KeyCode::Char('j') | KeyCode::Down => {
                if let Some(c) = self.creds.as_mut() {
                    c.selected = (c.selected + 1).min(n.saturating_sub(1));
                }
            }
            KeyCode::Char('k') | KeyCode::Up => {
                if let Some(c) = self.creds.as_mut() {
                    c.selected = c.selected.saturating_sub(1);
                }
            }
            KeyCode::Char('X') => {
                let agent = self
                    .creds
                    .as_ref()
                    .map(|c| c.agent.clone())
                    .unwrap_or_default();
                if !self.may_change(Permission::CredsWrite, &agent, "revoke") {
                    return vec![];
                }
                match self
                    .creds
                    .as_ref()
                    .and_then(|c| c.list.get(c.selected))
                    .map(|c| c.name.clone())
                {
                    Some(name) => {
                        self.mode = Mode::RevokeInput {
                            name,
                            typed: String::new(),
                        }
                    }
                    None => self.flash("this agent has no credential to revoke", true),
                }
            }
            KeyCode::Char('R') => {
                let agent = self
                    .creds
                    .as_ref()
                    .map(|c| c.agent.clone())
                    .unwrap_or_default();
                let view = agent
                    .split_once('/')
                    .and_then(|(t, n)| self.agents.get(&(t.to_string(), n.to_string())))
                    .cloned();
                if let Some(v) = view {
                    if let Err(why) = self.may(Permission::CredsWrite, &v) {
                        self.flash(why, true);
                        return vec![];
                    }
                }
                if self.readonly {
                    self.flash("read-only console: rotate is turned off (--readonly)", true);
                    return vec![];
                }
                let name = self
                    .creds
                    .as_ref()
                    .and_then(|c| c.list.get(c.selected))
                    .map(|c| c.name.clone());
                match name {
                    Some(name) => {
                        self.mode = Mode::RotateInput {
                            name,
                            input: MaskedInput::default(),
                        }
                    }
                    None => self.flash("this agent has no credential to rotate", true),
                }
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    /// Credential metadata and recent runs arrived for the pane.
    pub fn apply_creds(&mut self, agent: &str, list: Vec<CredentialInfo>, runs: Vec<AuditEntry>) {
        if let Some(c) = self.creds.as_mut().filter(|c| c.agent == agent) {
            c.selected = c.selected.min(list.len().saturating_sub(1));
            c.list = list;
            c.runs = runs;
            c.loaded = true;
            self.dirty = true;
        }
    }

    /// `c`: opens the credentials pane of the selected agent.
    pub(super) fn open_creds(&mut self) -> Vec<Effect> {
        let Some((agent, r)) = self.selected_ref() else {
            return vec![];
        };
        self.creds = Some(CredsPane {
            agent,
            ..Default::default()
        });
        self.mode = Mode::Creds;
        vec![Effect::LoadCreds(r)]
    }

    /// Typing the new value of a credential (masked).
    pub(super) fn on_rotate_input_key(
        &mut self,
        code: KeyCode,
        name: String,
        mut input: MaskedInput,
    ) -> Vec<Effect> {
        match code {
            KeyCode::Esc => self.mode = Mode::Creds,
            KeyCode::Enter if input.is_empty() => self.flash("type the new value first", true),
            KeyCode::Enter => self.mode = Mode::RotateConfirm { name, input },
            KeyCode::Backspace => {
                input.pop();
                self.mode = Mode::RotateInput { name, input };
            }
            KeyCode::Char(c) => {
                input.push(c);
                self.mode = Mode::RotateInput { name, input };
            }
            _ => self.mode = Mode::RotateInput { name, input },
        }
        vec![]
    }

    /// Confirming a rotation to the typed value: only `y` goes ahead.
    pub(super) fn on_rotate_confirm_key(
        &mut self,
        code: KeyCode,
        name: String,
        input: MaskedInput,
    ) -> Vec<Effect> {
        match code {
            KeyCode::Char('y') => {
                self.mode = Mode::Creds;
                let agent = self
                    .creds
                    .as_ref()
                    .map(|c| c.agent.clone())
                    .unwrap_or_default();
                match AgentRef::parse(&agent) {
                    Ok(r) => {
                        self.flash(format!("rotating {agent}/{name}…"), false);
                        vec![Effect::Rotate(r, name, input.to_secret())]
                    }
                    Err(e) => {
                        self.flash(e, true);
                        vec![]
                    }
                }
            }
            KeyCode::Char('n') | KeyCode::Esc | KeyCode::Enter => {
                self.mode = Mode::Creds;
                self.flash(format!("rotation of {name} cancelled"), false);
                vec![]
            }
            _ => vec![],
        }
    }

    /// The usable versions of the credential `name` in the pane.
    pub fn usable_versions(&self, name: &str) -> Vec<u32> {
        self.creds
            .as_ref()
            .and_then(|c| c.list.iter().find(|c| c.name == name))
            .map(|c| {
                c.versions
                    .iter()
                    .filter(|v| v.revoked_ms.is_none())
                    .map(|v| v.version)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Typing the version to revoke: digits, Enter (empty: every usable version).
    pub(super) fn on_revoke_input_key(
        &mut self,
        code: KeyCode,
        name: String,
        typed: String,
    ) -> Vec<Effect> {
        match typing(code, typed, |c| c.is_ascii_digit() || c == 'v') {
            Typing::Cancel => self.mode = Mode::Creds,
            Typing::Submit(typed) => {
                let version = match typed.trim().trim_start_matches('v') {
                    "" => None,
                    v => match v.parse::<u32>() {
                        Ok(n) if self.usable_versions(&name).contains(&n) => Some(n),
                        _ => {
                            self.flash(
                                format!("`{typed}` is not a usable version of {name}"),
                                true,
                            );
                            self.mode = Mode::RevokeInput { name, typed };
                            return vec![];
                        }
                    },
                };
                self.mode = Mode::RevokeConfirm { name, version };
            }
            Typing::Edit(typed) => self.mode = Mode::RevokeInput { name, typed },
        }
        vec![]
    }

    /// Confirming the revocation: only `y` goes ahead.
    pub(super) fn on_revoke_confirm_key(
        &mut self,
        code: KeyCode,
        name: String,
        version: Option<u32>,
    ) -> Vec<Effect> {
        self.mode = Mode::Creds;
        let agent = self
            .creds
            .as_ref()
            .map(|c| c.agent.clone())
            .unwrap_or_default();
        match (code, AgentRef::parse(&agent)) {
            (KeyCode::Char('y'), Ok(r)) => {
                self.flash(format!("revoking {agent}/{name}…"), false);
                vec![Effect::Revoke(r, name, version)]
            }
            _ => {
                self.flash(format!("revocation of {name} cancelled"), false);
                vec![]
            }
        }
    }

    /// The daemon answered a revocation: say so and reload the pane.
    pub(super) fn revoked(
        &mut self,
        agent: &str,
        r: Result<CredentialInfo, String>,
    ) -> Vec<Effect> {
        match r {
            Ok(c) => self.flash(
                format!(
                    "revoked {agent}/{}: {}",
                    c.name,
                    c.current_version
                        .map(|v| format!("v{v} is current"))
                        .unwrap_or_else(|| "no usable version left".into())
                ),
                false,
            ),
            Err(e) => self.flash(format!("revocation failed: {e}"), true),
        }
        AgentRef::parse(agent)
            .map(|r| vec![Effect::LoadCreds(r)])
            .unwrap_or_default()
    }

    /// The daemon answered a rotation: say so and reload the pane.
    pub(super) fn rotated(
        &mut self,
        agent: &str,
        r: Result<CredentialInfo, String>,
    ) -> Vec<Effect> {
        match r {
            Ok(c) => self.flash(
                format!(
                    "rotated {agent}/{} to version {}",
                    c.name,
                    c.current_version.unwrap_or(0)
                ),
                false,
            ),
            Err(e) => self.flash(format!("rotation failed: {e}"), true),
        }
        match AgentRef::parse(agent) {
            Ok(r) => vec![Effect::LoadCreds(r)],
            Err(_) => vec![],
        }
    }
}
