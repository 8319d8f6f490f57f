//! Agents' specs over time: create, apply (a new version, in place or with a new
//! container), one version, the history, rollback. Changing a spec needs `agent.create`
//! at the agent's project (as creating it does); reading it, `fleet.read`. Each change is
//! recorded before it takes effect, with the version and what it changes.

use super::FleetService;
use crate::authz::{Permission, Scope};
use crate::store::AgentKey;
use agenfleet_protocol::spec::{ApplyAction, ApplyOutcome, SpecChange, SpecVersion};
use agenfleet_protocol::{AgentRef, AgentSpec, AgentView, ApiError};

impl FleetService {
    /// Creates an agent (the permission was checked by the caller).
    pub(super) async fn do_create(&self, spec: AgentSpec) -> Result<AgentView, ApiError> {
        let key = AgentKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        };
        let detail = format!("image {}, spec {}", spec.image, spec.hash());
        let rt = self.rt.clone();
        let author = self.caller().operator.clone();
        let view = self
            .audited("agent.create", Some(&key), detail, rt.create(spec, &author))
            .await?;
        // A tenant deleted while its agents' purges wait is in use again: it stays.
        if let Err(e) = self.rt.store.cancel_tenant_purge(&key.tenant) {
            tracing::error!(tenant = %key.tenant, error = %e, "cannot keep the tenant");
        }
        Ok(view)
    }

    pub(super) async fn do_apply(
        &self,
        spec: AgentSpec,
        expected: Option<u32>,
    ) -> Result<ApplyOutcome, ApiError> {
        self.check(
            Permission::AgentCreate,
            Scope::Project(&spec.tenant, &spec.project),
            "agents_apply",
        )
        .await?;
        let key = AgentKey {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
        };
        let Some(old) = self
            .rt
            .fleet
            .get(&key)
            .and_then(|_| self.rt.agent_spec(&key))
        else {
            if expected.is_some_and(|v| v > 0) {
                return Err(ApiError::precondition(format!(
                    "agent {key} does not exist (any more): version {} was expected",
                    expected.unwrap_or(0)
                )));
            }
            let agent = self.do_create(spec).await?;
            return Ok(ApplyOutcome {
                action: ApplyAction::Created,
                version: 1,
                change: SpecChange {
                    fields: Vec::new(),
                    recreate: true,
                },
                agent,
            });
        };
        // At the project the agent is in (a spec naming another is refused below).
        self.check_agent(Permission::AgentCreate, &key, "agents_apply")
            .await?;
        self.put_in_force(key, old, spec, expected, "").await
    }

    /// Records the change and has the agent's runner put the spec in force.
    async fn put_in_force(
        &self,
        key: AgentKey,
        old: AgentSpec,
        spec: AgentSpec,
        expected: Option<u32>,
        note_prefix: &str,
    ) -> Result<ApplyOutcome, ApiError> {
        let change = match spec.change_from(&old) {
            Ok(c) => c,
            Err(e) => {
                let e = ApiError::invalid(format!("invalid spec: {e}"));
                return Err(self.refused("agents_apply", e).await);
            }
        };
        let author = self.caller().operator.clone();
        if change.is_empty() {
            return self.rt.apply(spec, expected, &author, note_prefix).await;
        }
        let detail = format!(
            "{note_prefix}spec {} → {}: {}",
            old.hash(),
            spec.hash(),
            change.describe()
        );
        let rt = self.rt.clone();
        self.audited(
            "agent.apply",
            Some(&key),
            detail,
            rt.apply(spec, expected, &author, note_prefix),
        )
        .await
    }

    pub(super) async fn do_agents_spec(
        &self,
        agent: AgentRef,
        version: Option<u32>,
    ) -> Result<SpecVersion, ApiError> {
        let key = self
            .find_for(&agent, Permission::FleetRead, "agents_spec")
            .await?;
        self.version_of(&key, version)
    }

    /// One version of the agent's spec (None: the one in force), read by itself.
    fn version_of(&self, key: &AgentKey, version: Option<u32>) -> Result<SpecVersion, ApiError> {
        let internal = |e: crate::store::StoreError| {
            ApiError::internal(format!("cannot read the spec history: {e}"))
        };
        if let Some(v) = self
            .rt
            .store
            .spec_version_at(key, version)
            .map_err(internal)?
        {
            return Ok(v);
        }
        let last = self.rt.store.spec_version(key).map_err(internal)?;
        Err(ApiError::not_found(format!(
            "agent {key} has no spec version {} (versions 1 to {last}: `agenfleet agents history {key}`)",
            version.unwrap_or(last)
        )))
    }

    pub(super) async fn do_rollback(
        &self,
        agent: AgentRef,
        version: u32,
    ) -> Result<ApplyOutcome, ApiError> {
        let key = self
            .find_for(&agent, Permission::AgentCreate, "agents_rollback")
            .await?;
        let target = self.version_of(&key, Some(version))?;
        let current = self.version_of(&key, None)?;
        self.put_in_force(
            key,
            current.spec,
            target.spec,
            Some(current.version),
            &format!("rollback to {version}: "),
        )
        .await
    }
}
