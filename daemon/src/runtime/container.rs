//! Spec → hardened container: every agent runs with all capabilities dropped,
//! no-new-privileges, a read-only root filesystem, a small tmpfs for /tmp, memory (no swap),
//! CPU and pids limits, a non-root user, no network unless the spec asks for its own, our
//! labels and a deterministic name. No credentials or other secrets ever go into this config.

use crate::config::Config;
use crate::store::AgentKey;
use agenfleet_protocol::{AgentSpec, Delivery, NetworkMode, BUILTIN_IMAGE};
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

pub const LABEL_MANAGED: &str = "agenfleet.managed";
pub const LABEL_INSTANCE: &str = "agenfleet.instance";
pub const LABEL_TENANT: &str = "agenfleet.tenant";
pub const LABEL_PROJECT: &str = "agenfleet.project";
pub const LABEL_AGENT: &str = "agenfleet.agent";
/// The spec's digest on containers made before specs could change in place (read only,
/// to adopt them).
pub const LABEL_SPEC_HASH: &str = "agenfleet.spec-hash";
/// `AgentSpec::container_hash` of the spec the container was made from.
pub const LABEL_CONTAINER_HASH: &str = "agenfleet.container-hash";

/// Whether a container's labels say it was made from `spec` as it is now (a change taken
/// up in place does not count). A container from before `LABEL_CONTAINER_HASH` is judged
/// by the whole spec's digest it carries.
pub fn made_from(labels: &HashMap<String, String>, spec: &AgentSpec, container_hash: &str) -> bool {
    match labels.get(LABEL_CONTAINER_HASH) {
        Some(h) => h == container_hash,
        None => labels.get(LABEL_SPEC_HASH) == Some(&spec.hash()),
    }
}

/// Whether a running container is known to be made from an older spec than `spec`: its
/// `LABEL_CONTAINER_HASH` differs. A container from before that label is not judged (its
/// whole-spec digest would differ after any change taken up in place too), so an upgrade
/// never replaces a running agent.
pub fn made_from_older(labels: &HashMap<String, String>, container_hash: &str) -> bool {
    labels
        .get(LABEL_CONTAINER_HASH)
        .is_some_and(|h| h != container_hash)
}

/// Where the shim sits in the built-in image.
pub const BUILTIN_SHIM: &str = "/agenfleet-agent";

/// `agf.<instance>.<tenant>.<name>`: '.' cannot occur in names, so this is unambiguous.
pub fn container_name(instance: &str, key: &AgentKey) -> String {
    format!("agf.{instance}.{}.{}", key.tenant, key.name)
}

/// The network of an agent with its own network: `agfnet.<instance>.<tenant>.<name>`.
pub fn network_name(instance: &str, key: &AgentKey) -> String {
    format!("agfnet.{instance}.{}.{}", key.tenant, key.name)
}

/// The host directory holding an agent's gateway socket; it is bind-mounted (read-only)
/// into that agent's container alone.
pub fn gateway_dir(state_dir: &std::path::Path, key: &AgentKey) -> std::path::PathBuf {
    state_dir
        .join("gateways")
        .join(format!("{}.{}", key.tenant, key.name))
}

/// The agent key a container's labels name, if they are ours.
pub fn key_from_labels(labels: &HashMap<String, String>) -> Option<AgentKey> {
    Some(AgentKey {
        tenant: labels.get(LABEL_TENANT)?.clone(),
        name: labels.get(LABEL_AGENT)?.clone(),
    })
}

pub fn labels(instance: &str, key: &AgentKey, spec: &AgentSpec) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_TENANT.to_string(), key.tenant.clone()),
        (LABEL_PROJECT.to_string(), spec.project.clone()),
        (LABEL_AGENT.to_string(), key.name.clone()),
        (LABEL_CONTAINER_HASH.to_string(), spec.container_hash()),
    ])
}

/// How an agent whose image is not ours is started: the shim as the container's init and
/// the program it runs (the spec's `command`, or the image's own entrypoint and command).
pub struct InitProgram {
    /// The shim on the host, bind-mounted read-only; None: it is in the image (the
    /// agent's init image of swarm mode, at `SHIM_IN_IMAGE`).
    pub shim: Option<std::path::PathBuf>,
    pub argv: Vec<String>,
    /// The agent's `[[files]]` (read-only) and its workspace, as engine binds.
    pub binds: Vec<String>,
    /// Variables for the program beyond the spec's `env`: where its providers and
    /// connections are (`upstreams::Upstreams::env_for`). Nothing secret.
    pub env: Vec<(String, String)>,
}

/// The mount point of the shim inside the gateway directory (it is mounted over an empty
/// file the daemon creates there, since that directory is mounted read-only first).
pub fn shim_mount_point(gateway_dir: &std::path::Path) -> std::path::PathBuf {
    gateway_dir.join("bin").join("agenfleet-agent")
}

/// The init's command line: `run`, the credentials it hands the program other than
/// through the API (names and variables only; the values come over the gateway at start),
/// then `--` and the program.
fn init_entrypoint(spec: &AgentSpec, shim: &str) -> Vec<String> {
    let mut e = vec![shim.to_string(), "run".to_string()];
    for c in &spec.credentials {
        match c.delivery {
            Delivery::Api => {}
            Delivery::File => e.extend(["--secret-file".to_string(), c.name.clone()]),
            Delivery::Env => e.extend([
                "--secret-env".to_string(),
                format!("{}={}", c.env_var(), c.name),
            ]),
        }
    }
    e.push("--".to_string());
    e
}

/// The container's tmpfs mounts: `/tmp`, and for `file` credentials a small one of the
/// agent's user alone (no other user, no exec) where the init writes them.
fn tmpfs(cfg: &Config, spec: &AgentSpec, init: bool) -> HashMap<String, String> {
    // mode=1777: a restarted container gets a fresh /tmp that its (non-root) user can
    // still write to (without it, the engine's re-created mount is root's 0755).
    let mut t = HashMap::from([(
        "/tmp".to_string(),
        "rw,noexec,nosuid,nodev,size=16m,mode=1777".to_string(),
    )]);
    if init
        && spec
            .credentials
            .iter()
            .any(|c| c.delivery == Delivery::File)
    {
        let (uid, gid) = cfg
            .agent_user
            .split_once(':')
            .unwrap_or((cfg.agent_user.as_str(), cfg.agent_user.as_str()));
        t.insert(
            agenfleet_protocol::spec::SECRETS_DIR_IN_CONTAINER.to_string(),
            format!("rw,noexec,nosuid,nodev,size=1m,mode=0700,uid={uid},gid={gid}"),
        );
    }
    t
}

/// The mount point of the secrets tmpfs inside the gateway directory (which is mounted
/// read-only first, so the engine cannot create it there).
pub fn secrets_mount_point(gateway_dir: &std::path::Path) -> std::path::PathBuf {
    gateway_dir.join("secrets")
}

/// The engine's create request for an agent (`init` for an image that is not ours).
pub fn create_body(
    cfg: &Config,
    instance: &str,
    key: &AgentKey,
    spec: &AgentSpec,
    image_ref: &str,
    gateway_dir: &std::path::Path,
    init: Option<&InitProgram>,
) -> ContainerCreateBody {
    let mem = spec.memory_limit_bytes() as i64;
    let network_mode = match spec.network.mode {
        // Loopback only: the gateway's sockets are the way out.
        NetworkMode::None | NetworkMode::Gateway => "none".to_string(),
        NetworkMode::Internal | NetworkMode::Egress => network_name(instance, key),
    };
    let cmd = if spec.image == BUILTIN_IMAGE {
        let workload = serde_json::to_string(&spec.workload).unwrap_or_else(|_| "{}".into());
        let mut c = vec!["--workload".to_string(), workload];
        if !spec.credentials.is_empty() {
            // Names only: the values come over the gateway socket at start.
            c.push("--credentials".into());
            let names: Vec<&str> = spec.credentials.iter().map(|c| c.name.as_str()).collect();
            c.push(names.join(","));
            if spec.credential_refresh == agenfleet_protocol::CredentialRefresh::Refresh {
                c.push("--refresh".into());
            }
        }
        Some(c)
    } else {
        init.map(|i| i.argv.clone())
    };
    // The agent's own gateway socket, and nothing else of the host — but the shim, for an
    // image that is not ours.
    let mut binds = vec![format!(
        "{}:{}:ro",
        gateway_dir.display(),
        agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER
    )];
    let mut entrypoint = None;
    // Where the shim is in the container, for an image that is not ours.
    let shim_path = match init.map(|i| &i.shim) {
        Some(Some(_)) => agenfleet_protocol::gateway::SHIM_IN_CONTAINER,
        Some(None) => agenfleet_protocol::gateway::SHIM_IN_IMAGE,
        None => BUILTIN_SHIM,
    };
    if let Some(i) = init {
        if let Some(shim) = &i.shim {
            binds.push(format!("{}:{shim_path}:ro", shim.display()));
        }
        binds.extend(i.binds.iter().cloned());
        entrypoint = Some(init_entrypoint(spec, shim_path));
    }
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(i) = init {
        env.extend(i.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    let healthcheck = spec.health.as_ref().map(|h| {
        let test = if h.command.is_empty() {
            // The shim probes the program's HTTP endpoint from inside the container.
            vec![
                "CMD".to_string(),
                shim_path.to_string(),
                "health-http".to_string(),
                h.port.to_string(),
                h.http.clone(),
            ]
        } else {
            std::iter::once("CMD".to_string())
                .chain(h.command.iter().cloned())
                .collect()
        };
        let ns = |secs: u64| (secs as i64).saturating_mul(1_000_000_000);
        bollard::models::HealthConfig {
            test: Some(test),
            interval: Some(ns(h.interval_secs)),
            timeout: Some(ns(h.timeout_secs)),
            retries: Some(i64::from(h.retries)),
            start_period: (h.start_period_secs > 0).then(|| ns(h.start_period_secs)),
            ..Default::default()
        }
    });
    ContainerCreateBody {
        image: Some(image_ref.to_string()),
        entrypoint,
        cmd,
        working_dir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
        healthcheck,
        user: Some(cfg.agent_user.clone()),
        labels: Some(labels(instance, key, spec)),
        env: Some(env),
        stop_timeout: Some(i64::from(cfg.stop_timeout_secs)),
        host_config: Some(HostConfig {
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            readonly_rootfs: Some(true),
            // mode=1777: a restarted container gets a fresh /tmp that its (non-root) user
            // can still write to (without it, the engine's re-created mount is root's 0755).
            tmpfs: Some(tmpfs(cfg, spec, init.is_some())),
            memory: Some(mem),
            memory_swap: Some(mem),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(spec.limits.pids)),
            network_mode: Some(network_mode),
            binds: Some(binds),
            restart_policy: Some(RestartPolicy {
                // The daemon is the supervisor: backoff, budget and audit are ours.
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            // The engine keeps no copy of what the agent prints (a secret it prints would
            // sit in a file on the host): the daemon, attached to its output, is the only
            // collector, and redacts before it keeps anything.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_string()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_judged_by_the_fields_it_is_made_from_and_old_ones_are_adopted() {
        let spec = |extra: &str| {
            AgentSpec::from_toml(&format!("name = \"a\"\nimage = \"x/y\"\n{extra}")).unwrap()
        };
        let key = AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        };
        let old = spec("");
        let made = labels("i", &key, &old);
        // Restart budget: taken up in place, the container is still this spec's.
        let budget = spec("[restart]\nattempts = 9\n");
        assert!(made_from(&made, &budget, &budget.container_hash()));
        assert!(!made_from_older(&made, &budget.container_hash()));
        // An environment variable: it is not.
        let env = spec("env = { A = \"1\" }\n");
        assert!(!made_from(&made, &env, &env.container_hash()));
        assert!(made_from_older(&made, &env.container_hash()));
        // A container from before the label: its whole-spec digest decides a start, and a
        // running one is never replaced for it.
        let legacy = HashMap::from([(LABEL_SPEC_HASH.to_string(), old.hash())]);
        assert!(made_from(&legacy, &old, &old.container_hash()));
        assert!(!made_from(&legacy, &budget, &budget.container_hash()));
        assert!(!made_from_older(&legacy, &env.container_hash()));
    }

    #[test]
    fn hardening_is_complete() {
        let spec = AgentSpec::from_toml(
            "name = \"a\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 64\ncpus = 0.5\npids = 32\n",
        )
        .unwrap();
        let key = AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        };
        let b = create_body(
            &Config::default(),
            "inst",
            &key,
            &spec,
            "agenfleet/agent:x",
            std::path::Path::new("/s/gateways/t.a"),
            None,
        );
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_drop.unwrap(), vec!["ALL"]);
        assert_eq!(h.security_opt.unwrap(), vec!["no-new-privileges:true"]);
        assert_eq!(h.readonly_rootfs, Some(true));
        assert!(h.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(h.memory, Some(64 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory);
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.pids_limit, Some(32));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.binds.unwrap(), vec!["/s/gateways/t.a:/run/agenfleet:ro"]);
        assert_eq!(b.user.as_deref(), Some("65534:65534"));
        assert_eq!(b.env, Some(vec![]));
        let labels = b.labels.unwrap();
        assert_eq!(key_from_labels(&labels), Some(key.clone()));
        assert_eq!(container_name("inst", &key), "agf.inst.t.a");
    }

    #[test]
    fn an_image_of_our_own_runs_under_the_shim_with_the_same_hardening() {
        let spec = AgentSpec::from_toml(
            "name = \"a\"\nimage = \"mine/app:1\"\nworkdir = \"/app\"\n[env]\nLOG_LEVEL = \"info\"\n",
        )
        .unwrap();
        let key = AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        };
        let init = InitProgram {
            shim: Some("/s/bin/agenfleet-agent-abc".into()),
            argv: vec!["python3".into(), "/app/agent.py".into()],
            binds: Vec::new(),
            env: vec![(
                "OPENAI_BASE_URL".into(),
                "http://127.0.0.1:4180/providers/openai/v1".into(),
            )],
        };
        let b = create_body(
            &Config::default(),
            "inst",
            &key,
            &spec,
            "mine/app:1",
            std::path::Path::new("/s/gateways/t.a"),
            Some(&init),
        );
        assert_eq!(
            b.entrypoint.unwrap(),
            ["/run/agenfleet/bin/agenfleet-agent", "run", "--"]
        );
        assert_eq!(b.cmd.unwrap(), ["python3", "/app/agent.py"]);
        assert_eq!(b.working_dir.as_deref(), Some("/app"));
        assert_eq!(
            b.env.unwrap(),
            [
                "LOG_LEVEL=info",
                "OPENAI_BASE_URL=http://127.0.0.1:4180/providers/openai/v1"
            ]
        );
        let h = b.host_config.unwrap();
        assert_eq!(
            h.binds.unwrap(),
            [
                "/s/gateways/t.a:/run/agenfleet:ro",
                "/s/bin/agenfleet-agent-abc:/run/agenfleet/bin/agenfleet-agent:ro"
            ]
        );
        assert_eq!(h.cap_drop.unwrap(), vec!["ALL"]);
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(b.user.as_deref(), Some("65534:65534"));
    }
}
