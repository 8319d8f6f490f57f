//! The daemon's hub: `Runtime` holds the parts every server and runner works with (config,
//! store, fleet state, engine, audit log, vault, authorization, policy, incidents) and
//! wires them: it loads the stored agents and starts a runner (`runner.rs`) and a gateway
//! for each, routes the engine's container events to the runner of their agent, reports
//! and removes orphans, and runs purges when they are due. It does not know any server:
//! the gateway is started through the `GatewayStarter` that `lib.rs` hands in.
//!
//! On daemon start every agent's runner first publishes its stored state; when the engine
//! connects (and after every reconnect) each runner re-inspects its container. Labelled
//! containers that no agent owns are reported and removed after a grace period.

use super::container::{key_from_labels, LABEL_INSTANCE};
use super::engine::{Engine, EngineSignal};
use super::image::Images;
use super::logs::LogRing;
use super::network::SubnetPool;
use super::runner::{Cmd, Msg, Runner};
use super::stats::CgroupReader;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::fleet_state::FleetState;
use crate::incidents::detect::Signal;
use crate::store::{AgentKey, AgentRecord, Store};
use crate::vault::Vault;
use agenfleet_protocol::spec::{ApplyOutcome, SpecHistory, SpecVersion};
use agenfleet_protocol::{now_ms, AgentSpec, AgentView, ApiError, AuditEvent, ImageInfo};
use bollard::query_parameters::ListContainersOptions;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Starts an agent's gateway server (its socket in `container::gateway_dir`) and answers
/// the task serving it. `lib.rs` hands in the RPC layer's; supervision never names it.
pub type GatewayStarter = fn(Arc<Runtime>, AgentKey) -> std::io::Result<JoinHandle<()>>;

#[derive(Clone)]
pub(super) struct RunnerHandle {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    logs: LogRing,
    pub(super) gateway: Option<Arc<JoinHandle<()>>>,
    /// Bumped whenever the agent's credentials change (wakes `wait_credentials`).
    creds_gen: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Swarm mode: how often the tasks of every service are read (see `swarm_sweep`).
const SWARM_SWEEP: Duration = Duration::from_secs(5);

/// Whether a container is a Swarm task's (its service, not the container, is ours to act on).
fn is_swarm_task(labels: &HashMap<String, String>) -> bool {
    labels.contains_key("com.docker.swarm.service.id")
}

/// How long the engine must stay unreachable before it is an incident.
const ENGINE_DOWN_GRACE: Duration = Duration::from_secs(3);

/// The daemon's hub (see the module's header).
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
    /// The tenants' providers and connections, their keys, and model usage.
    pub upstreams: crate::upstreams::Upstreams,
    /// The agents' images (the built-in one built once).
    pub images: Images,
    /// Where agents' own networks take their subnets from.
    pub pool: SubnetPool,
    /// Reads the agents' cgroups (runners tell it where each container's is).
    pub cgroups: CgroupReader,
    /// Backups being streamed to their callers.
    pub backups: crate::backup::Backups,
    /// What audit retention knows of the sealed segments.
    pub retention: super::retention::Surveys,
    /// Long operations in progress.
    pub ops: crate::ops::Ops,
    /// Each agent's private memory.
    pub memory: Arc<crate::memory::Memory>,
    /// Runs handed to agents.
    pub runs: Arc<crate::runs::Runs>,
    /// Webhook subscriptions and schedules that start runs.
    pub triggers: Arc<crate::triggers::Triggers>,
    /// Job runs in progress, each in its own container.
    pub jobs: super::jobs::Jobs,
    /// Swarm mode: what the daemon knows of the swarm.
    pub swarm: super::swarm::SwarmInfo,
    /// Swarm mode: the agents' gateway tokens in force and the endpoint's addresses.
    pub gateway_keys: super::endpoint::GatewayKeys,
    runners: Mutex<HashMap<AgentKey, RunnerHandle>>,
    gateways: GatewayStarter,
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
    pub pool: SubnetPool,
    pub gateways: GatewayStarter,
}

impl Runtime {
    pub fn new(p: Parts) -> Arc<Runtime> {
        let upstreams = crate::upstreams::Upstreams::new(p.store.clone(), p.vault.clone());
        let backups = crate::backup::Backups::new(&p.cfg.state_dir);
        let ops = crate::ops::Ops::new(p.fleet.clone());
        let memory = Arc::new(crate::memory::Memory::new(
            &p.cfg.state_dir,
            p.vault.clone(),
            crate::memory::Limits {
                max_value_bytes: p.cfg.memory_max_value_bytes,
                max_keys: p.cfg.memory_max_keys,
                max_bytes: p.cfg.memory_max_bytes,
            },
        ));
        let runs = Arc::new(crate::runs::Runs::new(p.store.clone(), p.audit.clone()));
        let triggers = Arc::new(crate::triggers::Triggers::new(
            p.store.clone(),
            p.vault.clone(),
            p.audit.clone(),
            runs.clone(),
            crate::triggers::Limits {
                skew_secs: p.cfg.http.skew_secs,
                max_body_bytes: p.cfg.http.max_body_bytes,
            },
        ));
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
            upstreams,
            images: Images::default(),
            pool: p.pool,
            cgroups: CgroupReader::default(),
            backups,
            retention: Default::default(),
            ops,
            memory,
            runs,
            triggers,
            jobs: Default::default(),
            swarm: Default::default(),
            gateway_keys: Default::default(),
            runners: Mutex::new(HashMap::new()),
            gateways: p.gateways,
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
    /// Answers the id of the agents' resync after an unseal (an operation that ends
    /// when every runner has looked again; see `ops`).
    pub fn vault_changed(&self) -> Option<u64> {
        let state = self.vault.state();
        let unsealed = state == agenfleet_protocol::VaultState::Unsealed;
        if unsealed {
            self.incidents.signal(Signal::VaultOpen);
        }
        self.fleet.update_daemon(|d| d.vault = state);
        let handles: Vec<RunnerHandle> = self.runners().values().cloned().collect();
        let op = (unsealed && !handles.is_empty()).then(|| {
            Arc::new(
                self.ops
                    .start("unseal: the agents resync", "agents", handles.len() as u64),
            )
        });
        let id = op.as_ref().map(|o| o.id());
        for h in handles {
            let _ = h.tx.send(Msg::Resync(op.clone()));
        }
        id
    }

    /// After the vault opened: the audit log gets its signing key back from the vault, or
    /// the key is sealed into the vault (see `audit::escrow`); either is recorded.
    pub async fn audit_key_follows_vault(&self) {
        use crate::audit::escrow::{sync, Synced};
        let (action, public) = match sync(&self.vault, &self.audit, &self.instance) {
            Ok(Synced::Nothing) => return,
            Ok(Synced::Restored(k)) => ("audit.key_restored", k),
            Ok(Synced::Escrowed(k)) => ("audit.key_escrowed", k),
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal the audit signing key into the vault");
                return;
            }
        };
        let detail = match action {
            "audit.key_restored" => format!(
                "signing key {}… back from the vault: checkpoints resume",
                &public[..16]
            ),
            _ => format!(
                "signing key {}… sealed into the vault (it comes back at unseal on a host whose keyring lacks it)",
                &public[..16]
            ),
        };
        tracing::info!(action, "{detail}");
        let _ = self.system_event(action, None, "ok", detail).await;
    }

    /// An agent's stored spec.
    pub fn agent_spec(&self, key: &AgentKey) -> Option<AgentSpec> {
        self.store.agent_spec(key).ok().flatten()
    }

    /// Purges a deleted agent's record and credentials (cascade) and records it.
    pub async fn purge_now(&self, key: &AgentKey, what: String) -> Result<(), ApiError> {
        // The workspace first: a purge that cannot remove it keeps the record, to be tried
        // again, rather than leave data no record points at.
        let (state, k) = (self.cfg.state_dir.clone(), key.clone());
        let workspace = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(super::volumes::files_dir(&state, &k));
            super::volumes::remove_workspace(&state, &k)
        })
        .await
        .map_err(|e| ApiError::internal(format!("cannot purge the workspace: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot purge the workspace: {e}")))?;
        let what = match workspace {
            Some(mb) => format!("{what}; workspace removed ({mb} MiB)"),
            None => what,
        };
        // Swarm mode: the workspace is a volume of the node its task ran on.
        let what = if self.cfg.engine_mode == crate::config::EngineMode::Swarm {
            let docker = self.engine.client()?;
            let volume = super::swarm_data::workspace_volume(&self.instance, key);
            match super::swarm_data::remove_workspace_volume(&docker, &self.instance, key).await? {
                true => format!("{what}; workspace volume {volume} removed from this node"),
                false => what,
            }
        } else {
            what
        };
        // Its memory file next, on the same terms (removed, not emptied).
        let what = match self.memory.purge(key) {
            Ok(Some(bytes)) => format!("{what}; memory store removed ({bytes} bytes)"),
            Ok(None) => what,
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "cannot purge the agent's memory: {e}"
                )))
            }
        };
        self.store
            .delete_agent(key)
            .map_err(|e| ApiError::internal(format!("cannot purge the agent's record: {e}")))?;
        self.policy.forget_agent(key);
        tracing::info!(agent = %key, "agent data purged");
        let _ = self
            .system_event("agent.purge", Some(key), "ok", what)
            .await;
        match self.store.finish_tenant_purge(&key.tenant) {
            Ok(true) => {
                tracing::info!(tenant = %key.tenant, "deleted tenant purged (its last agent's data went)");
                let _ = self
                    .audit_event(AuditEvent {
                        actor: "agenfleetd".into(),
                        action: "tenant.purge".into(),
                        tenant: Some(key.tenant.clone()),
                        agent: None,
                        outcome: "ok".into(),
                        detail: "projects and record removed after its agents' purges".into(),
                    })
                    .await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(tenant = %key.tenant, error = %e, "cannot finish a tenant's purge")
            }
        }
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
    /// its runner decides how the new value reaches it (a restart of the built-in shim, or
    /// in place / a restart of the program for an image under the init).
    pub fn credentials_changed(&self, key: &AgentKey, rotated: Option<String>) {
        let Some(h) = self.runners().get(key).cloned() else {
            return;
        };
        h.creds_gen.send_modify(|g| *g += 1);
        let _ = h.tx.send(match rotated {
            Some(name) => Msg::CredentialsRotated(name),
            None => Msg::Resync(None),
        });
    }

    /// Whether agents run as Swarm services (`engine_mode = "swarm"`).
    pub fn swarm_mode(&self) -> bool {
        self.cfg.engine_mode == crate::config::EngineMode::Swarm
    }

    /// The id of the agent's current container, if it has one.
    pub fn container_of(&self, key: &AgentKey) -> Option<String> {
        self.fleet.get(key).and_then(|v| v.container_id)
    }

    /// Lets one agent re-check whether it may start (its credentials changed).
    pub fn nudge(&self, key: &AgentKey) {
        if let Some(h) = self.runners().get(key) {
            let _ = h.tx.send(Msg::Resync(None));
        }
    }

    /// Swarm mode: a task's shim reported its program killed by the kernel's OOM killer
    /// (the daemon cannot inspect a container on another node); taken as the engine's OOM
    /// report would be.
    pub fn task_oom(&self, key: &AgentKey) {
        if let Some(h) = self.runners().get(key) {
            let _ = h.tx.send(Msg::TaskOom(agenfleet_protocol::now_ms()));
        }
    }

    pub(super) fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<AgentKey, RunnerHandle>> {
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
        tokio::spawn(crate::pulse::close_loop(self.fleet.clone()));
        if self.swarm_mode() {
            // A task's stats come from its shim, on any node (`rpc/swarm_gateway.rs`).
            tokio::spawn(self.clone().swarm_sweep());
        } else {
            tokio::spawn(super::stats::sample_loop(
                self.fleet.clone(),
                self.cgroups.clone(),
                Duration::from_millis(self.cfg.stats_interval_ms),
            ));
        }
        Ok(())
    }

    /// Swarm mode: tasks on other nodes send this engine no events, so every
    /// `SWARM_SWEEP` one read of our services and one of the tasks go to the runners, with
    /// one of the nodes (which are down): three calls whatever the fleet's size. A service
    /// of ours that no agent owns is removed.
    async fn swarm_sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWARM_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(docker) = self.engine.client() else {
                continue;
            };
            if self.swarm.check_manager(&docker).await.is_err() {
                continue;
            }
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            )]);
            let opts = bollard::query_parameters::ListServicesOptions {
                filters: Some(filters),
                ..Default::default()
            };
            let (services, tasks, nodes) = match (
                docker.list_services(Some(opts)).await,
                docker.list_tasks(None).await,
                docker.list_nodes(None).await,
            ) {
                (Ok(s), Ok(t), Ok(n)) => (s, t, n),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::warn!(error = %e, "swarm sweep: cannot list services, tasks and nodes");
                    continue;
                }
            };
            self.swarm.learn_nodes(&nodes);
            let mut by_service: HashMap<String, Vec<bollard::models::Task>> = HashMap::new();
            for t in tasks {
                if let Some(s) = t.service_id.clone() {
                    by_service.entry(s).or_default().push(t);
                }
            }
            for svc in services {
                let (Some(id), Some(labels)) = (
                    svc.id.clone(),
                    svc.spec.as_ref().and_then(|s| s.labels.clone()),
                ) else {
                    continue;
                };
                let Some(key) = key_from_labels(&labels) else {
                    continue;
                };
                // A job run's service: its run's follower looks (`swarm_jobs.rs`); one
                // whose run is over is removed.
                if let Some(run) = labels.get(super::jobs::LABEL_RUN) {
                    let run = run.parse::<u64>().unwrap_or(0);
                    if self.jobs.is_live(run) {
                        self.jobs.poke(run);
                    } else if !self.runs.is_open(run) {
                        let name = svc.spec.as_ref().and_then(|s| s.name.clone()).unwrap_or(id);
                        super::swarm_jobs::remove(&self, &docker, &name).await;
                    }
                    continue;
                }
                let handle = self.runners().get(&key).cloned();
                match handle {
                    Some(h) => {
                        let tasks = by_service.remove(&id).unwrap_or_default();
                        let _ = h.tx.send(Msg::Tasks(tasks));
                    }
                    None => {
                        tracing::warn!(agent = %key, service = %id, "removing a service no agent owns");
                        let _ = self
                            .system_event(
                                "service.orphan_remove",
                                Some(&key),
                                "requested",
                                format!("Swarm service {id} carries this daemon's labels but no agent owns it; removed"),
                            )
                            .await;
                        if let Err(e) = docker.delete_service(&id).await {
                            tracing::warn!(service = %id, error = %e, "cannot remove an orphan service");
                        }
                    }
                }
            }
        }
    }

    fn spawn_runner(self: &Arc<Self>, rec: AgentRecord) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let logs = LogRing::new(self.cfg.log_ring_lines);
        let gateway = match (self.gateways)(self.clone(), rec.key.clone()) {
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
        let runner = Runner::new(self.clone(), rec, tx.clone(), logs);
        tokio::spawn(runner.run(rx));
        tx
    }

    async fn dispatch(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<EngineSignal>) {
        while let Some(sig) = rx.recv().await {
            match sig {
                EngineSignal::Connected(info) => {
                    self.swarm.forget();
                    self.fleet.update_daemon(|d| d.engine = info);
                    self.incidents.signal(Signal::EngineUp);
                    self.reconcile().await;
                    tokio::spawn(super::jobs::reconcile(self.clone()));
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
                            rt.incidents.signal(Signal::EngineDown { why });
                        }
                    });
                }
                EngineSignal::Container(ev) => {
                    // A job's container is its run's (runtime/jobs.rs follows it; in
                    // swarm mode its task's follower is told to look).
                    if let Some(run) = ev.labels.get(super::jobs::LABEL_RUN) {
                        if is_swarm_task(&ev.labels) {
                            if let Ok(run) = run.parse::<u64>() {
                                self.jobs.poke(run);
                            }
                        }
                        continue;
                    }
                    let Some(key) = key_from_labels(&ev.labels) else {
                        continue;
                    };
                    let handle = self.runners().get(&key).cloned();
                    match handle {
                        Some(h) => {
                            let _ = h.tx.send(Msg::Event(ev));
                        }
                        None if (ev.action == "start" || ev.action == "create")
                            && !is_swarm_task(&ev.labels) =>
                        {
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
                        if labels.contains_key(super::jobs::LABEL_RUN) || is_swarm_task(&labels) {
                            continue;
                        }
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
            let _ = h.tx.send(Msg::Resync(None));
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
                    match super::engine::remove_container(&docker, &id).await {
                        Ok(true) => tracing::info!(container = %short, "removed orphan container"),
                        Ok(false) => {}
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

    /// Builds the agent image (again, with `force`).
    pub async fn build_image(&self, force: bool) -> Result<ImageInfo, ApiError> {
        let docker = self.engine.client_when_up(Duration::from_secs(10)).await?;
        self.images.build(&docker, force, &self.ops).await
    }

    /// Builds an operator's image from the tar of a Dockerfile directory.
    pub async fn build_context_image(
        &self,
        tag: &str,
        context: Vec<u8>,
    ) -> Result<ImageInfo, ApiError> {
        let docker = self.engine.client_when_up(Duration::from_secs(10)).await?;
        super::image::build_context(&docker, tag, context, &self.ops).await
    }

    /// Everything a spec must pass before it is stored (by create or apply): its own
    /// validation, this daemon's config, the tenant's providers and connections, and an
    /// image the engine has.
    async fn check_spec(&self, spec: &AgentSpec) -> Result<(), ApiError> {
        spec.validate()
            .map_err(|e| ApiError::invalid(format!("invalid spec: {e}")))?;
        if spec.network.mode == agenfleet_protocol::NetworkMode::Egress
            && !self.cfg.allow_direct_egress
        {
            return Err(ApiError::invalid(
                "invalid spec: field `network.mode`: \"egress\" lets the agent reach any host around the gateway (nothing it sends is decided or audited), and this daemon's config does not allow it (allow_direct_egress = false); use \"gateway\" (the default): HTTP(S) through the egress proxy, every request decided",
            ));
        }
        let swarm = self.cfg.engine_mode == crate::config::EngineMode::Swarm;
        if !spec.placement.is_empty() && !swarm {
            return Err(ApiError::invalid(
                "invalid spec: field `placement`: this daemon runs agents as containers on its own host (engine_mode = \"containers\"); placement applies in swarm mode",
            ));
        }
        if swarm {
            crate::runtime::swarm_data::check_files(&spec.files)
                .map_err(|e| ApiError::invalid(format!("invalid spec: {e}")))?;
        }
        if swarm
            && spec.network.mode == agenfleet_protocol::NetworkMode::Egress
            && spec.runs.kind == agenfleet_protocol::AgentKind::Service
        {
            return Err(ApiError::invalid(
                "invalid spec: field `network.mode`: \"egress\" is not offered in swarm mode (every agent's overlay network is internal: its way out is the gateway)",
            ));
        }
        // Providers and connections must be the tenant's, of the class the spec says.
        for (field, class, names) in [
            (
                "providers",
                agenfleet_protocol::UpstreamClass::Provider,
                &spec.providers,
            ),
            (
                "connections",
                agenfleet_protocol::UpstreamClass::Connection,
                &spec.connections,
            ),
        ] {
            for (i, n) in names.iter().enumerate() {
                let found = self
                    .upstreams
                    .exists(&spec.tenant, n)
                    .map_err(ApiError::from)?;
                if found.is_none_or(|v| v.spec.class != class) {
                    return Err(ApiError::invalid(format!(
                        "invalid spec: field `{field}[{i}]`: tenant {} has no {class} named `{n}` (`agenfleet {field} list`)",
                        spec.tenant
                    )));
                }
            }
        }
        // Check the image before anything is stored: a spec naming a missing image
        // creates nothing. Just after the daemon started, wait for its first connection.
        let docker = self.engine.client_when_up(Duration::from_secs(10)).await?;
        self.images.resolve(&docker, &spec.image).await?;
        Ok(())
    }

    /// Stores a new agent and starts it; answers once it runs (or failed to). `author`
    /// is recorded on the spec's version 1.
    pub async fn create(
        self: &Arc<Self>,
        spec: AgentSpec,
        author: &str,
    ) -> Result<AgentView, ApiError> {
        self.check_spec(&spec).await?;
        let rec = AgentRecord::new(spec, now_ms());
        let key = rec.key.clone();
        // Hold the runners lock across the insert so two creates of one name cannot race.
        {
            let runners = self.runners();
            if runners.contains_key(&key) {
                return Err(ApiError::exists(format!("agent {key} already exists")));
            }
            self.store
                .insert_agent_as(&rec, author)
                .map_err(|e| match e {
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

    /// Puts a new spec in force for an existing agent (its runner does it, see
    /// `runner/apply.rs`); `expected`: the version the caller saw (None: the current one).
    pub async fn apply(
        &self,
        spec: AgentSpec,
        expected: Option<u32>,
        author: &str,
        note_prefix: &str,
    ) -> Result<ApplyOutcome, ApiError> {
        spec.validate()
            .map_err(|e| ApiError::invalid(format!("invalid spec: {e}")))?;
        let key = AgentKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        };
        let tx = self
            .runners()
            .get(&key)
            .map(|h| h.tx.clone())
            .ok_or_else(|| ApiError::not_found(format!("no agent {key}")))?;
        self.check_spec(&spec).await?;
        let expected = match expected {
            Some(v) => v,
            None => self
                .store
                .spec_version(&key)
                .map_err(|e| ApiError::internal(format!("cannot read the spec's version: {e}")))?,
        };
        let (reply, rx) = oneshot::channel();
        let apply = super::runner::Apply {
            spec,
            expected,
            author: author.to_string(),
            note_prefix: note_prefix.to_string(),
        };
        tx.send(Msg::Apply(Box::new(apply), reply))
            .map_err(|_| ApiError::not_found("the agent is gone"))?;
        rx.await
            .map_err(|_| ApiError::internal("the agent's supervisor stopped without answering"))?
    }

    /// Every stored version of an agent's spec, with their specs.
    pub fn spec_versions(&self, key: &AgentKey) -> Result<Vec<SpecVersion>, ApiError> {
        self.store
            .spec_versions(key)
            .map_err(|e| ApiError::internal(format!("cannot read the spec history: {e}")))
    }

    /// An agent's spec history (without the specs).
    pub fn spec_history(&self, key: &AgentKey) -> Result<SpecHistory, ApiError> {
        let versions = self.spec_versions(key)?;
        Ok(SpecHistory {
            agent: key.to_string(),
            current: versions.last().map(|v| v.version).unwrap_or(0),
            versions: versions.iter().map(SpecVersion::info).collect(),
        })
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
}
