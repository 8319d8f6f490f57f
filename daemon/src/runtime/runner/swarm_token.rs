//! The runner in swarm mode, its task's way to the gateway: the endpoint joined to the
//! agent's network (its address there noted as the agent's), the gateway token the
//! service's task holds put in force (a new one when there is none, or after a daemon
//! start the one its secret's label names), and the token's rotation.

use super::Runner;
use crate::runtime::endpoint;
use crate::runtime::engine::{bollard_err, is_not_found};
use agenfleet_protocol::{AgentState, ApiError, DesiredState};
use bollard::Docker;

impl Runner {
    /// How the agent's task reaches its gateway: the endpoint joined to its network (its
    /// address there noted as this agent's), and its token — the one the service already
    /// refers to when it is in force, else a new one — put in force.
    pub(super) async fn swarm_gateway(
        &mut self,
        docker: &Docker,
        existing: Option<&bollard::models::Service>,
        network: &str,
    ) -> Result<endpoint::RemoteGateway, ApiError> {
        let key = self.rec.key.clone();
        join_gateway(&self.rt, docker, &key, network).await?;
        let mut secret = None;
        if let Some(s) = existing.and_then(endpoint::token_secret_of) {
            if let Some(digest) = endpoint::token_digest_of(docker, &s).await {
                self.rt.gateway_keys.set_token(&key, digest);
                secret = Some(s);
            }
        }
        let secret = match secret {
            Some(s) => s,
            None => {
                let (s, digest) =
                    endpoint::new_token_secret(docker, &self.rt.instance, &key, None).await?;
                self.rt.gateway_keys.set_token(&key, digest);
                tracing::info!(agent = %key, secret = %s.name, "a new gateway token for the agent");
                s
            }
        };
        Ok(endpoint::RemoteGateway::new(
            secret,
            &self.rt.cfg.agent_user,
            self.rec.spec.network.mode == agenfleet_protocol::NetworkMode::Gateway,
        ))
    }

    /// After a daemon start: the token the service's task holds is put in force again and
    /// the endpoint's address on its network noted; false when the token cannot be read
    /// (the service is then given a new one).
    pub(super) async fn swarm_learn(
        &mut self,
        docker: &Docker,
        s: &bollard::models::Service,
    ) -> bool {
        let Some(secret) = endpoint::token_secret_of(s) else {
            return false;
        };
        let Some(digest) = endpoint::token_digest_of(docker, &secret).await else {
            return false;
        };
        self.rt.gateway_keys.set_token(&self.rec.key, digest);
        let network = crate::runtime::swarm::network_name(&self.rt.instance, &self.rec.key);
        if let Err(e) = join_gateway(&self.rt, docker, &self.rec.key, &network).await {
            tracing::warn!(agent = %self.rec.key, error = %e.message, "cannot join the gateway endpoint to the agent's network")
        }
        true
    }

    /// A new gateway token: a new secret, put in force at once (the old token is refused
    /// from here on), the service updated to mount it in a new task, the old secret
    /// removed once no task holds it.
    pub(super) async fn swarm_rotate_token(
        &mut self,
    ) -> Result<agenfleet_protocol::AgentView, ApiError> {
        let docker = self.rt.engine.client()?;
        let key = self.rec.key.clone();
        let s = match docker.inspect_service(&self.service(), None).await {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => {
                return Err(ApiError::precondition(format!(
                    "agent {key} has no service yet (it gets a token when it first starts)"
                )))
            }
            Err(e) => return Err(bollard_err("inspect the agent's service", e)),
        };
        let old = endpoint::token_secret_of(&s);
        let Some(mut spec) = s.spec.clone() else {
            return Err(ApiError::internal("the agent's service has no spec"));
        };
        let (secret, digest) =
            endpoint::new_token_secret(&docker, &self.rt.instance, &key, None).await?;
        let proxy = self.rec.spec.network.mode == agenfleet_protocol::NetworkMode::Gateway;
        let gateway = endpoint::RemoteGateway::new(secret.clone(), &self.rt.cfg.agent_user, proxy);
        if let Some(c) = spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            let refs = c.secrets.get_or_insert_with(Vec::new);
            refs.retain(|r| {
                r.file.as_ref().and_then(|f| f.name.as_deref()) != Some(endpoint::TOKEN_SECRET_FILE)
            });
            refs.push(gateway.mount());
        }
        if let Some(t) = spec.task_template.as_mut() {
            t.force_update = Some(t.force_update.unwrap_or(0) + 1);
        }
        // In force before the service hears of it: from now on only the new token opens
        // the gateway (the old task's connections in flight end with it).
        self.rt.gateway_keys.set_token(&key, digest);
        if let Err(e) = self.update_service(&docker, &s, spec).await {
            // The service still holds the old token: it stays in force, the new one goes.
            endpoint::remove_secret_later(docker.clone(), secret);
            match old.as_ref() {
                Some(o) => match endpoint::token_digest_of(&docker, o).await {
                    Some(d) => self.rt.gateway_keys.set_token(&key, d),
                    None => self.rt.gateway_keys.drop_token(&key),
                },
                None => self.rt.gateway_keys.drop_token(&key),
            }
            return Err(e);
        }
        let old_name = old
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "none".into());
        if let Some(o) = old {
            endpoint::remove_secret_later(docker.clone(), o);
        }
        let _ = self
            .rt
            .system_event(
                "agent.token_rotated",
                Some(&key),
                "ok",
                format!(
                    "gateway token secret {old_name} replaced by {}; the old token is refused; the task is replaced to mount the new one",
                    secret.name
                ),
            )
            .await;
        if self.rec.desired == DesiredState::Running {
            self.set_state(
                AgentState::Pending,
                Some("a new task with the new gateway token".into()),
            );
        }
        self.commit()
    }
}

/// The gateway endpoint (made if need be) joined to the agent's overlay network, its
/// address there noted as the agent's: a connection coming in on it is from that network.
pub(crate) async fn join_gateway(
    rt: &crate::runtime::Runtime,
    docker: &Docker,
    key: &crate::store::AgentKey,
    network: &str,
) -> Result<(), ApiError> {
    let builtin = rt
        .images
        .resolve(docker, agenfleet_protocol::BUILTIN_IMAGE)
        .await?;
    let endpoint =
        endpoint::ensure_endpoint(docker, &rt.instance, &rt.cfg.state_dir, &builtin).await?;
    let ip = endpoint::join_endpoint(docker, &endpoint, network).await?;
    rt.gateway_keys.set_ip(key, ip);
    Ok(())
}
