//! Who may do what. Every RPC asks here first. A caller is a uid (from the socket's peer
//! credentials) resolved to an operator: the daemon's own uid, root and operators flagged
//! as such are platform admins; everyone else holds roles bound to a tenant or to one
//! project of it. Permissions are split the way they are used — looking, using, operating,
//! managing, credentials, granting — and each role is a fixed set of them. Nobody grants
//! a role they do not hold the power to grant. Callers are resolved per request from a
//! cache that any operator or role change invalidates, so a revoked role stops working at
//! once, also on connections opened before.

pub mod tokens;

use crate::store::{Store, StoreError};
use agenfleet_protocol::{AgentView, ApiError, CallerInfo, RoleBinding};
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use agenfleet_protocol::roles::{Permission, ScopedRole};
use Permission as P;

/// Where a permission is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Platform,
    Tenant(&'a str),
    Project(&'a str, &'a str),
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Platform => write!(f, "the platform"),
            Scope::Tenant(t) => write!(f, "tenant {t}"),
            Scope::Project(t, p) => write!(f, "project {t}/{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub role: ScopedRole,
    pub tenant: String,
    pub project: Option<String>,
}

impl Binding {
    pub fn scope(&self) -> Scope<'_> {
        match &self.project {
            Some(p) => Scope::Project(&self.tenant, p),
            None => Scope::Tenant(&self.tenant),
        }
    }

    fn covers(&self, scope: Scope<'_>) -> bool {
        match scope {
            Scope::Platform => false,
            Scope::Tenant(t) => self.tenant == t && self.project.is_none(),
            Scope::Project(t, p) => {
                self.tenant == t && self.project.as_deref().is_none_or(|bp| bp == p)
            }
        }
    }
    pub fn to_wire(&self) -> RoleBinding {
        RoleBinding {
            role: self.role.as_str().into(),
            tenant: self.tenant.clone(),
            project: self.project.clone(),
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub operator: String,
    pub platform_admin: bool,
    /// False for a uid the daemon does not know.
    pub known: bool,
    pub bindings: Vec<Binding>,
    /// Set when the call comes with a personal access token: it can do only what the
    /// token allows *and* what its creator can still do.
    pub token: Option<TokenLimits>,
    /// Why this caller may do nothing at all (an expired or revoked token).
    pub denial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLimits {
    pub id: String,
    pub permissions: Vec<Permission>,
    pub creator: Box<Caller>,
    pub expires_ms: u64,
}

impl Caller {
    pub fn info(&self) -> CallerInfo {
        CallerInfo {
            uid: self.uid,
            operator: self.operator.clone(),
            role: if self.platform_admin {
                "platform_admin"
            } else if self.known {
                "member"
            } else {
                "none"
            }
            .into(),
            bindings: self.bindings.iter().map(Binding::to_wire).collect(),
        }
    }

    pub fn can(&self, p: Permission, scope: Scope<'_>) -> bool {
        if self.denial.is_some() {
            return false;
        }
        if let Some(t) = &self.token {
            return t.permissions.contains(&p)
                && t.creator.can(p, scope)
                && self.bindings.iter().any(|b| b.covers(scope));
        }
        if self.platform_admin {
            return true;
        }
        if matches!(p, P::ImageBuild | P::VaultAdmin | P::OperatorsAdmin) {
            return false;
        }
        self.bindings
            .iter()
            .any(|b| b.covers(scope) && b.role.permissions().contains(&p))
    }

    /// Refuses with "not permitted: needs <permission> on <scope>".
    pub fn require(&self, p: Permission, scope: Scope<'_>) -> Result<(), ApiError> {
        if self.can(p, scope) {
            return Ok(());
        }
        tracing::warn!(uid = self.uid, operator = %self.operator, permission = p.as_str(), %scope, "refused");
        if let Some(d) = &self.denial {
            return Err(ApiError::denied(d.clone()));
        }
        if !self.known {
            return Err(ApiError::denied(format!(
                "not permitted: uid {} is not a registered operator (needs {} on {scope})",
                self.uid,
                p.as_str()
            )));
        }
        Err(ApiError::denied(format!(
            "not permitted: needs {} on {scope}",
            p.as_str()
        )))
    }

    /// The one scope check of what a caller may see of a row — an agent, an audit
    /// record, an incident, an escalation: a row of a tenant needs `p` on its project (on
    /// the tenant when the project is not known); a row of no tenant is the platform's.
    pub fn sees_row(&self, p: Permission, tenant: Option<&str>, project: Option<&str>) -> bool {
        match (tenant, project) {
            (None, _) => self.platform_admin,
            (Some(t), Some(pr)) => self.can(p, Scope::Project(t, pr)),
            (Some(t), None) => self.can(p, Scope::Tenant(t)),
        }
    }

    /// Whether the caller may see this agent at all (others answer as unknown).
    pub fn sees(&self, agent: &AgentView) -> bool {
        self.sees_row(P::FleetRead, Some(&agent.tenant), Some(&agent.project))
    }

    /// Whether the caller holds `p` anywhere (what it sees is then filtered by scope).
    pub fn holds_anywhere(&self, p: Permission) -> bool {
        if self.denial.is_some() {
            return false;
        }
        if let Some(t) = &self.token {
            return t.permissions.contains(&p)
                && self.bindings.iter().any(|b| t.creator.can(p, b.scope()));
        }
        self.platform_admin
            || self
                .bindings
                .iter()
                .any(|b| b.role.permissions().contains(&p))
    }

    /// Whether the caller may grant or revoke `role` at `tenant`[/`project`]: platform
    /// admins anything; a tenant admin any role in its tenant; a project admin project
    /// roles on its project only. Nobody grants more than they hold.
    pub fn may_grant(
        &self,
        role: ScopedRole,
        tenant: &str,
        project: Option<&str>,
    ) -> Result<(), ApiError> {
        let scope = match project {
            Some(p) => Scope::Project(tenant, p),
            None => Scope::Tenant(tenant),
        };
        if self.platform_admin {
            return Ok(());
        }
        let tenant_admin = self
            .bindings
            .iter()
            .any(|b| b.role == ScopedRole::TenantAdmin && b.tenant == tenant);
        let allowed = tenant_admin
            || (role.is_project_role()
                && project.is_some()
                && self
                    .bindings
                    .iter()
                    .any(|b| b.role == ScopedRole::ProjectAdmin && b.covers(scope)));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::denied(format!(
                "not permitted: granting {} on {scope} needs a role that holds it (roles.grant at that scope, and no more than you hold)",
                role.as_str()
            )))
        }
    }
}

/// A resolved token: (authz generation, caller, expires_ms).
type CachedToken = (u64, Arc<Caller>, u64);

/// Resolves uids to callers, with a cache that role changes invalidate.
pub struct Authz {
    store: Store,
    daemon_uid: u32,
    generation: AtomicU64,
    cache: Mutex<HashMap<u32, (u64, Arc<Caller>)>>,
    /// Resolved tokens by the SHA-256 of their secret.
    token_cache: Mutex<HashMap<String, CachedToken>>,
}

impl Authz {
    pub fn new(store: Store) -> Authz {
        Authz {
            store,
            // SAFETY: geteuid has no preconditions.
            daemon_uid: unsafe { libc::geteuid() },
            generation: AtomicU64::new(0),
            cache: Mutex::new(HashMap::new()),
            token_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Call after any change to operators or roles.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn caller(&self, uid: u32) -> Arc<Caller> {
        let gen = self.generation.load(Ordering::SeqCst);
        if let Some((g, c)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
        {
            if *g == gen {
                return c.clone();
            }
        }
        let c = Arc::new(self.load(uid));
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, (gen, c.clone()));
        c
    }

    fn load(&self, uid: u32) -> Caller {
        let builtin_admin = uid == self.daemon_uid || uid == 0;
        match load_operator(&self.store, uid) {
            Ok(Some(mut c)) => {
                c.platform_admin |= builtin_admin;
                c
            }
            Ok(None) => Caller {
                uid,
                operator: if uid == 0 {
                    "root".into()
                } else {
                    format!("uid-{uid}")
                },
                platform_admin: builtin_admin,
                known: builtin_admin,
                bindings: vec![],
                token: None,
                denial: None,
            },
            Err(e) => {
                tracing::error!(uid, error = %e, "cannot look up the operator; refusing");
                Caller {
                    uid,
                    operator: format!("uid-{uid}"),
                    platform_admin: false,
                    known: false,
                    bindings: vec![],
                    token: None,
                    denial: None,
                }
            }
        }
    }

    /// The caller a token stands for, resolved now (expiry and revocation bite at once);
    /// a bad token yields a caller that may do nothing, with the reason.
    pub fn token_caller(&self, secret: &agenfleet_protocol::SecretValue) -> Arc<Caller> {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(secret.expose()));
        let gen = self.generation.load(Ordering::SeqCst);
        let now = agenfleet_protocol::now_ms();
        if let Some((g, c, expires)) = self
            .token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            if *g == gen && now < *expires {
                return c.clone();
            }
        }
        match tokens::resolve(&self.store, secret, |uid| (*self.caller(uid)).clone()) {
            Ok(c) => {
                let c = Arc::new(c);
                let expires = c.token.as_ref().map(|t| t.expires_ms).unwrap_or(0);
                let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(digest, (gen, c.clone(), expires));
                c
            }
            Err(why) => Arc::new(Caller {
                uid: u32::MAX,
                operator: "invalid token".into(),
                platform_admin: false,
                known: false,
                bindings: vec![],
                token: None,
                denial: Some(format!("not permitted: {why}")),
            }),
        }
    }
}

/// Every operator with its bindings.
pub fn list_operators(store: &Store) -> Result<Vec<Caller>, StoreError> {
    let uids: Vec<u32> = store.with(|c| {
        let mut st = c.prepare("SELECT uid FROM operators ORDER BY uid")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<u32>, _>>();
        v
    })?;
    let mut out = Vec::new();
    for uid in uids {
        if let Some(c) = load_operator(store, uid)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// What can go wrong when changing operators and roles.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn add_operator(
    store: &Store,
    uid: u32,
    name: &str,
    platform_admin: bool,
) -> Result<(), RoleError> {
    agenfleet_protocol::spec::check_name("operator", name).map_err(RoleError::Invalid)?;
    let r = store.with(|c| {
        c.execute(
            "INSERT INTO operators (uid, name, role, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                uid,
                name,
                if platform_admin {
                    "platform_admin"
                } else {
                    "member"
                },
                agenfleet_protocol::now_ms() as i64
            ],
        )
    });
    match r {
        Ok(_) => Ok(()),
        Err(StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(RoleError::Exists(format!(
                "an operator with uid {uid} or name `{name}` exists already"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn remove_operator(store: &Store, uid: u32) -> Result<(), RoleError> {
    // The operator's bindings first, tenant by tenant through each tenant's handle.
    let tenants: Vec<String> = store.rows_everywhere(
        "SELECT DISTINCT tenant_id FROM role_bindings WHERE uid = ?1",
        &[&uid],
        |r| r.get(0),
    )?;
    for t in tenants {
        store
            .tenant(&t)
            .with(|c| c.execute("DELETE FROM t_role_bindings WHERE uid = ?1", params![uid]))?;
    }
    let n = store.with(|c| c.execute("DELETE FROM operators WHERE uid = ?1", params![uid]))?;
    if n == 0 {
        return Err(RoleError::NotFound(format!("no operator with uid {uid}")));
    }
    Ok(())
}

/// Checks a binding against what exists: the role name, the tenant, the project.
pub fn parse_binding(store: &Store, b: &RoleBinding) -> Result<Binding, RoleError> {
    let role = ScopedRole::parse(&b.role).ok_or_else(|| {
        RoleError::Invalid(format!(
            "unknown role `{}` (tenant_admin, project_admin, project_contributor, project_viewer)",
            b.role
        ))
    })?;
    match (role.is_project_role(), &b.project) {
        (true, None) => {
            return Err(RoleError::Invalid(format!(
                "{} is bound to a project: write TENANT/PROJECT",
                role.as_str()
            )))
        }
        (false, Some(_)) => {
            return Err(RoleError::Invalid(
                "tenant_admin is bound to a whole tenant: write TENANT".into(),
            ))
        }
        _ => {}
    }
    let tenant_ok = store.tenant_exists(&b.tenant)?;
    if !tenant_ok {
        return Err(RoleError::NotFound(format!("no tenant `{}`", b.tenant)));
    }
    if let Some(p) = &b.project {
        let ok: bool = store.with(|c| {
            c.query_row(
                "SELECT 1 FROM projects WHERE tenant_id = ?1 AND id = ?2",
                params![b.tenant, p],
                |_| Ok(true),
            )
            .optional()
            .map(|o| o.is_some())
        })?;
        if !ok {
            return Err(RoleError::NotFound(format!(
                "no project `{}/{p}`",
                b.tenant
            )));
        }
    }
    Ok(Binding {
        role,
        tenant: b.tenant.clone(),
        project: b.project.clone(),
    })
}

pub fn grant(store: &Store, uid: u32, b: &Binding) -> Result<(), RoleError> {
    if load_operator(store, uid)?.is_none() {
        return Err(RoleError::NotFound(format!(
            "no operator with uid {uid} (add it first)"
        )));
    }
    let n = store.tenant(&b.tenant).with(|c| {
        crate::store::tenant::changes(c, |c| {
            c.execute(
                "INSERT OR IGNORE INTO t_role_bindings (uid, role, project_id, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![uid, b.role.as_str(), b.project.clone().unwrap_or_default(), agenfleet_protocol::now_ms() as i64],
            )
        })
    })?;
    if n == 0 {
        return Err(RoleError::Exists(format!(
            "uid {uid} already holds {}",
            b.to_wire()
        )));
    }
    Ok(())
}

pub fn revoke(store: &Store, uid: u32, b: &Binding) -> Result<(), RoleError> {
    let n = store.tenant(&b.tenant).with(|c| {
        crate::store::tenant::changes(c, |c| {
            c.execute(
                "DELETE FROM t_role_bindings WHERE uid = ?1 AND role = ?2 AND project_id = ?3",
                params![uid, b.role.as_str(), b.project.clone().unwrap_or_default()],
            )
        })
    })?;
    if n == 0 {
        return Err(RoleError::NotFound(format!(
            "uid {uid} does not hold {}",
            b.to_wire()
        )));
    }
    Ok(())
}

/// One operator and its bindings, from the store.
pub fn load_operator(store: &Store, uid: u32) -> Result<Option<Caller>, StoreError> {
    let Some((name, role)) = store.operator_by_uid(uid)? else {
        return Ok(None);
    };
    // A dedicated tenant's bindings are in its own file: every file is asked.
    let mut rows: Vec<(String, String, String)> = store.rows_everywhere(
        "SELECT tenant_id, project_id, role FROM role_bindings WHERE uid = ?1",
        &[&uid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    rows.sort();
    let bindings = rows
        .into_iter()
        .filter_map(|(tenant, project, role)| {
            Some(Binding {
                role: ScopedRole::parse(&role)?,
                tenant,
                project: (!project.is_empty()).then_some(project),
            })
        })
        .collect();
    Ok(Some(Caller {
        uid,
        operator: name,
        platform_admin: role == "platform_admin",
        known: true,
        bindings,
        token: None,
        denial: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(bindings: Vec<(ScopedRole, &str, Option<&str>)>) -> Caller {
        Caller {
            uid: 1000,
            operator: "m".into(),
            platform_admin: false,
            known: true,
            bindings: bindings
                .into_iter()
                .map(|(role, t, p)| Binding {
                    role,
                    tenant: t.into(),
                    project: p.map(str::to_string),
                })
                .collect(),
            token: None,
            denial: None,
        }
    }

    #[test]
    fn one_scope_check_decides_what_each_caller_sees() {
        let viewer = member(vec![(ScopedRole::ProjectViewer, "acme", Some("web"))]);
        let admin = member(vec![(ScopedRole::TenantAdmin, "acme", None)]);
        let mut platform = member(vec![]);
        platform.platform_admin = true;
        let rows: [(Option<&str>, Option<&str>); 5] = [
            (Some("acme"), Some("web")),
            (Some("acme"), Some("api")),
            (Some("acme"), None),
            (Some("beta"), Some("web")),
            (None, None),
        ];
        let seen = |c: &Caller, p| -> Vec<bool> {
            rows.iter().map(|(t, pr)| c.sees_row(p, *t, *pr)).collect()
        };
        assert_eq!(
            seen(&viewer, P::FleetRead),
            [true, false, false, false, false]
        );
        assert_eq!(seen(&admin, P::FleetRead), [true, true, true, false, false]);
        assert_eq!(seen(&admin, P::AuditRead), [true, true, true, false, false]);
        assert_eq!(seen(&platform, P::AuditRead), [true; 5]);
        assert_eq!(
            seen(&viewer, P::AuditRead),
            [true, false, false, false, false],
            "a viewer reads its own project's records only"
        );
    }

    #[test]
    fn roles_are_scoped_and_split() {
        let v = member(vec![(ScopedRole::ProjectViewer, "acme", Some("web"))]);
        assert!(v.can(P::FleetRead, Scope::Project("acme", "web")));
        assert!(!v.can(P::FleetRead, Scope::Project("acme", "db")));
        assert!(!v.can(P::FleetRead, Scope::Project("other", "web")));
        assert!(
            !v.can(P::LogsRead, Scope::Project("acme", "web")),
            "viewing ≠ using"
        );
        let e = v
            .require(P::AgentControl, Scope::Project("acme", "web"))
            .unwrap_err();
        assert!(
            e.message
                .contains("needs agents.control on project acme/web"),
            "{}",
            e.message
        );
        let c = member(vec![(ScopedRole::ProjectContributor, "acme", Some("web"))]);
        assert!(c.can(P::AgentControl, Scope::Project("acme", "web")));
        assert!(
            !c.can(P::CredsWrite, Scope::Project("acme", "web")),
            "using ≠ rotating"
        );
        let t = member(vec![(ScopedRole::TenantAdmin, "acme", None)]);
        assert!(t.can(P::CredsWrite, Scope::Project("acme", "any")));
        assert!(
            !t.can(P::VaultAdmin, Scope::Platform),
            "platform powers stay with platform admins"
        );
        assert!(!t.can(P::FleetRead, Scope::Project("other", "x")));
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        let pa = member(vec![(ScopedRole::ProjectAdmin, "acme", Some("web"))]);
        assert!(pa
            .may_grant(ScopedRole::ProjectViewer, "acme", Some("web"))
            .is_ok());
        assert!(pa
            .may_grant(ScopedRole::ProjectAdmin, "acme", Some("web"))
            .is_ok());
        assert!(pa
            .may_grant(ScopedRole::ProjectViewer, "acme", Some("db"))
            .is_err());
        assert!(pa.may_grant(ScopedRole::TenantAdmin, "acme", None).is_err());
        let c = member(vec![(ScopedRole::ProjectContributor, "acme", Some("web"))]);
        assert!(c
            .may_grant(ScopedRole::ProjectViewer, "acme", Some("web"))
            .is_err());
        let t = member(vec![(ScopedRole::TenantAdmin, "acme", None)]);
        assert!(t.may_grant(ScopedRole::TenantAdmin, "acme", None).is_ok());
        assert!(t
            .may_grant(ScopedRole::ProjectViewer, "other", Some("x"))
            .is_err());
    }
}
