//! Operators, roles, tenants and tokens: who may connect and what they may do. Granting
//! needs the power to grant what is granted; deleting a tenant purges everything in it;
//! tokens are minted by the operator they belong to, scoped, expiring, stored hashed, and a
//! revocation applies at once on every connection.

use super::guard::{operator_info, role_err};
use super::FleetService;
use crate::authz::{Permission, Scope, ScopedRole};
use crate::runtime::Cmd;
use crate::store::AgentKey;
use agenfleet_protocol::{
    ApiError, CallerInfo, NewToken, OperatorInfo, RoleBinding, SecretValue, TokenInfo,
};

impl FleetService {
    pub(super) async fn do_operators_list(&self) -> Result<Vec<OperatorInfo>, ApiError> {
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

    pub(super) async fn do_operators_add(
        &self,
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

    pub(super) async fn do_operators_remove(&self, uid: u32) -> Result<(), ApiError> {
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

    pub(super) async fn do_roles_grant(
        &self,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.role_change(uid, binding, true).await
    }

    pub(super) async fn do_roles_revoke(
        &self,
        uid: u32,
        binding: RoleBinding,
    ) -> Result<OperatorInfo, ApiError> {
        self.role_change(uid, binding, false).await
    }

    pub(super) async fn do_tenants_set(
        &self,
        tenant: String,
        audit_retention_days: Option<f64>,
    ) -> Result<agenfleet_protocol::TenantSettings, ApiError> {
        self.check(Permission::OperatorsAdmin, Scope::Platform, "tenants_set")
            .await?;
        if let Err(e) = agenfleet_protocol::spec::check_name("tenant", &tenant) {
            return Err(ApiError::invalid(e));
        }
        if let Some(d) = audit_retention_days {
            if !(0.0..=36_500.0).contains(&d) {
                return Err(ApiError::invalid(format!(
                    "audit retention of {d} days: it must be between 0 (for ever) and 36500"
                )));
            }
        }
        let rt = self.rt.clone();
        let t = tenant.clone();
        let detail = match audit_retention_days {
            Some(d) => format!("tenant {tenant}: its audit records kept {d} days (0: for ever)"),
            None => format!("tenant {tenant}: its audit records kept as the platform's"),
        };
        self.audited("tenant.set", None, detail, async move {
            let found = rt
                .store
                .set_tenant_audit_retention(&t, audit_retention_days)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if !found {
                return Err(ApiError::not_found(format!("no tenant `{t}`")));
            }
            Ok(agenfleet_protocol::TenantSettings {
                tenant: t,
                audit_retention_days,
            })
        })
        .await
    }

    pub(super) async fn do_tenants_delete(&self, tenant: String) -> Result<u32, ApiError> {
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
                    let exists = rt
                        .store
                        .tenant_exists(&t)
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
                        rt.policy.escalations.abandon_agent(&key);
                        purged += 1;
                    }
                    rt.store.delete_tenant_rows(&t).map_err(|e| {
                        ApiError::internal(format!("cannot delete the tenant's rows: {e}"))
                    })?;
                    // Its escalations (the calls' arguments are its data) go too.
                    rt.policy.escalations.forget_tenant(&t)?;
                    // Its providers, connections and usage went with its rows.
                    rt.upstreams.forget_tenant(&t);
                    Ok(purged)
                },
            )
            .await?;
        self.rt.authz.invalidate();
        Ok(n)
    }

    pub(super) async fn do_authenticate(&self, token: SecretValue) -> Result<CallerInfo, ApiError> {
        let c = self.rt.authz.token_caller(&token);
        if let Some(d) = &c.denial {
            let e = ApiError::denied(d.clone());
            return Err(self.refused("authenticate", e).await);
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(c.info())
    }

    pub(super) async fn do_tokens_create(
        &self,
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

    pub(super) async fn do_tokens_list(&self) -> Result<Vec<TokenInfo>, ApiError> {
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

    pub(super) async fn do_tokens_revoke(&self, id: String) -> Result<TokenInfo, ApiError> {
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
}
