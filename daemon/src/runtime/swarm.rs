//! Swarm mode (`engine_mode = "swarm"`): an agent as a replicated service of one task.
//! The service is made from the very container request `container.rs` builds (one source
//! of the hardening: capabilities dropped, read-only rootfs, non-root user, limits, no
//! engine log copy, our labels), turned into a task template, with the spec's placement
//! and its restart budget mapped onto Swarm's restart policy. Each agent gets its own
//! encrypted, internal overlay network (no route out). Also here: what the daemon knows
//! of the swarm (its own node, node names) and how a task's state reads in the fleet.
//!
//! No-new-privileges has no place in a 20.10 task template; the shim, as every foreign
//! image's init, sets it for the program itself (`agent/src/init.rs`).

use super::container::{labels, LABEL_INSTANCE, LABEL_MANAGED};
use super::endpoint::{RemoteGateway, TokenSecret};
use super::engine::{bollard_err, is_conflict, is_not_found};
use super::swarm_data::TaskData;
use crate::store::AgentKey;
use agenfleet_protocol::{AgentSpec, ApiError, RestartMode};
use bollard::models::{
    ContainerCreateBody, Limit, Mount, MountTmpfsOptions, MountType, NetworkAttachmentConfig,
    NetworkCreateRequest, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::Docker;
use std::collections::HashMap;
use std::sync::Mutex;

/// The label on a service with the digest of what it is made from (the container part,
/// the restart policy, the placement): a service whose label differs is updated.
pub const LABEL_SERVICE_HASH: &str = "agenfleet.service-hash";

/// Why an agent with `network.mode = "egress"` does not start in swarm mode.
pub const NO_EGRESS: &str = "spec field `network.mode`: `egress` (a way out around the gateway) is not offered in swarm mode: every agent's overlay network is internal";

/// The service of an agent: `agf_<instance>_<tenant>_<name>` (Swarm allows letters,
/// digits, `-` and `_` in at most 63 characters; names hold no `_`, so this is
/// unambiguous), or `agf_<instance>_<digest>` when that would be too long.
pub fn service_name(instance: &str, key: &AgentKey) -> String {
    swarm_name("agf", instance, key)
}

/// The agent's overlay network: `agfnet_<instance>_<tenant>_<name>` (Swarm holds network
/// names to the same rule).
pub fn network_name(instance: &str, key: &AgentKey) -> String {
    swarm_name("agfnet", instance, key)
}

pub(super) fn swarm_name(prefix: &str, instance: &str, key: &AgentKey) -> String {
    swarm_name_with(prefix, instance, key, "")
}

/// `swarm_name` followed by `_<suffix>` (a secret's or a config's own part), the whole
/// within the 63 characters.
pub(super) fn swarm_name_with(
    prefix: &str,
    instance: &str,
    key: &AgentKey,
    suffix: &str,
) -> String {
    let tail = if suffix.is_empty() {
        String::new()
    } else {
        format!("_{suffix}")
    };
    let plain = format!("{prefix}_{instance}_{}_{}{tail}", key.tenant, key.name);
    if plain.len() <= 63 {
        return plain;
    }
    let digest = plain.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{prefix}_{instance}_{digest:016x}{tail}")
}

/// What the daemon knows of the swarm it manages: its own node, and node names.
#[derive(Default)]
pub struct SwarmInfo {
    inner: Mutex<SwarmKnown>,
}

#[derive(Default)]
struct SwarmKnown {
    /// The node the daemon runs on (its engine's), once asked.
    local_node: Option<String>,
    /// Node id → hostname.
    names: HashMap<String, String>,
    /// Nodes Swarm has last seen down (from the hub's sweep).
    down: std::collections::HashSet<String>,
}

impl SwarmInfo {
    fn known(&self) -> std::sync::MutexGuard<'_, SwarmKnown> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks that the engine is an active Swarm manager and learns its node id; the error
    /// says what to do.
    pub async fn check_manager(&self, docker: &Docker) -> Result<String, ApiError> {
        if let Some(id) = self.known().local_node.clone() {
            return Ok(id);
        }
        let info = docker
            .info()
            .await
            .map_err(|e| bollard_err("ask the engine about its swarm", e))?;
        let swarm = info.swarm.unwrap_or_default();
        let active = swarm.local_node_state == Some(bollard::models::LocalNodeState::ACTIVE);
        if !active || swarm.control_available != Some(true) {
            return Err(ApiError::unavailable(
                "engine_mode is \"swarm\", but this engine is not a Swarm manager (`docker swarm init`, or run the daemon on a manager)",
            ));
        }
        let id = swarm.node_id.unwrap_or_default();
        self.known().local_node = Some(id.clone());
        Ok(id)
    }

    /// Forgets what was learnt (the engine reconnected: it may have left or joined).
    pub fn forget(&self) {
        *self.known() = SwarmKnown::default();
    }

    /// Learns the nodes' names and which are down (the hub's sweep, from `GET /nodes`).
    pub fn learn_nodes(&self, nodes: &[bollard::models::Node]) {
        let mut k = self.known();
        k.down.clear();
        for n in nodes {
            let Some(id) = n.id.clone() else { continue };
            if let Some(h) = n.description.as_ref().and_then(|d| d.hostname.clone()) {
                k.names.insert(id.clone(), h);
            }
            let state = n.status.as_ref().and_then(|s| s.state);
            if state != Some(bollard::models::NodeState::READY) {
                k.down.insert(id);
            }
        }
    }

    /// Whether Swarm last saw `node` down (or otherwise not ready).
    pub fn is_down(&self, node: &str) -> bool {
        self.known().down.contains(node)
    }

    /// A node's hostname (asked of the engine once per node).
    pub async fn node_name(&self, docker: &Docker, node: &str) -> String {
        if let Some(n) = self.known().names.get(node) {
            return n.clone();
        }
        let name = match docker.inspect_node(node).await {
            Ok(n) => n
                .description
                .and_then(|d| d.hostname)
                .unwrap_or_else(|| node.to_string()),
            Err(_) => return node.to_string(),
        };
        self.known().names.insert(node.to_string(), name.clone());
        name
    }
}

/// Makes sure the agent's overlay network exists: swarm-scoped, encrypted (IPsec between
/// nodes) unless the config says otherwise, internal (no route out), attachable (the
/// daemon's gateway endpoint joins it).
pub async fn ensure_network(
    docker: &Docker,
    name: &str,
    instance: &str,
    encrypted: bool,
) -> Result<(), ApiError> {
    match docker.inspect_network(name, None).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(bollard_err("inspect the agent's overlay network", e)),
    }
    let req = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("overlay".into()),
        internal: Some(true),
        attachable: Some(true),
        options: encrypted.then(|| HashMap::from([("encrypted".to_string(), String::new())])),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), instance.to_string()),
        ])),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => {
            tracing::info!(network = %name, "created an agent's overlay network");
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(bollard_err("create the agent's overlay network", e)),
    }
}

/// Swarm's restart policy for the spec's: any exit restarts after `delay_ms` (Swarm's
/// delay is fixed: no doubling), at most `attempts` times in `interval_secs` when the
/// mode is `fail` (so the budget holds while the daemon is away), unbounded for `delay`
/// (the daemon then waits for room in the window itself).
fn restart_policy(spec: &AgentSpec) -> TaskSpecRestartPolicy {
    let r = &spec.restart;
    let ns = |ms: u64| (ms as i64).saturating_mul(1_000_000);
    TaskSpecRestartPolicy {
        condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
        delay: Some(ns(r.delay_ms)),
        max_attempts: Some(match r.mode {
            RestartMode::Fail => i64::from(r.attempts),
            RestartMode::Delay => 0,
        }),
        window: Some(ns(r.interval_secs.saturating_mul(1000))),
    }
}

/// `size=16m,mode=1777` → Swarm's tmpfs options (size in bytes, mode bits). Options a
/// task's tmpfs cannot take (the mount flags) are left to the engine's defaults; one
/// meant for the agent's user alone (`uid=`, which a task's tmpfs cannot take either) is
/// made writable by any user instead, sticky — every process in the task runs as that
/// user anyway.
fn tmpfs_options(opts: &str) -> MountTmpfsOptions {
    let mut o = MountTmpfsOptions::default();
    let owned = opts.split(',').any(|p| p.starts_with("uid="));
    for part in opts.split(',') {
        if let Some(size) = part.strip_prefix("size=") {
            let (num, mult) = match size.chars().last() {
                Some('k') => (&size[..size.len() - 1], 1024),
                Some('m') => (&size[..size.len() - 1], 1024 * 1024),
                Some('g') => (&size[..size.len() - 1], 1024 * 1024 * 1024),
                _ => (size, 1),
            };
            o.size_bytes = num.parse::<i64>().ok().map(|n| n * mult);
        } else if let Some(mode) = part.strip_prefix("mode=") {
            o.mode = i64::from_str_radix(mode, 8).ok();
        }
    }
    if owned {
        o.mode = Some(0o1777);
    }
    o
}

/// What a task refers to beyond its container request: the agent's overlay network, its
/// way to the gateway (the token's secret), and its data (files as configs, the
/// workspace volume).
pub struct TaskRefs<'a> {
    pub network: &'a str,
    pub gateway: &'a RemoteGateway,
    pub data: &'a TaskData,
    /// How often the task's shim reads its cgroup for the daemon.
    pub stats_interval_ms: u64,
}

/// The service for an agent, from the container request `container::create_body` made
/// for it: the same image, program, user, environment, health check, labels, read-only
/// rootfs, dropped capabilities, limits and tmpfs mounts, on the agent's overlay network,
/// placed by the spec, restarted by Swarm within the spec's budget. Nothing of the
/// daemon's host is mounted (the request's binds are the host's: the gateway directory,
/// whose sockets the shim serves in a tmpfs and relays over the overlay with the token;
/// files and workspace come as `refs.data`; the shim is in the init image), so the task
/// starts the same on any node. `replicas` is 1 to run it, 0 to stop it; `force` bumps
/// Swarm's counter that makes it replace the task.
pub fn service_spec(
    instance: &str,
    key: &AgentKey,
    spec: &AgentSpec,
    body: &ContainerCreateBody,
    refs: TaskRefs<'_>,
    scale: Scale,
) -> ServiceSpec {
    let Scale { replicas, force } = scale;
    let TaskRefs {
        network,
        gateway,
        data,
        stats_interval_ms,
    } = refs;
    let host = body.host_config.clone().unwrap_or_default();
    let mut mounts: Vec<Mount> = data.mounts.clone();
    mounts.push(Mount {
        target: Some(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER.to_string()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(1 << 20),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut env = body.env.clone().unwrap_or_default();
    env.push(format!(
        "{}={}:{}{}",
        agenfleet_protocol::gateway::REMOTE_GATEWAY_ENV,
        agenfleet_protocol::gateway::ENDPOINT_ALIAS,
        agenfleet_protocol::gateway::ENDPOINT_PORT,
        if gateway.proxy { ";proxy" } else { "" }
    ));
    env.push(format!(
        "{}={stats_interval_ms}",
        agenfleet_protocol::gateway::STATS_INTERVAL_ENV
    ));
    let secrets = vec![gateway.mount()];
    let mut tmpfs: Vec<(String, String)> =
        host.tmpfs.clone().unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    mounts.extend(tmpfs.into_iter().map(|(target, opts)| Mount {
        target: Some(target),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(tmpfs_options(&opts)),
        ..Default::default()
    }));
    let container = TaskSpecContainerSpec {
        image: body.image.clone(),
        labels: body.labels.clone(),
        command: body.entrypoint.clone(),
        args: body.cmd.clone(),
        env: Some(env),
        secrets: Some(secrets),
        configs: (!data.configs.is_empty()).then(|| data.configs.clone()),
        dir: body.working_dir.clone(),
        user: body.user.clone(),
        read_only: host.readonly_rootfs,
        mounts: Some(mounts),
        stop_grace_period: body.stop_timeout.map(|s| s.saturating_mul(1_000_000_000)),
        health_check: body.healthcheck.clone(),
        capability_drop: host.cap_drop.clone(),
        ..Default::default()
    };
    let placement = &spec.placement;
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: host.nano_cpus,
                memory_bytes: host.memory,
                pids: host.pids_limit,
            }),
            ..Default::default()
        }),
        restart_policy: Some(restart_policy(spec)),
        placement: Some(TaskSpecPlacement {
            constraints: Some(placement.constraints.clone()),
            preferences: (!placement.spread.is_empty()).then(|| {
                vec![TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some(placement.spread.clone()),
                    }),
                }]
            }),
            ..Default::default()
        }),
        force_update: Some(force),
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(network.to_string()),
            ..Default::default()
        }]),
        // As for a container: the engine keeps no copy of what the agent prints.
        log_driver: Some(TaskSpecLogDriver {
            name: Some("none".into()),
            options: None,
        }),
        ..Default::default()
    };
    let mut service_labels = labels(instance, key, spec);
    service_labels.insert(LABEL_SERVICE_HASH.to_string(), service_hash(spec));
    ServiceSpec {
        name: Some(service_name(instance, key)),
        labels: Some(service_labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A job run's service, from the agent's (`service_spec`): named `name`, one task that is
/// never restarted (the run ends with it), labelled with its run (the service and the
/// task), told its run (`jobs::run_env`), its input mounted as `input`. Swarm's own
/// `replicated-job` mode is not used: removing such a service leaves its ended task, and
/// that task's container on its node, behind for good (moby/moby#42789, #44312; seen
/// here on 20.10) — a replicated service of one task with no restart is the same run
/// without the leak.
pub fn job_service_spec(
    mut s: ServiceSpec,
    name: String,
    run: u64,
    input: TaskSpecContainerSpecConfigs,
) -> ServiceSpec {
    let label = (super::jobs::LABEL_RUN.to_string(), run.to_string());
    s.name = Some(name);
    let labels = s.labels.get_or_insert_with(HashMap::new);
    labels.remove(LABEL_SERVICE_HASH);
    labels.insert(label.0.clone(), label.1.clone());
    s.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
        ..Default::default()
    });
    if let Some(t) = s.task_template.as_mut() {
        t.restart_policy = Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        });
        t.force_update = None;
        if let Some(c) = t.container_spec.as_mut() {
            c.labels
                .get_or_insert_with(HashMap::new)
                .insert(label.0, label.1);
            c.env
                .get_or_insert_with(Vec::new)
                .extend(super::jobs::run_env(run));
            c.configs.get_or_insert_with(Vec::new).push(input);
        }
    }
    s
}

/// How many tasks a service asks for (1 to run, 0 to stop), and Swarm's counter that
/// makes it replace the task when bumped.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub replicas: i64,
    pub force: u64,
}

/// The replicas a service asks for (None: not a replicated service).
pub fn replicas_of(s: &bollard::models::Service) -> Option<i64> {
    s.spec
        .as_ref()?
        .mode
        .as_ref()?
        .replicated
        .as_ref()?
        .replicas
}

/// Whether a service was made from `spec` as it is now (its label says so).
pub fn made_from(s: &bollard::models::Service, spec: &AgentSpec) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(LABEL_SERVICE_HASH))
        == Some(&service_hash(spec))
}

/// What a service must be changed to, to run `spec` with the gateway token `token`
/// (None: it runs them already): one replica, and Swarm's force counter bumped so a
/// replica started again is a new task (its restart count begins anew).
pub fn scale_to_run(
    s: Option<&bollard::models::Service>,
    spec: &AgentSpec,
    token: &TokenSecret,
) -> Option<Scale> {
    let Some(s) = s else {
        return Some(Scale {
            replicas: 1,
            force: 0,
        });
    };
    let same_token = super::endpoint::token_secret_of(s).as_ref() == Some(token);
    if made_from(s, spec) && replicas_of(s) == Some(1) && same_token {
        return None;
    }
    let force = s
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.force_update)
        .unwrap_or(0);
    Some(Scale {
        replicas: 1,
        force: force + 1,
    })
}

/// What a service is made from, beyond its container: the container digest, the restart
/// policy and the placement.
pub fn service_hash(spec: &AgentSpec) -> String {
    let json = serde_json::to_vec(&(spec.container_hash(), &spec.restart, &spec.placement))
        .unwrap_or_default();
    let h = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// How a task stands, as the runner acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskPhase {
    /// Not yet running: Swarm's state, and why when it says (`no suitable node …`).
    Pending(String),
    Running,
    /// It ended (complete, failed, rejected, shutdown…): its exit code when it had one.
    Ended(Option<i64>),
}

/// The tasks of service `name` (Swarm keeps a few ended ones as history); `whose` names
/// them in an error ("the agent's", "the job run's").
pub async fn service_tasks(
    docker: &Docker,
    name: &str,
    whose: &str,
) -> Result<Vec<Task>, ApiError> {
    let filters = HashMap::from([("service", vec![name.to_string()])]);
    let opts = bollard::query_parameters::ListTasksOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_tasks(Some(opts))
        .await
        .map_err(|e| bollard_err(&format!("list {whose} tasks"), e))
}

/// Whether a task's end was Swarm's doing rather than the agent's: stopped (`shutdown`,
/// `remove`: a scale-down, an update, a node back after Swarm replaced its task) or given
/// up with its node (`orphaned`). Such an end is not an exit of the agent.
pub fn ended_by_swarm(t: &Task) -> bool {
    matches!(
        t.status.as_ref().and_then(|s| s.state),
        Some(TaskState::SHUTDOWN | TaskState::ORPHANED | TaskState::REMOVE)
    )
}

/// Swarm's task state as text (`running`, `pending`…).
pub fn state_name(s: Option<TaskState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
}

/// What the runner makes of a task's status.
pub fn phase(t: &Task) -> TaskPhase {
    let status = t.status.clone().unwrap_or_default();
    match status.state {
        Some(TaskState::RUNNING) => TaskPhase::Running,
        // Refused by its node before it ran (no such image there): the exit code Swarm
        // reports for it (0) says nothing.
        Some(TaskState::REJECTED) => TaskPhase::Ended(None),
        Some(
            TaskState::COMPLETE
            | TaskState::FAILED
            | TaskState::SHUTDOWN
            | TaskState::ORPHANED
            | TaskState::REMOVE,
        ) => TaskPhase::Ended(status.container_status.and_then(|c| c.exit_code)),
        s => {
            let why = status
                .err
                .filter(|e| !e.is_empty())
                .or(status.message.filter(|m| !m.is_empty()));
            TaskPhase::Pending(match why {
                Some(w) => format!("{}: {w}", state_name(s)),
                None => state_name(s),
            })
        }
    }
}

/// The task that is the agent now: of the service's tasks, the newest (Swarm keeps a few
/// ended ones as history).
pub fn current(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by_key(|t| {
        (
            t.version.as_ref().and_then(|v| v.index).unwrap_or(0),
            t.created_at.clone().unwrap_or_default(),
        )
    })
}

#[cfg(test)]
#[path = "swarm_tests.rs"]
mod tests;
