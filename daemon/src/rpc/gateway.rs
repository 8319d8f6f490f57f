//! Agent gateways: one Unix socket per agent, in a directory bind-mounted (read-only) into
//! that agent's container alone. The socket names the agent; on every connection the
//! daemon also checks, from the peer's pid, that the caller runs inside that agent's
//! current container — a process anywhere else (another agent's container, the host) gets
//! nothing, and the attempt is audited. Serves the `Gateway` service: credential delivery
//! now, tool-call decisions later.

use crate::runtime::Runtime;
use crate::store::AgentKey;
use agenfleet_protocol::gateway::{
    DeliveredCredential, Gateway, GatewayHello, GATEWAY_SOCKET_NAME,
};
use agenfleet_protocol::{ApiError, AuditEvent, PROTOCOL_VERSION};
use futures::StreamExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};

/// Frames from agents are small; keep the limit tight.
const GATEWAY_MAX_FRAME: usize = 1024 * 1024;

/// The host directory holding an agent's gateway socket.
pub fn gateway_dir(state_dir: &Path, key: &AgentKey) -> PathBuf {
    state_dir
        .join("gateways")
        .join(format!("{}.{}", key.tenant, key.name))
}

/// Whether process `pid` runs inside the container with id `container_id`.
fn pid_in_container(pid: i32, container_id: &str) -> bool {
    if container_id.len() < 12 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.lines().any(|l| l.contains(container_id)))
        .unwrap_or(false)
}

#[derive(Clone)]
struct GatewayService {
    rt: Arc<Runtime>,
    key: AgentKey,
    /// Why this connection may not use the gateway (None: it may).
    refused: Option<String>,
}

impl GatewayService {
    fn check(&self) -> Result<(), ApiError> {
        match &self.refused {
            Some(why) => Err(ApiError::denied(why.clone())),
            None => Ok(()),
        }
    }
}

impl Gateway for GatewayService {
    async fn hello(self, _: Context, protocol_version: u32) -> Result<GatewayHello, ApiError> {
        self.check()?;
        if protocol_version != PROTOCOL_VERSION {
            return Err(ApiError::new(
                agenfleet_protocol::ErrorCode::VersionMismatch,
                format!("gateway protocol {PROTOCOL_VERSION}, shim speaks {protocol_version}"),
            ));
        }
        Ok(GatewayHello {
            protocol_version: PROTOCOL_VERSION,
            tenant: self.key.tenant.clone(),
            agent: self.key.name.clone(),
        })
    }

    async fn wait_credentials(
        self,
        ctx: Context,
        held: Vec<(String, u32)>,
        max_wait_ms: u64,
    ) -> Result<Option<Vec<DeliveredCredential>>, ApiError> {
        self.check()?;
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(max_wait_ms.min(agenfleet_protocol::MAX_WAIT_MS));
        let mut changes = self.rt.credential_changes(&self.key);
        loop {
            let now_held: Vec<(String, u32)> = self
                .rt
                .vault
                .list(&self.key)
                .map_err(|e| ApiError::precondition(e.to_string()))?
                .into_iter()
                .filter_map(|c| c.current_version.map(|v| (c.name, v)))
                .collect();
            let mut a = now_held.clone();
            let mut b = held.clone();
            a.sort();
            b.sort();
            if a != b {
                return self.credentials(ctx).await.map(Some);
            }
            let Some(rx) = changes.as_mut() else {
                return Ok(None);
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(None),
            }
        }
    }

    async fn credentials(self, _: Context) -> Result<Vec<DeliveredCredential>, ApiError> {
        self.check()?;
        let values =
            self.rt.vault.current_values(&self.key).map_err(|e| {
                ApiError::precondition(format!("credentials cannot be delivered: {e}"))
            })?;
        let names: Vec<String> = values.iter().map(|(n, v, _)| format!("{n} v{v}")).collect();
        // Audit before effect: the delivery is recorded before the values leave.
        self.rt
            .system_event(
                "creds.deliver",
                Some(&self.key),
                "ok",
                if names.is_empty() {
                    "no credentials".into()
                } else {
                    names.join(", ")
                },
            )
            .await?;
        Ok(values
            .into_iter()
            .map(|(name, version, value)| DeliveredCredential {
                name,
                version,
                value,
            })
            .collect())
    }
}

/// Creates the agent's gateway socket (replacing a stale one) and serves it until the
/// returned task is aborted.
pub fn start(rt: Arc<Runtime>, key: AgentKey) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let dir = gateway_dir(&rt.cfg.state_dir, &key);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(GATEWAY_SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    // The agent runs as an unprivileged uid; only its own container can reach this path.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let pid = stream.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(-1);
            let container = rt.container_of(&key);
            let refused = match &container {
                Some(cid) if pid > 0 && pid_in_container(pid, cid) => None,
                _ => Some(format!(
                    "not permitted: this gateway belongs to agent {key} and the caller (pid {pid}) does not run in its container"
                )),
            };
            if let Some(why) = &refused {
                tracing::warn!(agent = %key, pid, "gateway connection from outside the agent's container refused");
                let _ = rt
                    .audit_event(AuditEvent {
                        actor: format!("pid {pid}"),
                        action: "gateway.refused".into(),
                        tenant: Some(key.tenant.clone()),
                        agent: Some(key.name.clone()),
                        outcome: "refused".into(),
                        detail: why.clone(),
                    })
                    .await;
            }
            let service = GatewayService {
                rt: rt.clone(),
                key: key.clone(),
                refused,
            };
            tokio::spawn(async move {
                let transport = agenfleet_protocol::transport::transport(stream, GATEWAY_MAX_FRAME);
                BaseChannel::with_defaults(transport)
                    .execute(service.serve())
                    .for_each(|fut| async {
                        tokio::spawn(fut);
                    })
                    .await;
            });
        }
    }))
}
