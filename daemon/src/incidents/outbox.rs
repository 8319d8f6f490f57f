//! The delivery outbox: every notification — an incident's event for a route, an
//! escalation's for its reviewers — is a row in SQLite (table `outbox`) before its first
//! attempt, with its body fixed then, and is retried from there until it is delivered
//! (the row goes) or given up (the row stays, `failed`, and says why). A daemon restart
//! loads the pending rows and goes on where it stopped; attempts keep counting.
//!
//! One worker per route. Events of one incident (or escalation) go out in order, one at
//! a time; different ones go out together, up to `CONCURRENCY`. When a route fails, the
//! route backs off (1 s doubling to 60 s) and tries only its oldest event until the
//! receiver answers again — a receiver that is down costs one attempt per backoff step,
//! not one per waiting event — then drains at full speed.

use super::deliver::{backoff, Route};
use crate::store::Store;
use agenfleet_protocol::incidents::OutboxRow;
use agenfleet_protocol::{now_ms, ApiError};
use rusqlite::params;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

/// Events in flight per route.
const CONCURRENCY: usize = 32;

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Incident,
    Escalation,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Incident => "incident",
            Kind::Escalation => "escalation",
        }
    }
    fn parse(s: &str) -> Kind {
        if s == "escalation" {
            Kind::Escalation
        } else {
            Kind::Incident
        }
    }
}

/// A notification to queue.
pub struct New {
    pub route: usize,
    pub kind: Kind,
    pub ref_id: u64,
    pub event: String,
    pub tenant: Option<String>,
    pub body: Vec<u8>,
    /// Variables for a command route (what the event is about; nothing secret).
    pub env: Vec<(String, String)>,
}

#[derive(Clone)]
struct Item {
    id: i64,
    kind: Kind,
    ref_id: u64,
    event: String,
    tenant: Option<String>,
    body: Arc<Vec<u8>>,
    env: Arc<Vec<(String, String)>>,
    attempts: u32,
    created_ms: u64,
}

/// How one attempt went, for the owner of what it is about.
#[derive(Debug, Clone)]
pub struct Report {
    pub route: usize,
    pub kind: Kind,
    pub ref_id: u64,
    pub event: String,
    pub tenant: Option<String>,
    pub attempt: u32,
    pub ok: bool,
    pub detail: String,
    /// The last attempt failed and no more will be made.
    pub gave_up: bool,
}

impl Report {
    pub fn kind_str(&self) -> &'static str {
        self.kind.as_str()
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Failures in a row; the route waits `backoff(failures)` after the last.
    failures: u32,
    next_try_ms: u64,
}

type Reporter = Box<dyn Fn(Report) + Send + Sync>;

pub struct Outbox {
    store: Store,
    routes: Arc<Vec<Route>>,
    queues: Vec<Mutex<Queue>>,
    wake: Vec<tokio::sync::Notify>,
    reporter: OnceLock<Reporter>,
}

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("delivery outbox: {e}"))
}

impl Outbox {
    /// Loads the pending rows (rows of a route no longer configured are marked failed,
    /// saying so) and starts one worker per route; `report` hears every attempt.
    pub fn open(
        store: Store,
        routes: Arc<Vec<Route>>,
        report: Reporter,
    ) -> Result<Arc<Outbox>, String> {
        type Loaded = (
            i64,
            String,
            String,
            i64,
            String,
            Option<String>,
            Vec<u8>,
            String,
            i64,
            i64,
        );
        let rows: Vec<Loaded> = store
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT id, route, kind, ref_id, event, tenant_id, body, env_json, attempts, created_ms
                     FROM outbox WHERE state = 'pending' ORDER BY id",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                })?;
                rows.collect()
            })
            .map_err(|e| format!("cannot read the delivery outbox: {e}"))?;
        let mut queues: Vec<Queue> = routes.iter().map(|_| Queue::default()).collect();
        let mut orphans = Vec::new();
        for (id, route, kind, ref_id, event, tenant, body, env, attempts, created) in rows {
            let Some(idx) = routes.iter().position(|r| r.name == route) else {
                orphans.push(id);
                continue;
            };
            queues[idx].items.push_back(Item {
                id,
                kind: Kind::parse(&kind),
                ref_id: ref_id as u64,
                event,
                tenant,
                body: Arc::new(body),
                env: Arc::new(serde_json::from_str(&env).unwrap_or_default()),
                attempts: attempts as u32,
                created_ms: created as u64,
            });
        }
        if !orphans.is_empty() {
            tracing::warn!(
                n = orphans.len(),
                "pending deliveries name a route that is no longer configured; marked failed"
            );
            store
                .with(|c| {
                    let tx = c.transaction()?;
                    for id in &orphans {
                        tx.execute(
                            "UPDATE outbox SET state = 'failed', last_error = 'its route is no longer configured', updated_ms = ?2 WHERE id = ?1",
                            params![id, now_ms() as i64],
                        )?;
                    }
                    tx.commit()
                })
                .map_err(|e| format!("cannot update the delivery outbox: {e}"))?;
        }
        let pending: usize = queues.iter().map(|q| q.items.len()).sum();
        if pending > 0 {
            tracing::info!(pending, "deliveries resumed from the outbox");
        }
        let me = Arc::new(Outbox {
            store,
            wake: routes.iter().map(|_| tokio::sync::Notify::new()).collect(),
            routes,
            queues: queues.into_iter().map(Mutex::new).collect(),
            reporter: OnceLock::new(),
        });
        let _ = me.reporter.set(report);
        for idx in 0..me.routes.len() {
            let weak = Arc::downgrade(&me);
            tokio::spawn(async move { work(weak, idx).await });
        }
        Ok(me)
    }

    fn queue(&self, idx: usize) -> std::sync::MutexGuard<'_, Queue> {
        self.queues[idx].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `items` (one transaction) and hands them to their routes' workers. Answers
    /// once they are durable.
    pub fn enqueue(&self, items: Vec<New>) -> Result<(), ApiError> {
        if items.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let ids: Vec<i64> = self
            .store
            .with(|c| {
                let tx = c.transaction()?;
                let mut ids = Vec::with_capacity(items.len());
                for n in &items {
                    let route = self.routes.get(n.route).map(|r| r.name.as_str()).unwrap_or("");
                    tx.execute(
                        "INSERT INTO outbox (route, kind, ref_id, event, tenant_id, body, env_json, attempts, state, last_error, created_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 'pending', '', ?8, ?8)",
                        params![
                            route,
                            n.kind.as_str(),
                            n.ref_id as i64,
                            n.event,
                            n.tenant,
                            n.body,
                            serde_json::to_string(&n.env).unwrap_or_default(),
                            now as i64
                        ],
                    )?;
                    ids.push(tx.last_insert_rowid());
                }
                tx.commit()?;
                Ok(ids)
            })
            .map_err(store_err)?;
        for (n, id) in items.into_iter().zip(ids) {
            if n.route >= self.queues.len() {
                continue;
            }
            self.queue(n.route).items.push_back(Item {
                id,
                kind: n.kind,
                ref_id: n.ref_id,
                event: n.event,
                tenant: n.tenant,
                body: Arc::new(n.body),
                env: Arc::new(n.env),
                attempts: 0,
                created_ms: now,
            });
            self.wake[n.route].notify_one();
        }
        Ok(())
    }

    /// Events waiting, over every route (metrics).
    pub fn pending(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.lock().map(|q| q.items.len()).unwrap_or(0))
            .sum()
    }

    /// The rows kept: pending ones and the ones given up (newest first, up to `limit`).
    pub fn rows(&self, limit: usize) -> Result<Vec<OutboxRow>, ApiError> {
        self.store
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT id, route, kind, ref_id, event, tenant_id, state, attempts, last_error, created_ms
                     FROM outbox ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = st.query_map(params![limit as i64], |r| {
                    Ok(OutboxRow {
                        id: r.get::<_, i64>(0)? as u64,
                        route: r.get(1)?,
                        kind: r.get(2)?,
                        ref_id: r.get::<_, i64>(3)? as u64,
                        event: r.get(4)?,
                        tenant: r.get(5)?,
                        state: r.get(6)?,
                        attempts: r.get::<_, i64>(7)? as u32,
                        last_error: r.get(8)?,
                        created_ms: r.get::<_, i64>(9)? as u64,
                    })
                })?;
                rows.collect()
            })
            .map_err(store_err)
    }

    /// Stores the outcome of a round of attempts (one transaction): delivered rows go,
    /// failed ones count the attempt, given-up ones stay as `failed` with the reason.
    fn settle(&self, done: &[(Item, Result<String, String>, bool)]) {
        let now = now_ms() as i64;
        let res = self.store.with(|c| {
            let tx = c.transaction()?;
            for (item, res, gave_up) in done {
                match res {
                    Ok(_) => {
                        tx.execute("DELETE FROM outbox WHERE id = ?1", params![item.id])?;
                    }
                    Err(e) => {
                        tx.execute(
                            "UPDATE outbox SET attempts = ?2, last_error = ?3, state = ?4, updated_ms = ?5 WHERE id = ?1",
                            params![
                                item.id,
                                item.attempts as i64,
                                e,
                                if *gave_up { "failed" } else { "pending" },
                                now
                            ],
                        )?;
                    }
                }
            }
            tx.commit()
        });
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot update the delivery outbox");
        }
    }
}

/// Picks the next round: while the route is healthy, up to `CONCURRENCY` events, at most
/// one per incident or escalation (its later events wait their turn); while it fails,
/// only the oldest (a probe).
fn next_round(q: &Queue) -> Vec<Item> {
    let limit = if q.failures > 0 { 1 } else { CONCURRENCY };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in &q.items {
        if out.len() >= limit {
            break;
        }
        if seen.insert((item.kind, item.ref_id)) {
            out.push(item.clone());
        }
    }
    out
}

async fn work(me: std::sync::Weak<Outbox>, idx: usize) {
    loop {
        let Some(this) = me.upgrade() else { return };
        let (round, wait_ms) = {
            let q = this.queue(idx);
            let now = now_ms();
            if q.items.is_empty() {
                (Vec::new(), None)
            } else if q.next_try_ms > now {
                (Vec::new(), Some(q.next_try_ms - now))
            } else {
                (next_round(&q), None)
            }
        };
        if round.is_empty() {
            match wait_ms {
                Some(ms) => {
                    drop(this);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                None => {
                    // A permit from `enqueue` is kept if it came before this wait.
                    let notified = async {
                        this.wake[idx].notified().await;
                    };
                    notified.await;
                }
            }
            continue;
        }
        let route = &this.routes[idx];
        let attempts = round.iter().map(|item| {
            let env: Vec<(&str, String)> = item
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let body = item.body.clone();
            async move { route.attempt(&body, &env).await }
        });
        let results = futures::future::join_all(attempts).await;
        let now = now_ms();
        let mut done = Vec::with_capacity(round.len());
        for (mut item, res) in round.into_iter().zip(results) {
            item.attempts += 1;
            let gave_up = res.is_err()
                && ((route.max_attempts > 0 && item.attempts >= route.max_attempts)
                    || now.saturating_sub(item.created_ms) >= super::deliver::GIVE_UP_MS);
            done.push((item, res, gave_up));
        }
        this.settle(&done);
        {
            let mut q = this.queue(idx);
            let any_ok = done.iter().any(|(_, r, _)| r.is_ok());
            let gone: HashSet<i64> = done
                .iter()
                .filter(|(_, res, gave_up)| res.is_ok() || *gave_up)
                .map(|(item, _, _)| item.id)
                .collect();
            let tried: std::collections::HashMap<i64, u32> = done
                .iter()
                .map(|(item, _, _)| (item.id, item.attempts))
                .collect();
            // One pass over the queue per round (not one per event).
            q.items.retain_mut(|i| {
                if let Some(n) = tried.get(&i.id) {
                    i.attempts = *n;
                }
                !gone.contains(&i.id)
            });
            if any_ok {
                q.failures = 0;
                q.next_try_ms = 0;
            } else {
                q.failures = q.failures.saturating_add(1);
                q.next_try_ms = now_ms() + backoff(q.failures).as_millis() as u64;
            }
        }
        if let Some(report) = this.reporter.get() {
            for (item, res, gave_up) in done {
                let ok = res.is_ok();
                let detail = match res {
                    Ok(d) | Err(d) => format!("{}: {d}", item.event),
                };
                report(Report {
                    route: idx,
                    kind: item.kind,
                    ref_id: item.ref_id,
                    event: item.event,
                    tenant: item.tenant,
                    attempt: item.attempts,
                    ok,
                    detail,
                    gave_up,
                });
            }
        }
    }
}
