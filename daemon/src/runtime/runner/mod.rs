//! One agent's supervisor task (its runner): it owns the agent's record and drives its
//! container towards the desired state — create, start, restart with capped exponential
//! backoff and jitter inside a budget (the arithmetic is `restart.rs`), stop, reset,
//! delete. Runners are fed by operator commands, by the engine's container events (routed
//! by the hub) and by their own timers; they never poll. Every state change is written to
//! the store before it is published to the fleet state. After an engine (re)connect a
//! running container is adopted as it is (same id and start time, no restart), a dead one
//! is handled as an exit, a missing one is recreated (the engine side is `engine.rs`).

mod apply;
mod creds;
mod engine;
mod exits;
mod swarm;
mod swarm_token;

pub use apply::Apply;
pub(crate) use engine::{init_program, secrets_of, InitFrom};
pub(crate) use swarm::task_parts;
pub(crate) use swarm_token::join_gateway;

use super::container;
use super::engine::{bollard_err, is_not_found, ContainerEvent};
use super::hub::Runtime;
use super::logs::LogRing;
use crate::store::AgentRecord;
use agenfleet_protocol::{now_ms, AgentState, AgentView, ApiError, DesiredState, ExitInfo};
use std::sync::Arc;
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
    /// Swarm mode: a new gateway token.
    RotateToken,
}

pub(super) enum Msg {
    Cmd(Cmd, oneshot::Sender<Result<AgentView, ApiError>>),
    Event(ContainerEvent),
    /// Look at the container again (with the operation it counts towards, if any).
    Resync(Option<Arc<crate::ops::OpHandle>>),
    RestartDue(u64),
    /// A new version of the named credential.
    CredentialsRotated(String),
    /// Swarm mode: the service's tasks, as the hub's sweep read them.
    Tasks(Vec<bollard::models::Task>),
    /// Swarm mode: the task's shim says the kernel's OOM killer ended its program (at).
    TaskOom(u64),
    /// A new spec to put in force (`agents apply`, `agents rollback`).
    Apply(
        Box<Apply>,
        oneshot::Sender<Result<agenfleet_protocol::spec::ApplyOutcome, ApiError>>,
    ),
}

/// One agent's supervisor task.
pub(super) struct Runner {
    rt: Arc<Runtime>,
    rec: AgentRecord,
    tx: mpsc::UnboundedSender<Msg>,
    logs: LogRing,
    /// Bumped whenever a scheduled restart must no longer happen.
    gen: u64,
    started_at_ms: Option<u64>,
    next_restart_at_ms: Option<u64>,
    log_task: Option<JoinHandle<()>>,
    /// The engine's last health verdict for the current container ("healthy",
    /// "unhealthy"); None before the first one.
    health: Option<&'static str>,
    /// The container was killed for failing its health check (its exit says so).
    killed_unhealthy: bool,
    /// An `agent.failed` record to write after the exit that caused it.
    pending_failed: Option<String>,
    /// Waiting for the vault (or a credential) before it may start.
    held_back: bool,
    /// When the engine last reported an OOM kill in the current container (Unix ms).
    oom_at_ms: Option<u64>,
    /// The spec's hashes and its files as `agents show` lists them: all three read every
    /// byte of the files (up to 2 MiB), so they are worked out when the spec is put in
    /// force rather than on every published view.
    spec_hash: String,
    /// `AgentSpec::container_hash`: what the container's label must say.
    container_hash: String,
    /// The version of the spec in force (read from the store once, then kept by `apply`).
    spec_version: u32,
    file_views: Vec<agenfleet_protocol::FileView>,
    /// Swarm mode: what the runner follows of its service's tasks.
    swarm: swarm::SwarmTrack,
}

/// What a job agent ready for runs says in the fleet view.
const JOB_READY: &str = "job: a fresh container per run";
/// The same, in swarm mode (`runtime/swarm_jobs.rs`).
const JOB_READY_SWARM: &str = "job: a fresh container per run, as a Swarm job on any node";

impl Runner {
    pub(super) fn new(
        rt: Arc<Runtime>,
        rec: AgentRecord,
        tx: mpsc::UnboundedSender<Msg>,
        logs: LogRing,
    ) -> Runner {
        let spec_hash = rec.spec.hash();
        let container_hash = rec.spec.container_hash();
        let spec_version = rt.store.spec_version(&rec.key).unwrap_or_else(|e| {
            tracing::warn!(agent = %rec.key, error = %e, "cannot read the spec's version");
            0
        });
        let file_views = rec
            .spec
            .files
            .iter()
            .map(agenfleet_protocol::FileView::of)
            .collect();
        Runner {
            rt,
            rec,
            tx,
            logs,
            gen: 0,
            started_at_ms: None,
            next_restart_at_ms: None,
            log_task: None,
            health: None,
            killed_unhealthy: false,
            pending_failed: None,
            held_back: false,
            oom_at_ms: None,
            spec_hash,
            container_hash,
            spec_version,
            file_views,
            swarm: Default::default(),
        }
    }

    /// Looks at the agent again: a held-back one may start now; else the engine's side
    /// of its mode reconciles with what the engine shows.
    async fn look_again(&mut self) {
        if self.held_back && self.rec.desired == DesiredState::Running {
            let _ = self.start_or_fail().await;
        } else if self.swarm_mode() {
            self.swarm_resync().await;
        } else {
            self.resync().await;
        }
    }

    /// Whether agents run as Swarm services (`engine_mode = "swarm"`).
    fn swarm_mode(&self) -> bool {
        self.rt.cfg.engine_mode == crate::config::EngineMode::Swarm
    }

    /// What `AgentView::upstreams` says of the spec's providers and connections.
    fn upstream_views(&self) -> Vec<String> {
        let spec = &self.rec.spec;
        let ups = &self.rt.upstreams;
        let tenant = &self.rec.key.tenant;
        spec.providers
            .iter()
            .map(|n| ("provider", n))
            .chain(spec.connections.iter().map(|n| ("connection", n)))
            .map(|(class, n)| match ups.get(tenant, n) {
                Ok(Some(l)) if l.view.spec.tls_inspect => format!("{class} {n} (tls_inspect)"),
                Ok(Some(_)) => format!("{class} {n}"),
                _ => format!("{class} {n} (missing)"),
            })
            .collect()
    }

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
            spec_hash: self.spec_hash.clone(),
            spec_version: self.spec_version,
            description: self.rec.spec.description.clone(),
            created_at_ms: self.rec.created_at_ms,
            usage_today: Default::default(),
            escalations: 0,
            command: self.rec.spec.command.clone(),
            workdir: self.rec.spec.workdir.clone(),
            env: self.rec.spec.env.clone(),
            ungoverned_egress: self.rec.spec.network.mode
                == agenfleet_protocol::NetworkMode::Egress,
            health: self
                .health
                .filter(|_| self.rec.state == AgentState::Running)
                .map(str::to_string),
            credentials: self
                .rec
                .spec
                .credentials
                .iter()
                .map(agenfleet_protocol::CredentialView::of)
                .collect(),
            files: self.file_views.clone(),
            workspace_mb: self.rec.spec.workspace.map(|w| w.size_mb),
            upstreams: self.upstream_views(),
            node: self.swarm.node.clone(),
            task: self.swarm.task.clone(),
            task_state: self.swarm.task_state.clone(),
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

    /// A health verdict from the engine: shown, not stored.
    fn set_health(&mut self, h: Option<&'static str>) {
        if self.health != h {
            self.health = h;
            self.rt.fleet.upsert(self.view());
        }
    }

    /// The engine says the container failed its health check `retries` times in a row:
    /// that counts as an exit. It is recorded, shown, and the container is killed; its
    /// `die` goes to the restart policy like any exit.
    async fn on_unhealthy(&mut self) {
        if self.rec.state != AgentState::Running {
            return;
        }
        self.set_health(Some("unhealthy"));
        let Some(id) = self.rec.container_id.clone() else {
            return;
        };
        let retries = self
            .rec
            .spec
            .health
            .as_ref()
            .map(|h| h.retries)
            .unwrap_or(0);
        tracing::warn!(agent = %self.rec.key, retries, "agent unhealthy: restarting it");
        let _ = self
            .rt
            .system_event(
                "agent.unhealthy",
                Some(&self.rec.key),
                "observed",
                format!("failed its health check {retries} times in a row; killed, the restart policy decides what follows"),
            )
            .await;
        self.killed_unhealthy = true;
        if let Ok(docker) = self.rt.engine.client() {
            let opts = bollard::query_parameters::KillContainerOptions {
                signal: "SIGKILL".to_string(),
            };
            if let Err(e) = docker.kill_container(&id, Some(opts)).await {
                tracing::warn!(agent = %self.rec.key, error = %e, "cannot kill the unhealthy container");
            }
        }
    }

    fn set_state(&mut self, state: AgentState, message: Option<String>) {
        if self.rec.state != state {
            tracing::info!(agent = %self.rec.key, from = %self.rec.state, to = %state, message = ?message, "agent state");
        }
        self.rec.state = state;
        self.rec.message = message;
        if self.rec.spec.runs.kind == agenfleet_protocol::AgentKind::Job {
            self.rt
                .jobs
                .set_ready(&self.rec.key, state == AgentState::Running);
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        // Show what we knew before the engine answers.
        let _ = self.commit();
        // Each message's work is boxed: awaited inline, the engine calls it may make would
        // make this (idle, per-agent) future as large as the largest of them — 20 KB an
        // agent — where boxed they take memory only while a message is handled.
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Cmd(cmd, reply) => {
                    let result = Box::pin(self.on_command(cmd)).await;
                    let done = cmd == Cmd::Delete && result.is_ok();
                    let _ = reply.send(result);
                    if done {
                        return;
                    }
                }
                Msg::Event(ev) => Box::pin(self.on_event(ev)).await,
                Msg::Resync(op) => {
                    Box::pin(self.look_again()).await;
                    if let Some(op) = op {
                        op.step();
                    }
                }
                Msg::RestartDue(gen) => Box::pin(self.on_restart_due(gen)).await,
                Msg::Tasks(tasks) => {
                    if let Ok(docker) = self.rt.engine.client() {
                        Box::pin(self.swarm_tasks(&docker, tasks)).await;
                    }
                }
                Msg::TaskOom(at_ms) => Box::pin(self.on_oom(at_ms)).await,
                Msg::CredentialsRotated(name) => Box::pin(self.on_credentials_rotated(&name)).await,
                Msg::Apply(a, reply) => {
                    let _ = reply.send(Box::pin(self.on_apply(*a)).await);
                }
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
            Cmd::RotateToken => {
                if !self.swarm_mode() {
                    return Err(ApiError::precondition(format!(
                        "agent {key} runs as a container on this host: its gateway is its own socket, checked by the caller's process, and has no token (tokens are for engine_mode = \"swarm\")"
                    )));
                }
                if self.rec.spec.runs.kind == agenfleet_protocol::AgentKind::Job {
                    return Err(ApiError::precondition(format!(
                        "agent {key} is a job agent: each of its runs gets a gateway token of its own, which is refused from the run's end on; there is none to rotate"
                    )));
                }
                self.swarm_rotate_token().await
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
                    if self.rec.spec.network.mode.has_own_network() { "network, " } else { "" },
                    creds.len(),
                    versions
                );
                self.rt
                    .system_event("agent.purge", Some(&key), "requested", purge.clone())
                    .await?;
                if self.swarm_mode() {
                    self.swarm_remove(&docker).await?;
                } else if let Some(id) = self.rec.container_id.clone() {
                    super::engine::remove_container(&docker, &id)
                        .await
                        .map_err(|e| bollard_err("remove the agent's container", e))?;
                }
                if self.rec.spec.network.mode.has_own_network() && !self.swarm_mode() {
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
                let _ =
                    std::fs::remove_dir_all(container::gateway_dir(&self.rt.cfg.state_dir, &key));
                // Its triggers stop, and its runs end with it (each end recorded; a
                // job's container is stopped and removed by its run's task).
                self.rt.jobs.set_ready(&key, false);
                self.rt.triggers.revoke_agent(&key);
                self.rt
                    .runs
                    .end_agent(&key, "cancelled: the agent was deleted")
                    .await;
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

    /// Starts the agent; on failure records why (Failed, or Pending while the engine is
    /// away) and returns the error.
    async fn start_or_fail(&mut self) -> Result<AgentView, ApiError> {
        if let Some(why) = self.hold_back_reason() {
            self.held_back = true;
            self.next_restart_at_ms = None;
            self.set_state(AgentState::Pending, Some(why));
            return self.commit();
        }
        self.held_back = false;
        if self.rec.spec.runs.kind == agenfleet_protocol::AgentKind::Job {
            // No container of its own: ready is running; each run gets one (jobs.rs).
            self.next_restart_at_ms = None;
            let ready = if self.swarm_mode() {
                JOB_READY_SWARM
            } else {
                JOB_READY
            };
            self.set_state(AgentState::Running, Some(ready.into()));
            let view = self.commit();
            self.rt.runs.poke();
            return view;
        }
        match self.ensure_running().await {
            Ok(()) => {
                let what = if self.swarm_mode() {
                    format!(
                        "service {}",
                        crate::runtime::swarm::service_name(&self.rt.instance, &self.rec.key)
                    )
                } else {
                    format!(
                        "container {}",
                        self.rec
                            .container_id
                            .as_deref()
                            .map(|c| &c[..c.len().min(12)])
                            .unwrap_or("-")
                    )
                };
                let detail = format!(
                    "{what} from {}",
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

    async fn on_event(&mut self, ev: ContainerEvent) {
        if self.swarm_mode() {
            // Any of the service's task containers on this node: its tasks say the rest.
            match ev.action.as_str() {
                "health_status: healthy" => self.set_health(Some("healthy")),
                "health_status: unhealthy" => self.set_health(Some("unhealthy")),
                "start" | "die" | "oom" | "destroy" => self.swarm_sync().await,
                _ => {}
            }
            return;
        }
        if self.rec.container_id.as_deref() != Some(ev.container_id.as_str()) {
            return;
        }
        match ev.action.as_str() {
            "die" => self.check_exit().await,
            "oom" => {
                let at = u64::try_from(ev.time_ns / 1_000_000)
                    .ok()
                    .filter(|t| *t > 0)
                    .unwrap_or_else(now_ms);
                self.on_oom(at).await
            }
            "health_status: healthy" => self.set_health(Some("healthy")),
            "health_status: unhealthy" => self.on_unhealthy().await,
            "destroy" => {
                self.rec.container_id = None;
                if self.rec.state == AgentState::Running {
                    tracing::warn!(agent = %self.rec.key, "the agent's container was removed behind our back");
                    self.on_exit(ExitInfo {
                        reason: None,
                        code: -1,
                        oom_killed: false,
                        unhealthy: false,
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
}
