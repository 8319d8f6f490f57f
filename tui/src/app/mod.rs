//! Console state and what keys and daemon news do to it. No drawing and no I/O here: keys
//! become `Effect`s that the event loop carries out, and the loop feeds daemon news back in.

use agenfleet_protocol::roles::{Permission, ScopedRole};
use agenfleet_protocol::{
    AgentAction, AgentRef, AgentState, AgentView, AuditEntry, AuditStatus, CallerInfo, Change,
    CredentialInfo, DaemonInfo, LogChunk, LogLine, SecretValue, WatchReply,
};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, VecDeque};

pub mod incidents;
pub mod policy;
use agenfleet_protocol::incidents::{Incident, Party};
use agenfleet_protocol::policy::EscalationView;
pub use incidents::IncidentAction;
pub use policy::ScopesPane;

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

type Key = (String, String);

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

/// What the event loop should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
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
    /// Incidents from the live watch (open ones, and resolved ones the daemon still shows).
    pub incidents: BTreeMap<u64, Incident>,
    pub inc_selected: usize,
    /// Something changed since the last frame.
    pub dirty: bool,
}

fn key_of(v: &AgentView) -> Key {
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
            incidents: BTreeMap::new(),
            inc_selected: 0,
            dirty: true,
        }
    }

    /// Audit records that pass the filter, oldest first.
    pub fn audit_visible(&self) -> Vec<&AuditEntry> {
        // `#12 #15`: exactly these records (an incident's evidence).
        if self.filter.starts_with('#') {
            let seqs: Vec<u64> = self
                .filter
                .split_whitespace()
                .filter_map(|t| t.trim_start_matches('#').parse().ok())
                .collect();
            return self
                .audit
                .iter()
                .filter(|e| seqs.contains(&e.seq))
                .collect();
        }
        let f = self.filter.to_lowercase();
        self.audit
            .iter()
            .filter(|e| {
                f.is_empty() || {
                    let ev = &e.event;
                    format!(
                        "{} {} {}/{} {} {}",
                        ev.actor,
                        ev.action,
                        ev.tenant.as_deref().unwrap_or(""),
                        ev.agent.as_deref().unwrap_or(""),
                        ev.outcome,
                        ev.detail
                    )
                    .to_lowercase()
                    .contains(&f)
                }
            })
            .collect()
    }

    /// New audit records (and the log's status) from the daemon.
    pub fn apply_audit(&mut self, entries: Vec<AuditEntry>, status: Option<AuditStatus>) {
        let last = self.audit.back().map(|e| e.seq).unwrap_or(0);
        for e in entries.into_iter().filter(|e| e.seq > last) {
            if self.audit.len() == AUDIT_TAIL {
                self.audit.pop_front();
            }
            self.audit.push_back(e);
            if self.audit_scroll > 0 {
                self.audit_scroll += 1;
            }
        }
        if status.is_some() {
            self.audit_status = status;
        }
        self.dirty = true;
    }

    /// Agents that pass the filter, in display order.
    pub fn visible(&self) -> Vec<&AgentView> {
        let f = self.filter.to_lowercase();
        self.agents
            .values()
            .filter(|v| match &self.context {
                Some((t, p)) => &v.tenant == t && p.as_ref().is_none_or(|p| &v.project == p),
                None => true,
            })
            .filter(|v| {
                f.is_empty()
                    || format!("{}/{} {} {}", v.tenant, v.name, v.project, v.state.as_str())
                        .contains(&f)
            })
            .collect()
    }

    /// The contexts the operator can switch between: all, each tenant, each project.
    pub fn contexts(&self) -> Vec<Option<(String, Option<String>)>> {
        let mut out = vec![None];
        let mut seen = std::collections::BTreeSet::new();
        for v in self.agents.values() {
            seen.insert((v.tenant.clone(), None));
            seen.insert((v.tenant.clone(), Some(v.project.clone())));
        }
        out.extend(seen.into_iter().map(Some));
        out
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

    pub fn selected_index(&self) -> Option<usize> {
        let sel = self.selected.as_ref()?;
        self.visible().iter().position(|v| &key_of(v) == sel)
    }

    /// The selected agent's name and reference, or a flash saying none is selected.
    fn selected_ref(&mut self) -> Option<(String, AgentRef)> {
        let Some(v) = self.selected_agent() else {
            self.flash("no agent selected", true);
            return None;
        };
        let r = AgentRef {
            tenant: Some(v.tenant.clone()),
            name: v.name.clone(),
        };
        Some((v.qualified_name(), r))
    }

    pub fn selected_agent(&self) -> Option<&AgentView> {
        self.selected.as_ref().and_then(|k| self.agents.get(k))
    }

    fn fix_selection(&mut self) {
        let vis: Vec<Key> = self.visible().into_iter().map(key_of).collect();
        match &self.selected {
            Some(k) if vis.contains(k) => {}
            _ => self.selected = vis.first().cloned(),
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let vis: Vec<Key> = self.visible().into_iter().map(key_of).collect();
        if vis.is_empty() {
            self.selected = None;
            return;
        }
        let cur = self.selected_index().unwrap_or(0) as isize;
        let next = (cur + delta).clamp(0, vis.len() as isize - 1) as usize;
        self.selected = Some(vis[next].clone());
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

    /// Fleet changes from the daemon; answers what to reload (the escalations queue when
    /// its count moved).
    pub fn apply_watch(&mut self, r: WatchReply) -> Vec<Effect> {
        let pending_before = self.pending_escalations();
        self.conn = ConnState::Connected;
        if r.reset {
            self.agents.clear();
            self.incidents.clear();
        }
        for c in r.changes {
            match c {
                Change::Agent(v) => {
                    self.agents.insert(key_of(&v), v);
                }
                Change::Removed { tenant, name } => {
                    self.agents.remove(&(tenant, name));
                }
                Change::Daemon(d) => self.daemon = Some(d),
                Change::Incident(i) => {
                    self.incidents.insert(i.id, *i);
                }
            }
        }
        self.fix_incident_selection();
        self.fix_selection();
        self.dirty = true;
        self.escalations_changed(pending_before)
    }

    pub fn apply_logs(&mut self, agent: &Key, chunk: LogChunk) {
        if self.logs_for.as_ref() != Some(agent) {
            return;
        }
        self.logs_missed += chunk.missed;
        for l in chunk.lines {
            if self.logs.len() == LOG_TAIL {
                self.logs.pop_front();
            }
            self.logs.push_back(l);
        }
        self.dirty = true;
    }

    fn follow_selected(&mut self) -> Effect {
        let key = self.selected.clone();
        self.logs.clear();
        self.logs_missed = 0;
        self.logs_for = key.clone();
        Effect::FollowLogs(key.map(|(t, n)| AgentRef {
            tenant: Some(t),
            name: n,
        }))
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

    fn ask(&mut self, action: AgentAction) {
        let Some(v) = self.selected_agent() else {
            self.flash("no agent selected", true);
            return;
        };
        let agent = v.qualified_name();
        if let Err(why) = self.may(Permission::AgentControl, v) {
            self.flash(why, true);
            return;
        }
        if self.readonly {
            self.flash(
                format!(
                    "read-only console: {} is turned off (--readonly)",
                    action.as_str()
                ),
                true,
            );
            return;
        }
        if self.conn != ConnState::Connected {
            self.flash("not connected to the daemon", true);
            return;
        }
        self.mode = Mode::Confirm { action, agent };
        self.dirty = true;
    }

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
            Mode::Filter => {
                match k.code {
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
            Mode::Creds => self.on_creds_key(k.code),
            Mode::Decide {
                id,
                approve,
                reason,
            } => self.on_decide_key(k.code, id, approve, reason),
            Mode::Scopes => self.on_scopes_key(k),
            Mode::ScopesEdit => self.on_scopes_edit_key(k),
            Mode::ScopesConfirm => self.on_scopes_confirm_key(k.code),
            Mode::ScopesRollback { version } => self.on_rollback_key(k.code, version),
            Mode::Reassign { id, party, reason } => self.on_reassign_key(k.code, id, party, reason),
            Mode::ResolveIncident { id } => self.on_resolve_key(k.code, id),
            Mode::RotateInput { name, mut input } => {
                match k.code {
                    KeyCode::Esc => self.mode = Mode::Creds,
                    KeyCode::Enter if input.is_empty() => {
                        self.flash("type the new value first", true)
                    }
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
            Mode::RotateConfirm { name, input } => match k.code {
                KeyCode::Char('y') | KeyCode::Enter => {
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
                KeyCode::Char('n') | KeyCode::Esc => {
                    self.mode = Mode::Creds;
                    vec![]
                }
                _ => vec![],
            },
            Mode::Confirm { action, agent } => match k.code {
                KeyCode::Char('y') | KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    match AgentRef::parse(&agent) {
                        Ok(r) => {
                            self.flash(format!("{} {agent}…", action.as_str()), false);
                            vec![Effect::Act(action, r)]
                        }
                        Err(e) => {
                            self.flash(e, true);
                            vec![]
                        }
                    }
                }
                KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') => {
                    self.mode = Mode::Normal;
                    vec![]
                }
                _ => vec![],
            },
            Mode::Normal => match k.code {
                KeyCode::Char('q') => vec![Effect::Quit],
                code if self.view == View::Audit && Self::is_audit_key(code) => {
                    self.on_audit_key(code)
                }
                code @ (KeyCode::Char('j' | 'k' | 'a' | 'R' | 'S' | 'o' | 'e')
                | KeyCode::Up
                | KeyCode::Down
                | KeyCode::Enter)
                    if self.view == View::Incidents =>
                {
                    self.on_incidents_key(code)
                }
                code @ (KeyCode::Char('j' | 'k' | 'a' | 'd' | 'r')
                | KeyCode::Up
                | KeyCode::Down)
                    if self.view == View::Escalations =>
                {
                    self.on_escalations_key(code)
                }
                KeyCode::Char('j') | KeyCode::Down => {
                    self.move_selection(1);
                    self.refollow()
                }
                KeyCode::Char('k') | KeyCode::Up => {
                    self.move_selection(-1);
                    self.refollow()
                }
                KeyCode::Char('g') | KeyCode::Home => {
                    self.move_selection(isize::MIN / 2);
                    self.refollow()
                }
                KeyCode::Char('G') | KeyCode::End => {
                    self.move_selection(isize::MAX / 2);
                    self.refollow()
                }
                KeyCode::PageDown => {
                    self.move_selection(10);
                    self.refollow()
                }
                KeyCode::PageUp => {
                    self.move_selection(-10);
                    self.refollow()
                }
                KeyCode::Enter => {
                    if self.selected.is_none() {
                        return vec![];
                    }
                    self.detail_open = true;
                    vec![self.follow_selected()]
                }
                KeyCode::Esc => {
                    if self.detail_open {
                        self.detail_open = false;
                        self.logs_for = None;
                        vec![Effect::FollowLogs(None)]
                    } else {
                        self.filter.clear();
                        self.fix_selection();
                        vec![]
                    }
                }
                KeyCode::Char('/') => {
                    self.mode = Mode::Filter;
                    vec![]
                }
                KeyCode::Char('?') => {
                    self.mode = Mode::Help;
                    vec![]
                }
                KeyCode::Char('1') => {
                    self.view = View::Fleet;
                    vec![]
                }
                KeyCode::Char('2') => {
                    self.view = View::Audit;
                    vec![]
                }
                KeyCode::Char('3') => {
                    self.view = View::Escalations;
                    vec![Effect::LoadEscalations]
                }
                KeyCode::Char('4') => {
                    self.view = View::Incidents;
                    vec![]
                }
                KeyCode::Tab => {
                    self.view = match self.view {
                        View::Fleet => View::Audit,
                        View::Audit => View::Escalations,
                        View::Escalations => View::Incidents,
                        View::Incidents => View::Fleet,
                    };
                    if self.view == View::Escalations {
                        vec![Effect::LoadEscalations]
                    } else {
                        vec![]
                    }
                }
                KeyCode::Char('p') => self.open_scopes(),

                KeyCode::Char('r') => {
                    self.ask(AgentAction::Restart);
                    vec![]
                }
                KeyCode::Char('s') => {
                    self.ask(AgentAction::Stop);
                    vec![]
                }
                KeyCode::Char('u') => {
                    self.ask(AgentAction::Start);
                    vec![]
                }
                KeyCode::Char('x') => {
                    self.ask(AgentAction::Reset);
                    vec![]
                }
                KeyCode::Char('t') => {
                    let all = self.contexts();
                    let i = all.iter().position(|c| c == &self.context).unwrap_or(0);
                    self.context = all.get((i + 1) % all.len().max(1)).cloned().flatten();
                    self.fix_selection();
                    let label = match &self.context {
                        None => "all tenants".to_string(),
                        Some((t, None)) => format!("tenant {t}"),
                        Some((t, Some(p))) => format!("project {t}/{p}"),
                    };
                    self.flash(format!("context: {label}"), false);
                    vec![]
                }
                KeyCode::Char('c') => {
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
                _ => {
                    self.dirty = false;
                    vec![]
                }
            },
        }
    }

    fn on_creds_key(&mut self, code: KeyCode) -> Vec<Effect> {
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

    /// Keys the audit view handles itself (the rest are shared with the fleet view).
    fn is_audit_key(code: KeyCode) -> bool {
        matches!(
            code,
            KeyCode::Char('j' | 'k' | 'g' | 'G' | 'r' | 's' | 'u' | 'x')
                | KeyCode::Up
                | KeyCode::Down
                | KeyCode::PageUp
                | KeyCode::PageDown
                | KeyCode::Home
                | KeyCode::End
                | KeyCode::Esc
                | KeyCode::Enter
        )
    }

    fn on_audit_key(&mut self, code: KeyCode) -> Vec<Effect> {
        let n = self.audit_visible().len();
        match code {
            KeyCode::Char('k') | KeyCode::Up => {
                self.audit_scroll = (self.audit_scroll + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.audit_scroll = self.audit_scroll.saturating_sub(1)
            }
            KeyCode::PageUp => {
                self.audit_scroll = (self.audit_scroll + 10).min(n.saturating_sub(1))
            }
            KeyCode::PageDown => self.audit_scroll = self.audit_scroll.saturating_sub(10),
            KeyCode::Char('g') | KeyCode::Home => self.audit_scroll = n.saturating_sub(1),
            KeyCode::Char('G') | KeyCode::End => self.audit_scroll = 0,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('r') | KeyCode::Char('s') | KeyCode::Char('u') | KeyCode::Char('x') => {
                self.flash("agent actions live in the fleet view (press 1)", true)
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    /// With the detail pane open, moving the selection follows the new agent's logs.
    fn refollow(&mut self) -> Vec<Effect> {
        if self.detail_open && self.logs_for != self.selected {
            vec![self.follow_selected()]
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use agenfleet_protocol::{DesiredState, EngineInfo, ExitInfo};

    pub fn agent(tenant: &str, project: &str, name: &str, state: AgentState) -> AgentView {
        AgentView {
            tenant: tenant.into(),
            project: project.into(),
            name: name.into(),
            image: "agenfleet/agent:0123456789ab".into(),
            state,
            desired: DesiredState::Running,
            container_id: Some("c0ffee0123456789".into()),
            started_at_ms: (state == AgentState::Running).then_some(1_000_000),
            restarts: if state == AgentState::Failed { 3 } else { 0 },
            restarts_in_window: if state == AgentState::Failed { 3 } else { 0 },
            restart_budget: 3,
            next_restart_at_ms: None,
            last_exit: (state == AgentState::Failed).then_some(ExitInfo {
                code: 137,
                oom_killed: true,
                at_ms: 1_000_000,
            }),
            message: (state == AgentState::Failed)
                .then(|| "restart budget exhausted: 3 restarts within 120s".to_string()),
            cpu_percent: (state == AgentState::Running).then_some(1.5),
            memory_bytes: (state == AgentState::Running).then_some(3 * 1024 * 1024),
            memory_limit_bytes: 256 * 1024 * 1024,
            spec_hash: "abcdef0123456789".into(),
            created_at_ms: 0,
            escalations: 0,
        }
    }

    pub fn daemon() -> DaemonInfo {
        DaemonInfo {
            version: "0.1.0".into(),
            pid: 42,
            started_at_ms: 0,
            instance_id: "cafe1234".into(),
            engine: EngineInfo {
                connected: true,
                version: Some("20.10.24".into()),
                api_version: Some("1.41".into()),
                error: None,
            },
            orphans: vec![],
            audit_writable: true,
            audit_problem: None,
            vault: agenfleet_protocol::VaultState::Uninitialized,
        }
    }

    /// A console with a fixed small fleet and a fixed clock.
    pub fn sample_app() -> App {
        let mut app = App::new(false, true, 1_192_000);
        app.on_connected(CallerInfo {
            uid: 0,
            operator: "root".into(),
            role: "platform_admin".into(),
            bindings: vec![],
        });
        let mut changes = vec![Change::Daemon(daemon())];
        changes.push(Change::Agent(agent(
            "acme",
            "support",
            "triage-bot",
            AgentState::Running,
        )));
        changes.push(Change::Agent(agent(
            "acme",
            "ops",
            "flaky-bot",
            AgentState::Failed,
        )));
        changes.push(Change::Agent(agent(
            "acme",
            "research",
            "crawler",
            AgentState::BackingOff,
        )));
        changes.push(Change::Agent(agent(
            "beta",
            "default",
            "idle",
            AgentState::Stopped,
        )));
        app.apply_watch(WatchReply {
            epoch: 1,
            revision: 4,
            reset: true,
            changes,
        });
        app
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn navigation_filter_and_detail() {
        let mut app = sample_app();
        assert_eq!(app.selected_agent().unwrap().name, "crawler");
        app.on_key(key(KeyCode::Char('j')));
        assert_eq!(app.selected_agent().unwrap().name, "flaky-bot");
        let fx = app.on_key(key(KeyCode::Enter));
        assert!(app.detail_open);
        assert!(matches!(&fx[..], [Effect::FollowLogs(Some(r))] if r.name == "flaky-bot"));
        app.on_key(key(KeyCode::Esc));
        assert!(!app.detail_open);
        app.on_key(key(KeyCode::Char('/')));
        for c in "beta".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.visible().len(), 1);
        assert_eq!(app.selected_agent().unwrap().name, "idle");
    }

    #[test]
    fn actions_need_confirmation_and_readonly_blocks_them() {
        let mut app = sample_app();
        assert!(app.on_key(key(KeyCode::Char('r'))).is_empty());
        assert!(matches!(
            app.mode,
            Mode::Confirm {
                action: AgentAction::Restart,
                ..
            }
        ));
        assert!(app.on_key(key(KeyCode::Char('n'))).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        app.on_key(key(KeyCode::Char('s')));
        let fx = app.on_key(key(KeyCode::Char('y')));
        assert!(matches!(&fx[..], [Effect::Act(AgentAction::Stop, r)] if r.name == "crawler"));

        let mut ro = sample_app();
        ro.readonly = true;
        ro.on_key(key(KeyCode::Char('r')));
        assert_eq!(ro.mode, Mode::Normal);
        assert!(ro.flash.as_ref().unwrap().text.contains("read-only"));
    }

    #[test]
    fn a_viewer_is_told_why_before_any_round_trip_and_contexts_narrow_the_fleet() {
        let mut app = sample_app();
        app.caller = Some(CallerInfo {
            uid: 5,
            operator: "val".into(),
            role: "member".into(),
            bindings: vec![agenfleet_protocol::RoleBinding {
                role: "project_viewer".into(),
                tenant: "acme".into(),
                project: Some("research".into()),
            }],
        });
        app.on_key(key(KeyCode::Char('r')));
        assert_eq!(app.mode, Mode::Normal);
        let f = app.flash.clone().unwrap();
        assert!(
            f.error
                && f.text
                    .contains("needs agents.control on project acme/research"),
            "{}",
            f.text
        );
        // t cycles: all → tenant acme → project acme/ops → …
        app.on_key(key(KeyCode::Char('t')));
        assert_eq!(app.context, Some(("acme".into(), None)));
        assert_eq!(app.visible().len(), 3);
        app.on_key(key(KeyCode::Char('t')));
        assert_eq!(app.visible().len(), 1);
    }

    #[test]
    fn the_console_reads_the_daemons_role_table() {
        // Every permission the daemon knows, for every role it can bind: the console's
        // up-front answer is the daemon's table (one table, in the protocol crate).
        let mut app = sample_app();
        let v = app.agents.values().next().expect("an agent").clone();
        for role in [
            "tenant_admin",
            "project_admin",
            "project_contributor",
            "project_viewer",
        ] {
            let r = ScopedRole::parse(role).expect("a role the daemon binds");
            assert_eq!(r.as_str(), role);
            app.caller = Some(CallerInfo {
                uid: 5,
                operator: "val".into(),
                role: "member".into(),
                bindings: vec![agenfleet_protocol::RoleBinding {
                    role: role.into(),
                    tenant: v.tenant.clone(),
                    project: r.is_project_role().then(|| v.project.clone()),
                }],
            });
            for p in Permission::ALL {
                assert_eq!(Permission::parse(p.as_str()), Some(p));
                assert_eq!(
                    app.may(p, &v).is_ok(),
                    r.permissions().contains(&p),
                    "{role} / {}",
                    p.as_str()
                );
            }
        }
    }

    #[test]
    fn removal_moves_selection() {
        let mut app = sample_app();
        app.apply_watch(WatchReply {
            epoch: 1,
            revision: 5,
            reset: false,
            changes: vec![Change::Removed {
                tenant: "acme".into(),
                name: "crawler".into(),
            }],
        });
        assert_eq!(app.selected_agent().unwrap().name, "flaky-bot");
    }
}
