//! Operators, roles, tenants and tokens: who may connect and what they may do. Granting
//! needs the power to grant what is granted; deleting a tenant purges everything in it; a tenant is created in, and moved between,
//! the isolation tiers (`store::tiers`);
//! tokens are minted by the operator they belong to, scoped, expiring, stored hashed, and a
//! revocation applies at once on every connection.

use super::guard::{operator_info, role_err};
use super::FleetService;
use crate::authz::{Permission, Scope, ScopedRole};
use crate::runtime::Cmd;
use crate::store::{AgentKey, Tier};
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

    /// Tenants as `tenants list` shows them (the store and the fleet read once).
    fn tenant_infos(
        &self,
        tenants: &[String],
    ) -> Result<Vec<agenfleet_protocol::TenantInfo>, ApiError> {
        let store = &self.rt.store;
        let internal = |e: crate::store::StoreError| ApiError::internal(e.to_string());
        let retention: std::collections::HashMap<String, f64> = store
            .tenant_audit_retention()
            .map_err(internal)?
            .into_iter()
            .collect();
        let mut agents: std::collections::HashMap<String, u32> = Default::default();
        let (_, _, views) = self.rt.fleet.snapshot(|v| tenants.contains(&v.tenant));
        for v in views {
            *agents.entry(v.tenant).or_default() += 1;
        }
        tenants
            .iter()
            .map(|t| {
                let tier = store.tier_of(t).map_err(internal)?;
                Ok(agenfleet_protocol::TenantInfo {
                    tenant: t.clone(),
                    tier: tier.as_str().to_string(),
                    file: (tier == Tier::Dedicated)
                        .then(|| format!("{}/{t}.db", crate::store::tiers::TENANTS_DIR)),
                    agents: agents.get(t).copied().unwrap_or(0),
                    audit_retention_days: retention.get(t).copied(),
                })
            })
            .collect()
    }

    pub(super) async fn do_tenants_list(
        &self,
    ) -> Result<Vec<agenfleet_protocol::TenantInfo>, ApiError> {
        self.check_any(Permission::FleetRead, "tenants_list")
            .await?;
        let caller = self.caller();
        let ids: Vec<String> = self
            .rt
            .store
            .tenant_ids()
            .map_err(|e| ApiError::internal(e.to_string()))?
            .into_iter()
            // A tenant the caller holds any role in (a project's too).
            .filter(|t| {
                caller.sees_row(Permission::FleetRead, Some(t), None)
                    || caller.bindings.iter().any(|b| b.tenant == *t)
            })
            .collect();
        self.tenant_infos(&ids)
    }

    fn parse_tier(tier: &str) -> Result<Tier, ApiError> {
        Tier::parse(tier).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown tier `{tier}`: give `standard` or `dedicated`"
            ))
        })
    }

    pub(super) async fn do_tenants_create(
        &self,
        tenant: String,
        tier: String,
    ) -> Result<agenfleet_protocol::TenantInfo, ApiError> {
        self.check(
            Permission::OperatorsAdmin,
            Scope::Platform,
            "tenants_create",
        )
        .await?;
        agenfleet_protocol::spec::check_name("tenant", &tenant).map_err(ApiError::invalid)?;
        let t = Self::parse_tier(&tier)?;
        let store = self.rt.store.clone();
        let name = tenant.clone();
        self.audited(
            "tenant.create",
            None,
            format!("tenant {tenant}: created, {} tier", t.as_str()),
            async move {
                tokio::task::spawn_blocking(move || store.create_tenant(&name, t))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(store_api_error)
            },
        )
        .await?;
        self.rt.authz.invalidate();
        self.tenant_infos(std::slice::from_ref(&tenant))?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal(format!("tenant {tenant} vanished")))
    }

    pub(super) async fn do_tenants_move(
        &self,
        tenant: String,
        tier: String,
    ) -> Result<agenfleet_protocol::TenantMoved, ApiError> {
        self.check(Permission::OperatorsAdmin, Scope::Platform, "tenants_move")
            .await?;
        agenfleet_protocol::spec::check_name("tenant", &tenant).map_err(ApiError::invalid)?;
        let to = Self::parse_tier(&tier)?;
        let store = self.rt.store.clone();
        let name = tenant.clone();
        // Recorded before (requested), and after with every table's rows and digest.
        self.rt
            .audit_event(self.event(
                "tenant.move",
                None,
                "requested",
                format!("tenant {tenant}: to the {} tier", to.as_str()),
            ))
            .await?;
        let moved = tokio::task::spawn_blocking(move || store.move_tenant(&name, to))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
            .and_then(|r| r.map_err(store_api_error));
        let (outcome, detail) = match &moved {
            Ok(r) => (
                "ok",
                serde_json::json!({
                    "tenant": tenant,
                    "from": r.from.as_str(),
                    "to": r.to.as_str(),
                    "held_ms": r.held_ms,
                    "tables": r.tables.iter().map(|t| serde_json::json!({
                        "table": t.table, "rows": t.rows, "sha256": t.sha256,
                    })).collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            Err(e) => ("failed", format!("tenant {tenant}: {}", e.message)),
        };
        if let Err(e) = self
            .rt
            .audit_event(self.event("tenant.move", None, outcome, detail))
            .await
        {
            tracing::error!(error = %e.message, "cannot record the outcome of tenant.move");
        }
        let r = moved?;
        tracing::info!(tenant = %tenant, to = r.to.as_str(), held_ms = r.held_ms, "tenant moved");
        Ok(agenfleet_protocol::TenantMoved {
            tenant,
            from: r.from.as_str().into(),
            to: r.to.as_str().into(),
            tables: r
                .tables
                .into_iter()
                .map(|t| agenfleet_protocol::MovedTable {
                    table: t.table,
                    rows: t.rows,
                    sha256: t.sha256,
                })
                .collect(),
            held_ms: r.held_ms,
        })
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

/// A store error as the caller should see it: unknown and existing names, and bad input,
/// as such; the rest as internal.
fn store_api_error(e: crate::store::StoreError) -> ApiError {
    use crate::store::StoreError as E;
    match e {
        E::NotFound(m) => ApiError::not_found(m),
        E::Exists(m) => ApiError::exists(format!("{m} exists already")),
        E::Invalid(m) => ApiError::invalid(m),
        e => ApiError::internal(e.to_string()),
    }
}
