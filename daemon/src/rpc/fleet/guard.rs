//! The guard of every operator RPC: the connection's caller (its uid, or the token it
//! authenticated with), permission checks where the data lives, agent names resolved
//! inside what the caller may see (another tenant's names answer like missing ones, and
//! the attempt is audited), refusals recorded, and `audited` for actions whose record
//! must be durable before their effect.

use crate::authz::{Caller, Permission, Scope};
use crate::runtime::Runtime;
use crate::store::AgentKey;
use crate::vault::VaultError;
use agenfleet_protocol::{AgentRef, ApiError, AuditEvent, MAX_WAIT_MS};
use agenfleet_protocol::{CredentialInfo, OperatorInfo, RoleBinding, SecretValue};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct FleetService {
    pub(super) rt: Arc<Runtime>,
    /// A personal access token this connection authenticated with, if any.
    pub(super) token: Arc<std::sync::Mutex<Option<SecretValue>>>,
    /// The connection's peer uid; the caller it names is resolved per request, so a role
    /// change applies at once, also to connections opened before it.
    pub(super) uid: u32,
    pub(super) max_frame: usize,
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

    pub(super) fn caller(&self) -> Arc<Caller> {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match token {
            Some(t) => self.rt.authz.token_caller(&t),
            None => self.rt.authz.caller(self.uid),
        }
    }

    /// For calls that list or filter rather than name one thing: the caller must hold
    /// `p` somewhere (what it sees is then filtered by scope).
    pub(super) async fn check_any(&self, p: Permission, rpc: &str) -> Result<(), ApiError> {
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
    pub(super) async fn role_change(
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
    pub(super) async fn find_for(
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
    pub(super) async fn check_agent(
        &self,
        p: Permission,
        key: &AgentKey,
        rpc: &str,
    ) -> Result<(), ApiError> {
        let (t, project) = self.agent_scope(key);
        self.check(p, Scope::Project(&t, &project), rpc).await
    }

    /// The scope an agent lives in.
    pub(super) fn agent_scope(&self, key: &AgentKey) -> (String, String) {
        let project = self
            .rt
            .fleet
            .get(key)
            .map(|v| v.project)
            .unwrap_or_default();
        (key.tenant.clone(), project)
    }

    pub(super) fn actor(&self) -> String {
        let c = self.caller();
        format!("{} (uid {})", c.operator, c.uid)
    }

    pub(super) fn event(
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
    pub(super) async fn refused(&self, rpc: &str, err: ApiError) -> ApiError {
        self.record_refusal(rpc, &err).await;
        err
    }

    /// Writes the `rpc.refused` record; answers its sequence number.
    pub(super) async fn record_refusal(&self, rpc: &str, err: &ApiError) -> Option<u64> {
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
    pub(super) async fn check(
        &self,
        p: Permission,
        scope: Scope<'_>,
        rpc: &str,
    ) -> Result<(), ApiError> {
        match self.caller().require(p, scope) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refused(rpc, e).await),
        }
    }

    /// `resolve`, with unknown (or invisible) names audited as refusals.
    pub(super) async fn find(&self, r: &AgentRef, rpc: &str) -> Result<AgentKey, ApiError> {
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
    pub(super) fn foreign_target(&self, r: &AgentRef) -> Option<String> {
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
    pub(super) async fn audited<T>(
        &self,
        action: &str,
        key: Option<&AgentKey>,
        detail: String,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let done = detail.clone();
        self.audited_with(action, key, detail, f, |_| done.clone())
            .await
    }

    /// `audited`, with the outcome's detail made from what `f` answered (an id it made).
    pub(super) async fn audited_with<T>(
        &self,
        action: &str,
        key: Option<&AgentKey>,
        detail: String,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
        done: impl FnOnce(&T) -> String,
    ) -> Result<T, ApiError> {
        self.rt
            .audit_event(self.event(action, key, "requested", detail))
            .await?;
        let r = f.await;
        let (outcome, detail) = match &r {
            Ok(v) => ("ok", done(v)),
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
    pub(super) async fn creds_put(
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
        let rotated = rotate.then(|| name.clone());
        let action = if rotate { "creds.rotate" } else { "creds.set" };
        let info = self
            .audited(action, Some(&key), detail, async move {
                vault
                    .put(&k, &name, &value, rotate, grace_secs)
                    .map_err(vault_err)
            })
            .await?;
        self.rt.credentials_changed(&key, rotated);
        Ok(info)
    }

    /// Finds the agent `r` names among those the caller can see. Unknown and invisible
    /// agents answer the same.
    pub(super) fn resolve(&self, r: &AgentRef) -> Result<AgentKey, ApiError> {
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
pub(super) fn vault_err(e: VaultError) -> ApiError {
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

pub(super) fn role_err(e: crate::authz::RoleError) -> ApiError {
    use crate::authz::RoleError as R;
    match e {
        R::Invalid(m) => ApiError::invalid(m),
        R::NotFound(m) => ApiError::not_found(m),
        R::Exists(m) => ApiError::exists(m),
        R::Store(e) => ApiError::internal(e.to_string()),
    }
}

pub(super) fn operator_info(c: &Caller) -> OperatorInfo {
    OperatorInfo {
        uid: c.uid,
        name: c.operator.clone(),
        platform_admin: c.platform_admin,
        bindings: c.bindings.iter().map(|b| b.to_wire()).collect(),
    }
}

pub(super) fn capped(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_WAIT_MS))
}
