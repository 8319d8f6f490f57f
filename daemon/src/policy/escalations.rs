//! The escalations queue: tool calls a policy sent to a person. Each waits (its agent's
//! `authorize` blocks) until a reviewer approves or denies it, the policy's timeout denies
//! it, or the agent goes away. An approval is bound to the exact request (its hash), is
//! remembered until it expires so that a retry of that same request passes, and never
//! changes any policy. An escalation's id is the audit sequence number of the record that
//! opened it, so ids are unique across daemon runs and point at their evidence.
//! `wait` is the whole lifecycle of one escalation from its caller's side: queue, publish
//! the agent's pending count, wait for a person or the timeout, and mark it abandoned if
//! the waiting call goes away first.

use crate::store::AgentKey;
use agenfleet_protocol::policy::{EscalationState, EscalationView};
use agenfleet_protocol::ApiError;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
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

#[derive(Default)]
struct Inner {
    pending: BTreeMap<u64, (EscalationView, Option<oneshot::Sender<Resolution>>)>,
    done: VecDeque<EscalationView>,
    approvals: HashMap<(AgentKey, String), Approval>,
}

/// How a wait for a person ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A person approved or denied it.
    Decided(Resolution),
    /// Nobody decided within the policy's timeout.
    TimedOut,
}

/// Marks an escalation abandoned if its waiting call is dropped (the agent's connection
/// closed or its deadline passed) before anyone decided.
struct Abandon<'a, P: Fn(u32), A: FnOnce(u64)> {
    queue: &'a Escalations,
    id: u64,
    key: AgentKey,
    publish: &'a P,
    abandoned: Option<A>,
}

impl<P: Fn(u32), A: FnOnce(u64)> Drop for Abandon<'_, P, A> {
    fn drop(&mut self) {
        let Some(abandoned) = self.abandoned.take() else {
            return;
        };
        if self
            .queue
            .finish(self.id, EscalationState::Abandoned)
            .is_some()
        {
            (self.publish)(self.queue.pending_for(&self.key));
            abandoned(self.id);
        }
    }
}

pub struct Escalations {
    inner: Mutex<Inner>,
    approval_ttl_ms: u64,
}

fn key_of(v: &EscalationView) -> AgentKey {
    AgentKey {
        tenant: v.tenant.clone(),
        name: v.agent.clone(),
    }
}

impl Escalations {
    pub fn new(approval_ttl_ms: u64) -> Escalations {
        Escalations {
            inner: Mutex::new(Inner::default()),
            approval_ttl_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `view` and waits up to `timeout` for a person's decision. `publish` hears
    /// the agent's pending count whenever it changes; `abandoned` runs (once, with the id)
    /// if this future is dropped while the escalation still waits.
    pub async fn wait<P, A>(
        &self,
        view: EscalationView,
        timeout: Duration,
        publish: P,
        abandoned: A,
    ) -> Outcome
    where
        P: Fn(u32),
        A: FnOnce(u64),
    {
        let key = key_of(&view);
        let id = view.id;
        let rx = self.open(view);
        let mut guard = Abandon {
            queue: self,
            id,
            key: key.clone(),
            publish: &publish,
            abandoned: Some(abandoned),
        };
        publish(self.pending_for(&key));
        let waited = tokio::time::timeout(timeout, rx).await;
        guard.abandoned = None;
        let out = match waited {
            Ok(Ok(res)) => Outcome::Decided(res),
            // Timed out, or ended elsewhere without a decision for this caller.
            _ => {
                self.finish(id, EscalationState::TimedOut);
                Outcome::TimedOut
            }
        };
        publish(self.pending_for(&key));
        out
    }

    /// Queues an escalation; the receiver hears the person's decision.
    fn open(&self, view: EscalationView) -> oneshot::Receiver<Resolution> {
        let (tx, rx) = oneshot::channel();
        self.lock().pending.insert(view.id, (view, Some(tx)));
        rx
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
        let Some((view, _)) = inner.pending.get(&id) else {
            return Err(match inner.done.iter().find(|v| v.id == id) {
                Some(v) => ApiError::precondition(format!(
                    "escalation {id} is already {} and cannot be decided again",
                    v.state
                )),
                None => ApiError::not_found(format!("no pending escalation {id}")),
            });
        };
        if view.request_hash != request_hash {
            return Err(ApiError::invalid(format!(
                "the decision names request {} but escalation {id} is for request {}: an approval is bound to one exact request",
                short(request_hash),
                short(&view.request_hash)
            )));
        }
        let Some((mut view, tx)) = inner.pending.remove(&id) else {
            return Err(ApiError::not_found(format!("no pending escalation {id}")));
        };
        let now = agenfleet_protocol::now_ms();
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
        if let Some(tx) = tx {
            // The agent may have gone; its guard then marked nothing (we removed it first).
            let _ = tx.send(res);
        }
        push_done(&mut inner, view.clone());
        Ok(view)
    }

    /// Ends a still-pending escalation without a person (timeout, agent gone).
    pub fn finish(&self, id: u64, state: EscalationState) -> Option<EscalationView> {
        let mut inner = self.lock();
        let (mut view, _) = inner.pending.remove(&id)?;
        view.state = state;
        view.decided_ms = Some(agenfleet_protocol::now_ms());
        push_done(&mut inner, view.clone());
        Some(view)
    }

    /// A live approval of this exact request by this agent: (reviewer, escalation id).
    pub fn approval(&self, key: &AgentKey, request_hash: &str) -> Option<(String, u64)> {
        let mut inner = self.lock();
        let now = agenfleet_protocol::now_ms();
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
                .map(|(v, _)| v)
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
            .map(|(v, _)| v.clone())
            .or_else(|| inner.done.iter().find(|v| v.id == id).cloned())
    }

    /// How many escalations of this agent wait for a person.
    pub fn pending_for(&self, key: &AgentKey) -> u32 {
        self.lock()
            .pending
            .values()
            .filter(|(v, _)| v.tenant == key.tenant && v.agent == key.name)
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
            created_ms: 0,
            deadline_ms: u64::MAX,
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

    #[test]
    fn an_approval_is_bound_to_its_request_and_decided_once() {
        let q = Escalations::new(60_000);
        let mut rx = q.open(view(7, "aaaa"));
        let e = q.resolve(7, "bbbb", res(true)).unwrap_err();
        assert!(e.message.contains("bound to one exact request"), "{e}");
        assert!(
            rx.try_recv().is_err(),
            "a mismatched approval decides nothing"
        );
        assert_eq!(q.pending_for(&key_of(&view(7, ""))), 1);
        let v = q.resolve(7, "aaaa", res(true)).expect("approved");
        assert_eq!(v.state, EscalationState::Approved);
        assert!(rx.try_recv().expect("decision delivered").approved);
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

    #[test]
    fn approvals_expire_and_timeouts_end_pending_ones() {
        let q = Escalations::new(0);
        let _rx = q.open(view(1, "h"));
        q.resolve(1, "h", res(true)).expect("approved");
        assert!(
            q.approval(&key_of(&view(1, "h")), "h").is_none(),
            "expired at once"
        );
        let _rx = q.open(view(2, "h2"));
        let v = q.finish(2, EscalationState::TimedOut).expect("was pending");
        assert_eq!(v.state, EscalationState::TimedOut);
        assert!(q.finish(2, EscalationState::TimedOut).is_none());
        assert_eq!(q.list(true, |_| true).len(), 2);
        assert!(q.list(false, |_| true).is_empty());
    }

    /// Waits until `q` holds the escalation `id` in `state` (the waiter runs on the same
    /// single-threaded runtime, so yielding lets it move).
    async fn until_state(q: &Escalations, id: u64, state: EscalationState) {
        while q.get(id).map(|v| v.state) != Some(state) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn wait_hears_the_person_and_publishes_the_pending_count() {
        let q = std::sync::Arc::new(Escalations::new(60_000));
        let counts = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (q2, c2) = (q.clone(), counts.clone());
        let waiter = tokio::spawn(async move {
            q2.wait(
                view(3, "hh"),
                Duration::from_secs(3600),
                |n| c2.lock().unwrap().push(n),
                |_| panic!("a decided escalation is not abandoned"),
            )
            .await
        });
        until_state(&q, 3, EscalationState::Pending).await;
        q.resolve(3, "hh", res(true)).expect("approved");
        match waiter.await.expect("the waiter ends") {
            Outcome::Decided(r) => assert!(r.approved && r.reviewer == "alice"),
            Outcome::TimedOut => panic!("decided, not timed out"),
        }
        assert_eq!(*counts.lock().unwrap(), vec![1, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_to_a_denial_nobody_made() {
        let q = Escalations::new(60_000);
        let out = q
            .wait(view(4, "h"), Duration::from_millis(1500), |_| {}, |_| {})
            .await;
        assert!(matches!(out, Outcome::TimedOut));
        assert_eq!(q.get(4).unwrap().state, EscalationState::TimedOut);
        assert_eq!(q.pending_for(&key_of(&view(4, ""))), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_abandons_its_escalation_once() {
        let q = std::sync::Arc::new(Escalations::new(60_000));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let counts = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (q2, c2) = (q.clone(), counts.clone());
        let waiter = tokio::spawn(async move {
            q2.wait(
                view(5, "h"),
                Duration::from_secs(3600),
                |n| c2.lock().unwrap().push(n),
                move |id| tx.send(id).unwrap(),
            )
            .await
        });
        until_state(&q, 5, EscalationState::Pending).await;
        waiter.abort();
        assert_eq!(rx.recv().await, Some(5), "the abandon hook ran with the id");
        assert_eq!(q.get(5).unwrap().state, EscalationState::Abandoned);
        assert_eq!(*counts.lock().unwrap(), vec![1, 0]);
        assert!(
            q.resolve(5, "h", res(true)).is_err(),
            "nobody can approve an abandoned call"
        );
        assert_eq!(rx.recv().await, None, "the hook ran once");
    }
}
