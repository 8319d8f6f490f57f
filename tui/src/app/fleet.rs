//! Console state for the fleet view: the agents from the live watch, the filter, the sort
//! and the tenant/project context, the selection, the detail pane with its log tail, and
//! the selected agent's actions (each confirmed first — only `y` confirms — and refused up
//! front by role or --readonly).

use super::{key_of, Action, AgentOp, App, Column, ConnState, Effect, Key, Mode, View, LOG_TAIL};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::{AgentAction, AgentRef, AgentView, Change, LogChunk, WatchReply};
use crossterm::event::KeyCode;
use std::cmp::Ordering;
use std::rc::Rc;

/// The text a fleet row is filtered by: `tenant/name project state`.
fn row_text(v: &AgentView, buf: &mut String) {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(
        buf,
        "{}/{} {} {}",
        v.tenant,
        v.name,
        v.project,
        v.state.as_str()
    );
}

/// Orders two agents by `col` (ties: tenant, then name).
fn compare(col: Column, a: &AgentView, b: &AgentView, now_ms: u64) -> Ordering {
    let up = |v: &AgentView| {
        v.started_at_ms
            .filter(|_| v.state == agenfleet_protocol::AgentState::Running)
            .map(|s| now_ms.saturating_sub(s))
    };
    let by = match col {
        Column::Project => (&a.tenant, &a.project).cmp(&(&b.tenant, &b.project)),
        Column::Name => a.name.cmp(&b.name),
        Column::State => a.state.as_str().cmp(b.state.as_str()),
        Column::Age => up(a).cmp(&up(b)),
        Column::Restarts => a.restarts.cmp(&b.restarts),
        Column::Cpu => a
            .cpu_percent
            .unwrap_or(-1.0)
            .total_cmp(&b.cpu_percent.unwrap_or(-1.0)),
        Column::Memory => a.memory_bytes.cmp(&b.memory_bytes),
    };
    by.then_with(|| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)))
}

/// What the visible list was worked out from: the fleet's revision, the filter's text,
/// the sort and the context. The list is worked out again only when one of them moves.
type Stamp = (
    u64,
    String,
    Option<(Column, bool)>,
    Option<(String, Option<String>)>,
);

/// The fleet view's rows, in display order, kept between frames.
#[derive(Debug, Default)]
pub struct VisibleCache {
    stamp: Option<Stamp>,
    keys: Rc<Vec<Key>>,
}

impl App {
    fn visible_stamp(&self) -> Stamp {
        (
            self.agents_rev,
            self.filter_of(View::Fleet).text().to_string(),
            self.sort,
            self.context.clone(),
        )
    }

    /// The keys of the agents in the context that pass the fleet's filter, in display
    /// order (the sort column's, else tenant and name) — worked out once per change of
    /// the fleet, the filter, the sort or the context, not once per frame.
    pub fn visible_keys(&self) -> Rc<Vec<Key>> {
        let stamp = self.visible_stamp();
        {
            let cache = self.visible_cache.borrow();
            if cache.stamp.as_ref() == Some(&stamp) {
                return cache.keys.clone();
            }
        }
        let f = self.filters.get(&View::Fleet);
        let mut buf = String::new();
        let mut out: Vec<&AgentView> = self
            .agents
            .values()
            .filter(|v| match &self.context {
                Some((t, p)) => &v.tenant == t && p.as_ref().is_none_or(|p| &v.project == p),
                None => true,
            })
            .filter(|v| {
                f.is_none_or(|f| {
                    f.is_empty() || {
                        row_text(v, &mut buf);
                        f.matches(&buf)
                    }
                })
            })
            .collect();
        if let Some((col, rev)) = self.sort {
            out.sort_by(|a, b| {
                let o = compare(col, a, b, self.now_ms);
                if rev {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let keys = Rc::new(out.into_iter().map(key_of).collect::<Vec<_>>());
        *self.visible_cache.borrow_mut() = VisibleCache {
            stamp: Some(stamp),
            keys: keys.clone(),
        };
        keys
    }

    /// The agents of `visible_keys`.
    pub fn visible(&self) -> Vec<&AgentView> {
        self.visible_keys()
            .iter()
            .filter_map(|k| self.agents.get(k))
            .collect()
    }

    /// Shift + a column's letter: sort by it; again: the other way round.
    fn sort_by(&mut self, col: Column) {
        self.sort = match self.sort {
            Some((c, rev)) if c == col => Some((c, !rev)),
            _ => Some((col, false)),
        };
        let (_, rev) = self.sort.unwrap_or((col, false));
        let way = if rev { "descending" } else { "ascending" };
        self.flash(format!("sorted by {} ({way})", col.title()), false);
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

    pub fn selected_index(&self) -> Option<usize> {
        let sel = self.selected.as_ref()?;
        self.visible_keys().iter().position(|k| k == sel)
    }

    /// The selected agent's name and reference, or a flash saying none is selected.
    pub(super) fn selected_ref(&mut self) -> Option<(String, AgentRef)> {
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

    pub(super) fn fix_selection(&mut self) {
        let vis = self.visible_keys();
        match &self.selected {
            Some(k) if vis.contains(k) => {}
            _ => self.selected = vis.first().cloned(),
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let vis = self.visible_keys();
        if vis.is_empty() {
            self.selected = None;
            return;
        }
        let cur = self.selected_index().unwrap_or(0) as isize;
        let next = (cur + delta).clamp(0, vis.len() as isize - 1) as usize;
        self.selected = Some(vis[next].clone());
    }

    /// Fleet changes from the daemon; answers what to reload (the escalations queue when
    /// its count moved).
    pub fn apply_watch(&mut self, r: WatchReply) -> Vec<Effect> {
        let pending_before = self.pending_escalations();
        let was_down = self.conn != ConnState::Connected;
        self.conn = ConnState::Connected;
        // A long-poll that ran out with nothing new changes nothing on screen.
        if !r.reset && r.changes.is_empty() {
            self.dirty |= was_down;
            return vec![];
        }
        let mut reorder = r.reset;
        if r.reset {
            self.agents.clear();
            self.incidents.clear();
        }
        for c in r.changes {
            match c {
                Change::Agent(v) => {
                    let k = key_of(&v);
                    reorder |= self
                        .agents
                        .get(&k)
                        .is_none_or(|old| self.moves_row(old, &v));
                    self.agents.insert(k, *v);
                }
                Change::Removed { tenant, name } => {
                    reorder = true;
                    self.agents.remove(&(tenant, name));
                }
                Change::Daemon(d) => self.daemon = Some(d),
                Change::Incident(i) => {
                    self.incidents.insert(i.id, *i);
                }
            }
        }
        if reorder {
            self.agents_rev += 1;
        }
        self.fix_incident_selection();
        self.fix_selection();
        self.dirty = true;
        self.escalations_changed(pending_before)
    }

    /// Whether an agent's update can move it in (or out of) the fleet view: what the
    /// filter reads or the context compares changed, or the sort column's value did.
    /// Most updates (CPU, memory, uptime under another sort) keep the rows as they are.
    fn moves_row(&self, old: &AgentView, new: &AgentView) -> bool {
        let filtered = !self.filter_of(View::Fleet).is_empty();
        old.project != new.project
            || (filtered && old.state != new.state)
            || self
                .sort
                .is_some_and(|(col, _)| compare(col, old, new, self.now_ms) != Ordering::Equal)
    }

    pub fn apply_logs(&mut self, agent: &Key, chunk: LogChunk) {
        if self.logs_for.as_ref() != Some(agent) {
            return;
        }
        self.logs_missed += chunk.missed;
        self.logs_arrived(chunk.lines.len());
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

    fn ask(&mut self, op: AgentOp) -> Vec<Effect> {
        let Some(v) = self.selected_agent() else {
            self.flash("no agent selected", true);
            return vec![];
        };
        let agent = v.qualified_name();
        let perm = match op {
            AgentOp::Act(_) => Permission::AgentControl,
            AgentOp::Delete => Permission::AgentDelete,
        };
        if let Err(why) = self.may(perm, v) {
            self.flash(why, true);
            return vec![];
        }
        if self.readonly {
            self.flash(
                format!(
                    "read-only console: {} is turned off (--readonly)",
                    op.as_str()
                ),
                true,
            );
            return vec![];
        }
        if self.conn != ConnState::Connected {
            self.flash("not connected to the daemon", true);
            return vec![];
        }
        self.mode = Mode::Confirm { op, agent };
        self.dirty = true;
        vec![]
    }

    /// With the detail pane open, moving the selection follows the new agent's logs.
    pub(super) fn refollow(&mut self) -> Vec<Effect> {
        if self.detail_open && self.logs_for != self.selected {
            vec![self.follow_selected()]
        } else {
            vec![]
        }
    }

    /// Confirming an agent action (restart, stop, start, reset, delete): only `y` goes
    /// ahead; Enter, `n`, Esc and `q` cancel.
    pub(super) fn on_confirm_key(
        &mut self,
        code: KeyCode,
        op: AgentOp,
        agent: String,
    ) -> Vec<Effect> {
        match code {
            KeyCode::Char('y') => {
                self.mode = Mode::Normal;
                match AgentRef::parse(&agent) {
                    Ok(r) => {
                        self.flash(format!("{} {agent}…", op.as_str()), false);
                        vec![match op {
                            AgentOp::Act(action) => Effect::Act(action, r),
                            AgentOp::Delete => Effect::Delete(r),
                        }]
                    }
                    Err(e) => {
                        self.flash(e, true);
                        vec![]
                    }
                }
            }
            KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => {
                self.mode = Mode::Normal;
                self.flash(format!("{} {agent}: cancelled", op.as_str()), false);
                vec![]
            }
            _ => vec![],
        }
    }

    /// The daemon answered a delete.
    pub(super) fn deleted(&mut self, agent: &str, r: Result<(), String>) {
        match r {
            Ok(()) => self.flash(format!("deleted {agent}"), false),
            Err(e) => self.flash(format!("delete {agent} failed: {e}"), true),
        }
    }

    /// The daemon answered an agent action.
    pub(super) fn action_done(
        &mut self,
        action: AgentAction,
        agent: &str,
        r: Result<Box<AgentView>, String>,
    ) {
        match r {
            Ok(v) => self.flash(
                format!("{} {agent}: now {}", action.as_str(), v.state),
                false,
            ),
            Err(e) => self.flash(format!("{} {agent} failed: {e}", action.as_str()), true),
        }
    }

    /// The fleet view's actions: moving the selection, the detail pane, describe, logs,
    /// shell, the selected agent's actions, credentials, scopes, spec, context and sort.
    pub(super) fn fleet_action(&mut self, a: Action) -> Vec<Effect> {
        let step = match a {
            Action::Down => Some(1),
            Action::Up => Some(-1),
            Action::Top => Some(isize::MIN / 2),
            Action::Bottom => Some(isize::MAX / 2),
            Action::PageDown => Some(10),
            Action::PageUp => Some(-10),
            _ => None,
        };
        if let Some(d) = step {
            self.move_selection(d);
            return self.refollow();
        }
        match a {
            Action::Open => {
                if self.selected.is_none() {
                    return vec![];
                }
                self.detail_open = true;
                vec![self.follow_selected()]
            }
            Action::Describe => self.open_describe(),
            Action::Logs => self.open_logs(),
            Action::Shell => self.shell(),
            Action::Scopes => self.open_scopes(),
            Action::Spec => self.open_spec(),
            Action::Creds => self.open_creds(),
            Action::Restart => self.ask(AgentOp::Act(AgentAction::Restart)),
            Action::Stop => self.ask(AgentOp::Act(AgentAction::Stop)),
            Action::Start => self.ask(AgentOp::Act(AgentAction::Start)),
            Action::Reset => self.ask(AgentOp::Act(AgentAction::Reset)),
            Action::RotateToken => self.ask(AgentOp::Act(AgentAction::RotateToken)),
            Action::Delete => self.ask(AgentOp::Delete),
            Action::Context => self.next_context(),
            Action::Sort(col) => {
                self.sort_by(col);
                vec![]
            }
            _ => {
                self.dirty = false;
                vec![]
            }
        }
    }

    /// `s`: a shell in the selected agent's container (the loop suspends the console).
    fn shell(&mut self) -> Vec<Effect> {
        let Some(v) = self.selected_agent() else {
            self.flash("no agent selected", true);
            return vec![];
        };
        let agent = v.qualified_name();
        if self.ctx_remote || self.multi() {
            self.flash(
                format!("{agent} runs on another host: ssh there for a shell (docker exec -it CONTAINER sh)"),
                true,
            );
            return vec![];
        }
        if let Err(why) = self.may(Permission::AgentControl, v) {
            self.flash(why, true);
            return vec![];
        }
        let Some(id) = v
            .container_id
            .clone()
            .filter(|_| v.state == agenfleet_protocol::AgentState::Running)
        else {
            self.flash(
                format!("{agent} is not running: no container to open a shell in"),
                true,
            );
            return vec![];
        };
        if !self.writable("shell") {
            return vec![];
        }
        vec![Effect::Shell(agent, id)]
    }

    /// `t`: narrows the fleet to the next context (all → each tenant → each project).
    fn next_context(&mut self) -> Vec<Effect> {
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
        // The header shows the tenant's tier: asked again each time the context lands on
        // a tenant (a move may have changed it).
        match (&self.context, self.multi()) {
            (Some((_, None)), false) => vec![Effect::LoadTenants],
            _ => vec![],
        }
    }
}
