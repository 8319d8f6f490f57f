//! Console state for the fleet view: the agents from the live watch, the filter and the
//! tenant/project context, the selection, the detail pane with its log tail, and the
//! selected agent's actions (each confirmed first, refused up front by role or --readonly).

use super::{key_of, App, ConnState, Effect, Key, Mode, LOG_TAIL};
use agenfleet_protocol::roles::Permission;
use agenfleet_protocol::{AgentAction, AgentRef, AgentView, Change, LogChunk, WatchReply};
use crossterm::event::KeyCode;

impl App {
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

    pub fn selected_index(&self) -> Option<usize> {
        let sel = self.selected.as_ref()?;
        self.visible().iter().position(|v| &key_of(v) == sel)
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
                    self.agents.insert(key_of(&v), *v);
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

    fn ask(&mut self, action: AgentAction) -> Vec<Effect> {
        let Some(v) = self.selected_agent() else {
            self.flash("no agent selected", true);
            return vec![];
        };
        let agent = v.qualified_name();
        if let Err(why) = self.may(Permission::AgentControl, v) {
            self.flash(why, true);
            return vec![];
        }
        if self.readonly {
            self.flash(
                format!(
                    "read-only console: {} is turned off (--readonly)",
                    action.as_str()
                ),
                true,
            );
            return vec![];
        }
        if self.conn != ConnState::Connected {
            self.flash("not connected to the daemon", true);
            return vec![];
        }
        self.mode = Mode::Confirm { action, agent };
        self.dirty = true;
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

    /// Confirming an agent action (restart, stop, start, reset).
    pub(super) fn on_confirm_key(
        &mut self,
        code: KeyCode,
        action: AgentAction,
        agent: String,
    ) -> Vec<Effect> {
        match code {
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

    /// The fleet's keys: moving the selection, the detail pane, the selected agent's
    /// actions, credentials and scopes, and the tenant/project context. They work from
    /// every view that does not use the key itself.
    pub(super) fn on_fleet_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
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
            KeyCode::Char('p') => self.open_scopes(),
            KeyCode::Char('y') => self.open_spec(),
            KeyCode::Char('c') => self.open_creds(),
            KeyCode::Char('r') => self.ask(AgentAction::Restart),
            KeyCode::Char('s') => self.ask(AgentAction::Stop),
            KeyCode::Char('u') => self.ask(AgentAction::Start),
            KeyCode::Char('x') => self.ask(AgentAction::Reset),
            KeyCode::Char('t') => self.next_context(),
            _ => {
                self.dirty = false;
                vec![]
            }
        }
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
        vec![]
    }
}
