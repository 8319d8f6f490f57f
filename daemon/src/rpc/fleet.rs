//! The `Fleet` service for one connection: each method checks the caller's permission,
//! resolves agent names inside what the caller may see, and calls the runtime.

use crate::authz::{Permission, Scope};
use crate::incidents::Transition;
use crate::runtime::Cmd;
use crate::store::AgentKey;
use agenfleet_protocol::incidents::{Incident, Matrix, Party};
use agenfleet_protocol::policy::{
    EscalationView, PolicyCase, PolicyCaseResult, PolicyProblem, PolicyVersion, VersionHistory,
};
use agenfleet_protocol::upstream::UsageRow;
use agenfleet_protocol::{
    AgentAction, AgentRef, AgentSpec, AgentState, AgentView, ApiError, AuditEntry, AuditQuery,
    AuditStatus, Checkpoint, Fleet, FleetStatus, Hello, ImageInfo, LogChunk, StateCount,
    VerifyReport, WatchReply, PROTOCOL_VERSION, SOFTWARE_VERSION,
};
use agenfleet_protocol::{BackupChunk, BackupInfo, UpstreamClass, UpstreamSpec, UpstreamView};
use agenfleet_protocol::{
    CallerInfo, CredentialInfo, NewToken, OperatorInfo, RoleBinding, SecretValue, TokenInfo,
    VaultStatus,
};
use tarpc::context::Context;

mod access;
mod backup;
mod guard;
mod incidents;
mod memory;
mod policy;
mod pulse;
mod runs;
mod specs;
mod triggers;
mod upstreams;

pub use guard::FleetService;

/// How long an unseal waits for the agents' resync before it answers.
const UNSEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(45);
use guard::{capped, vault_err};

impl Fleet for FleetService {
    async fn hello(self, _: Context, protocol_version: u32) -> Result<Hello, ApiError> {
        if protocol_version != PROTOCOL_VERSION {
            return Err(ApiError::new(
                agenfleet_protocol::ErrorCode::VersionMismatch,
                format!(
                    "protocol version mismatch: this client speaks {protocol_version}, the daemon speaks {PROTOCOL_VERSION} (daemon {SOFTWARE_VERSION}); use matching versions"
                ),
            ));
        }
        Ok(Hello {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: SOFTWARE_VERSION.to_string(),
            caller: self.caller().info(),
            max_frame_bytes: self.max_frame as u64,
        })
    }

    async fn retention(self, _: Context) -> Result<agenfleet_protocol::RetentionReport, ApiError> {
        self.check(Permission::FleetRead, Scope::Platform, "retention")
            .await?;
        let store_err = |e: crate::store::StoreError| ApiError::internal(e.to_string());
        let cfg = &self.rt.cfg;
        let resolved: Vec<u64> = self
            .rt
            .incidents
            .list(true, |i| {
                i.state == agenfleet_protocol::incidents::IncidentState::Resolved
            })
            .iter()
            .filter_map(|i| i.resolved_ms)
            .collect();
        let keep_ms = (cfg.incident_retention_days * 86_400_000.0) as u64;
        let audit_plan = crate::runtime::retention::plan(&self.rt)
            .await
            .map_err(ApiError::internal)?;
        Ok(agenfleet_protocol::RetentionReport {
            purge_after_secs: cfg.purge_after_secs,
            incident_retention_days: cfg.incident_retention_days,
            agent_purges: self
                .rt
                .store
                .pending_purges()
                .map_err(store_err)?
                .into_iter()
                .map(|(k, at)| (k.to_string(), at))
                .collect(),
            tenant_purges: self.rt.store.tenant_purges().map_err(store_err)?,
            resolved_incidents: resolved.len() as u32,
            next_incident_removal_ms: (keep_ms > 0)
                .then(|| resolved.iter().min().map(|t| t + keep_ms))
                .flatten(),
            audit_retention_days: cfg.audit_retention_days,
            audit_tenant_retention: self.rt.store.tenant_audit_retention().map_err(store_err)?,
            audit_segments: audit_plan.kept as u32,
            audit_anchor: crate::audit::checkpoint::load_anchor(self.rt.audit.dir())
                .map_err(ApiError::internal)?,
            next_audit_removal_ms: audit_plan.next_ms,
            kept: vec![
                "open incidents, until they are resolved".into(),
                "decided escalations, until their tenant is deleted".into(),
            ],
        })
    }

    async fn metrics_text(self, _: Context) -> Result<String, ApiError> {
        self.check(Permission::FleetRead, Scope::Platform, "metrics_text")
            .await?;
        Ok(crate::metrics::render(&self.rt))
    }

    async fn host_info(self, _: Context) -> Result<agenfleet_protocol::HostInfo, ApiError> {
        self.check_any(Permission::FleetRead, "host_info").await?;
        let (_, daemon, _) = self.rt.fleet.snapshot(|_| false);
        let admin = self.caller().platform_admin;
        let cfg = &self.rt.cfg;
        let shown = |p: &std::path::Path| admin.then(|| p.display().to_string());
        let engine_address = if !cfg.docker_host.is_empty() {
            cfg.docker_host.clone()
        } else {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
        };
        Ok(agenfleet_protocol::HostInfo {
            daemon_version: agenfleet_protocol::SOFTWARE_VERSION.into(),
            protocol_version: agenfleet_protocol::PROTOCOL_VERSION,
            instance_id: daemon.instance_id,
            config_file: cfg
                .source
                .is_file()
                .then(|| cfg.source.display().to_string())
                .filter(|_| admin),
            state_dir: shown(&cfg.state_dir),
            audit_dir: shown(&cfg.audit_dir()),
            socket: shown(&cfg.socket),
            engine_address: admin.then_some(engine_address),
            engine_version: daemon.engine.version,
            engine_api_version: daemon.engine.api_version,
            keyring: "kernel keyring (keyutils): the vault's master key and the audit signing key"
                .into(),
        })
    }

    async fn status(self, _: Context) -> Result<FleetStatus, ApiError> {
        self.check_any(Permission::FleetRead, "status").await?;
        let caller = self.caller();
        let (revision, daemon, agents) = self.rt.fleet.snapshot(|v| caller.sees(v));
        let mut counts: std::collections::BTreeMap<AgentState, u32> = Default::default();
        for a in &agents {
            *counts.entry(a.state).or_default() += 1;
        }
        Ok(FleetStatus {
            daemon,
            caller: self.caller().info(),
            revision,
            counts: counts
                .into_iter()
                .map(|(state, count)| StateCount { state, count })
                .collect(),
            agents,
        })
    }

    async fn list_agents(self, _: Context) -> Result<Vec<AgentView>, ApiError> {
        self.check_any(Permission::FleetRead, "list_agents").await?;
        let caller = self.caller();
        Ok(self.rt.fleet.snapshot(|v| caller.sees(v)).2)
    }

    async fn get_agent(self, _: Context, agent: AgentRef) -> Result<AgentView, ApiError> {
        self.check_any(Permission::FleetRead, "get_agent").await?;
        let key = self.find(&agent, "get_agent").await?;
        self.rt
            .fleet
            .get(&key)
            .ok_or_else(|| ApiError::not_found(format!("no agent named `{agent}`")))
    }

    async fn create_agent(self, _: Context, spec: AgentSpec) -> Result<AgentView, ApiError> {
        self.check(
            Permission::AgentCreate,
            Scope::Project(&spec.tenant, &spec.project),
            "create_agent",
        )
        .await?;
        self.do_create(spec).await
    }

    async fn agents_apply(
        self,
        _: Context,
        spec: AgentSpec,
        expected_version: Option<u32>,
    ) -> Result<agenfleet_protocol::spec::ApplyOutcome, ApiError> {
        self.do_apply(spec, expected_version).await
    }

    async fn agents_spec(
        self,
        _: Context,
        agent: AgentRef,
        version: Option<u32>,
    ) -> Result<agenfleet_protocol::spec::SpecVersion, ApiError> {
        self.do_agents_spec(agent, version).await
    }

    async fn agents_history(
        self,
        _: Context,
        agent: AgentRef,
    ) -> Result<agenfleet_protocol::spec::SpecHistory, ApiError> {
        let key = self
            .find_for(&agent, Permission::FleetRead, "agents_history")
            .await?;
        self.rt.spec_history(&key)
    }

    async fn agents_rollback(
        self,
        _: Context,
        agent: AgentRef,
        version: u32,
    ) -> Result<agenfleet_protocol::spec::ApplyOutcome, ApiError> {
        self.do_rollback(agent, version).await
    }

    async fn agent_action(
        self,
        _: Context,
        agent: AgentRef,
        action: AgentAction,
    ) -> Result<AgentView, ApiError> {
        let key = self
            .find_for(&agent, Permission::AgentControl, "agent_action")
            .await?;
        let cmd = match action {
            AgentAction::Start => Cmd::Start,
            AgentAction::Stop => Cmd::Stop,
            AgentAction::Restart => Cmd::Restart,
            AgentAction::Reset => Cmd::Reset,
            AgentAction::RotateToken => Cmd::RotateToken,
        };
        tracing::info!(agent = %key, action = action.as_str(), operator = %self.caller().operator, "operator action");
        let action_name = format!("agent.{}", action.as_str());
        self.audited(
            &action_name,
            Some(&key),
            String::new(),
            self.rt.command(&key, cmd),
        )
        .await
    }

    async fn delete_agent(self, _: Context, agent: AgentRef) -> Result<(), ApiError> {
        let key = self
            .find_for(&agent, Permission::AgentDelete, "delete_agent")
            .await?;
        tracing::info!(agent = %key, operator = %self.caller().operator, "operator deletes agent");
        self.audited("agent.delete", Some(&key), String::new(), async {
            self.rt.command(&key, Cmd::Delete).await.map(|_| ())
        })
        .await?;
        // Its calls waiting for a person end with it (reviewers are told).
        self.rt.policy.escalations.abandon_agent(&key);
        self.rt.fleet.set_escalations(&key, 0);
        Ok(())
    }

    async fn logs(
        self,
        _: Context,
        agent: AgentRef,
        since_seq: u64,
        max_wait_ms: u64,
    ) -> Result<LogChunk, ApiError> {
        let key = self.find_for(&agent, Permission::LogsRead, "logs").await?;
        let ring = self
            .rt
            .logs(&key)
            .ok_or_else(|| ApiError::not_found(format!("no agent named `{agent}`")))?;
        // Keep a reply well under the frame limit: at most ~1/4 of it in lines.
        let max_lines = (self.max_frame / 4 / 256).clamp(16, 5000);
        Ok(ring.read(since_seq, max_lines, capped(max_wait_ms)).await)
    }

    async fn watch(
        self,
        _: Context,
        epoch: u64,
        since: u64,
        max_wait_ms: u64,
    ) -> Result<WatchReply, ApiError> {
        self.check_any(Permission::FleetRead, "watch").await?;
        let caller = self.caller();
        let c2 = caller.clone();
        Ok(self
            .rt
            .fleet
            .watch(
                epoch,
                since,
                capped(max_wait_ms),
                move |v| caller.sees(v),
                move |i| incidents::sees_incident(&c2, i),
            )
            .await)
    }

    async fn build_image(self, _: Context, force: bool) -> Result<ImageInfo, ApiError> {
        self.check(Permission::ImageBuild, Scope::Platform, "build_image")
            .await?;
        let detail = if force {
            "forced rebuild".to_string()
        } else {
            String::new()
        };
        self.audited("image.build", None, detail, self.rt.build_image(force))
            .await
    }

    async fn build_context_image(
        self,
        _: Context,
        tag: String,
        context: Vec<u8>,
    ) -> Result<ImageInfo, ApiError> {
        self.check(
            Permission::ImageBuild,
            Scope::Platform,
            "build_context_image",
        )
        .await?;
        let digest = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(&context)[..8])
        };
        let detail = format!(
            "{tag} from a context of {} bytes (sha256 {digest})",
            context.len()
        );
        let rt = self.rt.clone();
        self.audited("image.build", None, detail, async move {
            rt.build_context_image(&tag, context).await
        })
        .await
    }

    async fn audit_status(self, _: Context) -> Result<AuditStatus, ApiError> {
        self.check_any(Permission::AuditRead, "audit_status")
            .await?;
        Ok(self.rt.audit.status())
    }

    async fn audit_query(
        self,
        _: Context,
        query: AuditQuery,
        max_wait_ms: u64,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        self.check_any(Permission::AuditRead, "audit_query").await?;
        if let (Some(s), Some(u)) = (query.since_ms, query.until_ms) {
            if s > u {
                return Err(ApiError::invalid(format!(
                    "bad time range: since ({s}) is after until ({u})"
                )));
            }
        }
        let mut q = query;
        q.limit = q.limit.clamp(1, 5000);
        let audit = self.rt.audit.clone();
        let caller = self.caller();
        let fleet = self.rt.fleet.clone();
        let run = |q: AuditQuery| {
            let audit = audit.clone();
            let caller = caller.clone();
            let fleet = fleet.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    // Platform admins see everything; others see the records of the
                    // tenants and projects they hold a role in (audit.read).
                    let visible = |e: &AuditEntry| {
                        let tenant = e.event.tenant.as_deref();
                        // An agent's record belongs to its project while the agent exists.
                        let project = match (tenant, e.event.agent.as_deref()) {
                            (Some(t), Some(a)) => fleet
                                .get(&AgentKey {
                                    tenant: t.into(),
                                    name: a.into(),
                                })
                                .map(|v| v.project),
                            _ => None,
                        };
                        caller.sees_row(Permission::AuditRead, tenant, project.as_deref())
                    };
                    audit.query(&q, &visible)
                })
                .await
                .map_err(|e| ApiError::internal(format!("audit query: {e}")))?
                .map_err(|e| ApiError::internal(format!("audit query: {e}")))
            }
        };
        let found = run(q.clone()).await?;
        if !found.is_empty() || max_wait_ms == 0 {
            return Ok(found);
        }
        let head = self.rt.audit.status().head_seq.max(q.after_seq);
        self.rt.audit.wait_past(head, capped(max_wait_ms)).await;
        run(q).await
    }

    async fn audit_verify(
        self,
        _: Context,
        checkpoint: Option<Checkpoint>,
    ) -> Result<VerifyReport, ApiError> {
        self.check_any(Permission::AuditRead, "audit_verify")
            .await?;
        let audit = self.rt.audit.clone();
        let report = tokio::task::spawn_blocking(move || audit.verify(checkpoint.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("audit verify: {e}")))?;
        if !report.valid {
            let problem = report
                .first_bad
                .clone()
                .or_else(|| report.checkpoint_check.clone())
                .unwrap_or_else(|| "verification failed".into());
            self.rt
                .incidents
                .signal(crate::incidents::detect::Signal::AuditInvalid { problem });
        }
        Ok(report)
    }

    async fn vault_status(self, _: Context) -> Result<VaultStatus, ApiError> {
        self.check_any(Permission::CredsRead, "vault_status")
            .await?;
        self.rt.vault.status().map_err(vault_err)
    }

    async fn vault_init(self, _: Context) -> Result<SecretValue, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "vault_init")
            .await?;
        let vault = self.rt.vault.clone();
        let rk = self
            .audited(
                "vault.init",
                None,
                "master key into the OS keyring".into(),
                async move { vault.init().map_err(vault_err) },
            )
            .await?;
        let _ = self.rt.vault_changed();
        self.rt.audit_key_follows_vault().await;
        Ok(rk)
    }

    async fn vault_seal(self, _: Context) -> Result<VaultStatus, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "vault_seal")
            .await?;
        let vault = self.rt.vault.clone();
        self.audited(
            "vault.seal",
            None,
            "master key removed from memory and the keyring".into(),
            async move { vault.seal_and_forget().map_err(vault_err) },
        )
        .await?;
        let _ = self.rt.vault_changed();
        self.rt.vault.status().map_err(vault_err)
    }

    async fn vault_unseal(
        self,
        _: Context,
        recovery_key: SecretValue,
    ) -> Result<VaultStatus, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "vault_unseal")
            .await?;
        let vault = self.rt.vault.clone();
        self.audited("vault.unseal", None, String::new(), async move {
            vault.unseal(&recovery_key).map_err(vault_err)
        })
        .await?;
        let resync = self.rt.vault_changed();
        self.rt.audit_key_follows_vault().await;
        // The caller hears once every agent has looked again (what was waiting for a
        // credential starts), or after UNSEAL_WAIT: the rest goes on in the background.
        if let Some(id) = resync {
            if !self.rt.ops.wait_end(id, UNSEAL_WAIT).await {
                tracing::warn!("the agents' resync after the unseal goes on after the answer");
            }
        }
        self.rt.vault.status().map_err(vault_err)
    }

    async fn vault_rekey(self, _: Context) -> Result<SecretValue, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "vault_rekey")
            .await?;
        let vault = self.rt.vault.clone();
        self.audited(
            "vault.rekey",
            None,
            "new master key; data keys rewrapped".into(),
            async move { vault.rekey().map_err(vault_err) },
        )
        .await
    }

    async fn vault_rotate_key(self, _: Context) -> Result<u64, ApiError> {
        self.check(Permission::VaultAdmin, Scope::Platform, "vault_rotate_key")
            .await?;
        let vault = self.rt.vault.clone();
        self.audited(
            "vault.rotate_key",
            None,
            "new data key for new writes".into(),
            async move { vault.rotate_key().map_err(vault_err) },
        )
        .await
    }

    async fn creds_set(
        self,
        _: Context,
        agent: AgentRef,
        name: String,
        value: SecretValue,
    ) -> Result<CredentialInfo, ApiError> {
        self.creds_put(agent, name, value, false, 0).await
    }

    async fn creds_rotate(
        self,
        _: Context,
        agent: AgentRef,
        name: String,
        value: SecretValue,
        grace_secs: u64,
    ) -> Result<CredentialInfo, ApiError> {
        self.creds_put(agent, name, value, true, grace_secs).await
    }

    async fn creds_revoke(
        self,
        _: Context,
        agent: AgentRef,
        name: String,
        version: Option<u32>,
    ) -> Result<CredentialInfo, ApiError> {
        let key = self
            .find_for(&agent, Permission::CredsWrite, "creds_revoke")
            .await?;
        let detail = match version {
            Some(v) => format!("{name} version {v}"),
            None => format!("{name}, every usable version"),
        };
        let vault = self.rt.vault.clone();
        let k = key.clone();
        let info = self
            .audited("creds.revoke", Some(&key), detail, async move {
                vault.revoke(&k, &name, version).map_err(vault_err)
            })
            .await?;
        self.rt.credentials_changed(&key, None);
        Ok(info)
    }

    async fn creds_list(
        self,
        _: Context,
        agent: AgentRef,
    ) -> Result<Vec<CredentialInfo>, ApiError> {
        let key = self
            .find_for(&agent, Permission::CredsRead, "creds_list")
            .await?;
        self.rt.vault.list(&key).map_err(vault_err)
    }

    async fn operators_list(self, _: Context) -> Result<Vec<OperatorInfo>, ApiError> {
        self.do_operators_list().await
    }

    async fn operators_add(
        self,
        _: Context,
        uid: u32,
        name: String,
        platform_admin: bool,
    ) -> Result<OperatorInfo, ApiError> {
        self.do_operators_add(uid, name, platform_admin).await
    }

    async fn operators_remove(self, _: Context, uid: u32) -> Result<(), ApiError> {
        self.do_operators_remove(uid).await
    }

    async fn roles_grant(
        self,
        _: Context,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.do_roles_grant(uid, binding).await
    }

    async fn roles_revoke(
        self,
        _: Context,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.do_roles_revoke(uid, binding).await
    }

    async fn tenants_delete(self, _: Context, tenant: String) -> Result<u32, ApiError> {
        self.do_tenants_delete(tenant).await
    }

    async fn authenticate(self, _: Context, token: SecretValue) -> Result<CallerInfo, ApiError> {
        self.do_authenticate(token).await
    }

    async fn tokens_create(
        self,
        _: Context,
        name: String,
        tenant: String,
        project: Option<String>,
        permissions: Vec<String>,
        ttl_secs: u64,
    ) -> Result<NewToken, ApiError> {
        self.do_tokens_create(name, tenant, project, permissions, ttl_secs)
            .await
    }

    async fn tokens_list(self, _: Context) -> Result<Vec<TokenInfo>, ApiError> {
        self.do_tokens_list().await
    }

    async fn tokens_revoke(self, _: Context, id: String) -> Result<TokenInfo, ApiError> {
        self.do_tokens_revoke(id).await
    }

    async fn scopes_show(self, _: Context, agent: AgentRef) -> Result<VersionHistory, ApiError> {
        self.do_scopes_show(agent).await
    }

    async fn scopes_publish(
        self,
        _: Context,
        agent: AgentRef,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError> {
        self.do_scopes_publish(agent, text, note, "scopes_publish")
            .await
    }

    async fn scopes_rollback(
        self,
        _: Context,
        agent: AgentRef,
        version: u32,
    ) -> Result<PolicyVersion, ApiError> {
        self.do_scopes_rollback(agent, version).await
    }

    async fn policy_show(self, _: Context, tenant: String) -> Result<VersionHistory, ApiError> {
        self.do_policy_show(tenant).await
    }

    async fn policy_publish(
        self,
        _: Context,
        tenant: String,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError> {
        self.do_policy_publish(tenant, text, note).await
    }

    async fn policy_rollback(
        self,
        _: Context,
        tenant: String,
        version: u32,
    ) -> Result<PolicyVersion, ApiError> {
        self.do_policy_rollback(tenant, version).await
    }

    async fn policy_validate(
        self,
        _: Context,
        text: String,
    ) -> Result<Vec<PolicyProblem>, ApiError> {
        self.do_policy_validate(text).await
    }

    async fn policy_test(
        self,
        _: Context,
        tenant: String,
        candidate: Option<String>,
        cases: Vec<PolicyCase>,
    ) -> Result<Vec<PolicyCaseResult>, ApiError> {
        self.do_policy_test(tenant, candidate, cases).await
    }

    async fn escalations_list(
        self,
        _: Context,
        all: bool,
    ) -> Result<Vec<EscalationView>, ApiError> {
        self.do_escalations_list(all).await
    }

    async fn escalation_decide(
        self,
        _: Context,
        id: u64,
        request_hash: String,
        approve: bool,
        reason: String,
    ) -> Result<EscalationView, ApiError> {
        self.do_escalation_decide(id, request_hash, approve, reason)
            .await
    }

    async fn incidents_list(self, _: Context, all: bool) -> Result<Vec<Incident>, ApiError> {
        self.do_incidents_list(all).await
    }

    async fn incident_show(self, _: Context, id: u64) -> Result<Incident, ApiError> {
        self.do_incident_show(id).await
    }

    async fn incident_ack(self, _: Context, id: u64, note: String) -> Result<Incident, ApiError> {
        self.do_incident_transition(id, Transition::Ack(note)).await
    }

    async fn incident_resolve(
        self,
        _: Context,
        id: u64,
        note: String,
    ) -> Result<Incident, ApiError> {
        self.do_incident_transition(id, Transition::Resolve(note))
            .await
    }

    async fn incident_reassign(
        self,
        _: Context,
        id: u64,
        party: Party,
        reason: String,
    ) -> Result<Incident, ApiError> {
        self.do_incident_transition(id, Transition::Reassign(party, reason))
            .await
    }

    async fn incident_silence(self, _: Context, id: u64, secs: u64) -> Result<Incident, ApiError> {
        self.do_incident_transition(id, Transition::Silence(secs.saturating_mul(1000)))
            .await
    }

    async fn incident_open(
        self,
        _: Context,
        scenario: String,
        agent: Option<AgentRef>,
        summary: String,
    ) -> Result<Incident, ApiError> {
        self.do_incident_open(scenario, agent, summary).await
    }

    async fn incidents_matrix(self, _: Context) -> Result<Matrix, ApiError> {
        self.do_incidents_matrix().await
    }

    async fn incidents_routes(
        self,
        _: Context,
    ) -> Result<agenfleet_protocol::incidents::RoutesReport, ApiError> {
        self.do_incidents_routes().await
    }

    async fn incidents_outbox(
        self,
        _: Context,
        limit: u32,
    ) -> Result<Vec<agenfleet_protocol::incidents::OutboxRow>, ApiError> {
        self.do_incidents_outbox(limit).await
    }

    async fn audit_note(self, _: Context, text: String) -> Result<u64, ApiError> {
        self.check_any(Permission::AuditWrite, "audit_note").await?;
        let text = text.trim().to_string();
        if text.is_empty() || text.len() > 4096 {
            return Err(ApiError::invalid(
                "a note must hold 1 to 4096 bytes of text",
            ));
        }
        self.rt
            .audit_event(self.event("operator.note", None, "ok", text))
            .await
    }

    async fn upstreams_put(
        self,
        _: Context,
        spec: UpstreamSpec,
        key: Option<SecretValue>,
        create: bool,
        note: String,
    ) -> Result<UpstreamView, ApiError> {
        self.do_upstreams_put(spec, key, create, note).await
    }

    async fn upstreams_list(
        self,
        _: Context,
        tenant: Option<String>,
    ) -> Result<Vec<UpstreamView>, ApiError> {
        self.do_upstreams_list(tenant).await
    }

    async fn upstreams_history(
        self,
        _: Context,
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<Vec<UpstreamView>, ApiError> {
        self.do_upstreams_history(class, tenant, name).await
    }

    async fn upstreams_remove(
        self,
        _: Context,
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<UpstreamView, ApiError> {
        self.do_upstreams_remove(class, tenant, name).await
    }

    async fn usage(self, _: Context, tenant: Option<String>) -> Result<Vec<UsageRow>, ApiError> {
        self.do_usage(tenant).await
    }

    async fn backup_create(
        self,
        _: Context,
        tenant: Option<String>,
    ) -> Result<BackupInfo, ApiError> {
        self.do_backup_create(tenant).await
    }

    async fn backup_read(
        self,
        _: Context,
        id: String,
        offset: u64,
        max: u32,
    ) -> Result<BackupChunk, ApiError> {
        self.do_backup_read(id, offset, max).await
    }

    async fn tenants_set(
        self,
        _: Context,
        tenant: String,
        audit_retention_days: Option<f64>,
    ) -> Result<agenfleet_protocol::TenantSettings, ApiError> {
        self.do_tenants_set(tenant, audit_retention_days).await
    }

    async fn tenants_list(
        self,
        _: Context,
    ) -> Result<Vec<agenfleet_protocol::TenantInfo>, ApiError> {
        self.do_tenants_list().await
    }

    async fn tenants_create(
        self,
        _: Context,
        tenant: String,
        tier: String,
    ) -> Result<agenfleet_protocol::TenantInfo, ApiError> {
        self.do_tenants_create(tenant, tier).await
    }

    async fn tenants_move(
        self,
        _: Context,
        tenant: String,
        tier: String,
    ) -> Result<agenfleet_protocol::TenantMoved, ApiError> {
        self.do_tenants_move(tenant, tier).await
    }

    async fn pulse(
        self,
        _: Context,
        after_ms: u64,
        max_wait_ms: u64,
    ) -> Result<agenfleet_protocol::pulse::Pulse, ApiError> {
        self.do_pulse(after_ms, max_wait_ms).await
    }

    async fn agent_history(
        self,
        _: Context,
        agent: AgentRef,
        after_ms: u64,
        max_wait_ms: u64,
    ) -> Result<agenfleet_protocol::pulse::AgentHistory, ApiError> {
        self.do_agent_history(agent, after_ms, max_wait_ms).await
    }

    async fn operations(
        self,
        _: Context,
        since: u64,
        max_wait_ms: u64,
    ) -> Result<(u64, Vec<agenfleet_protocol::Operation>), ApiError> {
        self.do_operations(since, max_wait_ms).await
    }

    async fn memory_stats(
        self,
        _: Context,
        agent: AgentRef,
    ) -> Result<agenfleet_protocol::memory::MemoryStats, ApiError> {
        self.do_memory_stats(agent).await
    }

    async fn memory_export(
        self,
        _: Context,
        agent: AgentRef,
        after: String,
    ) -> Result<agenfleet_protocol::memory::MemoryExportPage, ApiError> {
        self.do_memory_export(agent, after).await
    }

    async fn memory_handoff(
        self,
        _: Context,
        from: AgentRef,
        to: AgentRef,
        prefix: String,
        reason: String,
    ) -> Result<agenfleet_protocol::memory::Handoff, ApiError> {
        self.do_memory_handoff(from, to, prefix, reason).await
    }

    async fn runs_start(
        self,
        _: Context,
        agent: AgentRef,
        input_json: String,
    ) -> Result<agenfleet_protocol::runs::RunView, ApiError> {
        self.do_runs_start(agent, input_json).await
    }

    async fn runs_list(
        self,
        _: Context,
        query: agenfleet_protocol::runs::RunQuery,
    ) -> Result<Vec<agenfleet_protocol::runs::RunView>, ApiError> {
        self.do_runs_list(query).await
    }

    async fn runs_get(
        self,
        _: Context,
        id: u64,
        wait_ms: u64,
    ) -> Result<agenfleet_protocol::runs::RunView, ApiError> {
        self.do_runs_get(id, wait_ms).await
    }

    async fn runs_cancel(
        self,
        _: Context,
        id: u64,
    ) -> Result<agenfleet_protocol::runs::RunView, ApiError> {
        self.do_runs_cancel(id).await
    }

    async fn runs_timeline(
        self,
        _: Context,
        id: u64,
    ) -> Result<Vec<agenfleet_protocol::AuditEntry>, ApiError> {
        self.do_runs_timeline(id).await
    }

    async fn runs_logs(
        self,
        _: Context,
        id: u64,
    ) -> Result<agenfleet_protocol::LogChunk, ApiError> {
        self.do_runs_logs(id).await
    }

    async fn triggers_add(
        self,
        _: Context,
        agent: AgentRef,
        new: agenfleet_protocol::triggers::TriggerNew,
    ) -> Result<agenfleet_protocol::triggers::TriggerCreated, ApiError> {
        self.do_triggers_add(agent, new).await
    }

    async fn triggers_list(
        self,
        _: Context,
        agent: Option<AgentRef>,
    ) -> Result<Vec<agenfleet_protocol::triggers::TriggerView>, ApiError> {
        self.do_triggers_list(agent).await
    }

    async fn triggers_get(
        self,
        _: Context,
        id: String,
    ) -> Result<agenfleet_protocol::triggers::TriggerView, ApiError> {
        self.do_triggers_get(id).await
    }

    async fn triggers_revoke(
        self,
        _: Context,
        id: String,
    ) -> Result<agenfleet_protocol::triggers::TriggerView, ApiError> {
        self.do_triggers_revoke(id).await
    }

    async fn triggers_rotate_secret(
        self,
        _: Context,
        id: String,
        overlap_secs: u64,
    ) -> Result<agenfleet_protocol::triggers::TriggerCreated, ApiError> {
        self.do_triggers_rotate_secret(id, overlap_secs).await
    }
}
