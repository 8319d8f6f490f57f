//! Incidents: real signals in (see `detect`), incidents out — each one routed to the party
//! the responsibility matrix names (`matrix`), with a dedup key (a crash loop is one
//! incident with a count), a severity, evidence (audit sequence numbers), escalation steps
//! fixed when it fires, and delivery to the party's most specific routes (`deliver`)
//! through the durable outbox (`outbox`). Lifecycle: triggered → acknowledged → resolved,
//! and silenced (new signals counted, not delivered). Incidents live in SQLite (one row
//! each, written at once for operator actions and within 250 ms for signal counts) and are
//! published to the fleet state, so watchers see them. Escalated tool calls reach their
//! reviewers through the same outbox (`notify_reviewers`).

pub mod deliver;
pub mod detect;
pub mod hooks;
pub mod matrix;
pub mod outbox;

use crate::audit::AuditLog;
use crate::config::EscalationDelays;
use crate::fleet_state::FleetState;
use crate::store::{AgentKey, Store};
use agenfleet_protocol::incidents::{
    Delivery, EscalationStep, Incident, IncidentState, Matrix, OutboxRow, Party, RouteResolution,
    RoutesReport, Scenario, Severity,
};
use agenfleet_protocol::policy::EscalationView;
use agenfleet_protocol::{now_ms, ApiError, AuditEvent};
use deliver::Route;
use detect::{Detector, Raise, Signal};
use outbox::{Kind, Outbox, Report};
use rusqlite::params;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Evidence and delivery records kept per incident (the newest).
const KEEP_EVIDENCE: usize = 20;
const KEEP_DELIVERIES: usize = 30;
/// Resolved incidents loaded at start and kept in memory.
const KEEP_RESOLVED: usize = 500;

#[derive(Default)]
struct Inner {
    by_id: BTreeMap<u64, Incident>,
    open_by_key: HashMap<String, u64>,
    next_id: u64,
    dirty: HashSet<u64>,
}

pub struct Incidents {
    matrix: Matrix,
    store: Store,
    fleet: FleetState,
    audit: AuditLog,
    routes: Arc<Vec<Route>>,
    outbox: Arc<Outbox>,
    delays: EscalationDelays,
    inner: Mutex<Inner>,
    detector: Mutex<Detector>,
    /// The runs an agent (tenant, name) is working on now (set once the runs exist).
    runs_of: std::sync::OnceLock<RunsOf>,
}

/// Which runs an agent (tenant, name) is working on now.
pub type RunsOf = Box<dyn Fn(&str, &str) -> Vec<u64> + Send + Sync>;

/// Runs an incident keeps linked (the newest).
const KEEP_RUNS: usize = 20;

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("incident store: {e}"))
}

/// Folds another raise of the same dedup key into an open incident.
fn fold(i: &mut Incident, r: Raise, runs: Vec<u64>, now: u64) {
    for run in runs {
        if !i.runs.contains(&run) {
            i.runs.push(run);
        }
    }
    let n = i.runs.len();
    if n > KEEP_RUNS {
        i.runs.drain(..n - KEEP_RUNS);
    }
    i.count += 1;
    i.last_ms = now;
    i.summary = r.summary;
    i.evidence.extend(r.evidence);
    let n = i.evidence.len();
    if n > KEEP_EVIDENCE {
        i.evidence.drain(..n - KEEP_EVIDENCE);
    }
}

/// The configured routes, each checked and its secret and CA loaded; two with the same
/// name (given or made) are refused with both rows named.
pub fn build_routes(cfg: &crate::config::Config) -> Result<Vec<Route>, String> {
    let routes = cfg
        .incident_route
        .iter()
        .enumerate()
        .map(|(i, r)| Route::from_config(r).map_err(|e| format!("incident_route[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, r) in routes.iter().enumerate() {
        if let Some(j) = routes[..i].iter().position(|o| o.name == r.name) {
            return Err(format!(
                "incident_route[{i}]: it is named `{}` like incident_route[{j}]; give one a `name`",
                r.name
            ));
        }
    }
    Ok(routes)
}

/// The escalation steps of a new incident, from its severity, owners and the configured
/// delays (a delay of 0 is no step).
fn steps(
    d: &EscalationDelays,
    severity: Severity,
    party: Party,
    co_owners: &[Party],
) -> Vec<EscalationStep> {
    let step = |after_min: u64, notify: Party| EscalationStep {
        after_ms: after_min * 60_000,
        notify,
        done_ms: None,
    };
    let mut s = Vec::new();
    if severity == Severity::Info {
        return s;
    }
    s.push(step(0, party));
    for c in co_owners {
        s.push(step(0, *c));
    }
    let mut later = |mins: u64, p: Party| {
        if mins > 0 {
            s.push(step(mins, p));
        }
    };
    match severity {
        Severity::Critical => {
            later(d.critical_repeat_mins, party);
            if party != Party::Platform {
                later(d.critical_platform_mins, Party::Platform);
            }
        }
        Severity::Error => later(d.error_repeat_mins, party),
        Severity::Warning => later(d.warning_repeat_mins, party),
        Severity::Info => {}
    }
    s.sort_by_key(|x| x.after_ms);
    s
}

impl Incidents {
    /// Opens with the matrix (built-in + the operator's, loaded by `prepare`), the routes
    /// and the stored incidents.
    pub fn open(
        cfg: &crate::config::Config,
        matrix: Matrix,
        store: Store,
        fleet: FleetState,
        audit: AuditLog,
    ) -> Result<Arc<Incidents>, String> {
        let routes = Arc::new(build_routes(cfg)?);
        let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
        let outbox = Outbox::open(
            store.clone(),
            routes.clone(),
            Box::new(move |r| {
                let _ = report_tx.send(r);
            }),
        )?;
        // Every file's (a dedicated tenant's incidents are in its own): the open ones and
        // the newest resolved ones, with the highest id each file holds.
        let files: Vec<(Vec<(i64, String)>, i64)> = store
            .each(|c| {
                let mut st = c.prepare(
                    "SELECT id, body_json FROM incidents WHERE state != 'resolved'
                     UNION ALL
                     SELECT id, body_json FROM (SELECT id, body_json FROM incidents WHERE state = 'resolved' ORDER BY id DESC LIMIT ?1)",
                )?;
                let rows: rusqlite::Result<Vec<(i64, String)>> = st
                    .query_map(params![KEEP_RESOLVED as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect();
                let top: i64 =
                    c.query_row("SELECT COALESCE(MAX(id), 0) FROM incidents", [], |r| r.get(0))?;
                Ok((rows?, top))
            })
            .map_err(|e| e.to_string())?;
        // Past every incident kept, and every one removed by retention (never reused).
        let floor: i64 = store
            .with(|c| {
                c.query_row(
                    "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'incident_id_floor'), 0)",
                    [],
                    |r| r.get(0),
                )
            })
            .map_err(|e| e.to_string())?;
        let max_id = files.iter().map(|f| f.1).fold(floor, i64::max);
        let mut rows: Vec<(i64, String)> = files.into_iter().flat_map(|f| f.0).collect();
        rows.sort_by_key(|r| r.0);
        let rows: Vec<String> = rows.into_iter().map(|r| r.1).collect();
        let mut inner = Inner {
            next_id: max_id as u64 + 1,
            ..Default::default()
        };
        for body in rows {
            let inc: Incident = serde_json::from_str(&body)
                .map_err(|e| format!("a stored incident does not parse: {e}"))?;
            if inc.state != IncidentState::Resolved {
                inner.open_by_key.insert(inc.dedup_key.clone(), inc.id);
            }
            fleet.upsert_incident(inc.clone());
            inner.by_id.insert(inc.id, inc);
        }
        let detector = Detector::new(
            cfg.crash_loop_exits,
            cfg.crash_loop_window_secs * 1000,
            cfg.denial_spike,
            cfg.denial_window_secs * 1000,
        );
        let me = Arc::new(Incidents {
            matrix,
            store,
            fleet,
            audit,
            routes,
            outbox,
            delays: cfg.escalation.clone(),
            inner: Mutex::new(inner),
            detector: Mutex::new(detector),
            runs_of: std::sync::OnceLock::new(),
        });
        // Open incidents keep their escalation schedule across restarts.
        let open: Vec<u64> = me.lock().open_by_key.values().copied().collect();
        for id in open {
            me.schedule_steps(id);
        }
        let reports = Arc::downgrade(&me);
        tokio::spawn(async move {
            while let Some(r) = report_rx.recv().await {
                let Some(me) = reports.upgrade() else { return };
                me.reported(r).await;
            }
        });
        if cfg.incident_retention_days > 0.0 {
            let keep_ms = (cfg.incident_retention_days * 86_400_000.0) as u64;
            // Often enough that nothing outlives its promise by more than a quarter of it
            // (at most an hour late).
            let every = Duration::from_millis((keep_ms / 4).clamp(1_000, 3_600_000));
            let pruner = Arc::downgrade(&me);
            tokio::spawn(async move {
                loop {
                    let Some(me) = pruner.upgrade() else { return };
                    me.prune(keep_ms).await;
                    drop(me);
                    tokio::time::sleep(every).await;
                }
            });
        }
        let flusher = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(me) = flusher.upgrade() else { return };
                if let Err(e) = me.flush() {
                    tracing::error!(error = %e.message, "cannot store incidents");
                }
            }
        });
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn matrix(&self) -> &Matrix {
        &self.matrix
    }

    fn scenario_for_signal(&self, signal: &str) -> Option<&Scenario> {
        self.matrix.scenarios.iter().find(|s| s.signal == signal)
    }

    pub fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.matrix.scenarios.iter().find(|s| s.id == id)
    }

    pub fn get(&self, id: u64) -> Option<Incident> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Every incident kept, newest first, for which `visible` holds.
    pub fn list(&self, all: bool, visible: impl Fn(&Incident) -> bool) -> Vec<Incident> {
        self.lock()
            .by_id
            .values()
            .rev()
            .filter(|i| all || i.state != IncidentState::Resolved)
            .filter(|i| visible(i))
            .cloned()
            .collect()
    }

    /// Writes the incidents changed since the last flush, in one transaction.
    pub fn flush(&self) -> Result<(), ApiError> {
        let rows: Vec<(u64, String, String, Option<String>, String)> = {
            let mut inner = self.lock();
            let ids: Vec<u64> = inner.dirty.drain().collect();
            ids.iter()
                .filter_map(|id| inner.by_id.get(id))
                .map(|i| {
                    (
                        i.id,
                        i.dedup_key.clone(),
                        i.state.to_string(),
                        i.tenant.clone(),
                        serde_json::to_string(i).unwrap_or_default(),
                    )
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_ms() as i64;
        // Each incident is kept with its tenant's rows: one transaction per file.
        let mut by_tenant: std::collections::BTreeMap<Option<String>, Vec<_>> = Default::default();
        for row in rows {
            by_tenant.entry(row.3.clone()).or_default().push(row);
        }
        for (tenant, rows) in by_tenant {
            self.store
                .with_rows_of(tenant.as_deref(), |c| {
                    let tx = c.transaction()?;
                    for (id, key, state, tenant, body) in &rows {
                        tx.execute(
                            "INSERT INTO incidents (id, dedup_key, state, tenant_id, body_json, updated_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT(id) DO UPDATE SET state = ?3, body_json = ?5, updated_ms = ?6",
                            params![*id as i64, key, state, tenant, body, now],
                        )?;
                    }
                    tx.commit()
                })
                .map_err(store_err)?;
        }
        Ok(())
    }

    /// Removes incidents resolved more than `keep_ms` ago, from the store and from what
    /// is shown, and failed deliveries as old; records how many went.
    async fn prune(&self, keep_ms: u64) {
        let cutoff = now_ms().saturating_sub(keep_ms) as i64;
        let gone: Vec<u64> = {
            let mut inner = self.lock();
            let ids: Vec<u64> = inner
                .by_id
                .values()
                .filter(|i| {
                    i.state == IncidentState::Resolved
                        && i.resolved_ms.is_some_and(|t| (t as i64) < cutoff)
                })
                .map(|i| i.id)
                .collect();
            for id in &ids {
                inner.by_id.remove(id);
                inner.dirty.remove(id);
            }
            ids
        };
        self.fleet.forget_incidents(&gone);
        let ids_json = serde_json::to_string(&gone).unwrap_or_default();
        // Every file's (a dedicated tenant's incidents are in its own).
        let deleted = self
            .store
            .each(|c| {
                let tx = c.transaction()?;
                // Resolved incidents are stored with their resolution in the body; the
                // row's update time is the resolution's (a resolved incident no longer
                // changes). Removed: resolved rows last written before the cutoff, and
                // those the memory judged by their resolution time (a later delivery
                // record may have touched their row since).
                let top: Option<i64> = tx.query_row(
                    "SELECT MAX(id) FROM incidents WHERE state = 'resolved' AND (updated_ms < ?1 OR id IN (SELECT value FROM json_each(?2)))",
                    params![cutoff, ids_json],
                    |r| r.get(0),
                )?;
                let n = tx.execute(
                    "DELETE FROM incidents WHERE state = 'resolved' AND (updated_ms < ?1 OR id IN (SELECT value FROM json_each(?2)))",
                    params![cutoff, ids_json],
                )?;
                tx.commit()?;
                Ok((top, n))
            })
            .and_then(|files| {
                let top = files.iter().filter_map(|f| f.0).max();
                let n: usize = files.iter().map(|f| f.1).sum();
                self.store.with(|c| {
                    let tx = c.transaction()?;
                    // Ids are never given again: the highest removed stays as a floor.
                    if let Some(top) = top {
                        tx.execute(
                            "INSERT INTO meta (key, value) VALUES ('incident_id_floor', ?1)
                             ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), ?1)",
                            params![top],
                        )?;
                    }
                    let f = tx.execute(
                        "DELETE FROM outbox WHERE state = 'failed' AND updated_ms < ?1",
                        params![cutoff],
                    )?;
                    tx.commit()?;
                    Ok((n, f))
                })
            });
        match deleted {
            Ok((0, 0)) => {}
            Ok((n, f)) => {
                tracing::info!(
                    incidents = n,
                    deliveries = f,
                    "retention: old resolved incidents removed"
                );
                let ev = AuditEvent {
                    actor: "agenfleetd".into(),
                    action: "retention.prune".into(),
                    tenant: None,
                    agent: None,
                    outcome: "ok".into(),
                    detail: format!(
                        "{n} incident(s) resolved before {} and {f} given-up deliveries removed (incident_retention_days)",
                        agenfleet_protocol::time::rfc3339(cutoff as u64)
                    ),
                };
                let _ = self.audit.record(&ev).await;
            }
            Err(e) => tracing::error!(error = %e, "retention: cannot remove old incidents"),
        }
    }

    /// Applies `f` to incident `id`, publishes it, marks it for storage.
    fn update<T>(&self, id: u64, f: impl FnOnce(&mut Incident) -> T) -> Option<(T, Incident)> {
        let mut inner = self.lock();
        let inc = inner.by_id.get_mut(&id)?;
        let t = f(inc);
        let snapshot = inc.clone();
        if snapshot.state == IncidentState::Resolved {
            inner.open_by_key.remove(&snapshot.dedup_key);
        }
        inner.dirty.insert(id);
        drop(inner);
        self.fleet.upsert_incident(snapshot.clone());
        Some((t, snapshot))
    }

    /// A signal: the detectors decide whether it raises (or adds to) an incident, and
    /// some signals end the incidents they opened (the engine is back, the vault opened).
    pub fn signal(self: &Arc<Self>, s: Signal) {
        match &s {
            Signal::EngineUp => {
                self.auto_resolve("engine-down", "agenfleetd: the engine is reachable again")
            }
            Signal::VaultOpen => {
                self.auto_resolve("vault-sealed", "agenfleetd: the vault was unsealed")
            }
            _ => {}
        }
        let raises = self
            .detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(s, now_ms());
        for r in raises {
            self.raise(r);
        }
    }

    /// A tool-call decision (hot path: counters only, unless a spike or a check is due).
    /// Answers whether the agent's usage should be checked against its scopes.
    pub fn decision(
        self: &Arc<Self>,
        key: &AgentKey,
        project: &str,
        tool: &str,
        allowed: bool,
        seq: u64,
    ) -> bool {
        let (raise, due) = self
            .detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decision(key, project, tool, allowed, seq, now_ms());
        if let Some(r) = raise {
            self.raise(r);
        }
        due
    }

    /// Checks an agent's tool usage against the tools its scopes grant.
    pub fn check_usage(self: &Arc<Self>, key: &AgentKey, project: &str, granted: &[String]) {
        let r = self
            .detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .usage(key, project, granted);
        if let Some(r) = r {
            self.raise(r);
        }
    }

    pub fn scopes_changed(&self, key: &AgentKey) {
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset_usage(key);
    }

    fn auto_resolve(self: &Arc<Self>, scenario: &str, by: &str) {
        let ids: Vec<u64> = self
            .lock()
            .by_id
            .values()
            .filter(|i| i.scenario == scenario && i.state != IncidentState::Resolved)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let _ = self.transition(id, by, Transition::Resolve(String::new()));
        }
    }

    /// Lets incidents name the runs their agent is working on (called once, at start).
    pub fn link_runs(&self, f: RunsOf) {
        let _ = self.runs_of.set(f);
    }

    /// Folds a raise into its open incident, or opens a new one.
    fn raise(self: &Arc<Self>, r: Raise) {
        let Some(sc) = self.scenario_for_signal(r.signal).cloned() else {
            tracing::error!(
                signal = r.signal,
                "no scenario in the matrix for this signal"
            );
            return;
        };
        let dedup_key = format!("{}:{}", sc.id, r.dedup);
        self.create(sc, dedup_key, r, None);
    }

    /// Opens an incident (from a detector, or by hand with `opened_by`) — or, when one is
    /// open under the same dedup key, folds the raise into it. The check and the insert
    /// happen under one lock, so concurrent raises of one key make one incident.
    fn create(
        self: &Arc<Self>,
        sc: Scenario,
        dedup_key: String,
        r: Raise,
        opened_by: Option<String>,
    ) -> Incident {
        let now = now_ms();
        // The run(s) its agent is working on: the incident happened in them.
        let runs = match (&r.tenant, &r.agent, self.runs_of.get()) {
            (Some(t), Some(a), Some(f)) => f(t, a),
            _ => Vec::new(),
        };
        let inc = {
            let mut inner = self.lock();
            if let Some(id) = inner.open_by_key.get(&dedup_key).copied() {
                if let Some(i) = inner.by_id.get_mut(&id) {
                    fold(i, r, runs, now);
                    let snapshot = i.clone();
                    inner.dirty.insert(id);
                    drop(inner);
                    self.fleet.upsert_incident(snapshot.clone());
                    return snapshot;
                }
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let co_owners = r.co_owners.clone().unwrap_or_else(|| sc.co_owners.clone());
            let inc = Incident {
                id,
                dedup_key: dedup_key.clone(),
                scenario: sc.id.clone(),
                title: sc.title.clone(),
                summary: r.summary,
                party: sc.primary,
                co_owners: co_owners.clone(),
                severity: sc.severity,
                state: IncidentState::Triggered,
                next_step: sc.next_step.clone(),
                tenant: r.tenant,
                project: r.project,
                agent: r.agent,
                count: 1,
                first_ms: now,
                last_ms: now,
                acked_ms: None,
                acked_by: None,
                resolved_ms: None,
                resolved_by: None,
                silenced_until_ms: None,
                reassigned_from: None,
                evidence: r.evidence,
                escalation: steps(&self.delays, sc.severity, sc.primary, &co_owners),
                deliveries: Vec::new(),
                undelivered: Vec::new(),
                opened_by,
                provider: r.provider,
                connection: r.connection,
                runs,
            };
            inner.open_by_key.insert(dedup_key, id);
            inner.by_id.insert(id, inc.clone());
            inner.dirty.insert(id);
            inc
        };
        tracing::warn!(id = inc.id, scenario = %inc.scenario, party = %inc.party, severity = %inc.severity, "incident: {}", inc.summary);
        self.fleet.upsert_incident(inc.clone());
        if let Err(e) = self.flush() {
            tracing::error!(error = %e.message, "cannot store a new incident");
        }
        let me = self.clone();
        let snapshot = inc.clone();
        tokio::spawn(async move {
            let ev = AuditEvent {
                actor: snapshot
                    .opened_by
                    .clone()
                    .unwrap_or_else(|| "agenfleetd".into()),
                action: "incident.trigger".into(),
                tenant: snapshot.tenant.clone(),
                agent: snapshot.agent.clone(),
                outcome: snapshot.severity.as_str().into(),
                detail: serde_json::json!({
                    "incident": snapshot.id, "scenario": snapshot.scenario, "party": snapshot.party,
                    "co_owners": snapshot.co_owners, "dedup_key": snapshot.dedup_key,
                    "evidence": snapshot.evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
                    "summary": snapshot.summary,
                    "runs": snapshot.runs,
                    // One run: the incident is part of that run's timeline.
                    "run": (snapshot.runs.len() == 1).then(|| snapshot.runs[0]),
                })
                .to_string(),
            };
            if let Err(e) = me.audit.record(&ev).await {
                tracing::error!(error = %e, "cannot record an incident");
            }
            me.schedule_steps(snapshot.id);
        });
        inc
    }

    /// Runs the incident's escalation steps at their times, while it is unacknowledged.
    fn schedule_steps(self: &Arc<Self>, id: u64) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = me.upgrade() else { return };
                let Some(inc) = this.get(id) else { return };
                if inc.state != IncidentState::Triggered {
                    return;
                }
                let Some((idx, step)) = inc
                    .escalation
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.done_ms.is_none())
                    .map(|(i, s)| (i, s.clone()))
                else {
                    return;
                };
                let due = inc.first_ms + step.after_ms;
                let wait = due.saturating_sub(now_ms());
                drop(this);
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
                let Some(this) = me.upgrade() else { return };
                let silenced = inc.silenced_until_ms.is_some_and(|t| t > now_ms());
                // Queued (durably) before the step is marked done: a crash in between
                // repeats the step after the restart (same dedup key), never loses it.
                if !silenced {
                    let event = if idx == 0 || step.after_ms == 0 {
                        "trigger"
                    } else {
                        "escalate"
                    };
                    this.deliver(id, step.notify, event);
                }
                this.update(id, |i| {
                    if let Some(s) = i.escalation.get_mut(idx) {
                        s.done_ms = Some(now_ms());
                    }
                });
                if let Err(e) = this.flush() {
                    tracing::error!(error = %e.message, "cannot store an escalation step");
                }
            }
        });
    }

    /// Queues the incident's current view for `party`'s most specific routes (durably, in
    /// the outbox); with none, says so on the incident.
    fn deliver(self: &Arc<Self>, id: u64, party: Party, event: &'static str) {
        let Some(inc) = self.get(id) else { return };
        let idxs = deliver::pick(&self.routes, party, &inc);
        if idxs.is_empty() {
            let note = format!("no route for {party}");
            self.update(id, |i| {
                if !i.undelivered.contains(&note) {
                    i.undelivered.push(note);
                }
            });
            return;
        }
        let env = vec![
            ("AGENFLEET_INCIDENT_ID".to_string(), inc.id.to_string()),
            ("AGENFLEET_INCIDENT_EVENT".to_string(), event.to_string()),
            (
                "AGENFLEET_INCIDENT_PARTY".to_string(),
                party.as_str().to_string(),
            ),
            (
                "AGENFLEET_INCIDENT_SEVERITY".to_string(),
                inc.severity.as_str().to_string(),
            ),
        ];
        let items = idxs
            .into_iter()
            .map(|idx| outbox::New {
                route: idx,
                kind: Kind::Incident,
                ref_id: id,
                event: event.to_string(),
                tenant: inc.tenant.clone(),
                body: self.routes[idx].incident_body(&inc, event),
                env: env.clone(),
            })
            .collect();
        if let Err(e) = self.outbox.enqueue(items) {
            tracing::error!(incident = id, error = %e.message, "cannot queue an incident delivery");
            let note = format!("cannot queue the delivery: {}", e.message);
            self.update(id, |i| i.undelivered.push(note));
        }
    }

    /// Queues an escalation's `event` (opened, reminder, approved, denied, timed_out) for
    /// the reviewers' most specific routes; `who` says who may decide. Answers how many
    /// routes it went to (0: none is configured for that tenant and project).
    pub fn notify_reviewers(&self, v: &EscalationView, event: &str, who: &str) -> usize {
        let idxs = deliver::pick_review(&self.routes, &v.tenant, &v.project);
        let env = vec![
            ("AGENFLEET_ESCALATION_ID".to_string(), v.id.to_string()),
            ("AGENFLEET_ESCALATION_EVENT".to_string(), event.to_string()),
            ("AGENFLEET_TENANT".to_string(), v.tenant.clone()),
            ("AGENFLEET_AGENT".to_string(), v.agent.clone()),
        ];
        let items: Vec<outbox::New> = idxs
            .iter()
            .map(|&idx| outbox::New {
                route: idx,
                kind: Kind::Escalation,
                ref_id: v.id,
                event: event.to_string(),
                tenant: Some(v.tenant.clone()),
                body: self.routes[idx].escalation_body(v, event, who),
                env: env.clone(),
            })
            .collect();
        let n = items.len();
        if let Err(e) = self.outbox.enqueue(items) {
            tracing::error!(escalation = v.id, error = %e.message, "cannot queue a reviewers' notification");
            return 0;
        }
        n
    }

    /// One attempt's outcome: kept on the incident (escalations: in the log), and the end
    /// of a delivery (delivered or given up) in the audit log.
    async fn reported(&self, r: Report) {
        let Some(route) = self.routes.get(r.route) else {
            return;
        };
        if r.kind == Kind::Incident {
            let (attempt, ok, gave_up) = (r.attempt, r.ok, r.gave_up);
            self.update(r.ref_id, |i| {
                i.deliveries.push(Delivery {
                    route: route.name.clone(),
                    attempt,
                    time_ms: now_ms(),
                    ok,
                    detail: r.detail.clone(),
                });
                let n = i.deliveries.len();
                if n > KEEP_DELIVERIES {
                    i.deliveries.drain(..n - KEEP_DELIVERIES);
                }
                if ok {
                    i.undelivered.retain(|u| u != &route.name);
                } else if gave_up && !i.undelivered.contains(&route.name) {
                    i.undelivered.push(route.name.clone());
                }
            });
        }
        if !r.ok && !r.gave_up {
            tracing::warn!(what = r.kind_str(), id = r.ref_id, route = %route.name, attempt = r.attempt, "delivery failed, will retry: {}", r.detail);
            return;
        }
        if !r.ok {
            tracing::error!(what = r.kind_str(), id = r.ref_id, route = %route.name, "delivery given up: {}", r.detail);
        }
        let (action, agent) = match r.kind {
            Kind::Incident => (
                "incident.delivery",
                self.get(r.ref_id).and_then(|i| i.agent),
            ),
            Kind::Escalation => ("escalation.notify", None),
        };
        let ev = AuditEvent {
            actor: "agenfleetd".into(),
            action: action.into(),
            tenant: r.tenant.clone(),
            agent,
            outcome: if r.ok { "ok" } else { "failed" }.into(),
            detail: format!(
                "{} {} to {} after {} attempt(s): {}",
                r.kind_str(),
                r.ref_id,
                route.name,
                r.attempt,
                r.detail
            ),
        };
        let _ = self.audit.record(&ev).await;
    }

    /// The routes and, for each party and tenant of `tenants`, which of them its
    /// incidents go to (`platform`: with the platform's own row); reviewers likewise.
    pub fn routes_report(&self, tenants: &[String], platform: bool) -> RoutesReport {
        let mut resolved = Vec::new();
        let mut probe = Incident::probe();
        let mut pairs: Vec<(Party, Option<String>)> = Vec::new();
        if platform {
            pairs.push((Party::Platform, None));
        }
        for p in [Party::ModelProvider, Party::ToolProvider, Party::Client] {
            if platform {
                pairs.push((p, None));
            }
            pairs.extend(tenants.iter().map(|t| (p, Some(t.clone()))));
        }
        let name = |i: usize| self.routes[i].name.clone();
        let mut used = std::collections::BTreeSet::new();
        for (party, tenant) in pairs {
            probe.tenant = tenant.clone();
            let idx = deliver::pick(&self.routes, party, &probe);
            used.extend(idx.iter().copied());
            resolved.push(RouteResolution {
                party: party.as_str().into(),
                tenant,
                routes: idx.into_iter().map(name).collect(),
            });
        }
        for t in tenants {
            let idx = deliver::pick_review(&self.routes, t, "");
            used.extend(idx.iter().copied());
            resolved.push(RouteResolution {
                party: "reviewers".into(),
                tenant: Some(t.clone()),
                routes: idx.into_iter().map(name).collect(),
            });
        }
        let routes = self
            .routes
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                platform
                    || used.contains(i)
                    || r.tenant.as_ref().is_some_and(|t| tenants.contains(t))
            })
            .map(|(_, r)| r.view())
            .collect();
        RoutesReport { routes, resolved }
    }

    /// Notifications waiting in the outbox.
    pub fn pending_deliveries(&self) -> usize {
        self.outbox.pending()
    }

    /// The outbox's rows (pending and given up), newest first.
    pub fn outbox_rows(&self, limit: usize) -> Result<Vec<OutboxRow>, ApiError> {
        self.outbox.rows(limit)
    }

    /// An operator's change of state; answers the new view. Stored before it answers.
    pub fn transition(
        self: &Arc<Self>,
        id: u64,
        who: &str,
        t: Transition,
    ) -> Result<Incident, ApiError> {
        let now = now_ms();
        let who = who.to_string();
        let (res, inc) = self
            .update(id, |i| -> Result<Option<(Party, &'static str)>, ApiError> {
                match &t {
                    Transition::Ack(_) => {
                        if i.state != IncidentState::Triggered {
                            return Err(ApiError::precondition(format!(
                                "incident {id} is {} already",
                                i.state
                            )));
                        }
                        i.state = IncidentState::Acknowledged;
                        i.acked_ms = Some(now);
                        i.acked_by = Some(who.clone());
                        Ok(Some((i.party, "acknowledge")))
                    }
                    Transition::Resolve(_) => {
                        if i.state == IncidentState::Resolved {
                            return Err(ApiError::precondition(format!(
                                "incident {id} is resolved already"
                            )));
                        }
                        i.state = IncidentState::Resolved;
                        i.resolved_ms = Some(now);
                        i.resolved_by = Some(who.clone());
                        Ok(Some((i.party, "resolve")))
                    }
                    Transition::Reassign(p, _) => {
                        if i.state == IncidentState::Resolved {
                            return Err(ApiError::precondition(format!(
                                "incident {id} is resolved"
                            )));
                        }
                        if i.party == *p {
                            return Err(ApiError::precondition(format!(
                                "incident {id} is already with {p}"
                            )));
                        }
                        i.reassigned_from = Some(i.party);
                        i.party = *p;
                        Ok(Some((*p, "reassign")))
                    }
                    Transition::Silence(ms) => {
                        i.silenced_until_ms = Some(now + ms);
                        Ok(None)
                    }
                }
            })
            .ok_or_else(|| ApiError::not_found(format!("no incident {id}")))?;
        let notify = res?;
        self.flush()?;
        if let Some((party, event)) = notify {
            let silenced = inc.silenced_until_ms.is_some_and(|t| t > now);
            if !silenced {
                // An acknowledgement or resolution also goes to every party that was
                // told of the incident (co-owners: their pager closes it too).
                let mut parties = vec![party];
                if matches!(event, "acknowledge" | "resolve") {
                    for s in inc.escalation.iter().filter(|s| s.done_ms.is_some()) {
                        if !parties.contains(&s.notify) {
                            parties.push(s.notify);
                        }
                    }
                }
                for p in parties {
                    self.deliver(id, p, event);
                }
            }
        }
        Ok(inc)
    }

    /// Opens an incident by hand (e.g. "API key leaked from our systems").
    pub fn open_manual(
        self: &Arc<Self>,
        scenario: &str,
        summary: String,
        key: Option<(&AgentKey, &str)>,
        who: &str,
    ) -> Result<Incident, ApiError> {
        let sc = self.scenario(scenario).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no scenario `{scenario}` in the matrix (`agenfleet incidents matrix` lists them)"
            ))
        })?;
        let n = self.lock().next_id;
        let r = Raise {
            signal: "manual",
            dedup: format!("manual-{n}"),
            summary,
            tenant: key.map(|k| k.0.tenant.clone()),
            project: key.map(|k| k.1.to_string()),
            agent: key.map(|k| k.0.name.clone()),
            evidence: Vec::new(),
            provider: None,
            connection: None,
            co_owners: None,
        };
        let dedup = format!("{}:{}", sc.id, r.dedup);
        Ok(self.create(sc, dedup, r, Some(who.to_string())))
    }
}

/// What an operator does to an incident.
#[derive(Debug, Clone)]
pub enum Transition {
    Ack(String),
    Resolve(String),
    Reassign(Party, String),
    Silence(u64),
}
