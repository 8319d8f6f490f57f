//! Console state and what keys and daemon news do to it. No drawing and no I/O here:
//! everything that reaches the console is a `Msg`, `App::on_msg` decides, and the
//! `Effect`s it answers are what the event loop (`tui.rs`) carries out. Each view keeps its
//! state and keys in its own file (fleet, audit, creds, escalations, scopes, incidents).

use agenfleet_protocol::roles::{Permission, ScopedRole};
use agenfleet_protocol::{
    AgentAction, AgentRef, AgentView, AuditEntry, AuditStatus, CallerInfo, CredentialInfo,
    DaemonInfo, LogChunk, LogLine, SecretValue, WatchReply,
};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, VecDeque};

mod audit;
mod command;
mod creds;
mod describe;
pub mod editor;
mod escalations;
pub mod filter;
mod fleet;
pub mod hosts;
pub mod incidents;
pub mod keys;
mod logs;
pub mod operators;
mod pulse;
pub mod runs;
mod scopes;
mod spec;
use agenfleet_protocol::incidents::{Incident, Party};
use agenfleet_protocol::policy::{EscalationView, VersionHistory};
pub use creds::{CredsPane, MaskedInput};
pub use describe::DescribePane;
pub use filter::Filter;
pub use hosts::{split_host, HostState};
pub use incidents::IncidentAction;
pub use keys::{Action, Column};
pub use logs::LogsPane;
pub use pulse::PulseOf;
pub use scopes::{ScopesPane, TextKind};
pub use spec::SpecPane;

/// Log lines kept for the detail pane and the full-screen logs.
pub const LOG_TAIL: usize = 5000;
/// `:` commands remembered for Up / Down.
pub const COMMAND_HISTORY: usize = 100;
/// Audit records kept for the audit view.
pub const AUDIT_TAIL: usize = 2000;

/// Which view fills the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum View {
    Fleet,
    Audit,
    Escalations,
    Incidents,
    /// One agent's log, full screen (`l`).
    Logs,
    /// One agent described (`d`).
    Describe,
    /// Operators and their role bindings (`:operators`).
    Operators,
    /// The fleet's last ten minutes as sparklines (`:pulse`).
    Pulse,
    /// Runs, fleet-wide or of one agent, and a run's timeline (`:runs [AGENT]`).
    Runs,
}

impl View {
    #[cfg(test)]
    pub const ALL: [View; 9] = [
        View::Fleet,
        View::Audit,
        View::Escalations,
        View::Incidents,
        View::Logs,
        View::Describe,
        View::Operators,
        View::Pulse,
        View::Runs,
    ];
}

/// What a confirmation dialog will do on `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOp {
    Act(AgentAction),
    Delete,
}

impl AgentOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentOp::Act(a) => a.as_str(),
            AgentOp::Delete => "delete",
        }
    }
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
    /// The `?` overlay, scrolled this many lines.
    Help {
        scroll: u16,
    },
    /// Typing a `:` command (`hist`: the history entry shown, Up / Down).
    Command {
        input: String,
        hist: Option<usize>,
    },
    /// Typing a search of the full-screen logs.
    Search,
    Confirm {
        op: AgentOp,
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
    /// Typing which version of the selected credential to revoke (empty: every usable one).
    RevokeInput {
        name: String,
        typed: String,
    },
    /// Confirming the revocation.
    RevokeConfirm {
        name: String,
        version: Option<u32>,
    },
    /// Typing how long to silence an incident (`90s`, `30m`, `2h`, `1d`; empty: 1h).
    SilenceFor {
        id: u64,
        typed: String,
    },
    /// Typing a note on an incident (recorded in the audit log with its id).
    IncidentNote {
        id: u64,
        text: String,
    },
    /// Typing the binding to grant or revoke (`ROLE TENANT[/PROJECT]`).
    RoleInput {
        uid: u32,
        grant: bool,
        typed: String,
    },
    /// Confirming it.
    RoleConfirm {
        uid: u32,
        grant: bool,
        binding: agenfleet_protocol::RoleBinding,
    },
    /// Typing a new operator: `UID NAME [admin]`.
    OperatorInput {
        typed: String,
    },
    /// Confirming an operator's removal.
    OperatorRemove {
        uid: u32,
        name: String,
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
    /// Typing the case file to test the policy with (`editing`: the edited text, else the
    /// version in force).
    PolicyTestInput {
        typed: String,
        editing: bool,
    },
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
    /// A mouse event (with `--mouse`) and when it came (for double-clicks).
    Mouse(crossterm::event::MouseEvent, u64),
    Resize,
    Tick(u64),
    Connected(CallerInfo),
    Disconnected(String),
    /// An effect needed the daemon and there was no connection.
    NotConnected,
    Watch(WatchReply),
    /// `:ctx all`: one context's connection, loss, and fleet changes.
    HostConnected(String, CallerInfo),
    HostDisconnected(String, String),
    HostWatch(String, WatchReply),
    Logs(Key, LogChunk),
    Audit(Vec<AuditEntry>, Option<AuditStatus>),
    /// This client's own check of the daemon's newest signed checkpoint (None: all well).
    AuditAlarm(Option<String>),
    Creds(String, Vec<CredentialInfo>, Vec<AuditEntry>),
    Rotated(String, Result<CredentialInfo, String>),
    Revoked(String, Result<CredentialInfo, String>),
    Operators(Result<Vec<agenfleet_protocol::OperatorInfo>, String>),
    /// The tenants the caller sees, with their isolation tier.
    Tenants(Result<Vec<agenfleet_protocol::TenantInfo>, String>),
    RoleChanged(Result<agenfleet_protocol::OperatorInfo, String>),
    /// An operator was removed (its uid) or not.
    OperatorRemoved(u32, Result<(), String>),
    /// An incident's note was recorded (the audit record's number) or not.
    Noted(u64, Result<u64, String>),
    ActionDone(AgentAction, String, Result<Box<AgentView>, String>),
    Deleted(String, Result<(), String>),
    /// The spec in force and the scopes version in force, for the describe view.
    Described(
        String,
        Box<Result<(agenfleet_protocol::spec::SpecVersion, u32), String>>,
    ),
    /// The described agent's last runs.
    Runs(
        String,
        Result<Vec<agenfleet_protocol::runs::RunView>, String>,
    ),
    /// The runs view's list (which load it answers).
    RunsList(u64, Result<Vec<agenfleet_protocol::runs::RunView>, String>),
    /// A run's timeline from the audit log.
    RunTimeline(u64, Result<Vec<AuditEntry>, String>),
    /// How much the described agent's memory holds.
    MemoryStats(
        String,
        Result<agenfleet_protocol::memory::MemoryStats, String>,
    ),
    /// Where the full-screen logs were saved (or why not).
    Saved(Result<String, String>),
    Escalations(Vec<EscalationView>),
    /// The fleet's short history (`:pulse`).
    Pulse(agenfleet_protocol::pulse::Pulse),
    /// An agent's CPU and memory history (the describe view; the agent as shown).
    History(String, agenfleet_protocol::pulse::AgentHistory),
    Decided(u64, bool, Result<EscalationView, String>),
    Scopes(String, Result<VersionHistory, String>),
    ScopesPublished(String, Result<u32, String>),
    /// A tenant's policy and its history.
    Policy(String, Result<VersionHistory, String>),
    /// The daemon's check of the edited policy (which keystroke's, and the problems).
    /// How a case file's cases came out against a tenant's policy (or why they did not run).
    PolicyTested(Result<Vec<agenfleet_protocol::policy::PolicyCaseResult>, String>),
    PolicyChecked(
        u64,
        Result<Vec<agenfleet_protocol::policy::PolicyProblem>, String>,
    ),
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
    /// Clear the terminal and draw everything again (Ctrl-L).
    Redraw,
    Delete(AgentRef),
    /// Load what the describe view shows beyond the live view (spec, scopes version).
    LoadDescribe(AgentRef),
    /// Write these lines to a new file in the current directory.
    SaveLogs(String, Vec<String>),
    /// Suspend the console and run a shell in the agent's container.
    Shell(String, String),
    /// Show another context (`all`: every context at once).
    SwitchContext(String),
    /// Follow the audit log (again, on a new connection).
    FollowAudit,
    Act(AgentAction, AgentRef),
    /// Follow this agent's logs (None: stop following).
    FollowLogs(Option<AgentRef>),
    /// Load an agent's credential metadata and its runs since the last rotation.
    LoadCreds(AgentRef),
    /// Rotate a credential to the typed value.
    Rotate(AgentRef, String, SecretValue),
    /// Revoke a credential's version (None: every usable one).
    Revoke(AgentRef, String, Option<u32>),
    /// Record a note on an incident in the audit log.
    NoteIncident(u64, String),
    LoadOperators,
    /// The runs view's list: newest first, of one agent or all, failed only or not.
    LoadRuns {
        generation: u64,
        agent: Option<AgentRef>,
        failed: bool,
    },
    /// A run's timeline from the audit log.
    LoadRunTimeline(u64),
    /// The tenants and their tiers (for the tenant context's label).
    LoadTenants,
    /// Register a uid as an operator (answered as `RoleChanged`).
    AddOperator {
        uid: u32,
        name: String,
        admin: bool,
    },
    RemoveOperator(u32),
    /// Grant or revoke a role binding.
    Role {
        uid: u32,
        grant: bool,
        binding: agenfleet_protocol::RoleBinding,
    },
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
    /// Load a tenant's policy and its history.
    LoadPolicy(String),
    /// Ask the daemon to check a policy text (numbered: only the newest answer counts).
    ValidatePolicy(u64, String),
    /// Publish a tenant's edited policy / a copy of an earlier version (answered as
    /// `ScopesPublished`).
    PublishPolicy(String, String),
    RollbackPolicy(String, u32),
    /// Run a case file (read by the loop) against a tenant's policy: the edited text, or
    /// the one in force (None).
    TestPolicy {
        tenant: String,
        file: String,
        candidate: Option<String>,
    },
    /// Acknowledge, resolve, silence or reassign an incident.
    Incident(u64, IncidentAction),
    /// Load an agent's spec history and one version (None: the one in force).
    LoadSpec(AgentRef, Option<u32>),
    /// Follow the fleet's or an agent's short history (None: stop).
    FollowPulse(Option<PulseOf>),
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
    /// Each view's own filter (`/`).
    pub filters: BTreeMap<View, Filter>,
    /// The fleet's sort column (and true: reversed); None is tenant/name order.
    pub sort: Option<(Column, bool)>,
    /// The views Esc goes back to, the newest last.
    pub back_stack: Vec<View>,
    /// `:` commands run, the newest last.
    pub cmd_history: Vec<String>,
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
    /// AUDIT ROLLBACK / KEY CHANGED: what this client found checking the checkpoints.
    pub audit_alarm: Option<String>,
    /// Records scrolled up from the newest (0: follow the newest).
    pub audit_scroll: usize,
    pub creds: Option<CredsPane>,
    /// The tenant (and project) the fleet view is narrowed to; `t` cycles.
    pub context: Option<(String, Option<String>)>,
    /// Each tenant's isolation tier, as last loaded (when the context lands on a tenant).
    pub tenant_tiers: BTreeMap<String, String>,
    /// Escalated tool calls waiting for a person (loaded when the count changes).
    pub escalations: Vec<EscalationView>,
    pub esc_selected: usize,
    pub scopes: Option<ScopesPane>,
    pub spec: Option<SpecPane>,
    /// Incidents from the live watch (open ones, and resolved ones the daemon still shows).
    pub incidents: BTreeMap<u64, Incident>,
    pub inc_selected: usize,
    pub logs_pane: LogsPane,
    pub describe: Option<DescribePane>,
    /// The runs view (`:runs`).
    pub runs: runs::RunsPane,
    /// Operators and their bindings (loaded when the view opens).
    pub operators: Option<Vec<agenfleet_protocol::OperatorInfo>>,
    /// The fleet's last ten minutes (while `:pulse` is shown).
    pub pulse: Option<agenfleet_protocol::pulse::Pulse>,
    pub op_selected: usize,
    /// The context shown (None: the local socket, no context), and the contexts known
    /// (for `:ctx` and its completion).
    pub ctx_current: Option<String>,
    pub ctx_names: Vec<String>,
    /// `:ctx all`: every context's state (None: one daemon).
    pub hosts: Option<BTreeMap<String, HostState>>,
    /// The context shown is on another host (a shell needs ssh there).
    pub ctx_remote: bool,
    /// Bumped by every fleet change from the daemon (the visible list's cache key).
    pub agents_rev: u64,
    visible_cache: std::cell::RefCell<fleet::VisibleCache>,
    /// The first fleet row on screen (kept by the drawing so the selection stays in view
    /// without the view jumping).
    pub fleet_offset: std::cell::Cell<usize>,
    /// How many fleet rows the last frame had room for (a click below them is not a row).
    pub fleet_rows: std::cell::Cell<usize>,
    /// What the clock changes on screen, as of the last tick (a tick redraws only when
    /// it moves).
    tick_sig: u64,
    /// The last left click: the fleet row and when (a second one soon after opens it).
    last_click: Option<(usize, u64)>,
    /// Something changed since the last frame.
    pub dirty: bool,
}

/// What a key does to a line being typed: Esc leaves it, Enter hands it in, Backspace
/// and the characters `accept` lets through edit it (anything else leaves it as it is).
pub(crate) enum Typing {
    Cancel,
    Submit(String),
    Edit(String),
}

pub(crate) fn typing(code: KeyCode, mut text: String, accept: impl Fn(char) -> bool) -> Typing {
    match code {
        KeyCode::Esc => Typing::Cancel,
        KeyCode::Enter => Typing::Submit(text),
        KeyCode::Backspace => {
            text.pop();
            Typing::Edit(text)
        }
        KeyCode::Char(c) if accept(c) => {
            text.push(c);
            Typing::Edit(text)
        }
        _ => Typing::Edit(text),
    }
}

/// Whether the caller's roles grant `perm` on `tenant` (None: the whole tenant) or one of
/// its projects, by the daemon's own role table: a platform admin, or a binding on the
/// tenant (or that project) whose role holds `perm`.
fn grants(c: &CallerInfo, perm: Permission, tenant: &str, project: Option<&str>) -> bool {
    c.role == "platform_admin"
        || c.bindings.iter().any(|b| {
            b.tenant == tenant
                && match (&b.project, project) {
                    (None, _) => true,
                    (Some(bp), Some(p)) => bp == p,
                    (Some(_), None) => false,
                }
                && ScopedRole::parse(&b.role).is_some_and(|r| r.permissions().contains(&perm))
        })
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
            filters: BTreeMap::new(),
            sort: None,
            back_stack: Vec::new(),
            cmd_history: Vec::new(),
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
            audit_alarm: None,
            audit_scroll: 0,
            creds: None,
            context: None,
            tenant_tiers: BTreeMap::new(),
            escalations: Vec::new(),
            esc_selected: 0,
            scopes: None,
            spec: None,
            incidents: BTreeMap::new(),
            inc_selected: 0,
            logs_pane: LogsPane::default(),
            describe: None,
            runs: runs::RunsPane::default(),
            operators: None,
            pulse: None,
            op_selected: 0,
            ctx_current: None,
            ctx_names: Vec::new(),
            hosts: None,
            ctx_remote: false,
            agents_rev: 0,
            visible_cache: Default::default(),
            fleet_offset: std::cell::Cell::new(0),
            fleet_rows: std::cell::Cell::new(usize::MAX),
            tick_sig: 0,
            last_click: None,
            dirty: true,
        }
    }

    /// Whether the operator's roles allow `perm` on the agent (the daemon decides; this
    /// only spares a refused round trip and says why up front).
    pub fn may(&self, perm: Permission, v: &AgentView) -> Result<(), String> {
        let Some(c) = &self.caller else { return Ok(()) };
        if grants(c, perm, &v.tenant, Some(&v.project)) {
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
        self.writable(what)
    }

    /// False (and says so) on a `--readonly` console.
    pub(super) fn writable(&mut self, what: &str) -> bool {
        if self.readonly {
            self.flash(
                format!("read-only console: {what} is turned off (--readonly)"),
                true,
            );
            return false;
        }
        true
    }

    /// `may_change` for a tenant-level write (the tenant's policy): a platform admin, or a
    /// binding on the whole tenant whose role grants `perm`; and not read-only.
    pub(super) fn may_change_tenant(&mut self, perm: Permission, tenant: &str, what: &str) -> bool {
        if let Some(c) = &self.caller {
            if !grants(c, perm, tenant, None) {
                self.flash(
                    format!("not permitted: needs {} on tenant {tenant}", perm.as_str()),
                    true,
                );
                return false;
            }
        }
        self.writable(what)
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

    /// Called every second: expire the flash; redraw only if something the clock moves is
    /// on screen and reads differently now (an uptime, a deadline, an incident's age).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if self.flash.as_ref().is_some_and(|f| f.until_ms <= now_ms) {
            self.flash = None;
            self.dirty = true;
        }
        let sig = self.time_signature();
        if sig != self.tick_sig {
            self.tick_sig = sig;
            self.dirty = true;
        }
    }

    /// A hash of what the clock changes in the view shown: the uptimes of the fleet rows
    /// that can be on screen, the escalations' time left, the incidents' ages.
    fn time_signature(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.view.hash(&mut h);
        match self.view {
            View::Fleet | View::Describe => {
                let keys = self.visible_keys();
                let from = self.fleet_offset.get().min(keys.len());
                // No terminal is taller than this many rows.
                for k in keys[from..].iter().take(500).chain(self.selected.as_ref()) {
                    if let Some(v) = self.agents.get(k) {
                        crate::fmt::uptime(v, self.now_ms).hash(&mut h);
                    }
                }
            }
            View::Escalations => {
                for e in &self.escalations {
                    (e.deadline_ms.saturating_sub(self.now_ms) / 1000).hash(&mut h);
                }
            }
            View::Incidents => {
                for i in self.open_incidents() {
                    crate::fmt::duration_ms(self.now_ms.saturating_sub(i.first_ms)).hash(&mut h);
                }
            }
            View::Runs => {
                // Each run's age, and how long the running ones have run.
                for r in self.runs.visible(self.filter_of(View::Runs)) {
                    crate::fmt::duration_ms(self.now_ms.saturating_sub(r.created_ms)).hash(&mut h);
                    if let (Some(s), None) = (r.started_ms, r.ended_ms) {
                        crate::fmt::duration_ms(self.now_ms.saturating_sub(s)).hash(&mut h);
                    }
                }
            }
            View::Audit | View::Logs | View::Operators | View::Pulse => {}
        }
        h.finish()
    }

    /// What reaches the console — a key, the clock, the daemon's news — and what the
    /// event loop must do about it. The loop does the I/O; every decision is made here.
    pub fn on_msg(&mut self, m: Msg) -> Vec<Effect> {
        match m {
            Msg::Key(k) => self.on_key(k),
            Msg::Mouse(m, at) => self.on_mouse(m, at),
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
                fx.extend(self.pulse_follow(self.view));
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
            Msg::HostConnected(h, caller) => {
                self.host_connected(&h, caller);
                vec![]
            }
            Msg::HostDisconnected(h, e) => {
                self.host_disconnected(&h, e);
                vec![]
            }
            Msg::HostWatch(h, r) => self.apply_host_watch(&h, r),
            Msg::Logs(k, chunk) => {
                self.apply_logs(&k, chunk);
                vec![]
            }
            Msg::AuditAlarm(a) => {
                self.dirty |= self.audit_alarm != a;
                self.audit_alarm = a;
                vec![]
            }
            Msg::Audit(entries, status) => {
                let fx = self.runs_news(&entries);
                self.apply_audit(entries, status);
                fx
            }
            Msg::Creds(agent, list, runs) => {
                self.apply_creds(&agent, list, runs);
                vec![]
            }
            Msg::Rotated(agent, r) => self.rotated(&agent, r),
            Msg::Revoked(agent, r) => self.revoked(&agent, r),
            Msg::Operators(r) => {
                self.apply_operators(r);
                vec![]
            }
            Msg::Tenants(r) => {
                match r {
                    Ok(list) => {
                        self.tenant_tiers = list.into_iter().map(|t| (t.tenant, t.tier)).collect();
                        self.dirty = true;
                    }
                    // The label goes without its tier; the context itself still works.
                    Err(e) => tracing::debug!(error = %e, "tenants not loaded"),
                }
                vec![]
            }
            Msg::RoleChanged(r) => self.role_changed(r),
            Msg::OperatorRemoved(uid, r) => self.operator_removed(uid, r),
            Msg::Noted(id, r) => {
                match r {
                    Ok(seq) => self.flash(
                        format!("note on incident #{id} recorded as audit record #{seq}"),
                        false,
                    ),
                    Err(e) => self.flash(format!("note on incident #{id} not recorded: {e}"), true),
                }
                vec![]
            }
            Msg::ActionDone(action, agent, r) => {
                self.action_done(action, &agent, r);
                vec![]
            }
            Msg::Deleted(agent, r) => {
                self.deleted(&agent, r);
                vec![]
            }
            Msg::MemoryStats(agent, r) => {
                if let Some(p) = self.describing(&agent) {
                    p.memory = Some(r);
                    self.dirty = true;
                }
                vec![]
            }
            Msg::Runs(agent, r) => {
                if let Some(p) = self.describing(&agent) {
                    p.runs = Some(r);
                    self.dirty = true;
                }
                vec![]
            }
            Msg::RunsList(generation, r) => self.apply_runs_list(generation, r),
            Msg::RunTimeline(id, r) => {
                self.apply_run_timeline(id, r);
                vec![]
            }
            Msg::Described(agent, r) => {
                self.apply_describe(&agent, *r);
                vec![]
            }
            Msg::Saved(r) => {
                match r {
                    Ok(path) => self.flash(format!("saved to {path}"), false),
                    Err(e) => self.flash(format!("not saved: {e}"), true),
                }
                vec![]
            }
            Msg::Escalations(list) => {
                self.apply_escalations(list);
                vec![]
            }
            Msg::Decided(id, approve, r) => self.decided(id, approve, r),
            Msg::Pulse(p) => {
                self.apply_pulse(p);
                vec![]
            }
            Msg::History(agent, h) => {
                self.apply_history(&agent, h);
                vec![]
            }
            Msg::Scopes(agent, r) => {
                self.apply_scopes(&agent, r);
                vec![]
            }
            Msg::ScopesPublished(agent, r) => self.scopes_published(&agent, r),
            Msg::Policy(tenant, r) => {
                self.apply_text(scopes::TextKind::Policy, &tenant, r);
                vec![]
            }
            Msg::PolicyTested(r) => {
                self.policy_tested(r);
                vec![]
            }
            Msg::PolicyChecked(gen, r) => {
                self.policy_checked(gen, r);
                vec![]
            }
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
    /// and in normal mode the key table (`keys.rs`): the view's own keys, then everyone's.
    pub fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        self.dirty = true;
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return vec![Effect::Quit];
        }
        match self.mode.clone() {
            Mode::Help { scroll } => {
                let last = keys::help_lines(self.view).len().saturating_sub(1) as u16;
                let scroll = match k.code {
                    KeyCode::Char('j') | KeyCode::Down => Some(scroll.saturating_add(1)),
                    KeyCode::Char('k') | KeyCode::Up => Some(scroll.saturating_sub(1)),
                    KeyCode::PageDown => Some(scroll.saturating_add(10)),
                    KeyCode::PageUp => Some(scroll.saturating_sub(10)),
                    _ => None,
                };
                self.mode = match scroll {
                    Some(s) => Mode::Help {
                        scroll: s.min(last),
                    },
                    None => Mode::Normal,
                };
                vec![]
            }
            Mode::Command { input, hist } => self.on_command_key(k, input, hist),
            Mode::Filter => self.on_filter_key(k.code),
            Mode::Search => self.on_search_key(k.code),
            Mode::Confirm { op, agent } => self.on_confirm_key(k.code, op, agent),
            Mode::Creds => self.on_creds_key(k.code),
            Mode::RotateInput { name, input } => self.on_rotate_input_key(k.code, name, input),
            Mode::RotateConfirm { name, input } => self.on_rotate_confirm_key(k.code, name, input),
            Mode::RevokeInput { name, typed } => self.on_revoke_input_key(k.code, name, typed),
            Mode::RevokeConfirm { name, version } => {
                self.on_revoke_confirm_key(k.code, name, version)
            }
            Mode::SilenceFor { id, typed } => self.on_silence_key(k.code, id, typed),
            Mode::RoleInput { uid, grant, typed } => {
                self.on_role_input_key(k.code, uid, grant, typed)
            }
            Mode::RoleConfirm {
                uid,
                grant,
                binding,
            } => self.on_role_confirm_key(k.code, uid, grant, binding),
            Mode::IncidentNote { id, text } => self.on_note_key(k.code, id, text),
            Mode::OperatorInput { typed } => self.on_operator_input_key(k.code, typed),
            Mode::OperatorRemove { uid, name } => self.on_operator_remove_key(k.code, uid, name),
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
            Mode::PolicyTestInput { typed, editing } => {
                self.on_policy_test_key(k.code, typed, editing)
            }
            Mode::Reassign { id, party, reason } => self.on_reassign_key(k.code, id, party, reason),
            Mode::ResolveIncident { id } => self.on_resolve_key(k.code, id),
            Mode::Normal => match keys::lookup(self.view, &k) {
                Some(b) => self.perform(b.action),
                None => {
                    self.dirty = false;
                    vec![]
                }
            },
        }
    }

    /// The mouse (with `--mouse`): the wheel scrolls the list shown, a click on a fleet
    /// row selects it, a second click on it within 400 ms opens its detail pane. Only in
    /// normal mode (dialogs keep the keyboard's answers).
    fn on_mouse(&mut self, m: crossterm::event::MouseEvent, at: u64) -> Vec<Effect> {
        use crossterm::event::{MouseButton, MouseEventKind};
        if self.mode != Mode::Normal {
            return vec![];
        }
        match m.kind {
            MouseEventKind::ScrollDown => self.perform(Action::Down),
            MouseEventKind::ScrollUp => self.perform(Action::Up),
            MouseEventKind::Down(MouseButton::Left) if self.view == View::Fleet => {
                // Header line, the table's border and its heading come first.
                let Some(row) = (m.row as usize)
                    .checked_sub(3)
                    .filter(|r| *r < self.fleet_rows.get())
                else {
                    return vec![];
                };
                let i = self.fleet_offset.get() + row;
                let Some(key) = self.visible_keys().get(i).cloned() else {
                    return vec![];
                };
                self.dirty = true;
                let double = self
                    .last_click
                    .is_some_and(|(r, t)| r == i && at.saturating_sub(t) <= 400);
                self.last_click = Some((i, at));
                let moved = self.selected.as_ref() != Some(&key);
                self.selected = Some(key);
                if double {
                    self.last_click = None;
                    return self.perform(Action::Open);
                }
                if moved {
                    return self.refollow();
                }
                vec![]
            }
            _ => vec![],
        }
    }

    /// Carries out one action of the key table (or of a `:` command).
    pub fn perform(&mut self, a: Action) -> Vec<Effect> {
        match a {
            Action::Quit => vec![Effect::Quit],
            Action::Help => {
                self.mode = Mode::Help { scroll: 0 };
                vec![]
            }
            Action::Command => {
                self.mode = Mode::Command {
                    input: String::new(),
                    hist: None,
                };
                vec![]
            }
            Action::Filter if self.view == View::Describe => {
                self.flash("nothing to filter here (Esc goes back)", true);
                vec![]
            }
            Action::Filter => {
                self.mode = Mode::Filter;
                vec![]
            }
            Action::Back => self.back(),
            Action::Redraw => vec![Effect::Redraw],
            Action::Show(v) => self.show(v),
            Action::NextView => self.show(match self.view {
                View::Fleet => View::Audit,
                View::Audit => View::Escalations,
                View::Escalations => View::Incidents,
                View::Incidents
                | View::Logs
                | View::Describe
                | View::Operators
                | View::Pulse
                | View::Runs => View::Fleet,
            }),
            _ => match self.view {
                View::Fleet => self.fleet_action(a),
                View::Audit => self.audit_action(a),
                View::Escalations => self.escalations_action(a),
                View::Incidents => self.incidents_action(a),
                View::Logs => self.logs_action(a),
                View::Describe => self.describe_action(a),
                View::Operators => self.operators_action(a),
                View::Runs => self.runs_action(a),
                View::Pulse => {
                    self.dirty = false;
                    vec![]
                }
            },
        }
    }

    /// The filter of the view shown.
    pub fn filter(&self) -> &Filter {
        self.filter_of(self.view)
    }

    /// The filter of `view`.
    pub fn filter_of(&self, view: View) -> &Filter {
        static NONE: Filter = Filter::EMPTY;
        self.filters.get(&view).unwrap_or(&NONE)
    }

    pub fn filter_mut(&mut self) -> &mut Filter {
        self.filters.entry(self.view).or_default()
    }

    /// Switches the body to `view`, remembering where Esc goes back to (the escalations
    /// queue is loaded when shown).
    pub(super) fn show(&mut self, view: View) -> Vec<Effect> {
        if self.multi()
            && matches!(
                view,
                View::Audit | View::Escalations | View::Incidents | View::Operators | View::Pulse
            )
        {
            self.flash(
                "across contexts only the fleet is shown: `:ctx NAME` for one host's audit, escalations, incidents and pulse",
                true,
            );
            return vec![];
        }
        if view != self.view {
            self.back_stack.retain(|v| *v != view);
            self.back_stack.push(self.view);
            if self.back_stack.len() > 16 {
                self.back_stack.remove(0);
            }
        }
        let mut fx = self.leave(view);
        self.view = view;
        fx.extend(self.enter(view));
        fx
    }

    /// What a view needs loaded or followed when it is shown.
    fn enter(&mut self, view: View) -> Vec<Effect> {
        match view {
            View::Escalations => vec![Effect::LoadEscalations],
            View::Operators => vec![Effect::LoadOperators],
            View::Runs => vec![self.load_runs()],
            View::Pulse | View::Describe => self.pulse_follow(view),
            _ => vec![],
        }
    }

    /// Leaving the full-screen logs for `next`: stop following unless the detail pane
    /// still shows them.
    fn leave(&mut self, next: View) -> Vec<Effect> {
        let mut fx = vec![];
        if self.view == View::Logs && next != View::Logs && !self.detail_open {
            self.logs_for = None;
            fx.push(Effect::FollowLogs(None));
        }
        if matches!(self.view, View::Pulse | View::Describe) && next != self.view {
            fx.push(Effect::FollowPulse(None));
        }
        fx
    }

    /// Esc: one level back — the filter, then the detail pane, then the view before.
    fn back(&mut self) -> Vec<Effect> {
        if !self.filter().is_empty() {
            self.filter_mut().clear();
            self.fix_selection();
            return vec![];
        }
        if self.view == View::Fleet && self.detail_open {
            self.detail_open = false;
            self.logs_for = None;
            return vec![Effect::FollowLogs(None)];
        }
        let prev = self.back_stack.pop().or(if self.view == View::Fleet {
            None
        } else {
            Some(View::Fleet)
        });
        match prev {
            Some(v) => {
                let mut fx = self.leave(v);
                self.view = v;
                fx.extend(self.enter(v));
                fx
            }
            None => {
                self.dirty = false;
                vec![]
            }
        }
    }

    /// Typing the filter of the view shown.
    fn on_filter_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Enter => self.mode = Mode::Normal,
            KeyCode::Esc => {
                self.filter_mut().clear();
                self.mode = Mode::Normal;
            }
            KeyCode::Backspace => self.filter_mut().pop(),
            KeyCode::Char(c) => self.filter_mut().push(c),
            _ => {}
        }
        self.fix_selection();
        self.fix_incident_selection();
        vec![]
    }
}

#[cfg(test)]
pub mod tests;
