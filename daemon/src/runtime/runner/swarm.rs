//! The runner's side in swarm mode (`engine_mode = "swarm"`): the agent is a service of
//! one task (`runtime/swarm.rs` makes its spec). Start is "one replica" (creating or
//! updating the service), stop is "no replica", a replacement bumps Swarm's force counter;
//! Swarm places, starts and restarts the task. The runner reads the service's tasks —
//! when the engine reports one of their containers on this node (start, die, oom…), and
//! from the hub's sweep for tasks on other nodes — and turns them into the agent's state:
//! pending with Swarm's reason, running on a node, or an exit that the restart budget
//! judges like any other (past it the service is scaled to nothing and the agent is
//! Failed). After a daemon restart the service and its running task are adopted as they
//! are (same ids).

use super::Runner;
use crate::runtime::container;
use crate::runtime::endpoint;
use crate::runtime::engine::{bollard_err, is_not_found};
use crate::runtime::logs::rfc3339_ms;
use crate::runtime::swarm::{self, TaskPhase};
use crate::runtime::swarm_data;
use agenfleet_protocol::{now_ms, AgentState, ApiError, DesiredState, ExitInfo};
use bollard::models::Task;
use bollard::Docker;

/// What the runner follows of its service's tasks.
#[derive(Default)]
pub(crate) struct SwarmTrack {
    /// The current task, its node (hostname) and Swarm's state of it.
    pub(crate) task: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) task_state: Option<String>,
    /// Tasks ended at or before this time (Unix ms) are accounted for.
    watermark: Option<u64>,
    /// Tasks the daemon itself ended (a stop, a replacement): their ends are not exits.
    superseded: Vec<String>,
    /// Tasks reported lost with their node (recorded once each; a few kept).
    lost: Vec<String>,
    /// The budget was spent in `delay` mode: the service is scaled down until the window
    /// has room.
    pub(crate) waiting_for_room: bool,
}

/// How many tasks ended by the daemon are remembered (see `SwarmTrack::superseded`).
const SUPERSEDED_KEPT: usize = 8;

fn task_end_ms(t: &Task) -> u64 {
    t.status
        .as_ref()
        .and_then(|s| s.timestamp.as_deref())
        .and_then(rfc3339_ms)
        .unwrap_or(0)
}

fn task_container(t: &Task) -> Option<String> {
    t.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .filter(|c| !c.is_empty())
}

impl Runner {
    pub(super) fn service(&self) -> String {
        swarm::service_name(&self.rt.instance, &self.rec.key)
    }

    /// The service's tasks (Swarm keeps a few ended ones as history).
    async fn tasks(&self, docker: &Docker) -> Result<Vec<Task>, ApiError> {
        swarm::service_tasks(docker, &self.service(), "the agent's").await
    }

    /// Makes the service exist with one replica, from the spec in force: created, updated
    /// when it was made from another spec or scaled down, left alone when it runs as it
    /// should. The task's state then comes from `swarm_sync`.
    pub(super) async fn swarm_ensure_running(&mut self) -> Result<(), ApiError> {
        let docker = self.rt.engine.client()?;
        self.rt.swarm.check_manager(&docker).await?;
        if self.rec.spec.network.mode == agenfleet_protocol::NetworkMode::Egress {
            return Err(ApiError::invalid(swarm::NO_EGRESS));
        }
        let image_ref = self.begin_start(&docker).await?;
        let network = swarm::network_name(&self.rt.instance, &self.rec.key);
        swarm::ensure_network(
            &docker,
            &network,
            &self.rt.instance,
            self.rt.cfg.swarm_overlay_encrypted,
        )
        .await?;
        let (body, data, image_ref) =
            task_parts(&self.rt, &docker, &self.rec.key, &self.rec.spec, image_ref).await?;
        let name = self.service();
        let existing = match docker.inspect_service(&name, None).await {
            Ok(s) => Some(s),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(bollard_err("inspect the agent's service", e)),
        };
        self.rec.image_ref = Some(image_ref);
        let gateway = self
            .swarm_gateway(&docker, existing.as_ref(), &network)
            .await?;
        let fresh_token = existing
            .as_ref()
            .and_then(endpoint::token_secret_of)
            .as_ref()
            != Some(&gateway.secret);
        if let Some(scale) = swarm::scale_to_run(existing.as_ref(), &self.rec.spec, &gateway.secret)
        {
            let spec = swarm::service_spec(
                &self.rt.instance,
                &self.rec.key,
                &self.rec.spec,
                &body,
                swarm::TaskRefs {
                    network: &network,
                    gateway: &gateway,
                    data: &data,
                    stats_interval_ms: self.rt.cfg.stats_interval_ms,
                },
                scale,
            );
            let made = match &existing {
                None => docker
                    .create_service(spec, None)
                    .await
                    .map(|r| {
                        tracing::info!(agent = %self.rec.key, service = %name, id = ?r.id, "created the agent's service");
                    })
                    .map_err(|e| bollard_err("create the agent's service", e)),
                Some(s) => self.update_service(&docker, s, spec).await,
            };
            if let Err(e) = made {
                // A token made for a service that did not take it goes again.
                if fresh_token {
                    self.rt.gateway_keys.drop_token(&self.rec.key);
                    endpoint::remove_secret_later(docker.clone(), gateway.secret.clone());
                }
                return Err(e);
            }
            // The configs of files the spec no longer has (or had otherwise) go once the
            // old task has let them go.
            let keep: Vec<String> = data
                .configs
                .iter()
                .filter_map(|c| c.config_name.clone())
                .collect();
            if let Err(e) =
                swarm_data::remove_configs(&docker, &self.rt.instance, &self.rec.key, &keep).await
            {
                tracing::warn!(agent = %self.rec.key, error = %e.message, "cannot tidy the agent's file configs");
            }
        }
        self.commit()?;
        self.swarm_sync().await;
        Ok(())
    }

    /// Sends a new spec for the service (at the version read), marking the current task as
    /// ended by us.
    pub(super) async fn update_service(
        &mut self,
        docker: &Docker,
        current: &bollard::models::Service,
        spec: bollard::models::ServiceSpec,
    ) -> Result<(), ApiError> {
        let version = current.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let opts = bollard::query_parameters::UpdateServiceOptionsBuilder::default()
            .version(version as i32)
            .build();
        if let Some(t) = self.swarm.task.clone() {
            if !self.swarm.superseded.contains(&t) {
                self.swarm.superseded.push(t);
            }
            // A task that had already ended is never seen ending again: keep a few only.
            if self.swarm.superseded.len() > SUPERSEDED_KEPT {
                self.swarm.superseded.remove(0);
            }
        }
        docker
            .update_service(&self.service(), spec, opts, None)
            .await
            .map_err(|e| bollard_err("update the agent's service", e))?;
        Ok(())
    }

    /// Scales the service to no replica (stop; the budget spent): Swarm stops the task
    /// with the spec's grace.
    pub(super) async fn swarm_scale_down(&mut self) -> Result<(), ApiError> {
        let docker = self.rt.engine.client()?;
        let s = match docker.inspect_service(&self.service(), None).await {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(bollard_err("inspect the agent's service", e)),
        };
        let Some(mut spec) = s.spec.clone() else {
            return Ok(());
        };
        if swarm::replicas_of(&s) == Some(0) {
            return Ok(());
        }
        spec.mode = Some(bollard::models::ServiceSpecMode {
            replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        });
        self.update_service(&docker, &s, spec).await
    }

    /// Removes the service (its tasks go with it) and, once its task has left the
    /// network, the agent's overlay network.
    pub(super) async fn swarm_remove(&mut self, docker: &Docker) -> Result<(), ApiError> {
        let token = match docker.inspect_service(&self.service(), None).await {
            Ok(s) => endpoint::token_secret_of(&s),
            Err(_) => None,
        };
        match docker.delete_service(&self.service()).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(bollard_err("remove the agent's service", e)),
        }
        self.rt.gateway_keys.forget_agent(&self.rec.key);
        if let Some(t) = token {
            endpoint::remove_secret_later(docker.clone(), t);
        }
        // (The service is gone: a config left behind is tidied by the next delete of the
        // same name or by hand; it does not hold the delete back.)
        if let Err(e) =
            swarm_data::remove_configs(docker, &self.rt.instance, &self.rec.key, &[]).await
        {
            tracing::warn!(agent = %self.rec.key, error = %e.message, "cannot remove the agent's file configs");
        }
        let endpoint = endpoint::endpoint_name(&self.rt.instance);
        let (docker, name, key) = (
            docker.clone(),
            swarm::network_name(&self.rt.instance, &self.rec.key),
            self.rec.key.clone(),
        );
        // The task leaves the network as Swarm stops it (the stop grace): the endpoint
        // leaves it now, the network goes once the task has.
        tokio::spawn(async move {
            let leave = bollard::models::NetworkDisconnectRequest {
                container: endpoint,
                force: Some(true),
            };
            let _ = docker.disconnect_network(&name, leave).await;
            crate::runtime::engine::remove_later(
                format!("overlay network {name} of {key}"),
                move || {
                    let (docker, name) = (docker.clone(), name.clone());
                    async move { docker.remove_network(&name).await }
                },
            );
        });
        Ok(())
    }

    /// Reads the service's tasks and acts on them (see `swarm_tasks`).
    pub(super) async fn swarm_sync(&mut self) {
        let Ok(docker) = self.rt.engine.client() else {
            return;
        };
        match self.tasks(&docker).await {
            Ok(tasks) => self.swarm_tasks(&docker, tasks).await,
            Err(e) => {
                tracing::warn!(agent = %self.rec.key, error = %e.message, "cannot read the agent's tasks")
            }
        }
    }

    /// The service's tasks as they stand: every end not yet accounted for is an exit (in
    /// order; the budget decides), then the current task sets the state — pending with
    /// Swarm's reason, or running on its node.
    pub(super) async fn swarm_tasks(&mut self, docker: &Docker, mut tasks: Vec<Task>) {
        tasks.sort_by_key(task_end_ms);
        let first_look = self.swarm.watermark.is_none();
        let current = swarm::current(&tasks).cloned();
        let ended: Vec<&Task> = tasks
            .iter()
            .filter(|t| matches!(swarm::phase(t), TaskPhase::Ended(_)))
            .collect();
        self.swarm_note_lost(&tasks).await;
        let watermark = match self.swarm.watermark {
            Some(w) => w,
            None => {
                // The first look (a daemon start): ends from before are history — but for
                // the current task, when it has ended and the agent should run.
                let latest = ended.iter().map(|t| task_end_ms(t)).max().unwrap_or(0);
                let dead_now = current.as_ref().is_some_and(|c| {
                    matches!(swarm::phase(c), TaskPhase::Ended(_))
                        && self.rec.desired == DesiredState::Running
                        && !matches!(self.rec.state, AgentState::Failed | AgentState::BackingOff)
                });
                if dead_now {
                    latest.saturating_sub(1)
                } else {
                    latest
                }
            }
        };
        self.swarm.watermark = Some(watermark);
        let fresh: Vec<Task> = ended
            .into_iter()
            .filter(|t| task_end_ms(t) > watermark)
            .cloned()
            .collect();
        for t in fresh {
            self.swarm.watermark = Some(task_end_ms(&t).max(self.swarm.watermark.unwrap_or(0)));
            let id = t.id.clone().unwrap_or_default();
            if let Some(i) = self.swarm.superseded.iter().position(|s| s == &id) {
                self.swarm.superseded.remove(i);
                continue;
            }
            // Waiting for room (the service scaled down): a task Swarm had begun before
            // that is ended by the scale-down, not by the agent. Nor is a task Swarm
            // stopped or gave up with its node.
            if self.swarm.waiting_for_room || swarm::ended_by_swarm(&t) {
                continue;
            }
            let code = match swarm::phase(&t) {
                TaskPhase::Ended(code) => code,
                _ => None,
            };
            // No exit code (rejected, never started): Swarm's word on why.
            let reason = code
                .is_none()
                .then(|| t.status.as_ref().and_then(|s| s.err.clone()))
                .flatten()
                .filter(|e| !e.is_empty())
                .map(|e| format!("Swarm: {e}"));
            let mut exit = ExitInfo {
                reason,
                code: code.unwrap_or(-1),
                oom_killed: false,
                unhealthy: false,
                at_ms: task_end_ms(&t).max(1),
            };
            // On this node the container says whether it was OOM-killed.
            if let Some(cid) = task_container(&t) {
                if let Ok(c) = docker.inspect_container(&cid, None).await {
                    exit.oom_killed = c.state.and_then(|s| s.oom_killed).unwrap_or(false);
                }
            }
            self.rec.container_id = task_container(&t).or(self.rec.container_id.take());
            self.on_exit(exit).await;
        }
        let Some(cur) = current else {
            self.swarm_show(None, None, None);
            if self.rec.desired == DesiredState::Stopped && self.rec.state != AgentState::Stopped {
                self.set_state(AgentState::Stopped, None);
                let _ = self.commit();
            }
            return;
        };
        let node = match cur.node_id.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => Some(self.rt.swarm.node_name(docker, n).await),
            None => None,
        };
        let state = swarm::state_name(cur.status.as_ref().and_then(|s| s.state));
        self.swarm_show(cur.id.clone(), node.clone(), Some(state));
        if self.swarm.waiting_for_room {
            // Swarm's own restart, begun before the scale-down reached it: the agent waits
            // for room all the same (the task is on its way out).
            self.rt.fleet.upsert(self.view());
            return;
        }
        match swarm::phase(&cur) {
            TaskPhase::Running => self.swarm_running(&cur, first_look).await,
            TaskPhase::Pending(why) => {
                if self.rec.desired == DesiredState::Running
                    && !matches!(self.rec.state, AgentState::Failed)
                {
                    let msg = format!("Swarm: task {why}");
                    if self.rec.state != AgentState::Pending
                        || self.rec.message.as_deref() != Some(msg.as_str())
                    {
                        self.set_state(AgentState::Pending, Some(msg));
                        let _ = self.commit();
                    }
                }
            }
            TaskPhase::Ended(_) => {
                if self.rec.desired == DesiredState::Stopped
                    && self.rec.state != AgentState::Stopped
                {
                    self.set_state(AgentState::Stopped, None);
                    let _ = self.commit();
                } else {
                    self.rt.fleet.upsert(self.view());
                }
            }
        }
    }

    /// A task Swarm has replaced because its node is down (it is to stop, and still
    /// "running" as last reported from there): recorded once. Not an exit of the agent —
    /// its node went — and not counted against its budget; the new task shows as usual.
    async fn swarm_note_lost(&mut self, tasks: &[Task]) {
        for t in tasks {
            let (Some(id), Some(node)) = (t.id.as_deref(), t.node_id.as_deref()) else {
                continue;
            };
            let stale = t.desired_state == Some(bollard::models::TaskState::SHUTDOWN)
                && matches!(swarm::phase(t), TaskPhase::Running);
            if !stale || !self.rt.swarm.is_down(node) || self.swarm.lost.iter().any(|l| l == id) {
                continue;
            }
            self.swarm.lost.push(id.to_string());
            if self.swarm.lost.len() > SUPERSEDED_KEPT {
                self.swarm.lost.remove(0);
            }
            let Ok(docker) = self.rt.engine.client() else {
                return;
            };
            let name = self.rt.swarm.node_name(&docker, node).await;
            let short = &id[..id.len().min(12)];
            let _ = self
                .rt
                .system_event(
                    "agent.node_lost",
                    Some(&self.rec.key),
                    "observed",
                    format!("node {name} is down: its task {short} of service {} is lost with it; Swarm places a new one where the placement allows", self.service()),
                )
                .await;
        }
    }

    fn swarm_show(&mut self, task: Option<String>, node: Option<String>, state: Option<String>) {
        self.swarm.task = task;
        self.swarm.node = node;
        self.swarm.task_state = state;
    }

    /// The current task runs: the agent is running on its node (its output and readings
    /// come from its shim, on any node).
    async fn swarm_running(&mut self, t: &Task, first_look: bool) {
        let cid = task_container(t);
        let was = self.rec.state;
        // The runner's first look finds the task it knew still running: adopted as it is.
        let adopted = first_look && self.rec.container_id.is_some() && self.rec.container_id == cid;
        self.rec.container_id = cid.clone();
        self.started_at_ms = t
            .status
            .as_ref()
            .and_then(|s| s.timestamp.as_deref())
            .and_then(rfc3339_ms);
        if was != AgentState::Running || adopted {
            self.set_state(AgentState::Running, None);
            let _ = self.commit();
            let short = |s: &str| s[..s.len().min(12)].to_string();
            let task = t.id.as_deref().map(short).unwrap_or_default();
            let node = self.swarm.node.clone().unwrap_or_default();
            let (action, detail) = if adopted {
                (
                    "agent.adopted",
                    format!("running task {task} of service {} on node {node} adopted without a restart", self.service()),
                )
            } else {
                (
                    "agent.running",
                    format!(
                        "task {task} of service {} running on node {node}",
                        self.service()
                    ),
                )
            };
            let _ = self
                .rt
                .system_event(action, Some(&self.rec.key), "observed", detail)
                .await;
        } else {
            self.rt.fleet.upsert(self.view());
        }
    }

    /// After the engine (re)connected, or the hub's sweep: look at the service again.
    pub(super) async fn swarm_resync(&mut self) {
        let Ok(docker) = self.rt.engine.client() else {
            return;
        };
        if self.rt.swarm.check_manager(&docker).await.is_err() {
            return;
        }
        let service = match docker.inspect_service(&self.service(), None).await {
            Ok(s) => Some(s),
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                tracing::warn!(agent = %self.rec.key, error = %e, "cannot inspect the agent's service");
                return;
            }
        };
        match (self.rec.desired, service) {
            (DesiredState::Running, None) => {
                if !matches!(self.rec.state, AgentState::Failed) {
                    let _ = self.start_or_fail().await;
                }
            }
            (DesiredState::Stopped, None) => {
                if self.rec.state != AgentState::Stopped {
                    self.set_state(AgentState::Stopped, None);
                    let _ = self.commit();
                }
            }
            (DesiredState::Running, Some(s)) => {
                let older = !swarm::made_from(&s, &self.rec.spec);
                if older && !matches!(self.rec.state, AgentState::Failed) {
                    tracing::info!(agent = %self.rec.key, "service made from an older spec: updating it");
                    if self
                        .rt
                        .system_event(
                            "agent.recreate",
                            Some(&self.rec.key),
                            "requested",
                            format!("service {} was made from an older version of the spec; it is updated", self.service()),
                        )
                        .await
                        .is_ok()
                    {
                        let _ = self.start_or_fail().await;
                    }
                    return;
                }
                // Its task's connections are taken again: its token and its network.
                if !self.swarm_learn(&docker, &s).await {
                    let _ = self.start_or_fail().await;
                    return;
                }
                self.swarm_sync().await;
            }
            (DesiredState::Stopped, Some(_)) => {
                let _ = self.swarm_scale_down().await;
                self.swarm_sync().await;
            }
        }
    }

    /// A restart the budget allows: Swarm makes it (after the spec's delay). If Swarm has
    /// not begun one by the time the runner's own timer fires (its own count ran out
    /// first), the runner asks for a new task.
    pub(super) async fn swarm_restart_due(&mut self) {
        self.swarm_sync().await;
        if self.rec.state != AgentState::BackingOff || self.rec.desired != DesiredState::Running {
            return;
        }
        let detail = format!(
            "Swarm has not restarted service {}; the supervisor asks for a new task",
            self.service()
        );
        if !self.record_restart(detail).await {
            return;
        }
        // A restart after waiting for room in the window counts now (one Swarm did not
        // make was counted at the exit).
        if std::mem::take(&mut self.swarm.waiting_for_room) {
            self.rec.restart_times.push(now_ms());
            self.rec.restarts += 1;
        }
        let _ = self.start_or_fail().await;
    }
}

/// What a task of the agent is made from, on any node: the container request (for an
/// image that is not ours, its init image with the shim inside, whose program the init
/// runs), and its data as Swarm holds it (files — and the TLS inspection CA bundle when a
/// connection is inspected — as configs, the workspace volume). Answers them and the
/// image the task runs.
pub(crate) async fn task_parts(
    rt: &crate::runtime::Runtime,
    docker: &Docker,
    key: &crate::store::AgentKey,
    spec: &agenfleet_protocol::AgentSpec,
    image_ref: String,
) -> Result<
    (
        bollard::models::ContainerCreateBody,
        swarm_data::TaskData,
        String,
    ),
    ApiError,
> {
    let gateway_dir = container::gateway_dir(&rt.cfg.state_dir, key);
    let (init, image_ref) = if spec.image == agenfleet_protocol::BUILTIN_IMAGE {
        (None, image_ref)
    } else {
        let init = super::init_program(
            rt,
            key,
            spec,
            docker,
            &image_ref,
            &gateway_dir,
            super::InitFrom::Task,
        )
        .await?;
        let init_image =
            crate::runtime::image::ensure_init_image(docker, &image_ref, &rt.cfg.agent_user)
                .await?;
        (Some(init), init_image)
    };
    let mut data = swarm_data::ensure(
        docker,
        &rt.instance,
        key,
        spec,
        &rt.cfg.agent_user,
        &rt.cfg.swarm_volume_driver,
    )
    .await?;
    if rt.upstreams.inspects(&key.tenant, spec) {
        let ca = rt
            .upstreams
            .inspect_ca(&rt.instance)
            .map_err(|e| ApiError::internal(format!("the TLS inspection CA: {e}")))?;
        data.configs.push(
            swarm_data::ca_bundle_config(
                docker,
                &rt.instance,
                key,
                ca.bundle_pem.as_bytes(),
                &rt.cfg.agent_user,
            )
            .await?,
        );
    }
    let body = container::create_body(
        &rt.cfg,
        &rt.instance,
        key,
        spec,
        &image_ref,
        &gateway_dir,
        init.as_ref(),
    );
    Ok((body, data, image_ref))
}
