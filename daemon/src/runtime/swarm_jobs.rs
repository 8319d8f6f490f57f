//! Swarm mode: a job agent's run as a Swarm service of one task that is never restarted
//! (a "Swarm job" here; not Swarm's `replicated-job` mode, see `swarm::job_service_spec`),
//! on whichever node Swarm places it. Its task is the agent's task template
//! (`swarm::service_spec` from the same container request: hardening, init image, file
//! configs, workspace volume, the agent's overlay network) plus its run: the run's label,
//! `AGENFLEET_RUN_ID`/`AGENFLEET_RUN_INPUT`, its input as a config at
//! `/run/agenfleet/run/input.json`, and a gateway token of its own (a secret) that names
//! the run — the gateway answers its connections as the run's, as a job container's pid
//! does on one host, and its output (the shim's `logs` channel) goes to the run's ring.
//!
//! Its end is its task's: `complete` → succeeded, `failed` → failed with the exit code
//! (OOM-killed when the shim said so), `rejected`/`orphaned`/`shutdown` → failed with
//! Swarm's word. The task is read when something says it may have changed — its
//! container's events on this node, its output connection closing, the hub's sweep for
//! other nodes — then again a few times shortly after (the manager hears of an end a
//! moment after the node), never on a timer of its own. A timeout, a cancel, a posted
//! result past its grace: the service is removed (Swarm stops the task). The service, the
//! run's token and its input config go at the run's end.

use super::endpoint;
use super::engine::{bollard_err, is_conflict, is_not_found};
use super::hub::Runtime;
use super::jobs::{self, Outcome, EXIT_GRACE, LABEL_RUN};
use super::logs::LogRing;
use super::swarm::{self, TaskPhase};
use crate::runs::key_of;
use crate::store::AgentKey;
use agenfleet_protocol::runs::{RunState, RunView};
use agenfleet_protocol::{ApiError, LogStream};
use bollard::models::{Task, TaskState};
use bollard::Docker;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The service of run `run`: `agf_<instance>_<tenant>_<name>_r<run>`.
pub fn run_service_name(instance: &str, key: &AgentKey, run: u64) -> String {
    swarm::swarm_name_with("agf", instance, key, &format!("r{run}"))
}

/// How long after a sign of change the task is read again while it has not ended.
const SOON: [Duration; 6] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How long an ended task's output may take to arrive in full.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// How long an ended task that never connected its output is given to (see `output_in`).
const QUIET_GRACE: Duration = Duration::from_millis(250);

/// Run → service name of each job run's service of this daemon.
pub(super) async fn list(rt: &Runtime, docker: &Docker) -> Result<HashMap<u64, String>, ApiError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={}", super::container::LABEL_INSTANCE, rt.instance),
            LABEL_RUN.to_string(),
        ],
    )]);
    let opts = bollard::query_parameters::ListServicesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let services = docker
        .list_services(Some(opts))
        .await
        .map_err(|e| bollard_err("list the job runs' services", e))?;
    Ok(services
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let run = spec.labels?.get(LABEL_RUN)?.parse::<u64>().ok()?;
            Some((run, spec.name?))
        })
        .collect())
}

/// Runs `v` as a Swarm job (a new one, or `adopt`: the service already running it) to its
/// end (see the module's header). An error carries the service if one was made.
pub(super) async fn run(
    rt: &Arc<Runtime>,
    v: &RunView,
    ring: &LogRing,
    adopt: Option<String>,
) -> Result<Outcome, (ApiError, Option<String>)> {
    let key = key_of(v);
    let docker = rt.engine.client().map_err(|e| (e, adopt.clone()))?;
    ring.learn_secrets(super::runner::secrets_of(rt, &key));
    let name = match adopt {
        Some(name) => {
            adopt_service(rt, &docker, &key, v.id, &name)
                .await
                .map_err(|e| (e, Some(name.clone())))?;
            tracing::info!(run = v.id, agent = %key, service = %name, "job service adopted");
            name
        }
        None => create(rt, &docker, v).await.map_err(|e| (e, None))?,
    };
    rt.jobs.set_container(v.id, &name);
    let (state, result, error) = follow(rt, &docker, v, &name, ring).await;
    Ok(Outcome {
        state,
        result,
        error,
        container: name,
    })
}

/// After a daemon restart: the run's token is put in force again (read from its secret's
/// label) and the endpoint joined to the agent's network.
async fn adopt_service(
    rt: &Runtime,
    docker: &Docker,
    key: &AgentKey,
    run: u64,
    name: &str,
) -> Result<(), ApiError> {
    let s = docker
        .inspect_service(name, None)
        .await
        .map_err(|e| bollard_err("inspect the job run's service", e))?;
    let secret = endpoint::token_secret_of(&s)
        .ok_or_else(|| ApiError::internal("the job run's service holds no gateway token"))?;
    let digest = endpoint::token_digest_of(docker, &secret)
        .await
        .ok_or_else(|| ApiError::internal("the job run's gateway token cannot be read"))?;
    rt.gateway_keys.set_run_token(key, run, digest);
    let network = swarm::network_name(&rt.instance, key);
    super::runner::join_gateway(rt, docker, key, &network).await
}

/// Creates the run's service: the agent's task template, as a job of one task, with the
/// run's token, label, variables and input. Answers the service's name.
async fn create(rt: &Arc<Runtime>, docker: &Docker, v: &RunView) -> Result<String, ApiError> {
    let key = key_of(v);
    rt.swarm.check_manager(docker).await?;
    let spec = rt
        .agent_spec(&key)
        .ok_or_else(|| ApiError::not_found(format!("agent {key} is gone")))?;
    if spec.network.mode == agenfleet_protocol::NetworkMode::Egress {
        return Err(ApiError::invalid(swarm::NO_EGRESS));
    }
    let image_ref = rt.images.resolve(docker, &spec.image).await?;
    let network = swarm::network_name(&rt.instance, &key);
    swarm::ensure_network(
        docker,
        &network,
        &rt.instance,
        rt.cfg.swarm_overlay_encrypted,
    )
    .await?;
    super::runner::join_gateway(rt, docker, &key, &network).await?;
    let (body, data, _) = super::runner::task_parts(rt, docker, &key, &spec, image_ref).await?;
    let input = super::swarm_data::input_config(
        docker,
        &rt.instance,
        &key,
        v.id,
        &v.input_json,
        &rt.cfg.agent_user,
    )
    .await?;
    let (secret, digest) =
        match endpoint::new_token_secret(docker, &rt.instance, &key, Some(v.id)).await {
            Ok(t) => t,
            Err(e) => {
                remove_config_later(docker, input.config_id, input.config_name);
                return Err(e);
            }
        };
    rt.gateway_keys.set_run_token(&key, v.id, digest.clone());
    let gateway = endpoint::RemoteGateway::new(
        secret.clone(),
        &rt.cfg.agent_user,
        spec.network.mode == agenfleet_protocol::NetworkMode::Gateway,
    );
    let base = swarm::service_spec(
        &rt.instance,
        &key,
        &spec,
        &body,
        swarm::TaskRefs {
            network: &network,
            gateway: &gateway,
            data: &data,
            stats_interval_ms: rt.cfg.stats_interval_ms,
        },
        swarm::Scale {
            replicas: 1,
            force: 0,
        },
    );
    let name = run_service_name(&rt.instance, &key, v.id);
    let service = swarm::job_service_spec(base, name.clone(), v.id, input.clone());
    let made = match docker.create_service(service.clone(), None).await {
        Err(e) if is_conflict(&e) => {
            // Left over from a run of this id (a store restored from a backup, say); an
            // input config it shares with this run (same id, same input) stays.
            remove_keeping(rt, docker, &name, input.config_id.as_deref()).await;
            rt.gateway_keys.set_run_token(&key, v.id, digest);
            docker.create_service(service, None).await
        }
        other => other,
    };
    match made {
        Ok(_) => {
            tracing::info!(run = v.id, agent = %key, service = %name, "job run started as a Swarm job");
            Ok(name)
        }
        Err(e) => {
            rt.gateway_keys.forget_run(v.id);
            endpoint::remove_secret_later(docker.clone(), secret);
            remove_config_later(docker, input.config_id, input.config_name);
            Err(bollard_err("create the job run's service", e))
        }
    }
}

/// Follows the run's task to its end, or the run's end from elsewhere (a posted result,
/// a timeout, a cancel: then the service is removed once the program has had its grace);
/// answers how the run ended. Its output is all in when this returns (or its grace ran
/// out).
async fn follow(
    rt: &Arc<Runtime>,
    docker: &Docker,
    v: &RunView,
    name: &str,
    ring: &LogRing,
) -> (RunState, Option<String>, Option<String>) {
    let id = v.id;
    let mut said = None;
    let ended = jobs::wait_ended(rt, id);
    tokio::pin!(ended);
    let task = tokio::select! {
        t = task_end(rt, docker, id, name, ring, &mut said) => Some(t),
        e = &mut ended => {
            // A result posted: the program may finish on its own; otherwise stop it now.
            let succeeded = e.as_ref().map(|r| r.state) == Some(RunState::Succeeded);
            let t = if succeeded {
                tokio::time::timeout(EXIT_GRACE, task_end(rt, docker, id, name, ring, &mut said))
                    .await
                    .ok()
            } else {
                None
            };
            if t.is_none() {
                remove(rt, docker, name).await;
            }
            t
        }
    };
    output_in(rt, id).await;
    let oom = rt.jobs.follow_state(id).is_some_and(|(_, oom, _, _)| oom);
    match task {
        Some(t) => outcome_of(&t, oom),
        // Ended elsewhere: the run holds its end already.
        None => (RunState::Failed, None, None),
    }
}

/// Waits for the run's task to end, reading the service's tasks when woken and a few
/// times shortly after; Swarm's error is put in the run's output when the task is held
/// back (no node fits, say).
async fn task_end(
    rt: &Runtime,
    docker: &Docker,
    id: u64,
    name: &str,
    ring: &LogRing,
    said: &mut Option<String>,
) -> Task {
    let Some((wake, ..)) = rt.jobs.follow_state(id) else {
        return std::future::pending().await;
    };
    let mut soon = 0usize;
    loop {
        match swarm::service_tasks(docker, name, "the job run's").await {
            Ok(tasks) => {
                if let Some(t) = swarm::current(&tasks) {
                    if matches!(swarm::phase(t), TaskPhase::Ended(_)) {
                        return t.clone();
                    }
                    // Held back for a reason (no node fits, say): told once in its output.
                    let status = t.status.clone().unwrap_or_default();
                    if let Some(err) = status.err.filter(|e| !e.is_empty()) {
                        let why = format!("{}: {err}", swarm::state_name(status.state));
                        if said.as_deref() != Some(why.as_str()) {
                            ring.push_now(LogStream::Stderr, format!("[agenfleet: Swarm: {why}]"));
                            *said = Some(why);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(run = id, error = %e.message, "cannot read the job run's task")
            }
        }
        let again = async {
            match SOON.get(soon) {
                Some(d) => tokio::time::sleep(*d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => soon = 0,
            _ = again => soon += 1,
        }
    }
}

/// Waits (up to `OUTPUT_GRACE`) until the task's output connections are closed — and, if
/// none was ever opened, `QUIET_GRACE` for one the shim opened as its program ended (its
/// last lines sent at exit) and the endpoint has not handed over yet. A program that
/// printed nothing and ended before its first reading opens none at all.
async fn output_in(rt: &Runtime, id: u64) {
    let until = tokio::time::Instant::now() + OUTPUT_GRACE;
    let first_look = tokio::time::Instant::now() + QUIET_GRACE;
    loop {
        let Some((wake, _, open, ever)) = rt.jobs.follow_state(id) else {
            return;
        };
        let now = tokio::time::Instant::now();
        if now >= until || (open == 0 && (ever || now >= first_look)) {
            return;
        }
        let deadline = if open == 0 { first_look } else { until };
        let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
    }
}

/// Removes the service: Swarm stops its task with the spec's grace.
async fn stop(docker: &Docker, name: &str) {
    match docker.delete_service(name).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            tracing::warn!(service = %name, error = %e, "cannot remove the job run's service")
        }
    }
}

/// How a run ended from its task's end (`oom`: the shim said its program was OOM-killed).
pub(super) fn outcome_of(t: &Task, oom: bool) -> (RunState, Option<String>, Option<String>) {
    let status = t.status.clone().unwrap_or_default();
    let why = status
        .err
        .filter(|e| !e.is_empty())
        .or(status.message.filter(|m| !m.is_empty()))
        .unwrap_or_default();
    let code = status.container_status.and_then(|c| c.exit_code);
    match (status.state, code) {
        (Some(TaskState::COMPLETE | TaskState::FAILED), Some(code)) => jobs::ended_with(code, oom),
        (Some(TaskState::REJECTED), _) => (
            RunState::Failed,
            None,
            Some(format!("Swarm rejected the job's task: {why}")),
        ),
        (state, _) => (
            RunState::Failed,
            None,
            Some(format!(
                "the job's task ended without an exit code (Swarm: {}{}{why})",
                swarm::state_name(state),
                if why.is_empty() { "" } else { ": " }
            )),
        ),
    }
}

/// Removes a run's service, then — once its task has let them go — its gateway token's
/// secret and its input config; the token is refused from now on.
pub(super) async fn remove(rt: &Runtime, docker: &Docker, name: &str) {
    remove_keeping(rt, docker, name, None).await
}

/// `remove`, but the config `keep` (if the service holds it) stays.
async fn remove_keeping(rt: &Runtime, docker: &Docker, name: &str, keep: Option<&str>) {
    let s = match docker.inspect_service(name, None).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return,
        Err(e) => {
            tracing::warn!(service = %name, error = %e, "cannot inspect the job run's service");
            return;
        }
    };
    stop(docker, name).await;
    if let Some(run) = s
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(LABEL_RUN))
        .and_then(|r| r.parse::<u64>().ok())
    {
        rt.gateway_keys.forget_run(run);
    }
    if let Some(t) = endpoint::token_secret_of(&s) {
        endpoint::remove_secret_later(docker.clone(), t);
    }
    let input = super::swarm_data::input_target();
    let configs = s
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.container_spec)
        .and_then(|c| c.configs)
        .unwrap_or_default();
    for c in configs {
        let is_input = c.file.as_ref().and_then(|f| f.name.as_deref()) == Some(input.as_str());
        if is_input && c.config_id.is_some() && c.config_id.as_deref() != keep {
            remove_config_later(docker, c.config_id, c.config_name);
        }
    }
}

fn remove_config_later(docker: &Docker, id: Option<String>, name: Option<String>) {
    let Some(id) = id else { return };
    let docker = docker.clone();
    super::engine::remove_later(
        format!("input config {}", name.unwrap_or_default()),
        move || {
            let (docker, id) = (docker.clone(), id.clone());
            async move { docker.delete_config(&id).await }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerStatus, TaskStatus};

    fn task(state: TaskState, code: Option<i64>, err: &str) -> Task {
        Task {
            status: Some(TaskStatus {
                state: Some(state),
                err: (!err.is_empty()).then(|| err.to_string()),
                container_status: code.map(|c| ContainerStatus {
                    exit_code: Some(c),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_runs_end_is_its_tasks() {
        let (s, r, e) = outcome_of(&task(TaskState::COMPLETE, Some(0), ""), false);
        assert_eq!(
            (s, r.as_deref(), e),
            (RunState::Succeeded, Some(r#"{"exit_code":0}"#), None)
        );
        let (s, _, e) = outcome_of(
            &task(TaskState::FAILED, Some(3), "task: non-zero exit (3)"),
            false,
        );
        assert_eq!(s, RunState::Failed);
        assert!(e.unwrap().contains("exited with code 3"));
        let (_, _, e) = outcome_of(&task(TaskState::FAILED, Some(137), ""), true);
        assert!(e.unwrap().contains("OOM-killed (exit code 137)"));
        // Refused by its node: Swarm's exit code (0) says nothing; its reason is told.
        let (s, _, e) = outcome_of(
            &task(TaskState::REJECTED, Some(0), "No such image: x:1"),
            false,
        );
        assert_eq!(s, RunState::Failed);
        assert_eq!(
            e.unwrap(),
            "Swarm rejected the job's task: No such image: x:1"
        );
        let (s, _, e) = outcome_of(&task(TaskState::ORPHANED, None, ""), false);
        assert_eq!(s, RunState::Failed);
        assert_eq!(
            e.unwrap(),
            "the job's task ended without an exit code (Swarm: orphaned)"
        );
    }

    #[test]
    fn a_runs_service_is_named_for_the_run_within_swarms_limit() {
        let key = AgentKey {
            tenant: "acme".into(),
            name: "nightly".into(),
        };
        assert_eq!(run_service_name("i1", &key, 42), "agf_i1_acme_nightly_r42");
        let long = AgentKey {
            tenant: "t".repeat(40),
            name: "n".repeat(40),
        };
        let n = run_service_name("i1", &long, u64::MAX);
        assert!(
            n.len() <= 63 && n.ends_with(&format!("_r{}", u64::MAX)),
            "{n}"
        );
    }
}
