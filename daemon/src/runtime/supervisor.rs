//! The supervisor: one task per agent (its runner) that owns the agent's record and drives
//! its container towards the desired state — create, start, restart with capped exponential
//! backoff and jitter inside a budget (attempts per interval, mode fail|delay), stop, reset,
//! delete. Runners are fed by operator commands, by the engine's container events (routed
//! by label) and by their own timers; they never poll. Every state change is written to the
//! store before it is published to the fleet state.
//!
//! On daemon start every agent's runner first publishes its stored state; when the engine
//! connects (and after every reconnect) each runner re-inspects its container: a running one
//! is adopted as it is (same container id and start time, no restart), a dead one is handled
//! as an exit, a missing one is recreated. Labelled containers that no agent owns are
//! reported and removed after a grace period.

use super::container::{self, key_from_labels, LABEL_INSTANCE};
use super::engine::{bollard_err, is_conflict, is_not_found, ContainerEvent, Engine, EngineSignal};
use super::image;
use super::logs::{rfc3339_ms, split_timestamp, LogRing};
use super::network::SubnetPool;
use super::stats::{cpu_percent, CgroupReader, Sample};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::state::FleetState;
use crate::store::{AgentKey, AgentRecord, Store};
use crate::vault::Vault;
use agenfleet_protocol::{
    now_ms, AgentSpec, AgentState, AgentView, ApiError, AuditEvent, DesiredState, ExitInfo,
    ImageInfo, LogStream, NetworkMode, VaultState, BUILTIN_IMAGE,
};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What an operator asks a runner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Start,
    Stop,
    Restart,
    Reset,
    Delete,
}

enum Msg {
    Cmd(Cmd, oneshot::Sender<Result<AgentView, ApiError>>),
    Event(ContainerEvent),
    Resync,
    RestartDue(u64),
    CredentialsRotated,
}

#[derive(Clone)]
struct RunnerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    logs: LogRing,
    gateway: Option<Arc<JoinHandle<()>>>,
    /// Bumped whenever the agent's credentials change (wakes `wait_credentials`).
    creds_gen: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The daemon's runtime: engine, supervisor, image, stats.
/// How long the engine must stay unreachable before it is an incident.
const ENGINE_DOWN_GRACE: Duration = Duration::from_secs(3);

pub struct Runtime {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub fleet: FleetState,
    pub engine: Engine,
    pub instance: String,
    pub audit: AuditLog,
    pub vault: Arc<Vault>,
    pub authz: crate::authz::Authz,
    pub policy: Arc<crate::policy::PolicyEngine>,
    pub incidents: Arc<crate::incidents::Incidents>,
    runners: Mutex<HashMap<AgentKey, RunnerHandle>>,
    /// Serialises image builds; holds the built-in tag once known to be present.
    image_ready: tokio::sync::Mutex<Option<String>>,
    cgroups: CgroupReader,
}

/// What the runtime is built from (the daemon's parts, opened in `run`).
pub struct Parts {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub fleet: FleetState,
    pub instance: String,
    pub audit: AuditLog,
    pub vault: Arc<Vault>,
    pub policy: Arc<crate::policy::PolicyEngine>,
    pub incidents: Arc<crate::incidents::Incidents>,
}

impl Runtime {
    pub fn new(p: Parts) -> Arc<Runtime> {
        Arc::new(Runtime {
            cfg: p.cfg,
            authz: crate::authz::Authz::new(p.store.clone()),
            store: p.store,
            fleet: p.fleet,
            engine: Engine::default(),
            instance: p.instance,
            audit: p.audit,
            vault: p.vault,
            policy: p.policy,
            incidents: p.incidents,
            runners: Mutex::new(HashMap::new()),
            image_ready: tokio::sync::Mutex::new(None),
            cgroups: CgroupReader::default(),
        })
    }

    /// Records an event durably; a failure is an `Unavailable` error that names the
    /// audit problem (the caller must then not act).
    pub async fn audit_event(&self, ev: AuditEvent) -> Result<u64, ApiError> {
        self.audit.record(&ev).await.map_err(|e| {
            let st = self.audit.status();
            if !st.writable {
                self.fleet.update_daemon(|d| {
                    d.audit_writable = false;
                    d.audit_problem = st.problem.clone();
                });
            }
            ApiError::unavailable(format!("{e}; refusing to act without an audit record"))
        })
    }

    /// Records something the daemon itself did or saw.
    pub async fn system_event(
        &self,
        action: &str,
        key: Option<&AgentKey>,
        outcome: &str,
        detail: String,
    ) -> Result<u64, ApiError> {
        self.audit_event(AuditEvent {
            actor: "agenfleetd".into(),
            action: action.into(),
            tenant: key.map(|k| k.tenant.clone()),
            agent: key.map(|k| k.name.clone()),
            outcome: outcome.into(),
            detail,
        })
        .await
    }

    /// After the vault changed (unsealed, initialised): publish its state and let every
    /// held-back agent try again.
    pub fn vault_changed(&self) {
        let state = self.vault.state();
        if state == agenfleet_protocol::VaultState::Unsealed {
            self.incidents
                .signal(crate::incidents::detect::Signal::VaultOpen);
        }
        self.fleet.update_daemon(|d| d.vault = state);
        let handles: Vec<RunnerHandle> = self.runners().values().cloned().collect();
        for h in handles {
            let _ = h.tx.send(Msg::Resync);
        }
    }

    /// An agent's stored spec.
    pub fn agent_spec(&self, key: &AgentKey) -> Option<AgentSpec> {
        let json: Option<String> = self
            .store
            .tenant(&key.tenant)
            .with(|c| {
                use rusqlite::OptionalExtension;
                c.query_row(
                    "SELECT spec_json FROM t_agents WHERE name = ?1",
                    rusqlite::params![key.name],
                    |r| r.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        json.and_then(|j| serde_json::from_str(&j).ok())
    }

    /// Purges a deleted agent's record and credentials (cascade) and records it.
    pub async fn purge_now(&self, key: &AgentKey, what: String) -> Result<(), ApiError> {
        self.store
            .delete_agent(key)
            .map_err(|e| ApiError::internal(format!("cannot purge the agent's record: {e}")))?;
        self.policy.forget_agent(key);
        tracing::info!(agent = %key, "agent data purged");
        let _ = self
            .system_event("agent.purge", Some(key), "ok", what)
            .await;
        Ok(())
    }

    /// Runs a purge when it is due (a timer, not a poll).
    pub fn schedule_purge(self: &Arc<Self>, key: AgentKey, at_ms: u64, what: String) {
        let rt = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms()))).await;
            if let Err(e) = rt.purge_now(&key, what).await {
                tracing::error!(agent = %key, error = %e.message, "scheduled purge failed");
            }
        });
    }

    /// A receiver that wakes when the agent's credentials change.
    pub fn credential_changes(&self, key: &AgentKey) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.runners().get(key).map(|h| h.creds_gen.subscribe())
    }

    /// An agent's credentials changed: a held-back agent may start now; after a rotation
    /// a running agent is restarted so that it fetches the new value at start.
    pub fn credentials_changed(&self, key: &AgentKey, rotated: bool) {
        let Some(h) = self.runners().get(key).cloned() else {
            return;
        };
        h.creds_gen.send_modify(|g| *g += 1);
        let _ = h.tx.send(if rotated {
            Msg::CredentialsRotated
        } else {
            Msg::Resync
        });
    }

    /// The id of the agent's current container, if it has one.
    pub fn container_of(&self, key: &AgentKey) -> Option<String> {
        self.fleet.get(key).and_then(|v| v.container_id)
    }

    /// Lets one agent re-check whether it may start (its credentials changed).
    pub fn nudge(&self, key: &AgentKey) {
        if let Some(h) = self.runners().get(key) {
            let _ = h.tx.send(Msg::Resync);
        }
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<AgentKey, RunnerHandle>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every stored agent, starts a runner for each, and starts the engine pump, the
    /// event dispatcher and the stats sampler.
    pub fn start(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        for rec in self.store.load_agents()? {
            self.spawn_runner(rec);
        }
        // Purges that were scheduled before a restart run when they are due.
        for (key, at) in self.store.pending_purges()? {
            self.schedule_purge(
                key,
                at,
                "data of an agent deleted before the daemon restarted".into(),
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = self.engine.clone();
        let host = self.cfg.docker_host.clone();
        let instance = self.instance.clone();
        tokio::spawn(engine.run(host, instance, tx));
        tokio::spawn(self.clone().dispatch(rx));
        tokio::spawn(self.clone().sample_stats());
        Ok(())
    }

    fn spawn_runner(self: &Arc<Self>, rec: AgentRecord) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let logs = LogRing::new(self.cfg.log_ring_lines);
        let gateway = match crate::rpc::gateway::start(self.clone(), rec.key.clone()) {
            Ok(h) => Some(Arc::new(h)),
            Err(e) => {
                tracing::error!(agent = %rec.key, error = %e, "cannot create the agent's gateway socket");
                None
            }
        };
        self.runners().insert(
            rec.key.clone(),
            RunnerHandle {
                tx: tx.clone(),
                logs: logs.clone(),
                gateway,
                creds_gen: Arc::new(tokio::sync::watch::channel(0).0),
            },
        );
        let runner = Runner {
            rt: self.clone(),
            rec,
            tx: tx.clone(),
            logs,
            gen: 0,
            started_at_ms: None,
            next_restart_at_ms: None,
            log_task: None,
            pending_failed: None,
            held_back: false,
        };
        tokio::spawn(runner.run(rx));
        tx
    }

    async fn dispatch(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<EngineSignal>) {
        while let Some(sig) = rx.recv().await {
            match sig {
                EngineSignal::Connected(info) => {
                    self.fleet.update_daemon(|d| d.engine = info);
                    self.incidents
                        .signal(crate::incidents::detect::Signal::EngineUp);
                    self.reconcile().await;
                }
                EngineSignal::Disconnected(why) => {
                    self.fleet.update_daemon(|d| {
                        d.engine.connected = false;
                        d.engine.error = Some(why.clone());
                    });
                    // A blip is not an incident: only an engine still gone after a grace.
                    let rt = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(ENGINE_DOWN_GRACE).await;
                        if rt.engine.client().is_err() {
                            rt.incidents
                                .signal(crate::incidents::detect::Signal::EngineDown { why });
                        }
                    });
                }
                EngineSignal::Container(ev) => {
                    let Some(key) = key_from_labels(&ev.labels) else {
                        continue;
                    };
                    let handle = self.runners().get(&key).cloned();
                    match handle {
                        Some(h) => {
                            let _ = h.tx.send(Msg::Event(ev));
                        }
                        None if ev.action == "start" || ev.action == "create" => {
                            self.orphan_found(ev.container_id.clone(), key);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// After (re)connecting: re-list our containers, report orphans, and have every runner
    /// re-inspect its own container.
    async fn reconcile(self: &Arc<Self>) {
        if let Ok(docker) = self.engine.client() {
            let mut filters = HashMap::new();
            filters.insert(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            );
            let opts = ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            };
            match docker.list_containers(Some(opts)).await {
                Ok(list) => {
                    for c in list {
                        let (Some(id), Some(labels)) = (c.id, c.labels) else {
                            continue;
                        };
                        let Some(key) = key_from_labels(&labels) else {
                            continue;
                        };
                        if !self.runners().contains_key(&key) {
                            self.orphan_found(id, key);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list containers"),
            }
        }
        let handles: Vec<RunnerHandle> = self.runners().values().cloned().collect();
        for h in handles {
            let _ = h.tx.send(Msg::Resync);
        }
    }

    fn orphan_found(self: &Arc<Self>, id: String, key: AgentKey) {
        let short: String = id.chars().take(12).collect();
        let label = format!("{short} ({key})");
        let mut is_new = false;
        self.fleet.update_daemon(|d| {
            if !d.orphans.contains(&label) {
                d.orphans.push(label.clone());
                is_new = true;
            }
        });
        if !is_new {
            return;
        }
        tracing::warn!(container = %short, agent = %key, grace_secs = self.cfg.orphan_grace_secs,
            "found a labelled container that no agent owns; it will be removed after the grace period");
        let rt = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(rt.cfg.orphan_grace_secs)).await;
            let audited = if rt.runners().contains_key(&key) {
                false
            } else {
                rt.system_event(
                    "container.orphan_remove",
                    Some(&key),
                    "requested",
                    format!(
                        "labelled container {short} has no agent; removing it after {}s",
                        rt.cfg.orphan_grace_secs
                    ),
                )
                .await
                .is_ok()
            };
            if audited {
                if let Ok(docker) = rt.engine.client() {
                    let opts = RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    };
                    match docker.remove_container(&id, Some(opts)).await {
                        Ok(()) => tracing::info!(container = %short, "removed orphan container"),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            tracing::warn!(container = %short, error = %e, "cannot remove orphan")
                        }
                    }
                }
            }
            rt.fleet
                .update_daemon(|d| d.orphans.retain(|o| o != &label));
        });
    }

    /// Samples CPU and memory of running agents from their cgroups, every interval.
    async fn sample_stats(self: Arc<Self>) {
        let mut prev: HashMap<String, (Sample, std::time::Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.stats_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (_, _, agents) = self.fleet.snapshot(|v| v.state == AgentState::Running);
            let mut results: HashMap<AgentKey, (f32, u64)> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for v in agents {
                let Some(id) = v.container_id.clone() else {
                    continue;
                };
                let Some(s) = self.cgroups.read(&id) else {
                    continue;
                };
                let now = std::time::Instant::now();
                let cpu = prev
                    .get(&id)
                    .map(|(p, t)| cpu_percent(p, &s, now.duration_since(*t).as_nanos() as u64))
                    .unwrap_or(0.0);
                prev.insert(id.clone(), (s, now));
                seen.insert(id);
                results.insert(
                    AgentKey {
                        tenant: v.tenant,
                        name: v.name,
                    },
                    ((cpu * 10.0).round() / 10.0, s.memory_bytes),
                );
            }
            prev.retain(|id, _| seen.contains(id));
            self.fleet.update_many(|k, v| {
                let new = if v.state == AgentState::Running {
                    results
                        .get(k)
                        .map(|(c, m)| (Some(*c), Some(*m)))
                        .unwrap_or((None, None))
                } else {
                    (None, None)
                };
                if (v.cpu_percent, v.memory_bytes) == new {
                    return false;
                }
                v.cpu_percent = new.0;
                v.memory_bytes = new.1;
                true
            });
        }
    }

    /// The image reference to run for `spec_image`; builds the built-in image if needed.
    pub async fn resolve_image(
        &self,
        docker: &Docker,
        spec_image: &str,
    ) -> Result<String, ApiError> {
        if spec_image == BUILTIN_IMAGE {
            let mut ready = self.image_ready.lock().await;
            if let Some(tag) = ready.as_ref() {
                return Ok(tag.clone());
            }
            let info = image::ensure_builtin(docker, false).await?;
            *ready = Some(info.tag.clone());
            return Ok(info.tag);
        }
        match docker.inspect_image(spec_image).await {
            Ok(_) => Ok(spec_image.to_string()),
            Err(e) if is_not_found(&e) => Err(ApiError::invalid(format!(
                "spec field `image`: image `{spec_image}` is not present on the engine \
                 (there is no registry to pull from; build or load it first, or use `{BUILTIN_IMAGE}`)"
            ))),
            Err(e) => Err(bollard_err("inspect image", e)),
        }
    }

    /// Builds the agent image (again, with `force`).
    pub async fn build_image(&self, force: bool) -> Result<ImageInfo, ApiError> {
        let docker = self.engine.client_when_up(Duration::from_secs(10)).await?;
        let mut ready = self.image_ready.lock().await;
        let info = image::ensure_builtin(&docker, force).await?;
        *ready = Some(info.tag.clone());
        Ok(info)
    }

    /// Stores a new agent and starts it; answers once it runs (or failed to).
    pub async fn create(self: &Arc<Self>, spec: AgentSpec) -> Result<AgentView, ApiError> {
        spec.validate()
            .map_err(|e| ApiError::invalid(format!("invalid spec: {e}")))?;
        // Check the image before anything is stored: a spec naming a missing image
        // creates nothing. Just after the daemon started, wait for its first connection.
        let docker = self.engine.client_when_up(Duration::from_secs(10)).await?;
        self.resolve_image(&docker, &spec.image).await?;
        let key = AgentKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        };
        let rec = AgentRecord {
            key: key.clone(),
            project: spec.project.clone(),
            spec,
            desired: DesiredState::Running,
            state: AgentState::Pending,
            message: None,
            container_id: None,
            image_ref: None,
            restarts: 0,
            restart_times: vec![],
            last_exit: None,
            created_at_ms: now_ms(),
        };
        // Hold the runners lock across the insert so two creates of one name cannot race.
        {
            let runners = self.runners();
            if runners.contains_key(&key) {
                return Err(ApiError::exists(format!("agent {key} already exists")));
            }
            self.store.insert_agent(&rec).map_err(|e| match e {
                crate::store::StoreError::Exists(what) => {
                    ApiError::exists(format!("{what} already exists"))
                }
                other => ApiError::internal(format!("cannot store the agent: {other}")),
            })?;
        }
        tracing::info!(agent = %key, "agent created");
        let tx = self.spawn_runner(rec);
        Self::ask(&tx, Cmd::Start).await
    }

    async fn ask(tx: &mpsc::UnboundedSender<Msg>, cmd: Cmd) -> Result<AgentView, ApiError> {
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Cmd(cmd, reply))
            .map_err(|_| ApiError::not_found("the agent is gone"))?;
        rx.await
            .map_err(|_| ApiError::internal("the agent's supervisor stopped without answering"))?
    }

    /// Sends an operator command to an agent's runner and waits for the outcome.
    pub async fn command(&self, key: &AgentKey, cmd: Cmd) -> Result<AgentView, ApiError> {
        let tx = self
            .runners()
            .get(key)
            .map(|h| h.tx.clone())
            .ok_or_else(|| ApiError::not_found(format!("no agent {key}")))?;
        Self::ask(&tx, cmd).await
    }

    pub fn logs(&self, key: &AgentKey) -> Option<LogRing> {
        self.runners().get(key).map(|h| h.logs.clone())
    }

    async fn ensure_network(
        &self,
        docker: &Docker,
        key: &AgentKey,
        mode: NetworkMode,
    ) -> Result<(), ApiError> {
        let name = container::network_name(&self.instance, key);
        match docker.inspect_network(&name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(bollard_err("inspect network", e)),
        }
        let pool = SubnetPool::new(&self.cfg.network_pool, self.cfg.network_prefix)
            .map_err(|e| ApiError::internal(format!("network pool: {e}")))?;
        // Start at a place derived from the name to spread agents over the pool; skip
        // subnets the engine says overlap with a network that exists.
        let start = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        for i in 0..pool.len().min(256) {
            let Some(subnet) = pool.subnet((start + i) % pool.len()) else {
                break;
            };
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                internal: Some(mode == NetworkMode::Internal),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.clone()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                labels: Some(HashMap::from([
                    (container::LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_INSTANCE.to_string(), self.instance.clone()),
                ])),
                ..Default::default()
            };
            match docker.create_network(req).await {
                Ok(_) => {
                    tracing::info!(agent = %key, %subnet, "created the agent's network");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("overlap") =>
                {
                    continue
                }
                Err(e) => return Err(bollard_err("create the agent's network", e)),
            }
        }
        Err(ApiError::unavailable(format!(
            "no free subnet left in the network pool {}",
            self.cfg.network_pool
        )))
    }
}

/// One agent's supervisor task.
struct Runner {
    rt: Arc<Runtime>,
    rec: AgentRecord,
    tx: mpsc::UnboundedSender<Msg>,
    logs: LogRing,
    /// Bumped whenever a scheduled restart must no longer happen.
    gen: u64,
    started_at_ms: Option<u64>,
    next_restart_at_ms: Option<u64>,
    log_task: Option<JoinHandle<()>>,
    /// An `agent.failed` record to write after the exit that caused it.
    pending_failed: Option<String>,
    /// Waiting for the vault (or a credential) before it may start.
    held_back: bool,
}

fn describe_exit(e: &ExitInfo) -> String {
    if e.oom_killed {
        format!("OOM-killed (exit code {})", e.code)
    } else {
        format!("exit code {}", e.code)
    }
}

impl Runner {
    fn view(&self) -> AgentView {
        let stats = self
            .rt
            .fleet
            .get(&self.rec.key)
            .filter(|_| self.rec.state == AgentState::Running)
            .map(|v| (v.cpu_percent, v.memory_bytes))
            .unwrap_or((None, None));
        let now = now_ms();
        AgentView {
            tenant: self.rec.key.tenant.clone(),
            project: self.rec.project.clone(),
            name: self.rec.key.name.clone(),
            image: self
                .rec
                .image_ref
                .clone()
                .unwrap_or_else(|| self.rec.spec.image.clone()),
            state: self.rec.state,
            desired: self.rec.desired,
            container_id: self.rec.container_id.clone(),
            started_at_ms: if self.rec.state == AgentState::Running {
                self.started_at_ms
            } else {
                None
            },
            restarts: self.rec.restarts,
            restarts_in_window: super::restart::in_window(
                &self.rec.restart_times,
                now,
                &self.rec.spec.restart,
            ),
            restart_budget: self.rec.spec.restart.attempts,
            next_restart_at_ms: self
                .next_restart_at_ms
                .filter(|_| self.rec.state == AgentState::BackingOff),
            last_exit: self.rec.last_exit.clone(),
            message: self.rec.message.clone(),
            cpu_percent: stats.0,
            memory_bytes: stats.1,
            memory_limit_bytes: self.rec.spec.memory_limit_bytes(),
            spec_hash: self.rec.spec.hash(),
            created_at_ms: self.rec.created_at_ms,
            escalations: 0,
        }
    }

    /// Persists, then publishes. A change that cannot be stored is not published.
    fn commit(&mut self) -> Result<AgentView, ApiError> {
        self.rt.store.save_agent(&self.rec).map_err(|e| {
            tracing::error!(agent = %self.rec.key, error = %e, "cannot store the agent's state");
            ApiError::internal(format!("cannot store the agent's state: {e}"))
        })?;
        let v = self.view();
        self.rt.fleet.upsert(v.clone());
        Ok(v)
    }

    fn set_state(&mut self, state: AgentState, message: Option<String>) {
        if self.rec.state != state {
            tracing::info!(agent = %self.rec.key, from = %self.rec.state, to = %state, message = ?message, "agent state");
        }
        self.rec.state = state;
        self.rec.message = message;
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        // Show what we knew before the engine answers.
        let _ = self.commit();
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Cmd(cmd, reply) => {
                    let result = self.on_command(cmd).await;
                    let done = cmd == Cmd::Delete && result.is_ok();
                    let _ = reply.send(result);
                    if done {
                        return;
                    }
                }
                Msg::Event(ev) => self.on_event(ev).await,
                Msg::Resync => self.resync().await,
                Msg::RestartDue(gen) => self.on_restart_due(gen).await,
                Msg::CredentialsRotated => self.on_credentials_rotated().await,
            }
        }
    }

    async fn on_command(&mut self, cmd: Cmd) -> Result<AgentView, ApiError> {
        let key = self.rec.key.clone();
        match cmd {
            Cmd::Start => {
                if self.rec.state == AgentState::Failed {
                    return Err(ApiError::precondition(format!(
                        "agent {key} is failed ({}); reset it to run it again",
                        self.rec
                            .message
                            .clone()
                            .unwrap_or_else(|| "restart budget exhausted".into())
                    )));
                }
                if self.rec.desired == DesiredState::Running
                    && matches!(self.rec.state, AgentState::Running | AgentState::BackingOff)
                {
                    return Ok(self.view());
                }
                self.rec.desired = DesiredState::Running;
                self.gen += 1;
                self.start_or_fail().await
            }
            Cmd::Stop => {
                self.rec.desired = DesiredState::Stopped;
                self.gen += 1;
                self.next_restart_at_ms = None;
                self.commit()?;
                self.stop_container().await?;
                self.set_state(AgentState::Stopped, None);
                self.commit()
            }
            Cmd::Restart => {
                if self.rec.state == AgentState::Failed {
                    return Err(ApiError::precondition(format!(
                        "agent {key} is failed; reset it to run it again"
                    )));
                }
                self.rec.desired = DesiredState::Running;
                self.gen += 1;
                self.commit()?;
                self.stop_container().await?;
                self.start_or_fail().await
            }
            Cmd::Reset => {
                self.rec.restart_times.clear();
                self.rec.desired = DesiredState::Running;
                self.gen += 1;
                if self.rec.state == AgentState::Running {
                    self.rec.message = None;
                    return self.commit();
                }
                self.start_or_fail().await
            }
            Cmd::Delete => {
                self.gen += 1;
                let docker = self.rt.engine.client()?;
                // The purge: say what goes (audit before effect), then remove it all.
                let creds = self.rt.vault.list(&key).unwrap_or_default();
                let versions: usize = creds.iter().map(|c| c.versions.len()).sum();
                let purge = format!(
                    "container {}, {}gateway socket, {} credential(s) with {} version(s), log ring, agent record",
                    self.rec.container_id.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("none"),
                    if self.rec.spec.network.mode != NetworkMode::None { "network, " } else { "" },
                    creds.len(),
                    versions
                );
                self.rt
                    .system_event("agent.purge", Some(&key), "requested", purge.clone())
                    .await?;
                if let Some(id) = self.rec.container_id.clone() {
                    let opts = RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    };
                    match docker.remove_container(&id, Some(opts)).await {
                        Ok(()) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(bollard_err("remove the agent's container", e)),
                    }
                }
                if self.rec.spec.network.mode != NetworkMode::None {
                    let name = container::network_name(&self.rt.instance, &key);
                    if let Err(e) = docker.remove_network(&name).await {
                        if !is_not_found(&e) {
                            tracing::warn!(agent = %key, error = %e, "cannot remove the agent's network");
                        }
                    }
                }
                if let Some(t) = self.log_task.take() {
                    t.abort();
                }
                let view = self.view();
                if let Some(h) = self.rt.runners().remove(&key) {
                    if let Some(g) = h.gateway {
                        g.abort();
                    }
                }
                let _ = std::fs::remove_dir_all(crate::rpc::gateway::gateway_dir(
                    &self.rt.cfg.state_dir,
                    &key,
                ));
                self.rt.fleet.remove(&key);
                if self.rt.cfg.purge_after_secs == 0 {
                    self.rt.purge_now(&key, purge).await?;
                } else {
                    let at = now_ms() + self.rt.cfg.purge_after_secs * 1000;
                    self.rt.store.schedule_purge(&key, at).map_err(|e| {
                        ApiError::internal(format!("cannot schedule the purge: {e}"))
                    })?;
                    tracing::info!(agent = %key, purge_at_ms = at, "agent deleted; its data is purged on schedule");
                    self.rt.schedule_purge(key.clone(), at, purge);
                }
                Ok(view)
            }
        }
    }

    async fn stop_container(&mut self) -> Result<(), ApiError> {
        let Some(id) = self.rec.container_id.clone() else {
            return Ok(());
        };
        let docker = self.rt.engine.client()?;
        let opts = StopContainerOptions {
            t: Some(self.rt.cfg.stop_timeout_secs as i32),
            signal: None,
        };
        match docker.stop_container(&id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => {
                self.rec.container_id = None;
                Ok(())
            }
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(bollard_err("stop the agent's container", e)),
        }
    }

    /// Starts the agent; on failure records why (Failed, or Pending while the engine is
    /// away) and returns the error.
    /// Why the agent may not start yet (it needs credentials the vault cannot give now).
    fn hold_back_reason(&self) -> Option<String> {
        if self.rec.spec.credentials.is_empty() {
            return None;
        }
        match self.rt.vault.state() {
            VaultState::Unsealed => {}
            VaultState::Sealed => {
                return Some("held back: it needs credentials and the vault is SEALED (`agenfleet vault unseal`)".into())
            }
            VaultState::Uninitialized => {
                return Some("held back: it needs credentials and the vault is not initialised (`agenfleet vault init`)".into())
            }
        }
        let have = self.rt.vault.list(&self.rec.key).unwrap_or_default();
        for name in &self.rec.spec.credentials {
            if !have
                .iter()
                .any(|c| &c.name == name && c.current_version.is_some())
            {
                return Some(format!(
                    "held back: credential `{name}` has no usable version (`agenfleet creds set {} {name}`)",
                    self.rec.key
                ));
            }
        }
        None
    }

    async fn start_or_fail(&mut self) -> Result<AgentView, ApiError> {
        if let Some(why) = self.hold_back_reason() {
            self.held_back = true;
            self.next_restart_at_ms = None;
            self.set_state(AgentState::Pending, Some(why));
            return self.commit();
        }
        self.held_back = false;
        match self.ensure_running().await {
            Ok(()) => {
                let detail = format!(
                    "container {} from {}",
                    self.rec
                        .container_id
                        .as_deref()
                        .map(|c| &c[..c.len().min(12)])
                        .unwrap_or("-"),
                    self.rec.image_ref.as_deref().unwrap_or("-")
                );
                let _ = self
                    .rt
                    .system_event("agent.started", Some(&self.rec.key), "observed", detail)
                    .await;
                self.commit()
            }
            Err(e) => {
                if e.code == agenfleet_protocol::ErrorCode::Unavailable {
                    self.set_state(
                        AgentState::Pending,
                        Some(format!("waiting for the engine: {}", e.message)),
                    );
                } else {
                    self.set_state(
                        AgentState::Failed,
                        Some(format!("cannot start: {}", e.message)),
                    );
                }
                let _ = self.commit();
                Err(e)
            }
        }
    }

    async fn ensure_running(&mut self) -> Result<(), ApiError> {
        let docker = self.rt.engine.client()?;
        self.set_state(AgentState::Pending, None);
        self.next_restart_at_ms = None;
        self.commit()?;
        let image_ref = self.rt.resolve_image(&docker, &self.rec.spec.image).await?;
        if self.rec.spec.network.mode != NetworkMode::None {
            self.rt
                .ensure_network(&docker, &self.rec.key, self.rec.spec.network.mode)
                .await?;
        }
        let mut reuse = None;
        if let Some(id) = self.rec.container_id.clone() {
            match docker.inspect_container(&id, None).await {
                Ok(c) => {
                    let labels = c
                        .config
                        .as_ref()
                        .and_then(|c| c.labels.clone())
                        .unwrap_or_default();
                    let image = c
                        .config
                        .as_ref()
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default();
                    let same = labels.get(container::LABEL_SPEC_HASH)
                        == Some(&self.rec.spec.hash())
                        && image == image_ref;
                    let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                    if same && running {
                        return self.mark_running(&docker, &id).await;
                    }
                    if same {
                        reuse = Some(id);
                    } else {
                        self.remove(&docker, &id).await?;
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(bollard_err("inspect the agent's container", e)),
            }
        }
        let id = match reuse {
            Some(id) => id,
            None => self.create(&docker, &image_ref).await?,
        };
        // Record the container before starting it: after a crash of the daemon the next
        // one finds it by this id (and by its labels).
        self.rec.container_id = Some(id.clone());
        self.rec.image_ref = Some(image_ref);
        self.commit()?;
        match docker.start_container(&id, None).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(bollard_err("start the agent's container", e)),
        }
        self.mark_running(&docker, &id).await
    }

    async fn remove(&mut self, docker: &Docker, id: &str) -> Result<(), ApiError> {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(bollard_err("remove the old container", e)),
        }
    }

    async fn create(&mut self, docker: &Docker, image_ref: &str) -> Result<String, ApiError> {
        let name = container::container_name(&self.rt.instance, &self.rec.key);
        let gateway_dir = crate::rpc::gateway::gateway_dir(&self.rt.cfg.state_dir, &self.rec.key);
        let body = container::create_body(
            &self.rt.cfg,
            &self.rt.instance,
            &self.rec.key,
            &self.rec.spec,
            image_ref,
            &gateway_dir,
        );
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(&name)
            .build();
        for attempt in 0..2 {
            match docker
                .create_container(Some(opts.clone()), body.clone())
                .await
            {
                Ok(r) => return Ok(r.id),
                Err(e) if is_conflict(&e) && attempt == 0 => {
                    // A container with our deterministic name is left over: replace it.
                    tracing::info!(agent = %self.rec.key, %name, "replacing a left-over container");
                    self.remove(docker, &name).await?;
                }
                Err(e) => return Err(bollard_err("create the agent's container", e)),
            }
        }
        Err(ApiError::internal("cannot create the agent's container"))
    }

    async fn mark_running(&mut self, docker: &Docker, id: &str) -> Result<(), ApiError> {
        let c = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| bollard_err("inspect the agent's container", e))?;
        let state = c.state.unwrap_or_default();
        if !state.running.unwrap_or(false) {
            // It died already; the die event will tell the rest.
            self.started_at_ms = state.started_at.as_deref().and_then(rfc3339_ms);
            self.set_state(AgentState::Running, None);
            return Ok(());
        }
        self.started_at_ms = state.started_at.as_deref().and_then(rfc3339_ms);
        self.set_state(AgentState::Running, None);
        self.follow_logs(docker.clone(), id.to_string());
        Ok(())
    }

    fn follow_logs(&mut self, docker: Docker, id: String) {
        if let Some(t) = self.log_task.take() {
            t.abort();
        }
        let ring = self.logs.clone();
        let tail = self.rt.cfg.log_ring_lines.to_string();
        self.log_task = Some(tokio::spawn(async move {
            let opts = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                timestamps: true,
                tail,
                ..Default::default()
            };
            let mut stream = docker.logs(&id, Some(opts));
            let mut partial: HashMap<bool, String> = HashMap::new();
            while let Some(item) = stream.next().await {
                let Ok(out) = item else { break };
                let (is_err, bytes) = match out {
                    bollard::container::LogOutput::StdErr { message } => (true, message),
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => (false, message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                let buf = partial.entry(is_err).or_default();
                buf.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(pos) = buf.find('\n') {
                    let line: String = buf.drain(..=pos).collect();
                    let line = line.trim_end_matches(['\n', '\r']);
                    if let Some((ts, text)) = split_timestamp(line) {
                        let stream = if is_err {
                            LogStream::Stderr
                        } else {
                            LogStream::Stdout
                        };
                        ring.push(ts, stream, text.to_string());
                    }
                }
            }
        }));
    }

    async fn on_event(&mut self, ev: ContainerEvent) {
        if self.rec.container_id.as_deref() != Some(ev.container_id.as_str()) {
            return;
        }
        match ev.action.as_str() {
            "die" => self.check_exit().await,
            "destroy" => {
                self.rec.container_id = None;
                if self.rec.state == AgentState::Running {
                    tracing::warn!(agent = %self.rec.key, "the agent's container was removed behind our back");
                    self.on_exit(ExitInfo {
                        code: -1,
                        oom_killed: false,
                        at_ms: now_ms(),
                    })
                    .await;
                } else {
                    let _ = self.commit();
                }
            }
            _ => {}
        }
    }

    /// Inspects the container after a `die` event: a stale event (the container runs again)
    /// is ignored; a real exit goes to the restart policy.
    async fn check_exit(&mut self) {
        let Some(id) = self.rec.container_id.clone() else {
            return;
        };
        let Ok(docker) = self.rt.engine.client() else {
            return;
        };
        match docker.inspect_container(&id, None).await {
            Ok(c) => {
                let s = c.state.unwrap_or_default();
                if s.running.unwrap_or(false) {
                    return;
                }
                let exit = ExitInfo {
                    code: s.exit_code.unwrap_or(-1),
                    oom_killed: s.oom_killed.unwrap_or(false),
                    at_ms: s
                        .finished_at
                        .as_deref()
                        .and_then(rfc3339_ms)
                        .unwrap_or_else(now_ms),
                };
                self.on_exit(exit).await;
            }
            Err(e) if is_not_found(&e) => {
                self.rec.container_id = None;
                self.on_exit(ExitInfo {
                    code: -1,
                    oom_killed: false,
                    at_ms: now_ms(),
                })
                .await;
            }
            Err(e) => {
                tracing::warn!(agent = %self.rec.key, error = %e, "cannot inspect after exit")
            }
        }
    }

    async fn on_exit(&mut self, exit: ExitInfo) {
        let newer = self
            .rec
            .last_exit
            .as_ref()
            .is_none_or(|l| exit.at_ms > l.at_ms);
        if !newer && self.rec.state != AgentState::Running {
            return;
        }
        tracing::info!(agent = %self.rec.key, code = exit.code, oom = exit.oom_killed, "agent exited");
        // An exit is an observation, not an action: publish the new state first (watchers
        // see it at once), then record it.
        let detail = describe_exit(&exit);
        self.rec.last_exit = Some(exit);
        if self.rec.desired == DesiredState::Stopped {
            self.set_state(AgentState::Stopped, None);
            let _ = self.commit();
        } else if matches!(
            self.rec.state,
            AgentState::Running | AgentState::Pending | AgentState::Unknown
        ) {
            self.apply_policy().await;
        } else {
            let _ = self.commit();
        }
        let seq = self
            .rt
            .system_event("agent.exited", Some(&self.rec.key), "observed", detail)
            .await;
        if let (Ok(seq), Some(exit)) = (seq, self.rec.last_exit.as_ref()) {
            if self.rec.desired != DesiredState::Stopped {
                self.rt
                    .incidents
                    .signal(crate::incidents::detect::Signal::AgentExit {
                        key: self.rec.key.clone(),
                        project: self.rec.project.clone(),
                        code: exit.code,
                        oom: exit.oom_killed,
                        seq,
                    });
            }
        }
        if let Some(failed) = self.pending_failed.take() {
            let _ = self
                .rt
                .system_event("agent.failed", Some(&self.rec.key), "observed", failed)
                .await;
        }
    }

    /// After an exit: schedule a restart with backoff, or fail past the budget.
    async fn apply_policy(&mut self) {
        use super::restart::{after_exit, jitter, Next};
        let policy = self.rec.spec.restart.clone();
        let next = after_exit(&policy, &mut self.rec.restart_times, now_ms(), jitter());
        let last = self
            .rec
            .last_exit
            .as_ref()
            .map(describe_exit)
            .unwrap_or_else(|| "unknown exit".into());
        match next {
            Next::Fail { restarts: n } => {
                self.gen += 1;
                self.next_restart_at_ms = None;
                self.set_state(
                    AgentState::Failed,
                    Some(format!(
                        "restart budget exhausted: {n} restarts within {}s; last run ended with {last}; `agenfleet agents reset {}` runs it again",
                        policy.interval_secs, self.rec.key
                    )),
                );
                let _ = self.commit();
                self.pending_failed = Some(format!(
                    "restart budget exhausted: {n} restarts within {}s; last run ended with {last}",
                    policy.interval_secs
                ));
            }
            Next::WaitForRoom {
                delay_ms,
                restarts: n,
            } => {
                self.schedule_restart(
                    delay_ms,
                    format!("restart budget used up ({n} in {}s); waiting for room in the window; last run ended with {last}", policy.interval_secs),
                );
            }
            Next::Restart { delay_ms, attempt } => {
                self.schedule_restart(
                    delay_ms,
                    format!(
                        "last run ended with {last}; restart {attempt} of {}",
                        policy.attempts
                    ),
                );
            }
        }
    }

    fn schedule_restart(&mut self, delay_ms: u64, message: String) {
        self.gen += 1;
        let gen = self.gen;
        self.next_restart_at_ms = Some(now_ms() + delay_ms);
        self.set_state(AgentState::BackingOff, Some(message));
        let _ = self.commit();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = tx.send(Msg::RestartDue(gen));
        });
    }

    async fn on_restart_due(&mut self, gen: u64) {
        if gen != self.gen
            || self.rec.state != AgentState::BackingOff
            || self.rec.desired != DesiredState::Running
        {
            return;
        }
        // Audit before effect: no record, no restart.
        let n = self.rec.restarts + 1;
        if let Err(e) = self
            .rt
            .system_event(
                "agent.restart",
                Some(&self.rec.key),
                "requested",
                format!("restart {n} by the supervisor"),
            )
            .await
        {
            self.set_state(
                AgentState::Failed,
                Some(format!("restart refused: {}", e.message)),
            );
            let _ = self.commit();
            return;
        }
        self.rec.restart_times.push(now_ms());
        self.rec.restarts += 1;
        let _ = self.start_or_fail().await;
    }

    /// A credential was rotated: a running agent restarts to fetch the new value at start
    /// (audited before the restart); a held-back one re-checks.
    async fn on_credentials_rotated(&mut self) {
        if self.rec.state != AgentState::Running || self.rec.desired != DesiredState::Running {
            return self.resync().await;
        }
        if self.rec.spec.credential_refresh == agenfleet_protocol::CredentialRefresh::Refresh {
            // The shim is waiting on its gateway and takes the new value in place.
            return;
        }
        if let Err(e) = self
            .rt
            .system_event(
                "agent.restart",
                Some(&self.rec.key),
                "requested",
                "to deliver a rotated credential".into(),
            )
            .await
        {
            tracing::error!(agent = %self.rec.key, error = %e.message, "not restarting after a rotation");
            return;
        }
        self.gen += 1;
        if self.stop_container().await.is_ok() {
            let _ = self.start_or_fail().await;
        }
    }

    /// After the engine (re)connected: find our container and reconcile with it.
    async fn resync(&mut self) {
        if self.held_back && self.rec.desired == DesiredState::Running {
            let _ = self.start_or_fail().await;
            return;
        }
        let Ok(docker) = self.rt.engine.client() else {
            return;
        };
        let inspected = match self.rec.container_id.clone() {
            Some(id) => match docker.inspect_container(&id, None).await {
                Ok(c) => Some((id, c)),
                Err(e) if is_not_found(&e) => None,
                Err(e) => {
                    tracing::warn!(agent = %self.rec.key, error = %e, "cannot inspect during resync");
                    return;
                }
            },
            None => None,
        };
        match inspected {
            Some((id, c)) => {
                let s = c.state.unwrap_or_default();
                let running = s.running.unwrap_or(false);
                match (self.rec.desired, running) {
                    (DesiredState::Running, true) => {
                        if self.rec.state != AgentState::Running || self.log_task.is_none() {
                            let was = self.rec.state;
                            if self.mark_running(&docker, &id).await.is_ok() {
                                tracing::info!(agent = %self.rec.key, container = %&id[..12.min(id.len())], previous = %was, "adopted running container");
                                let _ = self.commit();
                                let _ = self
                                    .rt
                                    .system_event(
                                        "agent.adopted",
                                        Some(&self.rec.key),
                                        "observed",
                                        format!(
                                            "running container {} adopted without a restart",
                                            &id[..12.min(id.len())]
                                        ),
                                    )
                                    .await;
                            }
                        }
                    }
                    (DesiredState::Stopped, true) => {
                        if self.stop_container().await.is_ok() {
                            self.set_state(AgentState::Stopped, None);
                            let _ = self.commit();
                        }
                    }
                    (DesiredState::Stopped, false) => {
                        if self.rec.state != AgentState::Stopped {
                            self.set_state(AgentState::Stopped, None);
                            let _ = self.commit();
                        }
                    }
                    (DesiredState::Running, false) => match self.rec.state {
                        AgentState::Running | AgentState::Pending | AgentState::Unknown => {
                            self.on_exit(ExitInfo {
                                code: s.exit_code.unwrap_or(-1),
                                oom_killed: s.oom_killed.unwrap_or(false),
                                at_ms: s
                                    .finished_at
                                    .as_deref()
                                    .and_then(rfc3339_ms)
                                    .unwrap_or_else(now_ms),
                            })
                            .await;
                        }
                        AgentState::BackingOff if self.next_restart_at_ms.is_none() => {
                            self.apply_policy().await
                        }
                        AgentState::Stopped => {
                            let _ = self.start_or_fail().await;
                        }
                        _ => {}
                    },
                }
            }
            None => {
                self.rec.container_id = None;
                match (self.rec.desired, self.rec.state) {
                    (DesiredState::Stopped, _) => {
                        self.set_state(AgentState::Stopped, None);
                        let _ = self.commit();
                    }
                    (DesiredState::Running, AgentState::Failed) => {
                        let _ = self.commit();
                    }
                    (DesiredState::Running, AgentState::BackingOff)
                        if self.next_restart_at_ms.is_some() => {}
                    (DesiredState::Running, AgentState::BackingOff) => self.apply_policy().await,
                    (DesiredState::Running, _) => {
                        let _ = self.start_or_fail().await;
                    }
                }
            }
        }
    }
}
