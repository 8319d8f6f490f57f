//! Job agents (`runs.kind = "job"`): no container between runs; each run gets a fresh
//! hardened container made exactly like a service agent's (same hardening, init, network,
//! gateway socket), labelled with its run, its input bind-mounted read-only at
//! `/run/agenfleet/run/input.json` (and served by `GET /v1/runs/next`). The run ends when
//! the container exits (0: succeeded, else failed with the exit code; a result the program
//! posted wins), when its timeout passes or it is cancelled (the container is killed); its
//! output — redacted, also in the agent's log — is kept with the run, and the container
//! is removed. In swarm mode each run is a Swarm job instead, on any node
//! (`swarm_jobs.rs`), followed and ended the same way.
//!
//! One dispatcher task hands queued runs of running job agents to containers, woken by the
//! runs' own changes (a run queued or ended, a job agent ready) — it never polls. After a
//! daemon restart, a job run that was running is adopted if its container (or Swarm job)
//! still runs, or ended from its exit if it stopped meanwhile (`reconcile`, once the
//! engine answers); one that is gone ends the run as failed.

use super::container;
use super::engine::bollard_err;
use super::hub::Runtime;
use super::logs::LogRing;
use crate::runs::key_of;
use crate::store::AgentKey;
use agenfleet_protocol::runs::{RunState, RunView};
use agenfleet_protocol::{AgentKind, AgentState, ApiError, LogStream};
use bollard::query_parameters::{AttachContainerOptionsBuilder, ListContainersOptions};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label naming a job container's run.
pub const LABEL_RUN: &str = "agenfleet.run";
/// Where a job's input is mounted (a directory holding `input.json`).
pub const RUN_DIR_IN_CONTAINER: &str = "/run/agenfleet/run";
/// Lines of a run's output kept with it (the newest; older ones are counted as dropped).
pub const RUN_LOG_LINES: usize = 2000;
/// How long a job whose program posted its result may take to exit before it is killed.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(10);

/// A job run in progress: its agent, its container (in swarm mode: its service) once
/// made, and its output.
struct Live {
    key: AgentKey,
    container: Option<String>,
    logs: LogRing,
    /// Swarm mode: something may have changed of the run's task (its container's event
    /// here, its output connection closing, the hub's sweep).
    wake: Arc<tokio::sync::Notify>,
    /// Swarm mode: the shim said the kernel's OOM killer ended the program.
    oom: bool,
    /// Swarm mode: output connections of the run's task open now, and whether one ever was.
    streams: usize,
    streamed: bool,
}

/// The job runs in progress (the gateway asks which containers are an agent's).
#[derive(Default)]
pub struct Jobs {
    live: Mutex<HashMap<u64, Live>>,
    /// Job agents whose runner says they are ready for runs (the dispatcher looks at
    /// these alone, not at every agent of the fleet).
    ready: Mutex<std::collections::HashSet<AgentKey>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (run, container id) of each job container of `key` running now.
    pub fn containers_of(&self, key: &AgentKey) -> Vec<(u64, String)> {
        self.lock()
            .iter()
            .filter(|(_, l)| l.key == *key)
            .filter_map(|(id, l)| Some((*id, l.container.clone()?)))
            .collect()
    }

    /// The output so far of a job run in progress.
    pub fn live_logs(&self, id: u64) -> Option<LogRing> {
        self.lock().get(&id).map(|l| l.logs.clone())
    }

    pub(super) fn is_live(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// What runs run `id` now: its container, or in swarm mode its service.
    pub(super) fn set_container(&self, id: u64, container: &str) {
        if let Some(l) = self.lock().get_mut(&id) {
            l.container = Some(container.to_string());
        }
    }

    /// Swarm mode: something may have changed of run `id`'s task; its follower looks.
    pub fn poke(&self, id: u64) {
        if let Some(l) = self.lock().get(&id) {
            l.wake.notify_one();
        }
    }

    /// Swarm mode: the shim of run `id`'s task says its program was OOM-killed.
    pub fn note_oom(&self, id: u64) {
        if let Some(l) = self.lock().get_mut(&id) {
            l.oom = true;
        }
    }

    /// Swarm mode: an output connection of run `id`'s task opens; answers the run's ring
    /// (None: the run is not in progress). `stream_closed` must follow.
    pub fn stream_opened(&self, id: u64) -> Option<LogRing> {
        let mut live = self.lock();
        let l = live.get_mut(&id)?;
        l.streams += 1;
        l.streamed = true;
        Some(l.logs.clone())
    }

    pub fn stream_closed(&self, id: u64) {
        if let Some(l) = self.lock().get_mut(&id) {
            l.streams = l.streams.saturating_sub(1);
            l.wake.notify_one();
        }
    }

    /// Swarm mode: (its wake-up, OOM said, connections open, one ever opened) of run `id`.
    pub(super) fn follow_state(
        &self,
        id: u64,
    ) -> Option<(Arc<tokio::sync::Notify>, bool, usize, bool)> {
        self.lock()
            .get(&id)
            .map(|l| (l.wake.clone(), l.oom, l.streams, l.streamed))
    }

    /// Claims run `id` for one task (false: another already follows it). Claimed before
    /// the task is spawned, so an engine reconnect in between cannot take the run for
    /// one whose container is gone.
    fn begin(&self, id: u64, key: &AgentKey, container: Option<String>) -> Option<LogRing> {
        let mut live = self.lock();
        if live.contains_key(&id) {
            return None;
        }
        let logs = LogRing::new(RUN_LOG_LINES);
        live.insert(
            id,
            Live {
                key: key.clone(),
                container,
                logs: logs.clone(),
                wake: Arc::default(),
                oom: false,
                streams: 0,
                streamed: false,
            },
        );
        Some(logs)
    }

    /// A job agent's runner: ready for runs (its state is running) or not.
    pub fn set_ready(&self, key: &AgentKey, ready: bool) {
        let mut r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if ready {
            r.insert(key.clone());
        } else {
            r.remove(key);
        }
    }

    fn ready(&self) -> Vec<AgentKey> {
        let r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().cloned().collect()
    }
}

/// Whether `v` is a job agent's run (its stored spec says so).
pub fn is_job(rt: &Runtime, v: &RunView) -> bool {
    rt.agent_spec(&key_of(v))
        .is_some_and(|s| s.runs.kind == AgentKind::Job)
}

/// `agf.<instance>.<tenant>.<name>.run<id>`.
pub fn job_container_name(instance: &str, key: &AgentKey, run: u64) -> String {
    format!("{}.run{run}", container::container_name(instance, key))
}

/// Hands queued runs of running job agents to containers, woken by every change of the
/// runs (see the module's header).
pub fn spawn_dispatcher(rt: Arc<Runtime>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let changed = rt.runs.changes().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            for key in rt.jobs.ready() {
                // (The runner's word, checked against the fleet view.)
                let up = rt.fleet.get(&key).is_some_and(|v| {
                    v.state == AgentState::Running
                        && v.desired == agenfleet_protocol::DesiredState::Running
                });
                if !up {
                    continue;
                }
                let Some(spec) = rt.agent_spec(&key) else {
                    continue;
                };
                if spec.runs.kind != AgentKind::Job {
                    continue;
                }
                loop {
                    match rt.runs.take(&key, &spec.runs) {
                        Ok(Some(run)) => {
                            if let Some(ring) = rt.jobs.begin(run.id, &key, None) {
                                let rt = rt.clone();
                                tokio::spawn(async move { execute(rt, run, ring, None).await });
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(agent = %key, error = %e.message, "cannot hand out a job run");
                            break;
                        }
                    }
                }
            }
            changed.await;
        }
    })
}

/// After the engine (re)connects: each job run the daemon holds as running but does not
/// follow (it restarted) is adopted if its container runs, ended from its exit if it
/// stopped, or ended as failed if it is gone.
pub async fn reconcile(rt: Arc<Runtime>) {
    let Ok(docker) = rt.engine.client() else {
        return;
    };
    let listed = if rt.swarm_mode() {
        super::swarm_jobs::list(&rt, &docker).await
    } else {
        list_containers(&rt, &docker).await
    };
    let mut by_run = match listed {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot list the job runs' containers or services");
            return;
        }
    };
    let open = rt.runs.open_runs();
    for v in open {
        if v.state != RunState::Running || !is_job(&rt, &v) {
            continue;
        }
        let container = by_run.remove(&v.id);
        let Some(ring) = rt.jobs.begin(v.id, &key_of(&v), container.clone()) else {
            continue;
        };
        let rt2 = rt.clone();
        tokio::spawn(async move {
            match container {
                Some(id) => execute(rt2, v, ring, Some(id)).await,
                None => {
                    rt2.jobs.lock().remove(&v.id);
                    let why = if rt2.swarm_mode() {
                        "interrupted: the daemon stopped while the job ran and its Swarm job is gone"
                    } else {
                        "interrupted: the daemon stopped while the job ran and its container is gone"
                    };
                    if let Err(e) = rt2
                        .runs
                        .end(v.id, None, RunState::Failed, None, Some(why.into()))
                        .await
                    {
                        tracing::error!(run = v.id, error = %e.message, "cannot end the job run");
                    }
                }
            }
        });
    }
    // Containers of runs that ended meanwhile (or are no longer known): removed.
    for (run, id) in by_run {
        if !rt.jobs.is_live(run) && !rt.runs.is_open(run) {
            remove(&rt, &docker, &id).await;
        }
    }
}

/// Run → container id of each job container of this daemon.
async fn list_containers(rt: &Runtime, docker: &Docker) -> Result<HashMap<u64, String>, ApiError> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![
            format!("{}={}", container::LABEL_INSTANCE, rt.instance),
            LABEL_RUN.to_string(),
        ],
    );
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| bollard_err("list the job containers", e))?;
    let mut by_run = HashMap::new();
    for c in list {
        let run = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_RUN))
            .and_then(|r| r.parse::<u64>().ok());
        if let (Some(run), Some(id)) = (run, c.id) {
            by_run.insert(run, id);
        }
    }
    Ok(by_run)
}

/// Runs `v` in a container (a new one, or `adopt`: the one already running it) to its end:
/// the run ended, its output kept, the container removed.
/// The run was claimed (`Jobs::begin`) with `ring` for its output.
async fn execute(rt: Arc<Runtime>, v: RunView, ring: LogRing, adopt: Option<String>) {
    let id = v.id;
    let outcome = if rt.swarm_mode() {
        super::swarm_jobs::run(&rt, &v, &ring, adopt).await
    } else {
        run_container(&rt, &v, &ring, adopt).await
    };
    let (state, result, error, container) = match outcome {
        Ok(o) => (o.state, o.result, o.error, Some(o.container)),
        Err((e, container)) => (
            RunState::Failed,
            None,
            Some(format!("the job's container could not run: {}", e.message)),
            container,
        ),
    };
    // The output first (the end is what callers wait for), then the end — unless the
    // run already ended (a result posted, a timeout, a cancel).
    let lines = ring.snapshot();
    let json: String = lines
        .iter()
        .filter_map(|l| serde_json::to_string(l).ok())
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = rt.runs.save_logs(&v.tenant, id, &json) {
        tracing::warn!(run = id, error = %e, "cannot keep the job's output");
    }
    // The container goes before the end is told: whoever waits for the end finds it gone.
    if let (Some(c), Ok(docker)) = (container, rt.engine.client()) {
        remove(&rt, &docker, &c).await;
    }
    if rt.runs.is_open(id) {
        if let Err(e) = rt.runs.end(id, None, state, result, error).await {
            tracing::error!(run = id, error = %e.message, "cannot end the job run");
        }
    }
    let dir = run_dir(&rt, id);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    rt.jobs.lock().remove(&id);
    rt.runs.poke();
}

/// How a run's container (or Swarm job) ended, and which it was.
pub(super) struct Outcome {
    pub(super) state: RunState,
    pub(super) result: Option<String>,
    pub(super) error: Option<String>,
    pub(super) container: String,
}

/// A run's end from its program's exit code and whether it was OOM-killed.
pub(super) fn ended_with(code: i64, oom: bool) -> (RunState, Option<String>, Option<String>) {
    match (code, oom) {
        (0, false) => (
            RunState::Succeeded,
            Some(serde_json::json!({ "exit_code": 0 }).to_string()),
            None,
        ),
        (c, true) => (
            RunState::Failed,
            None,
            Some(format!(
                "the job's container was OOM-killed (exit code {c})"
            )),
        ),
        (c, false) => (
            RunState::Failed,
            None,
            Some(format!("the job's program exited with code {c}")),
        ),
    }
}

/// What a run's program is told of its run (`AGENFLEET_RUN_ID`, `AGENFLEET_RUN_INPUT`).
pub(super) fn run_env(id: u64) -> [String; 2] {
    [
        format!("AGENFLEET_RUN_ID={id}"),
        format!("AGENFLEET_RUN_INPUT={RUN_DIR_IN_CONTAINER}/input.json"),
    ]
}

fn run_dir(rt: &Runtime, id: u64) -> std::path::PathBuf {
    rt.cfg.state_dir.join("runs").join(id.to_string())
}

/// Removes a run's container (in swarm mode: its service, with its token and input).
async fn remove(rt: &Runtime, docker: &Docker, id: &str) {
    if rt.swarm_mode() {
        return super::swarm_jobs::remove(rt, docker, id).await;
    }
    if let Err(e) = super::engine::remove_container(docker, id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove a job's container");
    }
}

/// Makes (or adopts) the run's container, follows its output, and waits for its exit or
/// the run's end; answers how it ended. An error carries the container if one was made.
async fn run_container(
    rt: &Arc<Runtime>,
    v: &RunView,
    ring: &LogRing,
    adopt: Option<String>,
) -> Result<Outcome, (ApiError, Option<String>)> {
    let key = key_of(v);
    let docker = rt.engine.client().map_err(|e| (e, adopt.clone()))?;
    let cid = match adopt {
        Some(c) => {
            tracing::info!(run = v.id, agent = %key, container = %&c[..12.min(c.len())], "job container adopted");
            c
        }
        None => create(rt, &docker, v).await.map_err(|e| (e, None))?,
    };
    rt.jobs.set_container(v.id, &cid);
    let with = |e: ApiError| (e, Some(cid.clone()));
    // Its output, into the run's ring and the agent's (redacted in both).
    let agent_ring = rt.logs(&key);
    ring.learn_secrets(super::runner::secrets_of(rt, &key));
    let opts = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    let mut output = docker
        .attach_container(&cid, Some(opts))
        .await
        .map_err(|e| with(bollard_err("attach to the job's container", e)))?
        .output;
    let (r1, r2) = (ring.clone(), agent_ring.clone());
    let follower = tokio::spawn(async move {
        let push = |(stream, line): (LogStream, String)| {
            if let Some(a) = &r2 {
                a.push_now(stream, line.clone());
            }
            r1.push_now(stream, line);
        };
        let mut lines = super::logs::LineSplitter::default();
        while let Some(Ok(out)) = output.next().await {
            lines.push(out).into_iter().for_each(push);
        }
        lines.finish().into_iter().for_each(push);
    });
    match docker.start_container(&cid, None).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) => {
            follower.abort();
            return Err(with(bollard_err("start the job's container", e)));
        }
    }
    // Its exit, or the run's end from elsewhere (then the container is stopped).
    let waited = cid.clone();
    let exited = async {
        let mut w = docker.wait_container(&waited, None);
        // A non-zero exit is an error item in bollard; either way the container stopped.
        let _ = w.next().await;
    };
    tokio::pin!(exited);
    let ended_elsewhere = tokio::select! {
        _ = &mut exited => None,
        v = wait_ended(rt, v.id) => Some(v),
    };
    if let Some(ended) = &ended_elsewhere {
        // A result posted: the program may finish on its own; otherwise stop it now.
        let grace = if ended.as_ref().map(|r| r.state) == Some(RunState::Succeeded) {
            EXIT_GRACE
        } else {
            Duration::ZERO
        };
        let exited_in_grace =
            !grace.is_zero() && tokio::time::timeout(grace, &mut exited).await.is_ok();
        if !exited_in_grace {
            let opts = bollard::query_parameters::StopContainerOptions {
                t: Some(0),
                signal: None,
            };
            let _ = docker.stop_container(&cid, Some(opts)).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut exited).await;
        }
    }
    // The output to its last line (the stream ends with the container).
    let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
    let state = docker
        .inspect_container(&cid, None)
        .await
        .map_err(|e| with(bollard_err("inspect the job's container", e)))?
        .state
        .unwrap_or_default();
    let code = state.exit_code.unwrap_or(-1);
    let oom = state.oom_killed.unwrap_or(false);
    let (run_state, result, error) = ended_with(code, oom);
    Ok(Outcome {
        state: run_state,
        result,
        error,
        container: cid,
    })
}

/// The run once it has ended (waits as long as it takes).
pub(super) async fn wait_ended(rt: &Runtime, id: u64) -> Option<RunView> {
    loop {
        match rt.runs.wait_end(id, Duration::from_secs(3600)).await {
            Ok(Some(v)) if !v.state.ended() => continue,
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(run = id, error = %e, "cannot read the run");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Creates the run's container: the agent's, plus its run's label, variables and input.
async fn create(rt: &Arc<Runtime>, docker: &Docker, v: &RunView) -> Result<String, ApiError> {
    let key = key_of(v);
    let spec = rt
        .agent_spec(&key)
        .ok_or_else(|| ApiError::not_found(format!("agent {key} is gone")))?;
    let image_ref = rt.images.resolve(docker, &spec.image).await?;
    if spec.network.mode.has_own_network() {
        let name = container::network_name(&rt.instance, &key);
        super::network::ensure(docker, &name, &rt.instance, &rt.pool, spec.network.mode).await?;
    }
    let gateway_dir = container::gateway_dir(&rt.cfg.state_dir, &key);
    let init = if spec.image == agenfleet_protocol::BUILTIN_IMAGE {
        None
    } else {
        Some(
            super::runner::init_program(
                rt,
                &key,
                &spec,
                docker,
                &image_ref,
                &gateway_dir,
                super::runner::InitFrom::Host,
            )
            .await?,
        )
    };
    // The input, on the host, for a read-only bind; its mount point inside the (read-only)
    // gateway directory is made here, since the engine cannot make it there.
    let io = |what: &str, e: std::io::Error| ApiError::internal(format!("{what}: {e}"));
    let dir = run_dir(rt, v.id);
    let point = gateway_dir.join("run");
    let input = v.input_json.clone();
    let (d2, p2) = (dir.clone(), point.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&d2)?;
        std::fs::set_permissions(&d2, std::fs::Permissions::from_mode(0o755))?;
        let file = d2.join("input.json");
        std::fs::write(&file, input.as_bytes())?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        std::fs::create_dir_all(&p2)
    })
    .await
    .map_err(|e| ApiError::internal(format!("cannot write the run's input: {e}")))?
    .map_err(|e| io("cannot write the run's input", e))?;
    let mut body = container::create_body(
        &rt.cfg,
        &rt.instance,
        &key,
        &spec,
        &image_ref,
        &gateway_dir,
        init.as_ref(),
    );
    if let Some(l) = body.labels.as_mut() {
        l.insert(LABEL_RUN.to_string(), v.id.to_string());
    }
    if let Some(e) = body.env.as_mut() {
        e.extend(run_env(v.id));
    }
    if let Some(h) = body.host_config.as_mut() {
        h.binds
            .get_or_insert_with(Vec::new)
            .push(format!("{}:{RUN_DIR_IN_CONTAINER}:ro", dir.display()));
    }
    let name = job_container_name(&rt.instance, &key, v.id);
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(&name)
        .build();
    match docker
        .create_container(Some(opts.clone()), body.clone())
        .await
    {
        Ok(r) => Ok(r.id),
        Err(e) if super::engine::is_conflict(&e) => {
            // Left over from a run of this id (a store restored from a backup, say).
            remove(rt, docker, &name).await;
            docker
                .create_container(Some(opts), body)
                .await
                .map(|r| r.id)
                .map_err(|e| bollard_err("create the job's container", e))
        }
        Err(e) => Err(bollard_err("create the job's container", e)),
    }
}
