//! Console state and what keys and daemon news do to it. No drawing and no I/O here:
//! everything that reaches the console is a `Msg`, `App::on_msg` decides, and the
//! `Effect`s it answers are what the event loop (`tui.rs`) carries out. Each view keeps its
//! state and keys in its own file (fleet, audit, creds, escalations, scopes, incidents).

use agenfleet_protocol::roles::{Permission, ScopedRole};
use agenfleet_protocol::{
    AgentAction, AgentRef, AgentState, AgentView, AuditEntry, AuditStatus, CallerInfo,
    CredentialInfo, DaemonInfo, LogChunk, LogLine, SecretValue, WatchReply,
};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, VecDeque};

mod audit;
mod creds;
pub mod editor;
mod escalations;
mod fleet;
pub mod incidents;
mod scopes;
mod spec;
use agenfleet_protocol::incidents::{Incident, Party};
use agenfleet_protocol::policy::{EscalationView, VersionHistory};
pub use creds::{CredsPane, MaskedInput};
pub use incidents::IncidentAction;
pub use scopes::ScopesPane;
pub use spec::SpecPane;

/// Log lines kept for the detail pane.
pub const LOG_TAIL: usize = 500;
/// Audit records kept for the audit view.
pub const AUDIT_TAIL: usize = 2000;

/// Which view fills the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Fleet,
    Audit,
    Escalations,
    Incidents,
}

pub type Key = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Connected,
    Disconnected { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Filter,
    Help,
    Confirm {
        action: AgentAction,
        agent: String,
    },
    /// The credentials pane of one agent.
    Creds,
    /// Typing the new value of the selected credential (masked).
    RotateInput {
        name: String,
        input: MaskedInput,
    },
    /// Confirming the rotation.
    RotateConfirm {
        name: String,
        input: MaskedInput,
    },
    /// Typing the reason to approve or deny an escalation.
    Decide {
        id: u64,
        approve: bool,
        reason: String,
    },
    /// The scopes pane of one agent.
    Scopes,
    /// Editing the scopes in place.
    ScopesEdit,
    /// The diff, before publishing.
    ScopesConfirm,
    /// Confirming a rollback to an earlier version.
    ScopesRollback {
        version: u32,
    },
    /// The spec pane of one agent (`y`).
    Spec,
    /// Choosing the party (Tab) and typing the reason to reassign an incident.
    Reassign {
        id: u64,
        party: Party,
        reason: String,
    },
    /// Confirming that an incident is resolved.
    ResolveIncident {
        id: u64,
    },
}

/// What reaches the console: the operator's keys, the clock, and the daemon's news (the
/// answers of the calls that `Effect`s started).
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize,
    Tick(u64),
    Connected(CallerInfo),
    Disconnected(String),
    /// An effect needed the daemon and there was no connection.
    NotConnected,
    Watch(WatchReply),
    Logs(Key, LogChunk),
    Audit(Vec<AuditEntry>, Option<AuditStatus>),
    Creds(String, Vec<CredentialInfo>, Vec<AuditEntry>),
    Rotated(String, Result<CredentialInfo, String>),
    ActionDone(AgentAction, String, Result<Box<AgentView>, String>),
    Escalations(Vec<EscalationView>),
    Decided(u64, bool, Result<EscalationView, String>),
    Scopes(String, Result<VersionHistory, String>),
    ScopesPublished(String, Result<u32, String>),
    IncidentDone(u64, Box<Result<Incident, String>>),
    /// An agent's spec history and the version asked for (None: the one in force).
    Spec(
        String,
        Option<u32>,
        Box<
            Result<
                (
                    agenfleet_protocol::spec::SpecHistory,
                    agenfleet_protocol::spec::SpecVersion,
                ),
                String,
            >,
        >,
    ),
}

/// What the event loop should do (the console's only way to reach the daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    /// Follow the audit log (again, on a new connection).
    FollowAudit,
    Act(AgentAction, AgentRef),
    /// Follow this agent's logs (None: stop following).
    FollowLogs(Option<AgentRef>),
    /// Load an agent's credential metadata and its runs since the last rotation.
    LoadCreds(AgentRef),
    /// Rotate a credential to the typed value.
    Rotate(AgentRef, String, SecretValue),
    /// Load the escalations queue.
    LoadEscalations,
    /// Approve or deny an escalation (bound to its request hash).
    Decide {
        id: u64,
        request_hash: String,
        approve: bool,
        reason: String,
    },
    /// Load an agent's scopes and their history.
    LoadScopes(AgentRef),
    /// Publish edited scopes.
    PublishScopes(AgentRef, String),
    /// Publish a copy of an earlier version.
    RollbackScopes(AgentRef, u32),
    /// Acknowledge, resolve, silence or reassign an incident.
    Incident(u64, IncidentAction),
    /// Load an agent's spec history and one version (None: the one in force).
    LoadSpec(AgentRef, Option<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub error: bool,
    pub until_ms: u64,
}

pub struct App {
    pub agents: BTreeMap<Key, AgentView>,
    pub daemon: Option<DaemonInfo>,
    pub caller: Option<CallerInfo>,
    pub conn: ConnState,
    pub selected: Option<Key>,
    pub filter: String,
    pub mode: Mode,
    pub detail_open: bool,
    pub logs: VecDeque<LogLine>,
    pub logs_for: Option<Key>,
    pub logs_missed: u64,
    pub flash: Option<Flash>,
    pub readonly: bool,
    pub color: bool,
    pub now_ms: u64,
    pub view: View,
    pub audit: VecDeque<AuditEntry>,
    pub audit_status: Option<AuditStatus>,
    /// Records scrolled up from the newest (0: follow the newest).
    pub audit_scroll: usize,
    pub creds: Option<CredsPane>,
    /// The tenant (and project) the fleet view is narrowed to; `t` cycles.
    pub context: Option<(String, Option<String>)>,
    /// Escalated tool calls waiting for a person (loaded when the count changes).
    pub escalations: Vec<EscalationView>,
    pub esc_selected: usize,
    pub scopes: Option<ScopesPane>,
    pub spec: Option<SpecPane>,
    /// Incidents from the live watch (open ones, and resolved ones the daemon still shows).
    pub incidents: BTreeMap<u64, Incident>,
    pub inc_selected: usize,
    /// Something changed since the last frame.
    pub dirty: bool,
}

pub(crate) fn key_of(v: &AgentView) -> Key {
    (v.tenant.clone(), v.name.clone())
}

impl App {
    pub fn new(readonly: bool, color: bool, now_ms: u64) -> App {
        App {
            agents: BTreeMap::new(),
            daemon: None,
            caller: None,
            conn: ConnState::Connecting,
            selected: None,
            filter: String::new(),
            mode: Mode::Normal,
            detail_open: false,
            logs: VecDeque::new(),
            logs_for: None,
            logs_missed: 0,
            flash: None,
            readonly,
            color,
            now_ms,
            view: View::Fleet,
            audit: VecDeque::new(),
            audit_status: None,
            audit_scroll: 0,
            creds: None,
            context: None,
            escalations: Vec::new(),
            esc_selected: 0,
            scopes: None,
            spec: None,
            incidents: BTreeMap::new(),
            inc_selected: 0,
            dirty: true,
        }
    }

    /// Whether the operator's roles allow `perm` on the agent (the daemon decides; this
    /// only spares a refused round trip and says why up front).
    pub fn may(&self, perm: Permission, v: &AgentView) -> Result<(), String> {
        let Some(c) = &self.caller else { return Ok(()) };
        if c.role == "platform_admin" {
            return Ok(());
        }
        // The daemon's own role table.
        let grants =
            |role: &str| ScopedRole::parse(role).is_some_and(|r| r.permissions().contains(&perm));
        let ok = c.bindings.iter().any(|b| {
            b.tenant == v.tenant
                && b.project.as_ref().is_none_or(|p| p == &v.project)
                && grants(&b.role)
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "not permitted: needs {} on project {}/{} (your roles: {})",
                perm.as_str(),
                v.tenant,
                v.project,
                c.bindings
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
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

    pub fn flash(&mut self, text: impl Into<String>, error: bool) {
        self.flash = Some(Flash {
            text: text.into(),
            error,
            until_ms: self.now_ms + 5000,
        });
        self.dirty = true;
    }

    pub fn on_connected(&mut self, caller: CallerInfo) {
        self.conn = ConnState::Connected;
        self.caller = Some(caller);
        self.dirty = true;
    }

    pub fn on_disconnected(&mut self, error: String) {
        let changed = self.conn
            != ConnState::Disconnected {
                error: error.clone(),
            };
        self.conn = ConnState::Disconnected { error };
        self.dirty |= changed;
    }

    /// Called every second: expire the flash; redraw if a visible uptime ticks.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if self.flash.as_ref().is_some_and(|f| f.until_ms <= now_ms) {
            self.flash = None;
            self.dirty = true;
        }
        if self
            .visible()
            .iter()
            .any(|v| matches!(v.state, AgentState::Running | AgentState::BackingOff))
        {
            self.dirty = true;
        }
    }

    /// What reaches the console — a key, the clock, the daemon's news — and what the
    /// event loop must do about it. The loop does the I/O; every decision is made here.
    pub fn on_msg(&mut self, m: Msg) -> Vec<Effect> {
        match m {
            Msg::Key(k) => self.on_key(k),
            Msg::Resize => {
                self.dirty = true;
                vec![]
            }
            Msg::Tick(now_ms) => {
                self.tick(now_ms);
                vec![]
            }
            Msg::Connected(caller) => {
                self.on_connected(caller);
                // A new connection: follow the audit log, and the open agent's logs again.
                let mut fx = vec![Effect::FollowAudit];
                if let (Some((t, n)), true) = (&self.logs_for, self.detail_open) {
                    fx.push(Effect::FollowLogs(Some(AgentRef {
                        tenant: Some(t.clone()),
                        name: n.clone(),
                    })));
                }
                fx
            }
            Msg::Disconnected(e) => {
                self.on_disconnected(e);
                vec![]
            }
            Msg::NotConnected => {
                self.flash("not connected to the daemon", true);
                vec![]
            }
            Msg::Watch(r) => self.apply_watch(r),
            Msg::Logs(k, chunk) => {
                self.apply_logs(&k, chunk);
                vec![]
            }
            Msg::Audit(entries, status) => {
                self.apply_audit(entries, status);
                vec![]
            }
            Msg::Creds(agent, list, runs) => {
                self.apply_creds(&agent, list, runs);
                vec![]
            }
            Msg::Rotated(agent, r) => self.rotated(&agent, r),
            Msg::ActionDone(action, agent, r) => {
                self.action_done(action, &agent, r);
                vec![]
            }
            Msg::Escalations(list) => {
                self.apply_escalations(list);
                vec![]
            }
            Msg::Decided(id, approve, r) => self.decided(id, approve, r),
            Msg::Scopes(agent, r) => {
                self.apply_scopes(&agent, r);
                vec![]
            }
            Msg::ScopesPublished(agent, r) => self.scopes_published(&agent, r),
            Msg::IncidentDone(id, r) => {
                self.incident_done(id, *r);
                vec![]
            }
            Msg::Spec(agent, version, r) => {
                self.apply_spec(&agent, version, *r);
                vec![]
            }
        }
    }

    /// A key: Ctrl-C quits anywhere; otherwise the mode that holds the keyboard decides,
    /// and in normal mode the view's own keys come first, then the keys of every view,
    /// then the fleet's (they act on the selected agent from any view).
    pub fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        self.dirty = true;
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return vec![Effect::Quit];
        }
        match self.mode.clone() {
            Mode::Help => {
                self.mode = Mode::Normal;
                vec![]
            }
            Mode::Filter => self.on_filter_key(k.code),
            Mode::Confirm { action, agent } => self.on_confirm_key(k.code, action, agent),
            Mode::Creds => self.on_creds_key(k.code),
            Mode::RotateInput { name, input } => self.on_rotate_input_key(k.code, name, input),
            Mode::RotateConfirm { name, input } => self.on_rotate_confirm_key(k.code, name, input),
            Mode::Decide {
                id,
                approve,
                reason,
            } => self.on_decide_key(k.code, id, approve, reason),
            Mode::Scopes => self.on_scopes_key(k),
            Mode::Spec => self.on_spec_key(k.code),
            Mode::ScopesEdit => self.on_scopes_edit_key(k),
            Mode::ScopesConfirm => self.on_scopes_confirm_key(k.code),
            Mode::ScopesRollback { version } => self.on_rollback_key(k.code, version),
            Mode::Reassign { id, party, reason } => self.on_reassign_key(k.code, id, party, reason),
            Mode::ResolveIncident { id } => self.on_resolve_key(k.code, id),
            Mode::Normal => {
                let own = match self.view {
                    View::Fleet => None,
                    View::Audit => self.on_audit_key(k.code),
                    View::Escalations => self.on_escalations_key(k.code),
                    View::Incidents => self.on_incidents_key(k.code),
                };
                own.or_else(|| self.on_global_key(k.code))
                    .unwrap_or_else(|| self.on_fleet_key(k.code))
            }
        }
    }

    /// Keys of every view: quit, filter, help, switching views.
    fn on_global_key(&mut self, code: KeyCode) -> Option<Vec<Effect>> {
        Some(match code {
            KeyCode::Char('q') => vec![Effect::Quit],
            KeyCode::Char('/') => {
                self.mode = Mode::Filter;
                vec![]
            }
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                vec![]
            }
            KeyCode::Char('1') => self.show(View::Fleet),
            KeyCode::Char('2') => self.show(View::Audit),
            KeyCode::Char('3') => self.show(View::Escalations),
            KeyCode::Char('4') => self.show(View::Incidents),
            KeyCode::Tab => self.show(match self.view {
                View::Fleet => View::Audit,
                View::Audit => View::Escalations,
                View::Escalations => View::Incidents,
                View::Incidents => View::Fleet,
            }),
            _ => return None,
        })
    }

    /// Switches the body to `view` (the escalations queue is loaded when shown).
    fn show(&mut self, view: View) -> Vec<Effect> {
        self.view = view;
        if view == View::Escalations {
            vec![Effect::LoadEscalations]
        } else {
            vec![]
        }
    }

    /// Typing the filter of the fleet and audit views.
    fn on_filter_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Enter => self.mode = Mode::Normal,
            KeyCode::Esc => {
                self.filter.clear();
                self.mode = Mode::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.fix_selection();
        vec![]
    }
}

#[cfg(test)]
pub mod tests;
