//! The revisioned fleet state: the current view of every agent and of the daemon, a
//! revision that every change bumps, and a bounded history of changes so that `watch(since)`
//! answers with the deltas after `since` (or a full snapshot when `since` is too old or
//! from an earlier daemon run). Watchers wait on a `tokio::sync::watch` of the revision:
//! no polling.

use agenfleet_protocol::incidents::{Incident, IncidentState};
use agenfleet_protocol::{AgentView, Change, DaemonInfo, WatchReply};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::store::AgentKey;

/// How many changes are kept for `watch`; older `since` values get a snapshot.
const HISTORY: usize = 8192;

struct Inner {
    revision: u64,
    agents: BTreeMap<AgentKey, AgentView>,
    daemon: DaemonInfo,
    history: VecDeque<(u64, Change)>,
    /// Pending escalations per agent, kept apart so that the supervisor's views (which
    /// do not know them) never reset the count.
    escalations: std::collections::HashMap<AgentKey, u32>,
    /// Open incidents, and resolved ones until they are dropped from this view.
    incidents: BTreeMap<u64, Incident>,
}

#[derive(Clone)]
pub struct FleetState {
    inner: Arc<Mutex<Inner>>,
    rev_tx: Arc<tokio::sync::watch::Sender<u64>>,
    epoch: u64,
}

fn key_of(v: &AgentView) -> AgentKey {
    AgentKey {
        tenant: v.tenant.clone(),
        name: v.name.clone(),
    }
}

impl FleetState {
    pub fn new(daemon: DaemonInfo) -> FleetState {
        let (rev_tx, _) = tokio::sync::watch::channel(0);
        // The epoch tells one daemon run from the next: revisions restart at 0.
        let epoch = agenfleet_protocol::now_ms() ^ (u64::from(std::process::id()) << 48);
        FleetState {
            inner: Arc::new(Mutex::new(Inner {
                revision: 0,
                agents: BTreeMap::new(),
                daemon,
                history: VecDeque::new(),
                escalations: std::collections::HashMap::new(),
                incidents: BTreeMap::new(),
            })),
            rev_tx: Arc::new(rev_tx),
            epoch,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data (each change is one
        // assignment), so recover the guard instead of propagating the poison.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn push(inner: &mut Inner, change: Change) -> u64 {
        inner.revision += 1;
        let rev = inner.revision;
        inner.history.push_back((rev, change));
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        rev
    }

    /// Sets an agent's view; a no-op (no revision) when nothing changed.
    pub fn upsert(&self, mut view: AgentView) {
        let rev = {
            let mut inner = self.lock();
            let key = key_of(&view);
            view.escalations = inner.escalations.get(&key).copied().unwrap_or(0);
            // Usage is the meter's, published by `publish_usage`; a runner's view keeps it.
            view.usage_today = inner
                .agents
                .get(&key)
                .map(|v| v.usage_today)
                .unwrap_or_default();
            if inner.agents.get(&key) == Some(&view) {
                return;
            }
            inner.agents.insert(key, view.clone());
            Self::push(&mut inner, Change::Agent(Box::new(view)))
        };
        self.rev_tx.send_replace(rev);
    }

    /// Applies `f` to one agent's view (a task's stats); `f` says whether it changed it.
    pub fn update_one(&self, key: &AgentKey, f: impl FnOnce(&mut AgentView) -> bool) {
        let rev = {
            let mut inner = self.lock();
            let Some(v) = inner.agents.get_mut(key) else {
                return;
            };
            if !f(v) {
                return;
            }
            let v = v.clone();
            Self::push(&mut inner, Change::Agent(Box::new(v)))
        };
        self.rev_tx.send_replace(rev);
    }

    /// Applies `f` to many agents at once (stats sampling) under one lock.
    pub fn update_many(&self, mut f: impl FnMut(&AgentKey, &mut AgentView) -> bool) {
        let rev = {
            let mut inner = self.lock();
            let mut changed = Vec::new();
            for (k, v) in inner.agents.iter_mut() {
                if f(k, v) {
                    changed.push(v.clone());
                }
            }
            if changed.is_empty() {
                return;
            }
            let mut rev = 0;
            for v in changed {
                rev = Self::push(&mut inner, Change::Agent(Box::new(v)));
            }
            rev
        };
        self.rev_tx.send_replace(rev);
    }

    pub fn remove(&self, key: &AgentKey) {
        let rev = {
            let mut inner = self.lock();
            if inner.agents.remove(key).is_none() {
                return;
            }
            Self::push(
                &mut inner,
                Change::Removed {
                    tenant: key.tenant.clone(),
                    name: key.name.clone(),
                },
            )
        };
        self.rev_tx.send_replace(rev);
    }

    /// Publishes an incident's new view (resolved ones stay until `forget_incident`).
    pub fn upsert_incident(&self, inc: Incident) {
        let rev = {
            let mut inner = self.lock();
            if inner.incidents.get(&inc.id) == Some(&inc) {
                return;
            }
            let resolving = inc.state == IncidentState::Resolved;
            inner.incidents.insert(inc.id, inc.clone());
            // Keep the view bounded: drop the oldest resolved ones past 500 (only a
            // resolution can add one; an update of an open incident skips the scan).
            let resolved: Vec<u64> = if !resolving {
                Vec::new()
            } else {
                inner
                    .incidents
                    .values()
                    .filter(|i| i.state == IncidentState::Resolved)
                    .map(|i| i.id)
                    .collect()
            };
            if resolved.len() > 500 {
                for id in &resolved[..resolved.len() - 500] {
                    inner.incidents.remove(id);
                }
            }
            Self::push(&mut inner, Change::Incident(Box::new(inc)))
        };
        self.rev_tx.send_replace(rev);
    }

    /// Drops incidents from the view (retention): new snapshots and watches that start
    /// over no longer carry them.
    pub fn forget_incidents(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for id in ids {
            inner.incidents.remove(id);
        }
    }

    /// Every incident in view for which `visible` holds.
    pub fn incidents(&self, visible: impl Fn(&Incident) -> bool) -> Vec<Incident> {
        self.lock()
            .incidents
            .values()
            .filter(|i| visible(i))
            .cloned()
            .collect()
    }

    /// Sets how many escalations of an agent wait for a person.
    pub fn set_escalations(&self, key: &AgentKey, pending: u32) {
        let rev = {
            let mut inner = self.lock();
            if pending == 0 {
                inner.escalations.remove(key);
            } else {
                inner.escalations.insert(key.clone(), pending);
            }
            let Some(v) = inner.agents.get_mut(key) else {
                return;
            };
            if v.escalations == pending {
                return;
            }
            v.escalations = pending;
            let v = v.clone();
            Self::push(&mut inner, Change::Agent(Box::new(v)))
        };
        self.rev_tx.send_replace(rev);
    }

    pub fn update_daemon(&self, f: impl FnOnce(&mut DaemonInfo)) {
        let rev = {
            let mut inner = self.lock();
            let mut d = inner.daemon.clone();
            f(&mut d);
            if d == inner.daemon {
                return;
            }
            inner.daemon = d.clone();
            Self::push(&mut inner, Change::Daemon(d))
        };
        self.rev_tx.send_replace(rev);
    }

    pub fn get(&self, key: &AgentKey) -> Option<AgentView> {
        self.lock().agents.get(key).cloned()
    }

    /// Looks at every agent under the lock (nothing cloned).
    pub fn for_each(&self, mut f: impl FnMut(&AgentView)) {
        self.lock().agents.values().for_each(&mut f);
    }

    /// Every agent for which `visible` holds, and the revision they are current at.
    pub fn snapshot(
        &self,
        visible: impl Fn(&AgentView) -> bool,
    ) -> (u64, DaemonInfo, Vec<AgentView>) {
        let inner = self.lock();
        let agents = inner
            .agents
            .values()
            .filter(|v| visible(v))
            .cloned()
            .collect();
        (inner.revision, inner.daemon.clone(), agents)
    }

    pub fn daemon(&self) -> DaemonInfo {
        self.lock().daemon.clone()
    }

    /// The changes after `since` that `visible` lets through, or a snapshot.
    fn changes_after(
        &self,
        epoch: u64,
        since: u64,
        visible: &impl Fn(&AgentView) -> bool,
        visible_incident: &impl Fn(&Incident) -> bool,
    ) -> WatchReply {
        let inner = self.lock();
        let oldest_kept = inner
            .history
            .front()
            .map(|(r, _)| *r)
            .unwrap_or(inner.revision + 1);
        let need_reset = epoch != self.epoch
            || since > inner.revision
            || (since < inner.revision && since + 1 < oldest_kept);
        if need_reset {
            let mut changes = vec![Change::Daemon(inner.daemon.clone())];
            changes.extend(
                inner
                    .agents
                    .values()
                    .filter(|v| visible(v))
                    .cloned()
                    .map(|v| Change::Agent(Box::new(v))),
            );
            changes.extend(
                inner
                    .incidents
                    .values()
                    .filter(|i| visible_incident(i))
                    .cloned()
                    .map(|i| Change::Incident(Box::new(i))),
            );
            return WatchReply {
                epoch: self.epoch,
                revision: inner.revision,
                reset: true,
                changes,
            };
        }
        let changes = inner
            .history
            .iter()
            .filter(|(r, _)| *r > since)
            .filter(|(_, c)| match c {
                Change::Agent(v) => visible(v),
                Change::Removed { tenant, name } => {
                    // Only tell a caller about removals of agents it could see: check the
                    // last view of that agent in the history.
                    inner.history.iter().rev().any(|(_, c)| {
                        matches!(c, Change::Agent(v) if &v.tenant == tenant && &v.name == name && visible(v))
                    })
                }
                Change::Daemon(_) => true,
                Change::Incident(i) => visible_incident(i),
            })
            .map(|(_, c)| c.clone())
            .collect();
        WatchReply {
            epoch: self.epoch,
            revision: inner.revision,
            reset: false,
            changes,
        }
    }

    /// Clients long-polling for changes right now (consoles and `watch` spend most of
    /// their time waiting there).
    pub fn watchers(&self) -> usize {
        self.rev_tx.receiver_count()
    }

    /// Long-poll: answers at once if there is news after `since` (or a reset is due),
    /// otherwise waits up to `max_wait` for a change.
    pub async fn watch(
        &self,
        epoch: u64,
        since: u64,
        max_wait: Duration,
        visible: impl Fn(&AgentView) -> bool,
        visible_incident: impl Fn(&Incident) -> bool,
    ) -> WatchReply {
        let mut rx = self.rev_tx.subscribe();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let reply = self.changes_after(epoch, since, &visible, &visible_incident);
            if reply.reset || !reply.changes.is_empty() {
                return reply;
            }
            // Wait for the revision to move past what we just looked at.
            let seen = reply.revision;
            let wait = async {
                loop {
                    if *rx.borrow_and_update() > seen {
                        return true;
                    }
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            };
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(true) => continue,
                _ => return self.changes_after(epoch, since, &visible, &visible_incident),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use agenfleet_protocol::{AgentState, EngineInfo};

    pub(crate) fn daemon() -> DaemonInfo {
        DaemonInfo {
            version: "t".into(),
            pid: 1,
            started_at_ms: 0,
            instance_id: "i".into(),
            engine: EngineInfo {
                connected: true,
                version: None,
                api_version: None,
                error: None,
            },
            orphans: vec![],
            audit_writable: true,
            audit_problem: None,
            vault: agenfleet_protocol::VaultState::Uninitialized,
            operations: Vec::new(),
        }
    }

    pub(crate) fn view(tenant: &str, name: &str, state: AgentState) -> AgentView {
        AgentView {
            restart_budget: 5,
            spec_hash: "h".into(),
            ..AgentView::new(tenant, "p", name, "img", state)
        }
    }

    #[tokio::test]
    async fn deltas_after_since_and_reset_for_other_epoch() {
        let s = FleetState::new(daemon());
        s.upsert(view("t", "a", AgentState::Pending));
        s.upsert(view("t", "a", AgentState::Pending)); // no change, no revision
        s.upsert(view("t", "a", AgentState::Running));
        let r = s
            .watch(s.epoch(), 1, Duration::from_millis(10), |_| true, |_| true)
            .await;
        assert!(!r.reset);
        assert_eq!(r.revision, 2);
        assert_eq!(r.changes.len(), 1);
        let r = s
            .watch(
                s.epoch() + 1,
                2,
                Duration::from_millis(10),
                |_| true,
                |_| true,
            )
            .await;
        assert!(r.reset, "a different epoch must give a snapshot");
        assert_eq!(r.changes.len(), 2); // daemon + one agent
    }

    #[tokio::test]
    async fn watch_wakes_on_change_and_filters_invisible_agents() {
        let s = FleetState::new(daemon());
        let s2 = s.clone();
        let epoch = s.epoch();
        let waiter = tokio::spawn(async move {
            s2.watch(
                epoch,
                0,
                Duration::from_secs(5),
                |v| v.tenant == "mine",
                |_| true,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.upsert(view("other", "x", AgentState::Running));
        s.upsert(view("mine", "y", AgentState::Running));
        let r = waiter.await.unwrap();
        assert!(!r.reset);
        assert!(r
            .changes
            .iter()
            .all(|c| !matches!(c, Change::Agent(v) if v.tenant == "other")));
        assert!(r
            .changes
            .iter()
            .any(|c| matches!(c, Change::Agent(v) if v.name == "y")));
    }

    #[tokio::test]
    async fn watch_times_out_empty() {
        let s = FleetState::new(daemon());
        s.upsert(view("t", "a", AgentState::Running));
        let r = s
            .watch(s.epoch(), 1, Duration::from_millis(30), |_| true, |_| true)
            .await;
        assert!(!r.reset);
        assert!(r.changes.is_empty());
    }
}
