//! The operator side of tool-call policy: scopes and tenant policies (show, publish,
//! rollback, validate, test) and the escalations queue (list, approve, deny). Each call
//! checks its permission where the data lives (the agent's project, or the tenant for
//! tenant policies); another tenant's ids answer like ids that do not exist.

use super::FleetService;
use crate::authz::{Permission, Scope};
use crate::policy::escalations::Resolution;
use crate::policy::Kind;
use crate::store::AgentKey;
use agenfleet_protocol::policy::{
    EscalationView, PolicyCase, PolicyCaseResult, PolicyProblem, PolicyVersion, VersionHistory,
};
use agenfleet_protocol::{AgentRef, ApiError};

const MAX_NOTE: usize = 1024;
const MAX_CASES: usize = 10_000;

fn check_note(note: &str) -> Result<(), ApiError> {
    if note.len() > MAX_NOTE {
        return Err(ApiError::invalid(format!(
            "note too long: {} bytes (at most {MAX_NOTE})",
            note.len()
        )));
    }
    Ok(())
}

impl FleetService {
    /// A tenant the caller may see something of; others answer like unknown tenants.
    pub(super) async fn visible_tenant(&self, tenant: &str, rpc: &str) -> Result<(), ApiError> {
        self.check_any(Permission::FleetRead, rpc).await?;
        let c = self.caller();
        let known = self
            .rt
            .store
            .tenant_exists(tenant)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sees = c.platform_admin || c.bindings.iter().any(|b| b.tenant == tenant);
        if known && sees {
            Ok(())
        } else {
            Err(self
                .refused(
                    rpc,
                    ApiError::not_found(format!("no tenant named {tenant}")),
                )
                .await)
        }
    }

    pub(super) async fn do_scopes_show(&self, agent: AgentRef) -> Result<VersionHistory, ApiError> {
        let key = self
            .find_for(&agent, Permission::FleetRead, "scopes_show")
            .await?;
        self.rt.policy.history(Kind::Scopes, &key.tenant, &key.name)
    }

    pub(super) async fn do_scopes_publish(
        &self,
        agent: AgentRef,
        text: String,
        note: String,
        rpc: &str,
    ) -> Result<PolicyVersion, ApiError> {
        let key = self.find_for(&agent, Permission::ScopesWrite, rpc).await?;
        check_note(&note)?;
        // Validation first: bad scopes are refused (and the refusal audited) unchanged.
        if let Err(e) = crate::policy::PolicyEngine::check_scopes(&text) {
            return Err(self.refused(rpc, e).await);
        }
        self.publish(Kind::Scopes, &key, text, note).await
    }

    async fn publish(
        &self,
        kind: Kind,
        key: &AgentKey,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError> {
        let (action, what) = match kind {
            Kind::Scopes => ("scopes.publish", format!("scopes of {key}")),
            Kind::Policy => ("policy.publish", format!("policy of tenant {}", key.tenant)),
        };
        let detail = format!(
            "{what}: {} bytes, sha256 {}{}",
            text.len(),
            &crate::policy::sha256_hex(&[&text])[..16],
            if note.is_empty() {
                String::new()
            } else {
                format!("; note: {note}")
            }
        );
        let author = self.actor();
        let rt = self.rt.clone();
        let k = key.clone();
        let audit_key = (kind == Kind::Scopes).then_some(key);
        let out = self
            .audited(action, audit_key, detail, async move {
                rt.policy
                    .publish(kind, &k.tenant, &k.name, &text, &author, &note)
            })
            .await?;
        if kind == Kind::Scopes {
            self.rt.incidents.scopes_changed(key);
        }
        Ok(out)
    }

    pub(super) async fn do_scopes_rollback(
        &self,
        agent: AgentRef,
        version: u32,
    ) -> Result<PolicyVersion, ApiError> {
        let key = self
            .find_for(&agent, Permission::ScopesWrite, "scopes_rollback")
            .await?;
        let h = self
            .rt
            .policy
            .history(Kind::Scopes, &key.tenant, &key.name)?;
        let Some(old) = h.versions.iter().find(|v| v.version == version) else {
            return Err(ApiError::not_found(format!(
                "agent {key} has no scopes version {version} (versions 1..{})",
                h.current
            )));
        };
        let note = format!("rollback to v{version}");
        self.publish(Kind::Scopes, &key, old.text.clone(), note)
            .await
    }

    pub(super) async fn do_policy_show(&self, tenant: String) -> Result<VersionHistory, ApiError> {
        self.visible_tenant(&tenant, "policy_show").await?;
        self.rt.policy.history(Kind::Policy, &tenant, "")
    }

    pub(super) async fn do_policy_publish(
        &self,
        tenant: String,
        text: String,
        note: String,
    ) -> Result<PolicyVersion, ApiError> {
        self.visible_tenant(&tenant, "policy_publish").await?;
        self.check(
            Permission::PolicyWrite,
            Scope::Tenant(&tenant),
            "policy_publish",
        )
        .await?;
        check_note(&note)?;
        let problems = self.rt.policy.check_policy(&text);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            let e = ApiError::invalid(format!(
                "invalid policy ({} problem(s)): {}",
                problems.len(),
                list.join("; ")
            ));
            return Err(self.refused("policy_publish", e).await);
        }
        let key = AgentKey {
            tenant,
            name: String::new(),
        };
        self.publish(Kind::Policy, &key, text, note).await
    }

    pub(super) async fn do_policy_rollback(
        &self,
        tenant: String,
        version: u32,
    ) -> Result<PolicyVersion, ApiError> {
        self.visible_tenant(&tenant, "policy_rollback").await?;
        self.check(
            Permission::PolicyWrite,
            Scope::Tenant(&tenant),
            "policy_rollback",
        )
        .await?;
        let h = self.rt.policy.history(Kind::Policy, &tenant, "")?;
        let Some(old) = h.versions.iter().find(|v| v.version == version) else {
            return Err(ApiError::not_found(format!(
                "tenant {tenant} has no policy version {version} (versions 1..{})",
                h.current
            )));
        };
        let key = AgentKey {
            tenant,
            name: String::new(),
        };
        let text = old.text.clone();
        self.publish(Kind::Policy, &key, text, format!("rollback to v{version}"))
            .await
    }

    pub(super) async fn do_policy_validate(
        &self,
        text: String,
    ) -> Result<Vec<PolicyProblem>, ApiError> {
        self.check_any(Permission::FleetRead, "policy_validate")
            .await?;
        Ok(self.rt.policy.check_policy(&text))
    }

    pub(super) async fn do_policy_test(
        &self,
        tenant: String,
        candidate: Option<String>,
        cases: Vec<PolicyCase>,
    ) -> Result<Vec<PolicyCaseResult>, ApiError> {
        self.visible_tenant(&tenant, "policy_test").await?;
        if cases.len() > MAX_CASES {
            return Err(ApiError::invalid(format!(
                "too many cases: {} (at most {MAX_CASES})",
                cases.len()
            )));
        }
        // Compiled once for every case.
        let candidate = match candidate.as_deref().map(|t| self.rt.policy.compile(t)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(problems)) => {
                let first = problems.first().map(|p| p.to_string()).unwrap_or_default();
                return Err(ApiError::invalid(format!(
                    "the candidate policy is invalid ({} problem(s)): {first}",
                    problems.len()
                )));
            }
        };
        let mut out = Vec::with_capacity(cases.len());
        for case in cases {
            let r = AgentRef {
                tenant: Some(tenant.clone()),
                name: case.agent.clone(),
            };
            let key = self
                .find_for(&r, Permission::FleetRead, "policy_test")
                .await
                .map_err(|e| {
                    ApiError::new(e.code, format!("case `{}`: {}", case.name, e.message))
                })?;
            let (_, project) = self.agent_scope(&key);
            let ev = self
                .rt
                .policy
                .evaluate(&key, &project, &case.call, candidate.as_ref());
            out.push(PolicyCaseResult {
                name: case.name,
                expect: case.expect,
                got: ev.verdict,
                reason: ev.reason,
                policies: ev.policies,
            });
        }
        Ok(out)
    }

    fn sees_escalation(&self, v: &EscalationView) -> bool {
        self.caller()
            .sees_row(Permission::FleetRead, Some(&v.tenant), Some(&v.project))
    }

    pub(super) async fn do_escalations_list(
        &self,
        all: bool,
    ) -> Result<Vec<EscalationView>, ApiError> {
        self.check_any(Permission::FleetRead, "escalations_list")
            .await?;
        Ok(self
            .rt
            .policy
            .escalations
            .list(all, |v| self.sees_escalation(v)))
    }

    pub(super) async fn do_escalation_decide(
        &self,
        id: u64,
        request_hash: String,
        approve: bool,
        reason: String,
    ) -> Result<EscalationView, ApiError> {
        let rpc = if approve {
            "escalation_approve"
        } else {
            "escalation_deny"
        };
        self.check_any(Permission::EscalationsDecide, rpc).await?;
        let view = match self.rt.policy.escalations.get(id) {
            Some(v) if self.sees_escalation(&v) => v,
            _ => {
                return Err(self
                    .refused(rpc, ApiError::not_found(format!("no escalation {id}")))
                    .await)
            }
        };
        self.check(
            Permission::EscalationsDecide,
            Scope::Project(&view.tenant, &view.project),
            rpc,
        )
        .await?;
        let reason = reason.trim().to_string();
        if reason.is_empty() || reason.len() > MAX_NOTE {
            return Err(self
                .refused(
                    rpc,
                    ApiError::invalid(format!("a reason is required (1 to {MAX_NOTE} bytes)")),
                )
                .await);
        }
        if view.request_hash != request_hash {
            // Refused before anything is recorded as requested; the refusal is audited.
            let e = ApiError::invalid(format!(
                "the decision names request {} but escalation {id} is for request {}: an approval is bound to one exact request",
                crate::policy::escalations::short(&request_hash),
                crate::policy::escalations::short(&view.request_hash),
            ));
            return Err(self.refused(rpc, e).await);
        }
        let key = AgentKey {
            tenant: view.tenant.clone(),
            name: view.agent.clone(),
        };
        let detail = format!(
            "escalation {id}: {} {} (request {}); reason: {reason}",
            view.tool,
            if approve { "approved" } else { "denied" },
            crate::policy::escalations::short(&view.request_hash),
        );
        let res = Resolution {
            approved: approve,
            reviewer: self.actor(),
            reason,
        };
        let rt = self.rt.clone();
        let action = if approve {
            "escalation.approve"
        } else {
            "escalation.deny"
        };
        // Audit before effect: the reviewer's decision is durable before the agent is
        // released.
        let out = self
            .audited(action, Some(&key), detail, async move {
                rt.policy.escalations.resolve(id, &request_hash, res)
            })
            .await?;
        let n = self.rt.policy.escalations.pending_for(&key);
        self.rt.fleet.set_escalations(&key, n);
        Ok(out)
    }
}
