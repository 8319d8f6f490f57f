//! The escalations queue: tool calls a policy sent to a person. Each stays pending until
//! a reviewer approves or denies it or its deadline passes (then it is denied); the agent's
//! waiting call hears the outcome. An approval is bound to the exact request (its hash), is
//! remembered until it expires so that a retry of that same request passes, and never
//! changes any policy. An escalation's id is the audit sequence number of the record that
//! opened it, so ids are unique across daemon runs and point at their evidence.
//!
//! Escalations are stored (table `escalations`): after a daemon restart the pending ones
//! are pending still, with their deadlines (one that passed meanwhile is denied at start),
//! a reviewer's decision still applies, and live approvals still let the retry through.
//! A waiting call that goes away (its connection closed, the daemon stopped) leaves the
//! escalation pending; the agent's retry of the same request waits on it again instead of
//! opening another. The hook hears every event reviewers are told about: opened, reminder
//! (before the deadline), approved, denied, timed_out, abandoned (the agent was deleted).

use crate::store::{AgentKey, Store};
use agenfleet_protocol::policy::{EscalationState, EscalationView};
use agenfleet_protocol::{now_ms, ApiError};
use rusqlite::params;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Decided escalations kept for `escalations list --all`.
const KEEP_DONE: usize = 1000;

/// How a person decided.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub approved: bool,
    pub reviewer: String,
    pub reason: String,
}

struct Approval {
    expires_ms: u64,
    reviewer: String,
    escalation: u64,
}

struct Pending {
    view: EscalationView,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<u64, Pending>,
    done: VecDeque<EscalationView>,
    approvals: HashMap<(AgentKey, String), Approval>,
}

/// How a wait for a person ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A person approved or denied it.
    Decided(Resolution),
    /// Nobody decided before the deadline (or the agent was deleted): denied.
    TimedOut,
}

/// A waiting call's hold on an escalation.
pub struct Waiter {
    pub id: u64,
    pub deadline_ms: u64,
    /// Whether this call opened it (else it joined a pending one: the same request again).
    pub opened: bool,
    key: AgentKey,
    rx: oneshot::Receiver<Outcome>,
}

/// Tells the caller if its wait is dropped before an outcome (the escalation stays).
struct Gone<G: FnOnce(u64)> {
    id: u64,
    gone: Option<G>,
}

impl<G: FnOnce(u64)> Drop for Gone<G> {
    fn drop(&mut self) {
        if let Some(g) = self.gone.take() {
            g(self.id);
        }
    }
}

/// Hears (escalation, event) for what reviewers are told.
pub type Hook = Box<dyn Fn(&EscalationView, &'static str) + Send + Sync>;

pub struct Escalations {
    inner: Mutex<Inner>,
    approval_ttl_ms: u64,
    /// A reminder this long before a deadline (0: none).
    reminder_ms: u64,
    store: Option<Store>,
    hook: OnceLock<Hook>,
}

fn key_of(v: &EscalationView) -> AgentKey {
    AgentKey {
        tenant: v.tenant.clone(),
        name: v.agent.clone(),
    }
}

fn state_str(s: EscalationState) -> &'static str {
    match s {
        EscalationState::Pending => "pending",
        EscalationState::Approved => "approved",
        EscalationState::Denied => "denied",
        EscalationState::TimedOut => "timed_out",
        EscalationState::Abandoned => "abandoned",
    }
}

impl Escalations {
    /// `store`: where escalations are kept (None: in memory only, for unit tests).
    pub fn new(approval_ttl_ms: u64, reminder_ms: u64, store: Option<Store>) -> Escalations {
        Escalations {
            inner: Mutex::new(Inner::default()),
            approval_ttl_ms,
            reminder_ms,
            store,
            hook: OnceLock::new(),
        }
    }

    /// Who hears the events reviewers are told about (set once, before `load`).
    pub fn set_hook(&self, hook: Hook) {
        let _ = self.hook.set(hook);
    }

    fn fire(&self, v: &EscalationView, event: &'static str) {
        if let Some(h) = self.hook.get() {
            h(v, event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, v: &EscalationView) {
        let Some(store) = &self.store else { return };
        let body = match serde_json::to_string(v) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(escalation = v.id, error = %e, "cannot encode an escalation");
                return;
            }
        };
        // Kept with its tenant's rows (a dedicated tenant's own file).
        let res = store.with_rows_of(Some(&v.tenant), |c| {
            c.execute(
                "INSERT INTO escalations (id, tenant_id, agent, state, body_json, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET state = ?4, body_json = ?5, updated_ms = ?6",
                params![
                    v.id as i64,
                    v.tenant,
                    v.agent,
                    state_str(v.state),
                    body,
                    now_ms() as i64
                ],
            )
        });
        if let Err(e) = res {
            tracing::error!(escalation = v.id, error = %e, "cannot store an escalation");
        }
    }

    /// Loads the stored escalations: pending ones wait again (with their reminders and
    /// deadlines), one whose deadline passed while the daemon was down is denied now
    /// (the hook hears `timed_out`), live approvals apply again.
    pub fn load(self: &Arc<Self>) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let rows: Vec<String> = store
            .rows_everywhere(
                "SELECT body_json FROM escalations WHERE state = 'pending'
                 UNION ALL
                 SELECT body_json FROM (SELECT body_json FROM escalations WHERE state != 'pending' ORDER BY id DESC LIMIT ?1)",
                &[&(KEEP_DONE as i64)],
                |r| r.get(0),
            )
            .map_err(|e| format!("cannot read the stored escalations: {e}"))?;
        let now = now_ms();
        let mut views: Vec<EscalationView> = rows
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect();
        views.sort_by_key(|v| v.id);
        let mut overdue = Vec::new();
        let mut waiting = Vec::new();
        {
            let mut inner = self.lock();
            for v in views {
                match v.state {
                    EscalationState::Pending if v.deadline_ms > now => {
                        waiting.push((v.id, v.created_ms, v.deadline_ms));
                        inner.pending.insert(
                            v.id,
                            Pending {
                                view: v,
                                waiters: Vec::new(),
                            },
                        );
                    }
                    EscalationState::Pending => overdue.push(v),
                    _ => {
                        if let (EscalationState::Approved, Some(exp)) =
                            (v.state, v.approval_expires_ms)
                        {
                            if exp > now {
                                inner.approvals.insert(
                                    (key_of(&v), v.request_hash.clone()),
                                    Approval {
                                        expires_ms: exp,
                                        reviewer: v.reviewer.clone().unwrap_or_default(),
                                        escalation: v.id,
                                    },
                                );
                            }
                        }
                        push_done(&mut inner, v);
                    }
                }
            }
        }
        for (id, created, deadline) in waiting {
            self.arm(id, created, deadline);
        }
        for mut v in overdue {
            v.state = EscalationState::TimedOut;
            v.decided_ms = Some(now);
            self.save(&v);
            push_done(&mut self.lock(), v.clone());
            self.fire(&v, "timed_out");
        }
        Ok(())
    }

    /// The reminder and the deadline of a pending escalation.
    fn arm(self: &Arc<Self>, id: u64, created_ms: u64, deadline_ms: u64) {
        let weak = Arc::downgrade(self);
        let reminder = (self.reminder_ms > 0
            && deadline_ms.saturating_sub(created_ms) > 2 * self.reminder_ms)
            .then(|| deadline_ms - self.reminder_ms);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Some(at) = reminder.filter(|t| *t > now_ms()) {
                tokio::time::sleep(Duration::from_millis(at - now_ms())).await;
                let Some(me) = weak.upgrade() else { return };
                match me.get(id) {
                    Some(v) if v.state == EscalationState::Pending => me.fire(&v, "reminder"),
                    _ => return,
                }
            }
            tokio::time::sleep(Duration::from_millis(deadline_ms.saturating_sub(now_ms()))).await;
            let Some(me) = weak.upgrade() else { return };
            if let Some(v) = me.finish(id, EscalationState::TimedOut) {
                me.fire(&v, "timed_out");
            }
        });
    }

    /// Joins a pending escalation of the same request by the same agent (a retry).
    pub fn attach(&self, key: &AgentKey, request_hash: &str) -> Option<Waiter> {
        let mut inner = self.lock();
        let p = inner
            .pending
            .values_mut()
            .find(|p| key_of(&p.view) == *key && p.view.request_hash == request_hash)?;
        let (tx, rx) = oneshot::channel();
        p.waiters.push(tx);
        Some(Waiter {
            id: p.view.id,
            deadline_ms: p.view.deadline_ms,
            opened: false,
            key: key.clone(),
            rx,
        })
    }

    /// Opens (and stores) an escalation; the hook hears `opened`.
    pub fn open(self: &Arc<Self>, view: EscalationView) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let w = Waiter {
            id: view.id,
            deadline_ms: view.deadline_ms,
            opened: true,
            key: key_of(&view),
            rx,
        };
        self.save(&view);
        self.lock().pending.insert(
            view.id,
            Pending {
                view: view.clone(),
                waiters: vec![tx],
            },
        );
        self.arm(view.id, view.created_ms, view.deadline_ms);
        self.fire(&view, "opened");
        w
    }

    /// Waits for the outcome. `publish` hears the agent's pending count whenever it
    /// changes; `gone` runs (once, with the id) if this wait is dropped first — the
    /// escalation then stays pending for the agent's retry.
    pub async fn wait<P, G>(&self, w: Waiter, publish: P, gone: G) -> Outcome
    where
        P: Fn(u32),
        G: FnOnce(u64),
    {
        let mut guard = Gone {
            id: w.id,
            gone: Some(gone),
        };
        publish(self.pending_for(&w.key));
        let out = w.rx.await.unwrap_or(Outcome::TimedOut);
        guard.gone = None;
        publish(self.pending_for(&w.key));
        out
    }

    /// A person's decision. The hash must be the escalated request's: an approval meant
    /// for another request is refused and changes nothing.
    pub fn resolve(
        &self,
        id: u64,
        request_hash: &str,
        res: Resolution,
    ) -> Result<EscalationView, ApiError> {
        let mut inner = self.lock();
        let Some(p) = inner.pending.get(&id) else {
            return Err(match inner.done.iter().find(|v| v.id == id) {
                Some(v) => ApiError::precondition(format!(
                    "escalation {id} is already {} and cannot be decided again",
                    v.state
                )),
                None => ApiError::not_found(format!("no pending escalation {id}")),
            });
        };
        if p.view.request_hash != request_hash {
            return Err(ApiError::invalid(format!(
                "the decision names request {} but escalation {id} is for request {}: an approval is bound to one exact request",
                short(request_hash),
                short(&p.view.request_hash)
            )));
        }
        let Some(Pending { mut view, waiters }) = inner.pending.remove(&id) else {
            return Err(ApiError::not_found(format!("no pending escalation {id}")));
        };
        let now = now_ms();
        view.state = if res.approved {
            EscalationState::Approved
        } else {
            EscalationState::Denied
        };
        view.reviewer = Some(res.reviewer.clone());
        view.review_reason = Some(res.reason.clone());
        view.decided_ms = Some(now);
        if res.approved {
            let expires_ms = now + self.approval_ttl_ms;
            view.approval_expires_ms = Some(expires_ms);
            inner.approvals.insert(
                (key_of(&view), view.request_hash.clone()),
                Approval {
                    expires_ms,
                    reviewer: res.reviewer.clone(),
                    escalation: id,
                },
            );
        }
        push_done(&mut inner, view.clone());
        drop(inner);
        self.save(&view);
        for tx in waiters {
            // A waiter that went away hears nothing; its retry finds the approval.
            let _ = tx.send(Outcome::Decided(res.clone()));
        }
        self.fire(&view, if res.approved { "approved" } else { "denied" });
        Ok(view)
    }

    /// Ends a still-pending escalation without a person (deadline, agent deleted); its
    /// waiters hear `TimedOut`.
    pub fn finish(&self, id: u64, state: EscalationState) -> Option<EscalationView> {
        let mut inner = self.lock();
        let Pending { mut view, waiters } = inner.pending.remove(&id)?;
        view.state = state;
        view.decided_ms = Some(now_ms());
        push_done(&mut inner, view.clone());
        drop(inner);
        self.save(&view);
        for tx in waiters {
            let _ = tx.send(Outcome::TimedOut);
        }
        Some(view)
    }

    /// Ends the pending escalations of a deleted agent (`abandoned`).
    pub fn abandon_agent(&self, key: &AgentKey) {
        let ids: Vec<u64> = self
            .lock()
            .pending
            .values()
            .filter(|p| key_of(&p.view) == *key)
            .map(|p| p.view.id)
            .collect();
        for id in ids {
            if let Some(v) = self.finish(id, EscalationState::Abandoned) {
                self.fire(&v, "abandoned");
            }
        }
    }

    /// Drops every escalation of a deleted tenant, stored and kept (its pending ones were
    /// abandoned with its agents).
    pub fn forget_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        {
            let mut inner = self.lock();
            inner.pending.retain(|_, p| p.view.tenant != tenant);
            inner.done.retain(|v| v.tenant != tenant);
            inner.approvals.retain(|(k, _), _| k.tenant != tenant);
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        store
            .with_rows_of(Some(tenant), |c| {
                c.execute(
                    "DELETE FROM escalations WHERE tenant_id = ?1",
                    params![tenant],
                )
            })
            .map(|_| ())
            .map_err(|e| ApiError::internal(format!("cannot delete the tenant's escalations: {e}")))
    }

    /// A live approval of this exact request by this agent: (reviewer, escalation id).
    pub fn approval(&self, key: &AgentKey, request_hash: &str) -> Option<(String, u64)> {
        let mut inner = self.lock();
        let now = now_ms();
        inner.approvals.retain(|_, a| a.expires_ms > now);
        inner
            .approvals
            .get(&(key.clone(), request_hash.to_string()))
            .map(|a| (a.reviewer.clone(), a.escalation))
    }

    /// Pending escalations (and with `all`, the decided ones kept), newest last.
    pub fn list(
        &self,
        all: bool,
        visible: impl Fn(&EscalationView) -> bool,
    ) -> Vec<EscalationView> {
        let inner = self.lock();
        let mut out: Vec<EscalationView> = Vec::new();
        if all {
            out.extend(inner.done.iter().filter(|v| visible(v)).cloned());
        }
        out.extend(
            inner
                .pending
                .values()
                .map(|p| &p.view)
                .filter(|v| visible(v))
                .cloned(),
        );
        out.sort_by_key(|v| v.id);
        out
    }

    pub fn get(&self, id: u64) -> Option<EscalationView> {
        let inner = self.lock();
        inner
            .pending
            .get(&id)
            .map(|p| p.view.clone())
            .or_else(|| inner.done.iter().rev().find(|v| v.id == id).cloned())
    }

    /// How many escalations of this agent wait for a person.
    pub fn pending_for(&self, key: &AgentKey) -> u32 {
        self.lock()
            .pending
            .values()
            .filter(|p| p.view.tenant == key.tenant && p.view.agent == key.name)
            .count() as u32
    }
}

fn push_done(inner: &mut Inner, view: EscalationView) {
    inner.done.push_back(view);
    while inner.done.len() > KEEP_DONE {
        inner.done.pop_front();
    }
}

pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, hash: &str) -> EscalationView {
        EscalationView {
            id,
            tenant: "t".into(),
            project: "p".into(),
            agent: "a".into(),
            tool: "http_request".into(),
            args_json: "{}".into(),
            request_hash: hash.into(),
            policies: vec!["pay".into()],
            reason: "why".into(),
            created_ms: now_ms(),
            deadline_ms: now_ms() + 3_600_000,
            state: EscalationState::Pending,
            reviewer: None,
            review_reason: None,
            decided_ms: None,
            approval_expires_ms: None,
        }
    }

    fn res(approved: bool) -> Resolution {
        Resolution {
            approved,
            reviewer: "alice".into(),
            reason: "ok".into(),
        }
    }

    fn queue(ttl: u64) -> Arc<Escalations> {
        Arc::new(Escalations::new(ttl, 0, None))
    }

    #[tokio::test]
    async fn an_approval_is_bound_to_its_request_and_decided_once() {
        let q = queue(60_000);
        let mut w = q.open(view(7, "aaaa"));
        let e = q.resolve(7, "bbbb", res(true)).unwrap_err();
        assert!(e.message.contains("bound to one exact request"), "{e}");
        assert!(
            w.rx.try_recv().is_err(),
            "a mismatched approval decides nothing"
        );
        assert_eq!(q.pending_for(&key_of(&view(7, ""))), 1);
        let v = q.resolve(7, "aaaa", res(true)).expect("approved");
        assert_eq!(v.state, EscalationState::Approved);
        assert!(matches!(w.rx.try_recv(), Ok(Outcome::Decided(r)) if r.approved));
        assert!(q
            .resolve(7, "aaaa", res(false))
            .unwrap_err()
            .message
            .contains("already approved"));
        let k = key_of(&v);
        assert_eq!(q.approval(&k, "aaaa").map(|a| a.1), Some(7));
        assert!(
            q.approval(&k, "bbbb").is_none(),
            "another request is not covered"
        );
    }

    #[tokio::test]
    async fn approvals_expire_and_finished_ones_cannot_be_decided() {
        let q = queue(0);
        let _w = q.open(view(1, "h"));
        q.resolve(1, "h", res(true)).expect("approved");
        assert!(
            q.approval(&key_of(&view(1, "h")), "h").is_none(),
            "expired at once"
        );
        let _w = q.open(view(2, "h2"));
        let v = q.finish(2, EscalationState::TimedOut).expect("was pending");
        assert_eq!(v.state, EscalationState::TimedOut);
        assert!(q.finish(2, EscalationState::TimedOut).is_none());
        assert_eq!(q.list(true, |_| true).len(), 2);
        assert!(q.list(false, |_| true).is_empty());
    }

    /// Waits until `q` holds the escalation `id` in `state` (the waiter runs on the same
    /// single-threaded runtime, so yielding lets it move).
    async fn until_pending(q: &Escalations, key: &AgentKey, n: u32) {
        while q.pending_for(key) != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn wait_hears_the_person_and_publishes_the_pending_count() {
        let q = queue(60_000);
        let counts = Arc::new(Mutex::new(Vec::new()));
        let (q2, c2) = (q.clone(), counts.clone());
        let w = q.open(view(3, "hh"));
        let waiter = tokio::spawn(async move {
            q2.wait(
                w,
                |n| c2.lock().unwrap().push(n),
                |_| panic!("a decided wait did not go away"),
            )
            .await
        });
        while counts.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        q.resolve(3, "hh", res(true)).expect("approved");
        match waiter.await.expect("the waiter ends") {
            Outcome::Decided(r) => assert!(r.approved && r.reviewer == "alice"),
            Outcome::TimedOut => panic!("decided, not timed out"),
        }
        assert_eq!(*counts.lock().unwrap(), vec![1, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_denies_with_nobody_deciding_and_reminds_before() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let q = Arc::new(Escalations::new(60_000, 1_000, None));
        let e2 = events.clone();
        q.set_hook(Box::new(move |v, ev| e2.lock().unwrap().push((v.id, ev))));
        let mut v = view(4, "h");
        v.deadline_ms = now_ms() + 5_000;
        let w = q.open(v);
        let out = q.wait(w, |_| {}, |_| {}).await;
        assert!(matches!(out, Outcome::TimedOut));
        assert_eq!(q.get(4).unwrap().state, EscalationState::TimedOut);
        assert_eq!(q.pending_for(&key_of(&view(4, ""))), 0);
        assert_eq!(
            *events.lock().unwrap(),
            vec![(4, "opened"), (4, "reminder"), (4, "timed_out")]
        );
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_it_pending_for_the_retry() {
        let q = queue(60_000);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let key = key_of(&view(5, ""));
        let w = q.open(view(5, "h"));
        let q2 = q.clone();
        let waiter =
            tokio::spawn(async move { q2.wait(w, |_| {}, move |id| tx.send(id).unwrap()).await });
        until_pending(&q, &key, 1).await;
        tokio::task::yield_now().await;
        waiter.abort();
        assert_eq!(rx.recv().await, Some(5), "the gone hook ran with the id");
        assert_eq!(q.get(5).unwrap().state, EscalationState::Pending);
        // The retry of the same request joins it; another request does not.
        assert!(q.attach(&key, "other").is_none());
        let retry = q.attach(&key, "h").expect("the same request joins");
        assert!(!retry.opened);
        q.resolve(5, "h", res(true)).expect("approved");
        assert!(matches!(q.wait(retry, |_| {}, |_| {}).await, Outcome::Decided(r) if r.approved));
        assert_eq!(rx.recv().await, None, "the hook ran once");
    }

    #[tokio::test]
    async fn a_deleted_tenants_escalations_and_approvals_go() {
        let q = queue(60_000);
        let _w = q.open(view(8, "h"));
        q.resolve(8, "h", res(true)).expect("approved");
        let k = key_of(&view(8, ""));
        assert!(q.approval(&k, "h").is_some());
        q.forget_tenant("t").expect("forgotten");
        assert!(q.list(true, |_| true).is_empty());
        assert!(q.approval(&k, "h").is_none());
    }
}
