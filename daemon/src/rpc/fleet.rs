//! The `Fleet` service for one connection: each method checks the caller's permission,
//! resolves agent names inside what the caller may see, and calls the runtime.

use crate::authz::{Caller, Permission, Scope, ScopedRole};
use crate::incidents::Transition;
use crate::runtime::{Cmd, Runtime};
use crate::store::AgentKey;
use crate::vault::VaultError;
use agenfleet_protocol::incidents::{Incident, Matrix, Party};
use agenfleet_protocol::policy::{
    EscalationView, PolicyCase, PolicyCaseResult, PolicyProblem, PolicyVersion, VersionHistory,
};
use agenfleet_protocol::{
    AgentAction, AgentRef, AgentSpec, AgentState, AgentView, ApiError, AuditEntry, AuditEvent,
    AuditQuery, AuditStatus, Checkpoint, Fleet, FleetStatus, Hello, ImageInfo, LogChunk,
    StateCount, VerifyReport, WatchReply, MAX_WAIT_MS, PROTOCOL_VERSION, SOFTWARE_VERSION,
};
use agenfleet_protocol::{
    CallerInfo, CredentialInfo, NewToken, OperatorInfo, RoleBinding, SecretValue, TokenInfo,
    VaultStatus,
};
use std::sync::Arc;
use std::time::Duration;
use tarpc::context::Context;

mod incidents;
mod policy;

#[derive(Clone)]
pub struct FleetService {
    rt: Arc<Runtime>,
    /// A personal access token this connection authenticated with, if any.
    token: Arc<std::sync::Mutex<Option<SecretValue>>>,
    /// The connection's peer uid; the caller it names is resolved per request, so a role
    /// change applies at once, also to connections opened before it.
    uid: u32,
    max_frame: usize,
}

impl FleetService {
    pub fn new(rt: Arc<Runtime>, uid: u32, max_frame: usize) -> Self {
        FleetService {
            rt,
            token: Arc::new(std::sync::Mutex::new(None)),
            uid,
            max_frame,
        }
    }

    fn caller(&self) -> Arc<Caller> {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match token {
            Some(t) => self.rt.authz.token_caller(&t),
            None => self.rt.authz.caller(self.uid),
        }
    }

    /// For calls that list or filter rather than name one thing: the caller must hold
    /// `p` somewhere (what it sees is then filtered by scope).
    async fn check_any(&self, p: Permission, rpc: &str) -> Result<(), ApiError> {
        let c = self.caller();
        if c.holds_anywhere(p) {
            return Ok(());
        }
        if let Some(d) = &c.denial {
            return Err(self.refused(rpc, ApiError::denied(d.clone())).await);
        }
        let scope = if c.known {
            "any tenant or project"
        } else {
            "the platform"
        };
        let e = if c.known {
            ApiError::denied(format!("not permitted: needs {} on {scope}", p.as_str()))
        } else {
            ApiError::denied(format!(
                "not permitted: uid {} is not a registered operator (needs {} on {scope})",
                c.uid,
                p.as_str()
            ))
        };
        Err(self.refused(rpc, e).await)
    }

    /// `roles grant|revoke`: the binding must name a real role, tenant and project, and the
    /// caller must be allowed to grant it; audited either way.
    async fn role_change(
        &self,
        uid: u32,
        binding: RoleBinding,
        grant: bool,
    ) -> Result<OperatorInfo, ApiError> {
        let rpc = if grant { "roles_grant" } else { "roles_revoke" };
        let b = match crate::authz::parse_binding(&self.rt.store, &binding) {
            Ok(b) => b,
            Err(e) => return Err(self.refused(rpc, role_err(e)).await),
        };
        if let Err(e) = self
            .caller()
            .may_grant(b.role, &b.tenant, b.project.as_deref())
        {
            return Err(self.refused(rpc, e).await);
        }
        let store = self.rt.store.clone();
        let action = if grant { "role.grant" } else { "role.revoke" };
        let detail = format!("uid {uid}: {}", b.to_wire());
        self.audited(action, None, detail, async move {
            if grant {
                crate::authz::grant(&store, uid, &b)
            } else {
                crate::authz::revoke(&store, uid, &b)
            }
            .map_err(role_err)
        })
        .await?;
        self.rt.authz.invalidate();
        Ok(operator_info(&self.rt.authz.caller(uid)))
    }

    /// For calls on one agent: the caller must hold `p` somewhere (else "not permitted"),
    /// the agent must be one it can see (else "no agent named", exactly as for a name
    /// that does not exist), and `p` must hold at the agent's project.
    async fn find_for(
        &self,
        agent: &AgentRef,
        p: Permission,
        rpc: &str,
    ) -> Result<AgentKey, ApiError> {
        self.check_any(p, rpc).await?;
        let key = self.find(agent, rpc).await?;
        self.check_agent(p, &key, rpc).await?;
        Ok(key)
    }

    /// The permission check for one agent, at its project.
    async fn check_agent(&self, p: Permission, key: &AgentKey, rpc: &str) -> Result<(), ApiError> {
        let (t, project) = self.agent_scope(key);
        self.check(p, Scope::Project(&t, &project), rpc).await
    }

    /// The scope an agent lives in.
    fn agent_scope(&self, key: &AgentKey) -> (String, String) {
        let project = self
            .rt
            .fleet
            .get(key)
            .map(|v| v.project)
            .unwrap_or_default();
        (key.tenant.clone(), project)
    }

    fn actor(&self) -> String {
        let c = self.caller();
        format!("{} (uid {})", c.operator, c.uid)
    }

    fn event(
        &self,
        action: &str,
        key: Option<&AgentKey>,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            actor: self.actor(),
            action: action.to_string(),
            tenant: key.map(|k| k.tenant.clone()),
            agent: key.map(|k| k.name.clone()),
            outcome: outcome.to_string(),
            detail,
        }
    }

    /// Records a refused call and hands the error back.
    async fn refused(&self, rpc: &str, err: ApiError) -> ApiError {
        self.record_refusal(rpc, &err).await;
        err
    }

    /// Writes the `rpc.refused` record; answers its sequence number.
    async fn record_refusal(&self, rpc: &str, err: &ApiError) -> Option<u64> {
        let ev = self.event(
            "rpc.refused",
            None,
            "refused",
            format!("{rpc}: {}", err.message),
        );
        match self.rt.audit_event(ev).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::error!(error = %e.message, "cannot record a refused call");
                None
            }
        }
    }

    /// The permission check; a refusal is audited.
    async fn check(&self, p: Permission, scope: Scope<'_>, rpc: &str) -> Result<(), ApiError> {
        match self.caller().require(p, scope) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refused(rpc, e).await),
        }
    }

    /// `resolve`, with unknown (or invisible) names audited as refusals.
    async fn find(&self, r: &AgentRef, rpc: &str) -> Result<AgentKey, ApiError> {
        let e = match self.resolve(r) {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        // The same answer as for a name that does not exist; but when the name is another
        // tenant's agent, the refusal is also a cross-tenant attempt (an incident).
        if let Some(seq) = self.record_refusal(rpc, &e).await {
            if let Some(target) = self.foreign_target(r) {
                self.rt
                    .incidents
                    .signal(crate::incidents::detect::Signal::CrossTenant {
                        actor: self.actor(),
                        target,
                        seq,
                    });
            }
        }
        Err(e)
    }

    /// The agent `r` names in a tenant where the caller holds no role, if there is one.
    fn foreign_target(&self, r: &AgentRef) -> Option<String> {
        let c = self.caller();
        if c.platform_admin {
            return None;
        }
        let (_, _, m) = self.rt.fleet.snapshot(|v| {
            v.name == r.name
                && r.tenant.as_ref().is_none_or(|t| t == &v.tenant)
                && !c.bindings.iter().any(|b| b.tenant == v.tenant)
        });
        m.first().map(|v| v.qualified_name())
    }

    /// Audit before effect: records the request durably (or refuses), runs `f`, then
    /// records how it ended.
    async fn audited<T>(
        &self,
        action: &str,
        key: Option<&AgentKey>,
        detail: String,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.rt
            .audit_event(self.event(action, key, "requested", detail.clone()))
            .await?;
        let r = f.await;
        let (outcome, detail) = match &r {
            Ok(_) => ("ok", detail),
            Err(e) => ("failed", e.message.clone()),
        };
        if let Err(e) = self
            .rt
            .audit_event(self.event(action, key, outcome, detail))
            .await
        {
            tracing::error!(error = %e.message, "cannot record the outcome of {action}");
        }
        r
    }

    /// `creds set` (rotate = false) and `creds rotate`: audited with an HMAC of the
    /// value, never the value.
    async fn creds_put(
        &self,
        agent: AgentRef,
        name: String,
        value: SecretValue,
        rotate: bool,
        grace_secs: u64,
    ) -> Result<CredentialInfo, ApiError> {
        let rpc = if rotate { "creds_rotate" } else { "creds_set" };
        let key = self.find_for(&agent, Permission::CredsWrite, rpc).await?;
        let hmac = match self.rt.vault.hmac(&value) {
            Ok(h) => h,
            Err(e) => return Err(self.refused(rpc, vault_err(e)).await),
        };
        let detail = if rotate {
            format!("{name}: new version (value hmac {hmac}, {} bytes); older versions revoked after {grace_secs}s", value.len())
        } else {
            format!(
                "{name}: version 1 (value hmac {hmac}, {} bytes)",
                value.len()
            )
        };
        let vault = self.rt.vault.clone();
        let k = key.clone();
        let action = if rotate { "creds.rotate" } else { "creds.set" };
        let info = self
            .audited(action, Some(&key), detail, async move {
                vault
                    .put(&k, &name, &value, rotate, grace_secs)
                    .map_err(vault_err)
            })
            .await?;
        self.rt.credentials_changed(&key, rotate);
        Ok(info)
    }

    /// Finds the agent `r` names among those the caller can see. Unknown and invisible
    /// agents answer the same.
    fn resolve(&self, r: &AgentRef) -> Result<AgentKey, ApiError> {
        let caller = self.caller();
        let (_, _, matches) = self.rt.fleet.snapshot(|v| {
            v.name == r.name && r.tenant.as_ref().is_none_or(|t| t == &v.tenant) && caller.sees(v)
        });
        match matches.len() {
            0 => Err(ApiError::not_found(format!("no agent named `{r}`"))),
            1 => Ok(AgentKey {
                tenant: matches[0].tenant.clone(),
                name: matches[0].name.clone(),
            }),
            _ => {
                let tenants: Vec<String> = matches.iter().map(|v| v.tenant.clone()).collect();
                Err(ApiError::invalid(format!(
                    "`{r}` is ambiguous: it exists in tenants {}; write TENANT/{}",
                    tenants.join(", "),
                    r.name
                )))
            }
        }
    }
}

/// A vault error for the caller: what is wrong and what to do.
fn vault_err(e: VaultError) -> ApiError {
    match e {
        VaultError::NotInitialized | VaultError::Sealed => ApiError::precondition(e.to_string()),
        VaultError::AlreadyInitialized | VaultError::Exists(_) => ApiError::exists(e.to_string()),
        VaultError::WrongRecoveryKey
        | VaultError::MalformedRecoveryKey
        | VaultError::Invalid(_) => ApiError::invalid(e.to_string()),
        VaultError::NotFound(_) => ApiError::not_found(e.to_string()),
        VaultError::Keyring(_) => ApiError::unavailable(e.to_string()),
        VaultError::Corrupt(_) | VaultError::Store(_) => ApiError::internal(e.to_string()),
    }
}

fn role_err(e: crate::authz::RoleError) -> ApiError {
    use crate::authz::RoleError as R;
    match e {
        R::Invalid(m) => ApiError::invalid(m),
        R::NotFound(m) => ApiError::not_found(m),
        R::Exists(m) => ApiError::exists(m),
        R::Store(e) => ApiError::internal(e.to_string()),
    }
}

fn operator_info(c: &Caller) -> OperatorInfo {
    OperatorInfo {
        uid: c.uid,
        name: c.operator.clone(),
        platform_admin: c.platform_admin,
        bindings: c.bindings.iter().map(|b| b.to_wire()).collect(),
    }
}

fn capped(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_WAIT_MS))
}

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
        let key = AgentKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        };
        let detail = format!("image {}, spec {}", spec.image, spec.hash());
        let rt = self.rt.clone();
        self.audited("agent.create", Some(&key), detail, rt.create(spec))
            .await
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
        .await
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
                        if caller.platform_admin {
                            return true;
                        }
                        let Some(t) = e.event.tenant.as_deref() else {
                            return false;
                        };
                        match e.event.agent.as_deref() {
                            Some(a) => {
                                let key = AgentKey {
                                    tenant: t.into(),
                                    name: a.into(),
                                };
                                match fleet.get(&key) {
                                    Some(v) => caller
                                        .can(Permission::AuditRead, Scope::Project(t, &v.project)),
                                    None => caller.can(Permission::AuditRead, Scope::Tenant(t)),
                                }
                            }
                            None => caller.can(Permission::AuditRead, Scope::Tenant(t)),
                        }
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
        self.rt.vault_changed();
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
        self.rt.vault_changed();
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
        self.rt.vault_changed();
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
        self.rt.credentials_changed(&key, false);
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
        self.check_any(Permission::Grant, "operators_list").await?;
        let me = self.caller();
        let all = crate::authz::list_operators(&self.rt.store)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(all
            .iter()
            .map(|c| {
                let mut info = operator_info(c);
                // Show each operator's roles only where the caller may grant.
                if !me.platform_admin {
                    info.bindings.retain(|b| {
                        ScopedRole::parse(&b.role).is_some_and(|r| {
                            me.may_grant(r, &b.tenant, b.project.as_deref()).is_ok()
                        })
                    });
                }
                info
            })
            .filter(|i| me.platform_admin || !i.bindings.is_empty() || i.uid == me.uid)
            .collect())
    }

    async fn operators_add(
        self,
        _: Context,
        uid: u32,
        name: String,
        platform_admin: bool,
    ) -> Result<OperatorInfo, ApiError> {
        self.check(Permission::OperatorsAdmin, Scope::Platform, "operators_add")
            .await?;
        let store = self.rt.store.clone();
        let detail = format!(
            "uid {uid} as `{name}`{}",
            if platform_admin {
                ", platform admin"
            } else {
                ""
            }
        );
        let n = name.clone();
        self.audited("operator.add", None, detail, async move {
            crate::authz::add_operator(&store, uid, &n, platform_admin).map_err(role_err)
        })
        .await?;
        self.rt.authz.invalidate();
        Ok(operator_info(&self.rt.authz.caller(uid)))
    }

    async fn operators_remove(self, _: Context, uid: u32) -> Result<(), ApiError> {
        self.check(
            Permission::OperatorsAdmin,
            Scope::Platform,
            "operators_remove",
        )
        .await?;
        let store = self.rt.store.clone();
        self.audited(
            "operator.remove",
            None,
            format!("uid {uid} and every role it held"),
            async move { crate::authz::remove_operator(&store, uid).map_err(role_err) },
        )
        .await?;
        self.rt.authz.invalidate();
        Ok(())
    }

    async fn roles_grant(
        self,
        _: Context,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.role_change(uid, binding, true).await
    }

    async fn roles_revoke(
        self,
        _: Context,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.role_change(uid, binding, false).await
    }

    async fn tenants_delete(self, _: Context, tenant: String) -> Result<u32, ApiError> {
        self.check(
            Permission::OperatorsAdmin,
            Scope::Platform,
            "tenants_delete",
        )
        .await?;
        if let Err(e) = agenfleet_protocol::spec::check_name("tenant", &tenant) {
            return Err(ApiError::invalid(e));
        }
        let rt = self.rt.clone();
        let t = tenant.clone();
        let n = self
            .audited(
                "tenant.delete",
                None,
                format!("tenant {tenant}: every agent purged, then its projects, roles and tokens"),
                async move {
                    let (_, _, agents) = rt.fleet.snapshot(|v| v.tenant == t);
                    let exists: bool = rt
                        .store
                        .with(|c| {
                            c.query_row(
                                "SELECT COUNT(*) FROM tenants WHERE id = ?1",
                                rusqlite::params![t],
                                |r| r.get::<_, i64>(0),
                            )
                        })
                        .map(|n| n > 0)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    if !exists {
                        return Err(ApiError::not_found(format!("no tenant `{t}`")));
                    }
                    let mut purged = 0u32;
                    for a in agents {
                        let key = AgentKey {
                            tenant: a.tenant,
                            name: a.name,
                        };
                        rt.command(&key, Cmd::Delete).await?;
                        purged += 1;
                    }
                    rt.store
                        .with(|c| {
                            let tx = c.transaction()?;
                            tx.execute(
                                "DELETE FROM role_bindings WHERE tenant_id = ?1",
                                rusqlite::params![t],
                            )?;
                            tx.execute(
                                "DELETE FROM tokens WHERE tenant_id = ?1",
                                rusqlite::params![t],
                            )?;
                            tx.execute(
                                "DELETE FROM projects WHERE tenant_id = ?1",
                                rusqlite::params![t],
                            )?;
                            tx.execute("DELETE FROM tenants WHERE id = ?1", rusqlite::params![t])?;
                            tx.commit()
                        })
                        .map_err(|e| {
                            ApiError::internal(format!("cannot delete the tenant's rows: {e}"))
                        })?;
                    Ok(purged)
                },
            )
            .await?;
        self.rt.authz.invalidate();
        Ok(n)
    }

    async fn authenticate(self, _: Context, token: SecretValue) -> Result<CallerInfo, ApiError> {
        let c = self.rt.authz.token_caller(&token);
        if let Some(d) = &c.denial {
            let e = ApiError::denied(d.clone());
            return Err(self.refused("authenticate", e).await);
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(c.info())
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
        let me = self.caller();
        if !me.known || me.denial.is_some() {
            let e = ApiError::denied("not permitted: only operators create tokens");
            return Err(self.refused("tokens_create", e).await);
        }
        let store = self.rt.store.clone();
        let detail = format!(
            "`{name}` on {tenant}{} with {} for {ttl_secs}s",
            project
                .as_deref()
                .map(|p| format!("/{p}"))
                .unwrap_or_default(),
            permissions.join(",")
        );
        let created = self
            .audited("token.create", None, detail, async move {
                crate::authz::tokens::create(
                    &store,
                    &me,
                    &name,
                    &tenant,
                    project.as_deref(),
                    &permissions,
                    ttl_secs,
                )
                .map_err(role_err)
            })
            .await?;
        Ok(NewToken {
            info: created.0,
            secret: created.1,
        })
    }

    async fn tokens_list(self, _: Context) -> Result<Vec<TokenInfo>, ApiError> {
        let me = self.caller();
        if !me.known || me.denial.is_some() {
            return Err(self
                .refused(
                    "tokens_list",
                    ApiError::denied("not permitted: only operators list tokens"),
                )
                .await);
        }
        crate::authz::tokens::list(&self.rt.store, &me).map_err(role_err)
    }

    async fn tokens_revoke(self, _: Context, id: String) -> Result<TokenInfo, ApiError> {
        let me = self.caller();
        if !me.known || me.denial.is_some() {
            return Err(self
                .refused(
                    "tokens_revoke",
                    ApiError::denied("not permitted: only operators revoke tokens"),
                )
                .await);
        }
        let store = self.rt.store.clone();
        let i = id.clone();
        let revoked = self
            .audited("token.revoke", None, format!("token {id}"), async move {
                crate::authz::tokens::revoke(&store, &me, &i).map_err(role_err)
            })
            .await?;
        // Cached resolutions of it are dropped: the next call on any connection refuses.
        self.rt.authz.invalidate();
        Ok(revoked)
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
}
