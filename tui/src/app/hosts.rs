//! Console state across contexts (`:ctx all`): every context's fleet in one view. An
//! agent of context `prod-1`, tenant `acme` is kept as tenant `prod-1:acme` (`:` never
//! appears in a tenant name), so the fleet view, its filter, sort and actions work as
//! they do for one daemon, and the event loop routes an action to its context by that
//! prefix. Each context's connection state, daemon, open incidents and escalations are
//! kept per host for the header; the incidents, escalations and audit views need one
//! context (`:ctx NAME`).

use super::{App, ConnState, Effect};
use agenfleet_protocol::incidents::IncidentState;
use agenfleet_protocol::{CallerInfo, Change, DaemonInfo, WatchReply};
use std::collections::BTreeMap;

/// Between a context's name and the tenant in an agent's key in `:ctx all`.
pub const HOST_SEP: char = ':';

/// `prod-1:acme` → (Some("prod-1"), "acme"); `acme` → (None, "acme").
pub fn split_host(tenant: &str) -> (Option<&str>, &str) {
    match tenant.split_once(HOST_SEP) {
        Some((h, t)) => (Some(h), t),
        None => (None, tenant),
    }
}

/// One context as the all-contexts view knows it.
#[derive(Debug, Clone)]
pub struct HostState {
    pub url: String,
    pub conn: ConnState,
    pub daemon: Option<DaemonInfo>,
    pub caller: Option<CallerInfo>,
    /// Its incidents that are not resolved.
    pub open_incidents: BTreeMap<u64, IncidentState>,
}

impl HostState {
    pub fn new(url: String) -> HostState {
        HostState {
            url,
            conn: ConnState::Connecting,
            daemon: None,
            caller: None,
            open_incidents: BTreeMap::new(),
        }
    }
}

impl App {
    /// Whether the console shows every context at once.
    pub fn multi(&self) -> bool {
        self.hosts.is_some()
    }

    /// Agents of `host` in the merged fleet.
    pub fn host_agents(&self, host: &str) -> usize {
        self.agents
            .keys()
            .filter(|(t, _)| split_host(t).0 == Some(host))
            .count()
    }

    /// Pending escalations of `host`'s agents.
    pub fn host_escalations(&self, host: &str) -> u32 {
        self.agents
            .iter()
            .filter(|((t, _), _)| split_host(t).0 == Some(host))
            .map(|(_, v)| v.escalations)
            .sum()
    }

    pub fn host_connected(&mut self, host: &str, caller: CallerInfo) {
        if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
            h.conn = ConnState::Connected;
            h.caller = Some(caller);
        }
        self.conn = ConnState::Connected;
        self.dirty = true;
    }

    /// A context stopped answering: said in the header; its agents stay, marked by the
    /// header's state for it, until it answers again.
    pub fn host_disconnected(&mut self, host: &str, error: String) {
        if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
            let changed = !matches!(&h.conn, ConnState::Disconnected { error: e } if *e == error);
            h.conn = ConnState::Disconnected { error };
            self.dirty |= changed;
        }
    }

    /// A context's fleet changes: its agents enter the merged fleet under `host:tenant`,
    /// its daemon and incidents are kept for the header.
    pub fn apply_host_watch(&mut self, host: &str, r: WatchReply) -> Vec<Effect> {
        let prefix = format!("{host}{HOST_SEP}");
        if r.reset {
            self.agents.retain(|(t, _), _| !t.starts_with(&prefix));
            self.agents_rev += 1;
        }
        if r.reset {
            if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
                h.open_incidents.clear();
            }
        }
        let mut changes = Vec::with_capacity(r.changes.len());
        for c in r.changes {
            match c {
                Change::Agent(mut v) => {
                    v.tenant = format!("{prefix}{}", v.tenant);
                    changes.push(Change::Agent(v));
                }
                Change::Removed { tenant, name } => changes.push(Change::Removed {
                    tenant: format!("{prefix}{tenant}"),
                    name,
                }),
                Change::Daemon(d) => {
                    if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
                        h.daemon = Some(d);
                    }
                }
                Change::Incident(i) => {
                    if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
                        if i.state == IncidentState::Resolved {
                            h.open_incidents.remove(&i.id);
                        } else {
                            h.open_incidents.insert(i.id, i.state);
                        }
                    }
                }
            }
        }
        if let Some(h) = self.hosts.as_mut().and_then(|hs| hs.get_mut(host)) {
            h.conn = ConnState::Connected;
        }
        self.apply_watch(WatchReply {
            epoch: r.epoch,
            revision: r.revision,
            reset: false,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::{agent, sample_app};
    use agenfleet_protocol::AgentState;

    fn all_app() -> App {
        let mut app = sample_app();
        app.agents.clear();
        app.hosts = Some(
            [("a", "unix:///a.sock"), ("b", "ssh://h/b.sock")]
                .into_iter()
                .map(|(n, u)| (n.to_string(), HostState::new(u.to_string())))
                .collect(),
        );
        for (h, name) in [("a", "alpha"), ("b", "bravo"), ("b", "alpha")] {
            app.apply_host_watch(
                h,
                WatchReply {
                    epoch: 1,
                    revision: 1,
                    reset: false,
                    changes: vec![Change::Agent(Box::new(agent(
                        "acme",
                        "p",
                        name,
                        AgentState::Running,
                    )))],
                },
            );
        }
        app
    }

    #[test]
    fn each_context_keeps_its_agents_apart_and_a_reset_touches_only_its_own() {
        let mut app = all_app();
        assert_eq!(
            app.agents.len(),
            3,
            "the same name on two hosts is two agents"
        );
        assert_eq!((app.host_agents("a"), app.host_agents("b")), (1, 2));
        app.apply_host_watch(
            "b",
            WatchReply {
                epoch: 2,
                revision: 1,
                reset: true,
                changes: vec![],
            },
        );
        assert_eq!((app.host_agents("a"), app.host_agents("b")), (1, 0));
        assert_eq!(split_host("b:acme"), (Some("b"), "acme"));
        app.host_disconnected("a", "lost".into());
        assert!(matches!(
            app.hosts.as_ref().unwrap()["a"].conn,
            ConnState::Disconnected { .. }
        ));
    }
}
