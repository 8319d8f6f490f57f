//! Swarm mode: the way from an agent's task to its gateway, the daemon's side. Each
//! agent's gateway token (32 random bytes as a Swarm secret, mounted in its task alone;
//! the daemon keeps only its SHA-256, as the secret's label) and the tokens in force; the
//! gateway endpoint — a hardened container of the built-in image on the daemon's node,
//! joined to every agent's overlay network as `agenfleet-gateway` — and its address on
//! each network (which says whose network a connection came in on). The connections
//! themselves are served in `rpc/swarm_gateway.rs`.

use super::container::{LABEL_INSTANCE, LABEL_MANAGED};
use super::engine::{bollard_err, is_conflict, is_not_found};
use super::swarm::swarm_name_with;
use crate::store::AgentKey;
use agenfleet_protocol::ApiError;
use bollard::models::{ContainerCreateBody, NetworkCreateRequest};
use bollard::Docker;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The gateway tokens in force (SHA-256 of each → its holder: an agent's task, or one
/// job run's) and the endpoint's address on each agent's overlay network (→ that agent).
/// Kept apart from `SwarmKnown`: an engine reconnect does not change them.
#[derive(Default)]
pub struct GatewayKeys {
    inner: Mutex<GatewayKnown>,
}

/// Whose a token is: the agent's service task (`run` None) or the task of one of its job
/// runs (`runtime/swarm_jobs.rs`), which the token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub key: AgentKey,
    pub run: Option<u64>,
}

#[derive(Default)]
struct GatewayKnown {
    tokens: HashMap<String, TokenHolder>,
    endpoint_ips: HashMap<IpAddr, AgentKey>,
}

/// A token's digest as the secret's label and the daemon's map hold it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

impl GatewayKeys {
    fn known(&self) -> std::sync::MutexGuard<'_, GatewayKnown> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whose token this is, if it is in force.
    pub fn holder_of_token(&self, token: &str) -> Option<TokenHolder> {
        self.known().tokens.get(&token_digest(token)).cloned()
    }

    /// Puts the agent's token (by digest) in force, in place of any other of its own (its
    /// runs' tokens stay).
    pub fn set_token(&self, key: &AgentKey, digest: String) {
        let mut k = self.known();
        k.tokens.retain(|_, h| !(h.key == *key && h.run.is_none()));
        k.tokens.insert(
            digest,
            TokenHolder {
                key: key.clone(),
                run: None,
            },
        );
    }

    /// The agent's own token is no longer in force (its runs' tokens stay).
    pub fn drop_token(&self, key: &AgentKey) {
        self.known()
            .tokens
            .retain(|_, h| !(h.key == *key && h.run.is_none()));
    }

    /// Puts a job run's token in force (for the run's task alone).
    pub fn set_run_token(&self, key: &AgentKey, run: u64, digest: String) {
        self.known().tokens.insert(
            digest,
            TokenHolder {
                key: key.clone(),
                run: Some(run),
            },
        );
    }

    /// The run's token is no longer in force (the run ended).
    pub fn forget_run(&self, run: u64) {
        self.known().tokens.retain(|_, h| h.run != Some(run));
    }

    /// The agent's tokens, its runs' too, are no longer in force (deleted).
    pub fn forget_agent(&self, key: &AgentKey) {
        let mut k = self.known();
        k.tokens.retain(|_, h| h.key != *key);
        k.endpoint_ips.retain(|_, a| a != key);
    }

    pub fn has_token(&self, key: &AgentKey, digest: &str) -> bool {
        self.known()
            .tokens
            .get(digest)
            .is_some_and(|h| h.key == *key && h.run.is_none())
    }

    /// The agent whose overlay network the endpoint address `ip` is on.
    pub fn agent_of_ip(&self, ip: IpAddr) -> Option<AgentKey> {
        self.known().endpoint_ips.get(&ip).cloned()
    }

    pub fn set_ip(&self, key: &AgentKey, ip: IpAddr) {
        let mut k = self.known();
        k.endpoint_ips.retain(|_, a| a != key);
        k.endpoint_ips.insert(ip, key.clone());
    }
}

/// The file name of the gateway token under `/run/secrets` in a task.
pub const TOKEN_SECRET_FILE: &str = "agenfleet-gateway";
/// The label on a token's secret with the token's SHA-256 (the value stays in Swarm's
/// encrypted store and the task's tmpfs; the daemon keeps only this).
pub const LABEL_TOKEN_DIGEST: &str = "agenfleet.token-sha256";

/// The Swarm secret holding an agent's gateway token, as a task refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecret {
    pub id: String,
    pub name: String,
}

/// Makes a new gateway token for the agent — or for one job run of it — as a Swarm
/// secret (`agfgw_…_<n>`, `agfgw_…_r<run>x<n>`); answers it and the token's digest. The
/// token itself leaves this function only inside the secret.
pub async fn new_token_secret(
    docker: &Docker,
    instance: &str,
    key: &AgentKey,
    run: Option<u64>,
) -> Result<(TokenSecret, String), ApiError> {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let digest = token_digest(&token);
    let n = hex::encode(rand::random::<[u8; 4]>());
    let suffix = match run {
        Some(r) => format!("r{r}x{n}"),
        None => n,
    };
    let name = swarm_name_with("agfgw", instance, key, &suffix);
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (
            super::container::LABEL_TENANT.to_string(),
            key.tenant.clone(),
        ),
        (super::container::LABEL_AGENT.to_string(), key.name.clone()),
    ]);
    labels.insert(LABEL_TOKEN_DIGEST.to_string(), digest.clone());
    if let Some(r) = run {
        labels.insert(super::jobs::LABEL_RUN.to_string(), r.to_string());
    }
    use base64::Engine as _;
    let spec = bollard::models::SecretSpec {
        name: Some(name.clone()),
        labels: Some(labels),
        data: Some(base64::engine::general_purpose::STANDARD.encode(token.as_bytes())),
        ..Default::default()
    };
    let r = docker
        .create_secret(spec)
        .await
        .map_err(|e| bollard_err("create the agent's gateway token secret", e))?;
    Ok((TokenSecret { id: r.id, name }, digest))
}

/// The token secret a service's task refers to.
pub fn token_secret_of(s: &bollard::models::Service) -> Option<TokenSecret> {
    s.spec
        .as_ref()?
        .task_template
        .as_ref()?
        .container_spec
        .as_ref()?
        .secrets
        .as_ref()?
        .iter()
        .find(|r| r.file.as_ref().and_then(|f| f.name.as_deref()) == Some(TOKEN_SECRET_FILE))
        .and_then(|r| {
            Some(TokenSecret {
                id: r.secret_id.clone()?,
                name: r.secret_name.clone()?,
            })
        })
}

/// The digest a token secret's label carries.
pub async fn token_digest_of(docker: &Docker, secret: &TokenSecret) -> Option<String> {
    docker
        .inspect_secret(&secret.id)
        .await
        .ok()?
        .spec?
        .labels?
        .get(LABEL_TOKEN_DIGEST)
        .cloned()
}

/// Removes a token secret once no task uses it (Swarm refuses while one does): asked
/// again with growing pauses for a minute.
pub fn remove_secret_later(docker: Docker, secret: TokenSecret) {
    super::engine::remove_later(format!("gateway token secret {}", secret.name), move || {
        let (docker, id) = (docker.clone(), secret.id.clone());
        async move { docker.delete_secret(&id).await }
    });
}

/// How a task reaches its gateway: the endpoint on its network, its token's secret (the
/// file readable by the agent's user alone), and whether it has an egress proxy.
pub struct RemoteGateway {
    pub secret: TokenSecret,
    pub uid: String,
    pub gid: String,
    pub proxy: bool,
}

impl RemoteGateway {
    /// For the agent's user (`uid:gid`; a bare uid is its own gid too).
    pub fn new(secret: TokenSecret, agent_user: &str, proxy: bool) -> RemoteGateway {
        let (uid, gid) = agent_user
            .split_once(':')
            .unwrap_or((agent_user, agent_user));
        RemoteGateway {
            secret,
            uid: uid.to_string(),
            gid: gid.to_string(),
            proxy,
        }
    }

    /// The token's secret as the task mounts it: `/run/secrets/agenfleet-gateway`, 0400,
    /// the agent's user's.
    pub fn mount(&self) -> bollard::models::TaskSpecContainerSpecSecrets {
        bollard::models::TaskSpecContainerSpecSecrets {
            file: Some(bollard::models::TaskSpecContainerSpecFile {
                name: Some(TOKEN_SECRET_FILE.to_string()),
                uid: Some(self.uid.clone()),
                gid: Some(self.gid.clone()),
                mode: Some(0o400),
            }),
            secret_id: Some(self.secret.id.clone()),
            secret_name: Some(self.secret.name.clone()),
        }
    }
}

/// The name of the daemon's gateway endpoint container.
pub fn endpoint_name(instance: &str) -> String {
    format!("agf_{instance}_endpoint")
}

/// The directory (under the state dir) with the daemon's endpoint socket, bind-mounted
/// into the endpoint container alone.
pub fn endpoint_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("swarm")
}
pub const ENDPOINT_SOCKET: &str = "endpoint.sock";
const ENDPOINT_DIR_IN_CONTAINER: &str = "/run/agenfleet-endpoint";

/// Makes sure the gateway endpoint runs on the daemon's node: a hardened container of the
/// built-in image (`agenfleet-agent endpoint`), the daemon's uid (so it may use the
/// endpoint socket, 0600), on a small internal network of its own until agents' overlay
/// networks are joined to it.
pub async fn ensure_endpoint(
    docker: &Docker,
    instance: &str,
    state_dir: &std::path::Path,
    image_ref: &str,
) -> Result<String, ApiError> {
    let name = endpoint_name(instance);
    if let Ok(c) = docker.inspect_container(&name, None).await {
        let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let id = c.id.unwrap_or_else(|| name.clone());
        if !running {
            docker
                .start_container(&id, None)
                .await
                .map_err(|e| bollard_err("start the gateway endpoint", e))?;
        }
        return Ok(id);
    }
    let home = format!("agfep_{instance}");
    match docker.inspect_network(&home, None).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            let req = NetworkCreateRequest {
                name: home.clone(),
                driver: Some("bridge".into()),
                internal: Some(true),
                labels: Some(HashMap::from([
                    (LABEL_MANAGED.to_string(), "true".to_string()),
                    (LABEL_INSTANCE.to_string(), instance.to_string()),
                ])),
                ..Default::default()
            };
            match docker.create_network(req).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(bollard_err("create the gateway endpoint's network", e)),
            }
        }
        Err(e) => return Err(bollard_err("inspect the gateway endpoint's network", e)),
    }
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let body = ContainerCreateBody {
        image: Some(image_ref.to_string()),
        entrypoint: Some(vec![
            super::container::BUILTIN_SHIM.to_string(),
            "endpoint".to_string(),
            "--listen".to_string(),
            format!("0.0.0.0:{}", agenfleet_protocol::gateway::ENDPOINT_PORT),
            "--to".to_string(),
            format!("{ENDPOINT_DIR_IN_CONTAINER}/{ENDPOINT_SOCKET}"),
        ]),
        cmd: Some(vec![]),
        user: Some(format!("{uid}:{gid}")),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), instance.to_string()),
            ("agenfleet.endpoint".to_string(), "true".to_string()),
        ])),
        host_config: Some(bollard::models::HostConfig {
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            readonly_rootfs: Some(true),
            memory: Some(64 << 20),
            pids_limit: Some(64),
            network_mode: Some(home),
            binds: Some(vec![format!(
                "{}:{ENDPOINT_DIR_IN_CONTAINER}:ro",
                endpoint_dir(state_dir).display()
            )]),
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("none".to_string()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(&name)
        .build();
    let id = match docker.create_container(Some(opts), body).await {
        Ok(r) => r.id,
        Err(e) if is_conflict(&e) => name.clone(),
        Err(e) => return Err(bollard_err("create the gateway endpoint", e)),
    };
    match docker.start_container(&id, None).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) => return Err(bollard_err("start the gateway endpoint", e)),
    }
    tracing::info!(container = %name, "started the swarm gateway endpoint");
    Ok(id)
}

/// Joins the endpoint to an agent's overlay network (as `agenfleet-gateway` there) and
/// answers its address on it.
pub async fn join_endpoint(
    docker: &Docker,
    endpoint: &str,
    network: &str,
) -> Result<IpAddr, ApiError> {
    let ip_on = |c: &bollard::models::ContainerInspectResponse| {
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(network))
            .and_then(|e| e.ip_address.clone())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    let c = docker
        .inspect_container(endpoint, None)
        .await
        .map_err(|e| bollard_err("inspect the gateway endpoint", e))?;
    if let Some(ip) = ip_on(&c) {
        return Ok(ip);
    }
    let req = bollard::models::NetworkConnectRequest {
        container: endpoint.to_string(),
        endpoint_config: Some(bollard::models::EndpointSettings {
            aliases: Some(vec![agenfleet_protocol::gateway::ENDPOINT_ALIAS.to_string()]),
            ..Default::default()
        }),
    };
    if let Err(e) = docker.connect_network(network, req).await {
        if !is_conflict(&e) && !format!("{e}").contains("already exists") {
            return Err(bollard_err(
                "join the gateway endpoint to the agent's network",
                e,
            ));
        }
    }
    let c = docker
        .inspect_container(endpoint, None)
        .await
        .map_err(|e| bollard_err("inspect the gateway endpoint", e))?;
    ip_on(&c).ok_or_else(|| {
        ApiError::unavailable(format!(
            "the gateway endpoint has no address on network {network}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> AgentKey {
        AgentKey {
            tenant: "t".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_runs_token_names_its_run_and_lives_apart_from_its_agents() {
        let keys = GatewayKeys::default();
        let (a, b) = (key("a"), key("b"));
        keys.set_token(&a, token_digest("agent-a"));
        keys.set_run_token(&a, 7, token_digest("run-7"));
        keys.set_run_token(&a, 8, token_digest("run-8"));
        keys.set_token(&b, token_digest("agent-b"));
        let holder = |t: &str| keys.holder_of_token(t);
        assert_eq!(
            holder("run-7").map(|h| (h.key, h.run)),
            Some((a.clone(), Some(7)))
        );
        assert_eq!(holder("agent-a").map(|h| h.run), Some(None));
        // A new token of the agent's own replaces its old one, not its runs'.
        keys.set_token(&a, token_digest("agent-a2"));
        assert!(holder("agent-a").is_none());
        assert!(holder("run-7").is_some() && holder("agent-a2").is_some());
        assert!(keys.has_token(&a, &token_digest("agent-a2")));
        assert!(!keys.has_token(&a, &token_digest("run-7")));
        // A run's end takes its token alone; the agent's delete takes the rest of a's.
        keys.forget_run(7);
        assert!(holder("run-7").is_none() && holder("run-8").is_some());
        keys.drop_token(&a);
        assert!(holder("agent-a2").is_none() && holder("run-8").is_some());
        keys.forget_agent(&a);
        assert!(holder("run-8").is_none());
        assert_eq!(holder("agent-b").map(|h| h.key), Some(b));
    }
}
