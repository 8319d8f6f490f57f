//! The short histories behind the console's pictures (`:pulse`, an agent's describe view):
//! per tenant and project, the last ten minutes in 10-second buckets — agents by state
//! (sampled as each bucket closes), supervisor restarts, tool-call decisions by verdict,
//! model tokens — and per agent its CPU and memory peaks per bucket. Incidents opened are
//! counted from the incidents themselves when asked.
//!
//! Bounded: `BUCKETS` + 1 buckets per project and per agent (~1 KB per agent); an
//! agent's history goes when it leaves the fleet, a project's when it has been empty for
//! ten minutes. The hot paths (a decision, a token count) take one short lock and
//! allocate nothing once their project has a ring. Process-wide like `metrics::counters`.

use crate::fleet_state::FleetState;
use crate::store::AgentKey;
use agenfleet_protocol::policy::Verdict;
use agenfleet_protocol::pulse::{AgentHistory, AgentPoint, Pulse, PulseBucket, BUCKETS, BUCKET_MS};
use agenfleet_protocol::AgentState;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use tokio::sync::watch;

/// Buckets held: the open one and the `BUCKETS` closed before it.
const HELD: u64 = BUCKETS as u64 + 1;

/// A ring of buckets keyed by their index (start / `BUCKET_MS`), oldest first.
#[derive(Debug, Default)]
struct Ring<T> {
    slots: VecDeque<(u64, T)>,
}

impl<T: Default> Ring<T> {
    /// The bucket `idx` (made if missing), after dropping what is older than `HELD`
    /// buckets before the newest.
    fn at(&mut self, idx: u64) -> &mut T {
        let newest = self.slots.back().map_or(idx, |(i, _)| (*i).max(idx));
        while self.slots.front().is_some_and(|(i, _)| i + HELD <= newest) {
            self.slots.pop_front();
        }
        let pos = match self.slots.iter().rposition(|(i, _)| *i <= idx) {
            Some(p) if self.slots[p].0 == idx => p,
            Some(p) => {
                self.slots.insert(p + 1, (idx, T::default()));
                p + 1
            }
            None => {
                self.slots.push_front((idx, T::default()));
                0
            }
        };
        &mut self.slots[pos].1
    }

    fn get(&self, idx: u64) -> Option<&T> {
        self.slots
            .iter()
            .rev()
            .find(|(i, _)| *i == idx)
            .map(|(_, t)| t)
    }

    fn newest(&self) -> Option<u64> {
        self.slots.back().map(|(i, _)| *i)
    }
}

/// What one project did in one bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    running: u32,
    backing_off: u32,
    failed: u32,
    other: u32,
    restarts: u32,
    allowed: u32,
    denied: u32,
    escalated: u32,
    tokens: u64,
}

/// One agent's peaks in one bucket, packed (a 10,000-agent fleet holds 600,000 of
/// them): CPU in tenths of a percent, memory in KiB, `NONE` when not sampled.
#[derive(Debug, Clone, Copy)]
struct Peak {
    cpu_tenths: u16,
    memory_kib: u32,
}

const NONE_CPU: u16 = u16::MAX;
const NONE_MEM: u32 = u32::MAX;

impl Default for Peak {
    fn default() -> Self {
        Peak {
            cpu_tenths: NONE_CPU,
            memory_kib: NONE_MEM,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// tenant → project → ring.
    projects: HashMap<String, HashMap<String, Ring<Counts>>>,
    agents: HashMap<AgentKey, Ring<Peak>>,
}

/// The histories (see the module's header).
pub struct History {
    inner: Mutex<Inner>,
    /// Index of the newest closed bucket (its states sampled).
    closed: watch::Sender<u64>,
}

/// The process's histories.
pub fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(History::new)
}

fn index(ms: u64) -> u64 {
    ms / BUCKET_MS
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// Histories starting now (the bucket before this one counts as closed, so answers
    /// always span ten minutes of wall-clock time).
    pub fn new() -> History {
        Self::closed_at(index(agenfleet_protocol::now_ms()).saturating_sub(1))
    }

    fn closed_at(idx: u64) -> History {
        History {
            inner: Mutex::default(),
            closed: watch::channel(idx).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, tenant: &str, project: &str, now_ms: u64, f: impl FnOnce(&mut Counts)) {
        let mut inner = self.lock();
        let ring = match inner
            .projects
            .get_mut(tenant)
            .and_then(|p| p.get_mut(project))
        {
            Some(r) => r,
            None => inner
                .projects
                .entry(tenant.to_string())
                .or_default()
                .entry(project.to_string())
                .or_default(),
        };
        f(ring.at(index(now_ms)));
    }

    /// A tool-call decision (by the policies' verdict).
    pub fn decision(&self, tenant: &str, project: &str, verdict: Verdict, now_ms: u64) {
        self.with(tenant, project, now_ms, |c| match verdict {
            Verdict::Allow => c.allowed += 1,
            Verdict::Deny => c.denied += 1,
            Verdict::Escalate => c.escalated += 1,
        });
    }

    /// A restart by the supervisor.
    pub fn restart(&self, tenant: &str, project: &str, now_ms: u64) {
        self.with(tenant, project, now_ms, |c| c.restarts += 1);
    }

    /// Model tokens of a call that ended.
    pub fn tokens(&self, tenant: &str, project: &str, tokens: u64, now_ms: u64) {
        self.with(tenant, project, now_ms, |c| c.tokens += tokens);
    }

    /// One CPU and memory sample of a running agent.
    pub fn agent_sample(&self, key: &AgentKey, cpu_percent: f32, memory: u64, now_ms: u64) {
        let mut inner = self.lock();
        let ring = match inner.agents.get_mut(key) {
            Some(r) => r,
            None => inner.agents.entry(key.clone()).or_default(),
        };
        let p = ring.at(index(now_ms));
        // (Above 6,553% or 4 TiB the figure is capped; NONE stays apart.)
        let cpu =
            ((cpu_percent.max(0.0) * 10.0).round() as u64).min(u64::from(NONE_CPU) - 1) as u16;
        let kib = (memory / 1024).min(u64::from(NONE_MEM) - 1) as u32;
        p.cpu_tenths = if p.cpu_tenths == NONE_CPU {
            cpu
        } else {
            p.cpu_tenths.max(cpu)
        };
        p.memory_kib = if p.memory_kib == NONE_MEM {
            kib
        } else {
            p.memory_kib.max(kib)
        };
    }

    /// Closes bucket `idx`: the agents' states as they are now go into it, histories of
    /// agents no longer in the fleet and of projects idle for `BUCKETS` go, and waiting
    /// callers hear of it.
    pub fn close(&self, idx: u64, fleet: &FleetState) {
        let mut states: HashMap<(String, String), Counts> = HashMap::new();
        let mut present: std::collections::HashSet<AgentKey> = Default::default();
        fleet.for_each(|v| {
            let c = states
                .entry((v.tenant.clone(), v.project.clone()))
                .or_default();
            match v.state {
                AgentState::Running => c.running += 1,
                AgentState::BackingOff => c.backing_off += 1,
                AgentState::Failed => c.failed += 1,
                AgentState::Pending | AgentState::Stopped | AgentState::Unknown => c.other += 1,
            }
            present.insert(AgentKey {
                tenant: v.tenant.clone(),
                name: v.name.clone(),
            });
        });
        {
            let mut inner = self.lock();
            for ((t, p), s) in states {
                let c = inner
                    .projects
                    .entry(t)
                    .or_default()
                    .entry(p)
                    .or_default()
                    .at(idx);
                c.running = s.running;
                c.backing_off = s.backing_off;
                c.failed = s.failed;
                c.other = s.other;
            }
            inner.agents.retain(|k, _| present.contains(k));
            for projects in inner.projects.values_mut() {
                projects.retain(|_, r| r.newest().is_some_and(|n| n + HELD > idx));
            }
            inner.projects.retain(|_, p| !p.is_empty());
        }
        self.closed.send_if_modified(|c| {
            let newer = idx > *c;
            if newer {
                *c = idx;
            }
            newer
        });
    }

    /// Index of the newest closed bucket.
    pub fn closed(&self) -> u64 {
        *self.closed.borrow()
    }

    /// Waits until a bucket newer than the one starting at `after_ms` has closed, or
    /// `max_wait` has passed.
    pub async fn wait_newer(&self, after_ms: u64, max_wait: std::time::Duration) {
        let mut rx = self.closed.subscribe();
        let newer = |c: &u64| *c * BUCKET_MS > after_ms;
        let _ = tokio::time::timeout(max_wait, rx.wait_for(newer)).await;
    }

    /// The last `BUCKETS` closed buckets summed over the projects `sees` admits, with the
    /// incidents opened (their first signal's time) added.
    pub fn pulse(
        &self,
        sees: impl Fn(&str, &str) -> bool,
        incidents_opened: impl IntoIterator<Item = u64>,
    ) -> Pulse {
        let newest = self.closed();
        let first = (newest + 1).saturating_sub(BUCKETS as u64);
        let mut buckets: Vec<PulseBucket> = (first..=newest)
            .map(|i| PulseBucket {
                start_ms: i * BUCKET_MS,
                ..Default::default()
            })
            .collect();
        {
            let inner = self.lock();
            for (t, projects) in &inner.projects {
                for (p, ring) in projects {
                    if !sees(t, p) {
                        continue;
                    }
                    for (b, i) in buckets.iter_mut().zip(first..=newest) {
                        if let Some(c) = ring.get(i) {
                            b.running += c.running;
                            b.backing_off += c.backing_off;
                            b.failed += c.failed;
                            b.other += c.other;
                            b.restarts += c.restarts;
                            b.allowed += c.allowed;
                            b.denied += c.denied;
                            b.escalated += c.escalated;
                            b.tokens += c.tokens;
                        }
                    }
                }
            }
        }
        for ms in incidents_opened {
            let i = index(ms);
            if (first..=newest).contains(&i) {
                buckets[(i - first) as usize].incidents_opened += 1;
            }
        }
        Pulse {
            bucket_ms: BUCKET_MS,
            buckets,
        }
    }

    /// One agent's last `BUCKETS` closed buckets.
    pub fn agent(&self, key: &AgentKey) -> AgentHistory {
        let newest = self.closed();
        let first = (newest + 1).saturating_sub(BUCKETS as u64);
        let inner = self.lock();
        let ring = inner.agents.get(key);
        let points = (first..=newest)
            .map(|i| {
                let p = ring.and_then(|r| r.get(i)).copied().unwrap_or_default();
                AgentPoint {
                    start_ms: i * BUCKET_MS,
                    cpu_percent: (p.cpu_tenths != NONE_CPU).then(|| f32::from(p.cpu_tenths) / 10.0),
                    memory_bytes: (p.memory_kib != NONE_MEM)
                        .then(|| u64::from(p.memory_kib) * 1024),
                }
            })
            .collect();
        AgentHistory {
            bucket_ms: BUCKET_MS,
            points,
        }
    }
}

/// Closes each bucket as its time ends (forever): the states of the fleet go into it.
pub async fn close_loop(fleet: FleetState) {
    loop {
        let now = agenfleet_protocol::now_ms();
        let next = (index(now) + 1) * BUCKET_MS;
        tokio::time::sleep(std::time::Duration::from_millis(next - now)).await;
        // The bucket that just ended.
        let idx = index(agenfleet_protocol::now_ms()).saturating_sub(1);
        history().close(idx, &fleet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_state::tests::{daemon, view};
    use std::time::Duration;

    fn key(t: &str, n: &str) -> AgentKey {
        AgentKey {
            tenant: t.into(),
            name: n.into(),
        }
    }

    #[test]
    fn a_ring_holds_the_open_bucket_and_the_sixty_before_it() {
        let mut r: Ring<u32> = Ring::default();
        for i in 0..200u64 {
            *r.at(i) += 1;
        }
        assert_eq!(r.slots.len(), HELD as usize);
        assert_eq!(r.slots.front().map(|s| s.0), Some(200 - HELD));
        // A late write into an older held bucket lands in order; one older than what is
        // held is dropped by the next write.
        *r.at(150) += 1;
        assert_eq!(r.get(150), Some(&2));
        *r.at(5) += 1;
        *r.at(199) += 1;
        assert_eq!(r.get(5), None);
        assert!(r
            .slots
            .iter()
            .zip(r.slots.iter().skip(1))
            .all(|(a, b)| a.0 < b.0));
    }

    #[tokio::test]
    async fn the_pulse_sums_what_the_caller_sees_bucket_by_bucket() {
        let h = History::closed_at(0);
        let fleet = FleetState::new(daemon());
        fleet.upsert(view("acme", "a", AgentState::Running));
        fleet.upsert(view("acme", "b", AgentState::Failed));
        fleet.upsert(view("other", "c", AgentState::Running));
        let t0 = 1_000 * BUCKET_MS;
        h.decision("acme", "p", Verdict::Allow, t0 + 1);
        h.decision("acme", "p", Verdict::Allow, t0 + 2);
        h.decision("acme", "p", Verdict::Escalate, t0 + 3);
        h.decision("other", "p", Verdict::Deny, t0 + 4);
        h.restart("acme", "p", t0 + BUCKET_MS + 5);
        h.tokens("acme", "p", 700, t0 + BUCKET_MS + 6);
        h.close(1_000, &fleet);
        h.close(1_001, &fleet);
        let p = h.pulse(|t, _| t == "acme", [t0 + 7, t0 - 100 * BUCKET_MS]);
        assert_eq!(p.buckets.len(), BUCKETS);
        assert_eq!(p.newest_ms(), t0 + BUCKET_MS);
        let [.., a, b] = p.buckets.as_slice() else {
            panic!("two buckets at least")
        };
        assert_eq!((a.allowed, a.denied, a.escalated), (2, 0, 1));
        assert_eq!(
            (a.running, a.failed),
            (1, 1),
            "the other tenant's agent is not counted"
        );
        assert_eq!(
            a.incidents_opened, 1,
            "the incident from long ago is not in the span"
        );
        assert_eq!((b.restarts, b.tokens, b.allowed), (1, 700, 0));
        // Nothing is counted for a caller who sees nothing.
        let none = h.pulse(|_, _| false, []);
        assert!(none.buckets.iter().all(|b| *b
            == PulseBucket {
                start_ms: b.start_ms,
                ..Default::default()
            }));
    }

    #[tokio::test]
    async fn an_agents_history_keeps_its_peaks_and_goes_when_the_agent_does() {
        let h = History::closed_at(0);
        let fleet = FleetState::new(daemon());
        fleet.upsert(view("t", "a", AgentState::Running));
        let t0 = 500 * BUCKET_MS;
        h.agent_sample(&key("t", "a"), 12.5, 4096, t0 + 1);
        h.agent_sample(&key("t", "a"), 80.0, 1024, t0 + 2_000);
        h.agent_sample(&key("t", "gone"), 1.0, 1, t0 + 1);
        h.close(500, &fleet);
        let a = h.agent(&key("t", "a"));
        assert_eq!(a.points.len(), BUCKETS);
        let last = a.points[BUCKETS - 1];
        assert_eq!(last.start_ms, t0);
        assert_eq!(
            (last.cpu_percent, last.memory_bytes),
            (Some(80.0), Some(4096))
        );
        assert_eq!(a.points[0].cpu_percent, None, "no sample then");
        assert!(
            h.agent(&key("t", "gone"))
                .points
                .iter()
                .all(|p| p.memory_bytes.is_none()),
            "an agent no longer in the fleet has no history"
        );
    }

    #[tokio::test]
    async fn a_waiting_caller_is_answered_when_a_newer_bucket_closes() {
        let h = std::sync::Arc::new(History::closed_at(0));
        let fleet = FleetState::new(daemon());
        h.close(10, &fleet);
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move {
                h.wait_newer(10 * BUCKET_MS, Duration::from_secs(600)).await;
                h.closed()
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        h.close(11, &fleet);
        assert_eq!(waiter.await.ok(), Some(11));
    }
}
