//! Runs: units of work handed to agents. A run is created queued (by the CLI or the API
//! today; webhooks and schedules come next), handed to its agent when the agent asks for
//! one (`GET /v1/runs/next` on its local API) and has fewer than its spec's
//! `runs.max_concurrent` running, and ends when the agent posts its result, when its
//! `runs.timeout_secs` pass (timed out), when an operator cancels it, or — for a run that
//! was running — when the daemon restarts (failed: interrupted; its agent can no longer
//! answer it). Queued runs wait across a restart.
//!
//! Every change is written to the store (the run's tenant's rows: a dedicated tenant's
//! runs live in its own file) before it is answered, and each run's end is recorded in
//! the audit log (`run.end`) before it is made: an end that cannot be recorded does not
//! happen. Nothing polls: an agent waiting for a run, and a caller waiting for a run's
//! end, are woken by the change itself; each running run's timeout is one timer.

use crate::audit::AuditLog;
use crate::store::{AgentKey, Store, StoreError};
use agenfleet_protocol::runs::{RunQuery, RunState, RunView, MAX_RUN_INPUT, MAX_RUN_RESULT};
use agenfleet_protocol::{now_ms, ApiError, AuditEvent, RunsSpec};
use rusqlite::{params, OptionalExtension};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

#[cfg(test)]
mod tests;

/// A run asked for (`Runs::start_recorded`).
pub struct StartRequest<'a> {
    pub key: &'a AgentKey,
    pub project: &'a str,
    /// `cli`, `webhook`, `schedule`.
    pub trigger: &'a str,
    /// Who asked (the operator, or `trigger ID`): the run's and its records' actor.
    pub requested_by: &'a str,
    pub input: &'a str,
    /// More for the records' detail (a subscription, a catch-up…).
    pub extra: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Runs not ended yet, by id.
    open: BTreeMap<u64, RunView>,
    /// Each agent's queued runs, oldest first.
    queues: HashMap<AgentKey, VecDeque<u64>>,
    /// Runs whose end is being recorded: one end per run (a timeout racing a result,
    /// say, leaves one `run.end` record, not two).
    ending: std::collections::HashSet<u64>,
}

pub struct Runs {
    store: Store,
    audit: AuditLog,
    inner: Mutex<Inner>,
    /// Woken on every change: agents waiting for a run, callers waiting for an end.
    changed: Notify,
}

const COLUMNS: &str = "id, tenant_id, project, agent, trigger, requested_by, state, input_json,
    result_json, error, created_ms, started_ms, ended_ms, deadline_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunView> {
    let state: String = r.get(6)?;
    let opt = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
    };
    Ok(RunView {
        id: r.get::<_, i64>(0)? as u64,
        tenant: r.get(1)?,
        project: r.get(2)?,
        agent: r.get(3)?,
        trigger: r.get(4)?,
        requested_by: r.get(5)?,
        // An unknown state reads as failed (a newer daemon's, say): never as open.
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        input_json: r.get(7)?,
        result_json: r.get(8)?,
        error: r.get(9)?,
        created_ms: r.get::<_, i64>(10)?.max(0) as u64,
        started_ms: opt(11)?,
        ended_ms: opt(12)?,
        deadline_ms: opt(13)?,
    })
}

/// The agent a run is for.
pub fn key_of(v: &RunView) -> AgentKey {
    AgentKey {
        tenant: v.tenant.clone(),
        name: v.agent.clone(),
    }
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the run: {e}"))
}

impl Runs {
    pub fn new(store: Store, audit: AuditLog) -> Runs {
        Runs {
            store,
            audit,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the runs that had not ended: queued ones wait again; running ones end as
    /// failed (interrupted), recorded — but those `keep` names (a job's, whose container
    /// may still run: `runtime/jobs.rs` adopts or ends them once the engine answers) stay
    /// running, their timeout armed again. Answers (queued, interrupted).
    pub async fn recover(
        self: &Arc<Self>,
        keep: impl Fn(&RunView) -> bool,
    ) -> Result<(usize, usize), ApiError> {
        let top: u64 = self
            .store
            .rows_everywhere("SELECT COALESCE(MAX(id), 0) FROM runs", &[], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(store_err)?
            .into_iter()
            .max()
            .unwrap_or(0)
            .max(0) as u64;
        let open = self
            .store
            .rows_everywhere(
                &format!(
                    "SELECT {COLUMNS} FROM runs WHERE state IN ('queued', 'running') ORDER BY id"
                ),
                &[],
                row,
            )
            .map_err(store_err)?;
        let mut interrupted = Vec::new();
        let mut kept = Vec::new();
        {
            let mut inner = self.lock();
            inner.next_id = top + 1;
            for v in open {
                match v.state {
                    RunState::Queued => {
                        inner.queues.entry(key_of(&v)).or_default().push_back(v.id);
                        inner.open.insert(v.id, v);
                    }
                    _ if keep(&v) => {
                        kept.push((v.id, v.deadline_ms.unwrap_or(0)));
                        inner.open.insert(v.id, v);
                    }
                    _ => {
                        inner.open.insert(v.id, v.clone());
                        interrupted.push(v);
                    }
                }
            }
        }
        for (id, deadline_ms) in kept {
            self.arm_timeout(id, deadline_ms);
        }
        let queued = self.lock().queues.values().map(|q| q.len()).sum();
        for v in &interrupted {
            self.end(
                v.id,
                None,
                RunState::Failed,
                None,
                Some("interrupted: the daemon stopped while the run was running; its result can no longer be taken".into()),
            )
            .await?;
        }
        Ok((queued, interrupted.len()))
    }

    /// Queues a run as `r` asks, recorded: `run.start` requested before it is queued (a
    /// run that cannot be recorded is not started), then its outcome with the run's id.
    /// The operator socket's `runs_start` and the triggers both start runs this way.
    pub async fn start_recorded(&self, r: StartRequest<'_>) -> Result<RunView, ApiError> {
        let spec = self
            .store
            .agent_spec(r.key)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map(|s| s.runs)
            .ok_or_else(|| ApiError::not_found(format!("no agent {}", r.key)))?;
        let detail = |run: Option<u64>| {
            let mut d = serde_json::json!({
                "run": run,
                "trigger": r.trigger,
                "input_bytes": r.input.len(),
                "input_sha256": hex::encode(sha2::Sha256::digest(r.input.as_bytes())),
            });
            if let (Some(o), Some(e)) = (d.as_object_mut(), r.extra.as_object()) {
                o.extend(e.clone());
            }
            d.to_string()
        };
        let ev = |outcome: &str, detail: String| AuditEvent {
            actor: r.requested_by.to_string(),
            action: "run.start".into(),
            tenant: Some(r.key.tenant.clone()),
            agent: Some(r.key.name.clone()),
            outcome: outcome.into(),
            detail,
        };
        self.audit
            .record(&ev("requested", detail(None)))
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "{e}; refusing to start a run without an audit record"
                ))
            })?;
        let queued = self.start(r.key, r.project, &spec, r.trigger, r.requested_by, r.input);
        let (outcome, text) = match &queued {
            Ok(v) => ("ok", detail(Some(v.id))),
            Err(e) => ("failed", e.message.clone()),
        };
        if let Err(e) = self.audit.record(&ev(outcome, text)).await {
            tracing::error!(error = %e, "cannot record the outcome of run.start");
        }
        queued
    }

    /// Queues a run of `key` (whose spec says how it takes runs); recorded by the caller.
    pub fn start(
        &self,
        key: &AgentKey,
        project: &str,
        spec: &RunsSpec,
        trigger: &str,
        requested_by: &str,
        input_json: &str,
    ) -> Result<RunView, ApiError> {
        if input_json.len() > MAX_RUN_INPUT {
            return Err(ApiError::invalid(format!(
                "the run's input is {} bytes; at most {MAX_RUN_INPUT}",
                input_json.len()
            )));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(input_json) {
            return Err(ApiError::invalid(format!(
                "the run's input is not JSON: {e}"
            )));
        }
        let mut inner = self.lock();
        let waiting = inner.queues.get(key).map(|q| q.len()).unwrap_or(0);
        if waiting >= spec.queue as usize {
            return Err(ApiError::precondition(format!(
                "{key} has {waiting} runs waiting, its queue's limit (runs.queue = {}): try again later",
                spec.queue
            )));
        }
        let v = RunView {
            id: inner.next_id,
            tenant: key.tenant.clone(),
            project: project.to_string(),
            agent: key.name.clone(),
            trigger: trigger.to_string(),
            requested_by: requested_by.to_string(),
            state: RunState::Queued,
            input_json: input_json.to_string(),
            result_json: None,
            error: None,
            created_ms: now_ms(),
            started_ms: None,
            ended_ms: None,
            deadline_ms: None,
        };
        // Written before it is answered (under the lock: ids stay in order on disk).
        self.insert(&v).map_err(store_err)?;
        inner.next_id += 1;
        inner.queues.entry(key.clone()).or_default().push_back(v.id);
        inner.open.insert(v.id, v.clone());
        drop(inner);
        self.changed.notify_waiters();
        Ok(v)
    }

    fn insert(&self, v: &RunView) -> Result<(), StoreError> {
        self.store.tenant(&v.tenant).with(|c| {
            c.execute(
                "INSERT INTO t_runs (id, project, agent, trigger, requested_by, state, input_json, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    v.id as i64,
                    v.project,
                    v.agent,
                    v.trigger,
                    v.requested_by,
                    v.state.as_str(),
                    v.input_json,
                    v.created_ms as i64
                ],
            )
        })?;
        Ok(())
    }

    fn save(&self, v: &RunView) -> Result<(), StoreError> {
        let opt = |x: Option<u64>| x.map(|v| v as i64);
        self.store.tenant(&v.tenant).with(|c| {
            c.execute(
                "UPDATE t_runs SET state = ?2, result_json = ?3, error = ?4, started_ms = ?5,
                    ended_ms = ?6, deadline_ms = ?7 WHERE id = ?1",
                params![
                    v.id as i64,
                    v.state.as_str(),
                    v.result_json,
                    v.error,
                    opt(v.started_ms),
                    opt(v.ended_ms),
                    opt(v.deadline_ms)
                ],
            )
        })?;
        Ok(())
    }

    /// Hands `key` its oldest queued run if it runs fewer than `spec.max_concurrent`,
    /// waiting up to `wait` for one; None when none came.
    pub async fn next(
        self: &Arc<Self>,
        key: &AgentKey,
        spec: &RunsSpec,
        wait: Duration,
    ) -> Result<Option<RunView>, ApiError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(v) = self.take(key, spec)? {
                return Ok(Some(v));
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Hands `key` its oldest queued run if it runs fewer than `spec.max_concurrent`
    /// (None: nothing to hand now). The job dispatcher's way in; agents wait in `next`.
    pub fn take(
        self: &Arc<Self>,
        key: &AgentKey,
        spec: &RunsSpec,
    ) -> Result<Option<RunView>, ApiError> {
        let mut inner = self.lock();
        let running = inner
            .open
            .values()
            .filter(|v| v.state == RunState::Running && key_of(v) == *key)
            .count();
        if running >= spec.max_concurrent as usize {
            return Ok(None);
        }
        let Some(id) = inner.queues.get(key).and_then(|q| q.front().copied()) else {
            return Ok(None);
        };
        let Some(mut v) = inner.open.get(&id).cloned() else {
            return Ok(None);
        };
        let now = now_ms();
        v.state = RunState::Running;
        v.started_ms = Some(now);
        v.deadline_ms = Some(now + spec.timeout_secs * 1000);
        self.save(&v).map_err(store_err)?;
        if let Some(q) = inner.queues.get_mut(key) {
            q.pop_front();
        }
        inner.open.insert(id, v.clone());
        drop(inner);
        self.arm_timeout(id, now + spec.timeout_secs * 1000);
        self.changed.notify_waiters();
        Ok(Some(v))
    }

    /// Its timeout: one timer for this run, ending it as timed out at `deadline_ms` if it
    /// still runs then.
    fn arm_timeout(self: &Arc<Self>, id: u64, deadline_ms: u64) {
        let me = self.clone();
        let after = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let (still, timeout_s) = {
                let inner = me.lock();
                match inner.open.get(&id) {
                    Some(v) if v.state == RunState::Running => (
                        true,
                        v.deadline_ms
                            .zip(v.started_ms)
                            .map(|(d, s)| d.saturating_sub(s) / 1000)
                            .unwrap_or(0),
                    ),
                    _ => (false, 0),
                }
            };
            if still {
                let why = format!("no result within {timeout_s} s (runs.timeout_secs)");
                if let Err(e) = me.end(id, None, RunState::TimedOut, None, Some(why)).await {
                    tracing::error!(run = id, error = %e.message, "cannot time out the run");
                }
            }
        });
    }

    /// Wakes whoever waits for a change (the job dispatcher, when a job agent can take
    /// runs again).
    pub fn poke(&self) {
        self.changed.notify_waiters();
    }

    /// What wakes a waiter on any change of the runs (enable it before looking).
    pub fn changes(&self) -> &Notify {
        &self.changed
    }

    /// Keeps a job run's output (JSON lines), before its end is recorded.
    pub fn save_logs(&self, tenant: &str, id: u64, logs_json: &str) -> Result<(), StoreError> {
        self.store.tenant(tenant).with(|c| {
            c.execute(
                "UPDATE t_runs SET logs_json = ?2 WHERE id = ?1",
                params![id as i64, logs_json],
            )
        })?;
        Ok(())
    }

    /// A run's kept output (None: none kept — a service agent's run, or not ended yet).
    pub fn logs(&self, tenant: &str, id: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .tenant(tenant)
            .with(|c| {
                c.query_row(
                    "SELECT logs_json FROM t_runs WHERE id = ?1",
                    params![id as i64],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()
            })?
            .flatten())
    }

    /// Ends run `id`: recorded (`run.end`), then stored. With `by`: only that agent's own
    /// running run (an agent posting its result). Answers the ended run.
    pub async fn end(
        &self,
        id: u64,
        by: Option<&AgentKey>,
        state: RunState,
        result_json: Option<String>,
        error: Option<String>,
    ) -> Result<RunView, ApiError> {
        if let Some(r) = &result_json {
            if r.len() > MAX_RUN_RESULT {
                return Err(ApiError::invalid(format!(
                    "the result is {} bytes; at most {MAX_RUN_RESULT}",
                    r.len()
                )));
            }
        }
        let current = {
            let mut inner = self.lock();
            let v = inner.open.get(&id).cloned();
            if v.is_some() && !inner.ending.insert(id) {
                return Err(ApiError::precondition(format!(
                    "run {id} is ending already"
                )));
            }
            v
        };
        let Some(v) = current else {
            return Err(match self.get(id).map_err(store_err)? {
                Some(v) if by.is_none_or(|k| *k == key_of(&v)) => ApiError::precondition(format!(
                    "run {id} has ended already ({}{})",
                    v.state,
                    v.error.map(|e| format!(": {e}")).unwrap_or_default()
                )),
                _ => ApiError::not_found(format!("no run {id}")),
            });
        };
        let ended = self.end_claimed(v, by, state, result_json, error).await;
        self.lock().ending.remove(&id);
        ended
    }

    /// `end` of a run this call has claimed.
    async fn end_claimed(
        &self,
        v: RunView,
        by: Option<&AgentKey>,
        state: RunState,
        result_json: Option<String>,
        error: Option<String>,
    ) -> Result<RunView, ApiError> {
        let id = v.id;
        if let Some(k) = by {
            // Another agent's run answers as unknown; a queued one was not handed out.
            if *k != key_of(&v) {
                return Err(ApiError::not_found(format!("no run {id}")));
            }
            if v.state != RunState::Running {
                return Err(ApiError::precondition(format!(
                    "run {id} is {}: it was not handed to you",
                    v.state
                )));
            }
        }
        let detail = serde_json::json!({
            "run": id,
            "state": state.as_str(),
            "trigger": v.trigger,
            "error": error,
            "result_bytes": result_json.as_ref().map(|r| r.len()),
        })
        .to_string();
        let ev = AuditEvent {
            actor: match by {
                Some(k) => format!("agent {k}"),
                None => "agenfleetd".into(),
            },
            action: "run.end".into(),
            tenant: Some(v.tenant.clone()),
            agent: Some(v.agent.clone()),
            outcome: match state {
                RunState::Succeeded => "ok",
                RunState::Cancelled => "cancelled",
                _ => "failed",
            }
            .into(),
            detail,
        };
        self.audit.record(&ev).await.map_err(|e| {
            ApiError::unavailable(format!(
                "{e}; the run's end cannot be recorded, so it is not made"
            ))
        })?;
        let mut inner = self.lock();
        // Claimed by this call, so still open.
        let Some(mut v) = inner.open.get(&id).cloned() else {
            return Err(ApiError::internal(format!(
                "run {id} vanished while ending"
            )));
        };
        v.state = state;
        v.result_json = result_json;
        v.error = error;
        v.ended_ms = Some(now_ms());
        self.save(&v).map_err(store_err)?;
        inner.open.remove(&id);
        if let Some(q) = inner.queues.get_mut(&key_of(&v)) {
            q.retain(|x| *x != id);
        }
        drop(inner);
        self.changed.notify_waiters();
        Ok(v)
    }

    /// Ends every open run of `key` as cancelled, saying `why` (its agent is deleted).
    pub async fn end_agent(&self, key: &AgentKey, why: &str) {
        let ids: Vec<u64> = self
            .lock()
            .open
            .values()
            .filter(|v| key_of(v) == *key)
            .map(|v| v.id)
            .collect();
        for id in ids {
            if let Err(e) = self
                .end(id, None, RunState::Cancelled, None, Some(why.to_string()))
                .await
            {
                tracing::error!(run = id, agent = %key, error = %e.message, "cannot end the run");
            }
        }
    }

    /// The runs `key` is running now, oldest first.
    pub fn running_of(&self, key: &AgentKey) -> Vec<u64> {
        self.lock()
            .open
            .values()
            .filter(|v| v.state == RunState::Running && key_of(v) == *key)
            .map(|v| v.id)
            .collect()
    }

    /// Whether run `id` has not ended yet.
    pub fn is_open(&self, id: u64) -> bool {
        self.lock().open.contains_key(&id)
    }

    /// The runs not ended yet, oldest first.
    pub fn open_runs(&self) -> Vec<RunView> {
        self.lock().open.values().cloned().collect()
    }

    /// The run `key` is working on, when it runs exactly one: its gateway calls (tool
    /// decisions, model and connection calls) are that run's. With several at once a call
    /// cannot be told apart, and is linked to none (a job's calls name their own run).
    pub fn current_of(&self, key: &AgentKey) -> Option<u64> {
        let inner = self.lock();
        let mut running = inner
            .open
            .values()
            .filter(|v| v.state == RunState::Running && key_of(v) == *key);
        let first = running.next()?.id;
        running.next().is_none().then_some(first)
    }

    /// How many runs asked for by `requested_by` are queued or running.
    pub fn open_by(&self, requested_by: &str) -> usize {
        self.lock()
            .open
            .values()
            .filter(|v| v.requested_by == requested_by)
            .count()
    }

    /// One run, from memory if open, else from the store.
    pub fn get(&self, id: u64) -> Result<Option<RunView>, StoreError> {
        if let Some(v) = self.lock().open.get(&id) {
            return Ok(Some(v.clone()));
        }
        Ok(self
            .store
            .rows_everywhere(
                &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
                &[&(id as i64)],
                row,
            )?
            .into_iter()
            .next())
    }

    /// Run `id` once it has ended, or as it is when `wait` is over.
    pub async fn wait_end(&self, id: u64, wait: Duration) -> Result<Option<RunView>, StoreError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let v = self.get(id)?;
            match &v {
                Some(r) if !r.state.ended() => {}
                _ => return Ok(v),
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return Ok(v);
            }
        }
    }

    /// Runs matching `q`, newest first (at most `q.limit`, 100 by default, 1000 at most),
    /// that `visible` lets the caller see.
    pub fn list(
        &self,
        q: &RunQuery,
        visible: impl Fn(&RunView) -> bool,
    ) -> Result<Vec<RunView>, StoreError> {
        let limit = match q.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let mut sql = format!("SELECT {COLUMNS} FROM runs WHERE created_ms >= ?1");
        if q.failed {
            sql.push_str(" AND state IN ('failed', 'timed-out')");
        }
        let (tenant, agent) = match &q.agent {
            Some(a) => (a.tenant.clone(), Some(a.name.clone())),
            None => (None, None),
        };
        sql.push_str(" AND (?2 IS NULL OR tenant_id = ?2) AND (?3 IS NULL OR agent = ?3)");
        sql.push_str(" ORDER BY id DESC LIMIT ?4");
        let since = q.since_ms.unwrap_or(0) as i64;
        // Each file gives its newest; the caller's view is cut after merging.
        let mut rows =
            self.store
                .rows_everywhere(&sql, &[&since, &tenant, &agent, &10_000i64], row)?;
        rows.sort_by_key(|v| std::cmp::Reverse(v.id));
        Ok(rows
            .into_iter()
            .filter(|v| visible(v))
            .take(limit)
            .collect())
    }
}
