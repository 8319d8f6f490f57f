//! The operator side of providers and connections: add, change, list, history, remove
//! (tenant admins, at tenant level: `upstreams.write`; anyone who sees the tenant reads
//! them) and model usage. Every change is recorded with the key's HMAC, never the key,
//! before it takes effect; another tenant's answers like a tenant that does not exist.

use super::FleetService;
use crate::authz::{Permission, Scope};
use crate::store::AgentKey;
use agenfleet_protocol::upstream::UsageRow;
use agenfleet_protocol::{ApiError, SecretValue, UpstreamClass, UpstreamSpec, UpstreamView};

const MAX_NOTE: usize = 1024;

fn tenant_key(tenant: &str) -> AgentKey {
    AgentKey {
        tenant: tenant.to_string(),
        name: String::new(),
    }
}

impl FleetService {
    /// The tenants whose providers the caller may read: `only`, or every one it sees.
    async fn readable_tenants(
        &self,
        only: Option<String>,
        rpc: &str,
    ) -> Result<Vec<String>, ApiError> {
        if let Some(t) = only {
            self.visible_tenant(&t, rpc).await?;
            return Ok(vec![t]);
        }
        self.check_any(Permission::FleetRead, rpc).await?;
        let c = self.caller();
        if c.platform_admin {
            return self
                .rt
                .store
                .tenant_ids()
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        let mut ts: Vec<String> = c.bindings.iter().map(|b| b.tenant.clone()).collect();
        ts.sort();
        ts.dedup();
        Ok(ts)
    }

    async fn upstream_writer(&self, tenant: &str, rpc: &str) -> Result<(), ApiError> {
        self.check_any(Permission::UpstreamsWrite, rpc).await?;
        if let Err(e) = agenfleet_protocol::names::check_name("tenant", tenant) {
            return Err(self.refused(rpc, ApiError::invalid(e)).await);
        }
        // A tenant the caller administers may be new (its first provider creates it).
        self.check(Permission::UpstreamsWrite, Scope::Tenant(tenant), rpc)
            .await
    }

    pub(super) async fn do_upstreams_put(
        &self,
        spec: UpstreamSpec,
        key: Option<SecretValue>,
        create: bool,
        note: String,
    ) -> Result<UpstreamView, ApiError> {
        let rpc = "upstreams_put";
        self.upstream_writer(&spec.tenant, rpc).await?;
        if note.len() > MAX_NOTE {
            return Err(ApiError::invalid(format!(
                "note too long: {} bytes (at most {MAX_NOTE})",
                note.len()
            )));
        }
        if let Err(e) = spec.validate() {
            return Err(self
                .refused(
                    rpc,
                    ApiError::invalid(format!("{} `{}`: {e}", spec.class, spec.name)),
                )
                .await);
        }
        let hmac = match &key {
            Some(k) => match self.rt.vault.hmac(k) {
                Ok(h) => format!("new key (hmac {h}, {} bytes)", k.len()),
                Err(e) => return Err(self.refused(rpc, super::vault_err(e)).await),
            },
            None => "key kept".to_string(),
        };
        let detail = format!(
            "{} {}: kind {}, {} , auth {}, fallbacks [{}], {}{}",
            spec.class,
            spec.name,
            spec.kind,
            spec.base_url,
            spec.auth,
            spec.fallbacks.join(", "),
            hmac,
            if spec.ca_pem.is_some() {
                ", own CA"
            } else {
                ""
            },
        );
        let action = format!(
            "{}.{}",
            spec.class.as_str(),
            if create { "add" } else { "set" }
        );
        let author = self.actor();
        let ups = &self.rt.upstreams;
        let key_ref = key.as_ref();
        let tenant = spec.tenant.clone();
        self.audited(&action, Some(&tenant_key(&tenant)), detail, async move {
            ups.put(spec, key_ref, create, &author, &note)
                .map_err(ApiError::from)
        })
        .await
    }

    pub(super) async fn do_upstreams_list(
        &self,
        tenant: Option<String>,
    ) -> Result<Vec<UpstreamView>, ApiError> {
        let mut out = Vec::new();
        for t in self.readable_tenants(tenant, "upstreams_list").await? {
            out.extend(self.rt.upstreams.list(&t)?);
        }
        Ok(out)
    }

    pub(super) async fn do_upstreams_history(
        &self,
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<Vec<UpstreamView>, ApiError> {
        self.visible_tenant(&tenant, "upstreams_history").await?;
        let h = self.rt.upstreams.history(&tenant, &name)?;
        if h.last().is_some_and(|v| v.spec.class != class) {
            return Err(ApiError::not_found(format!(
                "tenant {tenant} has no {class} named `{name}`"
            )));
        }
        Ok(h)
    }

    pub(super) async fn do_upstreams_remove(
        &self,
        class: UpstreamClass,
        tenant: String,
        name: String,
    ) -> Result<UpstreamView, ApiError> {
        let rpc = "upstreams_remove";
        self.upstream_writer(&tenant, rpc).await?;
        let author = self.actor();
        let ups = &self.rt.upstreams;
        let (t, n) = (tenant.clone(), name.clone());
        self.audited(
            &format!("{}.remove", class.as_str()),
            Some(&tenant_key(&tenant)),
            format!("{class} {name}"),
            async move { ups.remove(class, &t, &n, &author).map_err(ApiError::from) },
        )
        .await
    }

    pub(super) async fn do_usage(&self, tenant: Option<String>) -> Result<Vec<UsageRow>, ApiError> {
        let tenants = self.readable_tenants(tenant, "usage").await?;
        let c = self.caller();
        let now = agenfleet_protocol::now_ms();
        // A tenant's total for those who see the whole tenant; agents by what the caller sees.
        let (_, _, visible) = self
            .rt
            .fleet
            .snapshot(|v| tenants.contains(&v.tenant) && c.sees(v));
        let whole = |t: &str| {
            c.platform_admin
                || c.bindings
                    .iter()
                    .any(|b| b.tenant == t && b.project.is_none())
        };
        Ok(self.rt.upstreams.meter.rows(now, |t, a| {
            if a.is_empty() {
                tenants.iter().any(|x| x == t) && whole(t)
            } else {
                visible.iter().any(|v| v.tenant == t && v.name == a)
            }
        }))
    }
}
