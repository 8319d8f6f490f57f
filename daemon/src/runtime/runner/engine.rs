//! The runner's side that talks to the engine: making its container exist and run (reusing
//! one whose spec and image still match), stopping and removing it, following its logs
//! into the ring, inspecting it after a `die`, and reconciling with what the engine shows
//! after a (re)connect — adopting a running container without a restart.

use super::Runner;
use crate::runtime::container;
use crate::runtime::engine::{bollard_err, is_conflict, is_not_found, remove_container};
use crate::runtime::logs::rfc3339_ms;
use agenfleet_protocol::{now_ms, AgentState, ApiError, DesiredState, ExitInfo};
use bollard::query_parameters::StopContainerOptions;
use bollard::Docker;
use futures::StreamExt;

/// The agent's current credential values that are text: (name, version, value).
pub(crate) fn secrets_of(
    rt: &crate::runtime::Runtime,
    key: &crate::store::AgentKey,
) -> Vec<(String, u32, String)> {
    rt.vault
        .current_values(key)
        .map(|v| {
            v.into_iter()
                .filter_map(|(n, ver, val)| {
                    Some((n, ver, String::from_utf8(val.expose().to_vec()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a stopped container ended, from the engine's view of its state.
fn exit_of(s: &bollard::models::ContainerState) -> ExitInfo {
    ExitInfo {
        reason: None,
        code: s.exit_code.unwrap_or(-1),
        oom_killed: s.oom_killed.unwrap_or(false),
        unhealthy: false,
        at_ms: s
            .finished_at
            .as_deref()
            .and_then(rfc3339_ms)
            .unwrap_or_else(now_ms),
    }
}

impl Runner {
    pub(super) async fn stop_container(&mut self) -> Result<(), ApiError> {
        if self.swarm_mode() {
            return self.swarm_scale_down().await;
        }
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

    pub(super) async fn ensure_running(&mut self) -> Result<(), ApiError> {
        if self.swarm_mode() {
            return self.swarm_ensure_running().await;
        }
        let docker = self.rt.engine.client()?;
        let image_ref = self.begin_start(&docker).await?;
        if self.rec.spec.network.mode.has_own_network() {
            let name = container::network_name(&self.rt.instance, &self.rec.key);
            crate::runtime::network::ensure(
                &docker,
                &name,
                &self.rt.instance,
                &self.rt.pool,
                self.rec.spec.network.mode,
            )
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
                    let same = container::made_from(&labels, &self.rec.spec, &self.container_hash)
                        && image == image_ref;
                    let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                    if same && running {
                        return self.mark_running(&docker, &id).await;
                    }
                    // A stopped container is started again only for the built-in image. The
                    // engine (20.10) re-creates a restarted container's tmpfs without its
                    // mode, so a program of an image of its own, running as a non-root
                    // user, could no longer write to /tmp: it gets a new container.
                    if same && self.rec.spec.image == agenfleet_protocol::BUILTIN_IMAGE {
                        reuse = Some(id);
                    } else {
                        remove_container(&docker, &id)
                            .await
                            .map_err(|e| bollard_err("remove the old container", e))?;
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
        self.attach_logs(&docker, &id).await;
        match docker.start_container(&id, None).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(bollard_err("start the agent's container", e)),
        }
        self.mark_running(&docker, &id).await
    }

    /// The start of a start, in either mode: shown pending (stored first), and the
    /// spec's image resolved (the built-in one built if missing).
    pub(super) async fn begin_start(&mut self, docker: &Docker) -> Result<String, ApiError> {
        self.set_state(AgentState::Pending, None);
        self.next_restart_at_ms = None;
        self.commit()?;
        self.rt.images.resolve(docker, &self.rec.spec.image).await
    }

    pub(super) async fn create(
        &mut self,
        docker: &Docker,
        image_ref: &str,
    ) -> Result<String, ApiError> {
        let name = container::container_name(&self.rt.instance, &self.rec.key);
        let gateway_dir = container::gateway_dir(&self.rt.cfg.state_dir, &self.rec.key);
        let init = if self.rec.spec.image == agenfleet_protocol::BUILTIN_IMAGE {
            None
        } else {
            Some(self.init_program(docker, image_ref, &gateway_dir).await?)
        };
        let body = container::create_body(
            &self.rt.cfg,
            &self.rt.instance,
            &self.rec.key,
            &self.rec.spec,
            image_ref,
            &gateway_dir,
            init.as_ref(),
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
                    remove_container(docker, &name)
                        .await
                        .map_err(|e| bollard_err("remove the old container", e))?;
                }
                Err(e) => return Err(bollard_err("create the agent's container", e)),
            }
        }
        Err(ApiError::internal("cannot create the agent's container"))
    }

    /// The shim and the program for an image that is not ours; prepares the mount point.
    async fn init_program(
        &self,
        docker: &Docker,
        image_ref: &str,
        gateway_dir: &std::path::Path,
    ) -> Result<container::InitProgram, ApiError> {
        init_program(
            &self.rt,
            &self.rec.key,
            &self.rec.spec,
            docker,
            image_ref,
            gateway_dir,
            InitFrom::Host,
        )
        .await
    }

    pub(super) async fn mark_running(&mut self, docker: &Docker, id: &str) -> Result<(), ApiError> {
        let c = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| bollard_err("inspect the agent's container", e))?;
        let state = c.state.unwrap_or_default();
        if !state.running.unwrap_or(false) {
            // It died already; the die event will tell the rest. Its last words — often
            // why it could not start — still go to the ring.
            self.started_at_ms = state.started_at.as_deref().and_then(rfc3339_ms);
            self.set_state(AgentState::Running, None);
            return Ok(());
        }
        self.started_at_ms = state.started_at.as_deref().and_then(rfc3339_ms);
        if !self.rt.cgroups.learn(id, state.pid.unwrap_or(0)) {
            tracing::debug!(agent = %self.rec.key, "the container's cgroup is not readable from /proc; its layout is guessed for stats");
        }
        // A new run: no health verdict yet (the engine's "starting"), and no kill of ours
        // pending for it.
        self.killed_unhealthy = false;
        self.health = state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .and_then(|s| match s {
                bollard::models::HealthStatusEnum::HEALTHY => Some("healthy"),
                bollard::models::HealthStatusEnum::UNHEALTHY => Some("unhealthy"),
                _ => None,
            });
        self.set_state(AgentState::Running, None);
        // Attached before the start, unless this is an adoption (or the engine came back).
        if self.log_task.as_ref().is_none_or(|t| t.is_finished()) {
            self.attach_logs(docker, id).await;
        }
        Ok(())
    }

    /// Attaches to the container's output and follows it into the ring. Called before the
    /// container starts (so its first words are not missed) and when a running container
    /// is adopted. The engine keeps no copy (its log driver is `none`): what the agent
    /// prints exists only here, after redaction.
    pub(super) async fn attach_logs(&mut self, docker: &Docker, id: &str) {
        if let Some(t) = self.log_task.take() {
            t.abort();
        }
        let ring = self.logs.clone();
        // The agent's credential values, redacted from its output: known before the first
        // line is read, and learnt again whenever they change.
        let (rt, key) = (self.rt.clone(), self.rec.key.clone());
        ring.learn_secrets(secrets_of(&rt, &key));
        let mut changes = rt.credential_changes(&key);
        let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let mut stream = match docker.attach_container(id, Some(opts)).await {
            Ok(a) => a.output,
            Err(e) => {
                tracing::warn!(agent = %key, error = %e, "cannot attach to the agent's output");
                return;
            }
        };
        self.log_task = Some(tokio::spawn(async move {
            let mut lines = crate::runtime::logs::LineSplitter::default();
            loop {
                let changed = async {
                    match changes.as_mut() {
                        Some(c) => c.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                let item = tokio::select! {
                    item = stream.next() => item,
                    alive = changed => {
                        if alive {
                            ring.learn_secrets(secrets_of(&rt, &key));
                        } else {
                            changes = None;
                        }
                        continue;
                    }
                };
                let Some(Ok(out)) = item else { break };
                for (stream, line) in lines.push(out) {
                    ring.push_now(stream, line);
                }
            }
            // A last line without its newline.
            for (stream, line) in lines.finish() {
                ring.push_now(stream, line);
            }
        }));
    }

    /// Inspects the container after a `die` event: a stale event (the container runs again)
    /// is ignored; a real exit goes to the restart policy.
    pub(super) async fn check_exit(&mut self) {
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
                let mut exit = exit_of(&s);
                exit.unhealthy = std::mem::take(&mut self.killed_unhealthy);
                self.on_exit(exit).await;
            }
            Err(e) if is_not_found(&e) => {
                self.rec.container_id = None;
                self.on_exit(ExitInfo {
                    reason: None,
                    code: -1,
                    oom_killed: false,
                    unhealthy: false,
                    at_ms: now_ms(),
                })
                .await;
            }
            Err(e) => {
                tracing::warn!(agent = %self.rec.key, error = %e, "cannot inspect after exit")
            }
        }
    }

    /// After the engine (re)connected: find our container and reconcile with it.
    pub(super) async fn resync(&mut self) {
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
                let labels = c
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                match (self.rec.desired, running) {
                    (DesiredState::Running, true)
                        if container::made_from_older(&labels, &self.container_hash) =>
                    {
                        // A new spec was stored but the daemon stopped before it replaced
                        // the container (`apply.rs`): replace it now.
                        let short = id[..12.min(id.len())].to_string();
                        tracing::info!(agent = %self.rec.key, container = %short, "container made from an older spec: replacing it");
                        if self
                            .rt
                            .system_event(
                                "agent.recreate",
                                Some(&self.rec.key),
                                "requested",
                                format!("container {short} was made from an older version of the spec (the daemon stopped before replacing it); it is replaced"),
                            )
                            .await
                            .is_ok()
                        {
                            self.gen += 1;
                            if self.stop_container().await.is_ok() {
                                let _ = self.start_or_fail().await;
                            }
                        }
                    }
                    (DesiredState::Running, true) => {
                        if self.rec.state != AgentState::Running
                            || self.log_task.as_ref().is_none_or(|t| t.is_finished())
                        {
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
                            self.on_exit(exit_of(&s)).await;
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

/// Where an agent's container gets the shim, its files and its workspace from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitFrom {
    /// The daemon's host: bind mounts (a container here, or a job run's).
    Host,
    /// Its init image and Swarm's configs and volumes (a task on any node): nothing of
    /// the host is prepared.
    Task,
}

/// The shim and the program for an image that is not ours (an agent's container, or a job
/// run's); on the host, prepares the mount points, the spec's files and the workspace.
pub(crate) async fn init_program(
    rt: &crate::runtime::Runtime,
    key: &crate::store::AgentKey,
    spec: &agenfleet_protocol::AgentSpec,
    docker: &Docker,
    image_ref: &str,
    gateway_dir: &std::path::Path,
    from: InitFrom,
) -> Result<container::InitProgram, ApiError> {
    let argv = if spec.command.is_empty() {
        crate::runtime::image::image_program(docker, image_ref).await?
    } else {
        spec.command.clone()
    };
    if argv.is_empty() {
        return Err(ApiError::invalid(format!(
            "spec field `command`: image `{}` names no program (no entrypoint or command); set `command`",
            spec.image
        )));
    }
    let env = rt
        .upstreams
        .env_for(&key.tenant, spec)
        .map_err(ApiError::from)?;
    if from == InitFrom::Task {
        return Ok(container::InitProgram {
            shim: None,
            argv,
            binds: Vec::new(),
            env,
        });
    }
    let io = |what: &str, e: std::io::Error| ApiError::internal(format!("{what}: {e}"));
    let shim = crate::runtime::image::shim_on_host(&rt.cfg.state_dir)
        .map_err(|e| io("cannot write the agent shim into the state directory", e))?;
    let point = container::shim_mount_point(gateway_dir);
    if let Some(dir) = point.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot prepare the shim's mount point", e))?;
    }
    if !point.exists() {
        std::fs::write(&point, b"").map_err(|e| io("cannot prepare the shim's mount point", e))?;
    }
    std::fs::create_dir_all(container::secrets_mount_point(gateway_dir))
        .map_err(|e| io("cannot prepare the secrets' mount point", e))?;
    // The spec's files and the workspace, ready before the container exists.
    let (state, k, files, workspace) = (
        rt.cfg.state_dir.clone(),
        key.clone(),
        spec.files.clone(),
        spec.workspace,
    );
    let owner = rt.cfg.agent_user.clone();
    let binds = tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
        let mut binds = crate::runtime::volumes::write_files(&state, &k, &files)
            .map_err(|e| io("cannot write the agent's files", e))?;
        if let Some(w) = workspace {
            let dir = crate::runtime::volumes::ensure_workspace(&state, &k, w.size_mb, &owner)
                .map_err(|e| ApiError::internal(format!("cannot prepare the workspace: {e}")))?;
            binds.push(format!(
                "{}:{}",
                dir.display(),
                agenfleet_protocol::spec::WORKSPACE_IN_CONTAINER
            ));
        }
        Ok(binds)
    })
    .await
    .map_err(|e| ApiError::internal(format!("cannot prepare the agent's mounts: {e}")))??;
    Ok(container::InitProgram {
        shim: Some(shim),
        argv,
        binds,
        env,
    })
}
