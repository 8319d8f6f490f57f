//! Triggers over the operator socket: `triggers_add`, `triggers_revoke` and
//! `triggers_rotate_secret` need `triggers.write` on the agent's project and are recorded
//! (`trigger.add|revoke|rotate-secret`, requested and then with the outcome; a token or a
//! secret never); `triggers_list` and `triggers_get` need `runs.read`, and a trigger of a
//! project the caller cannot see answers like an unknown id.

use super::FleetService;
use crate::authz::Permission;
use crate::store::AgentKey;
use agenfleet_protocol::triggers::{TriggerCreated, TriggerNew, TriggerView};
use agenfleet_protocol::{AgentRef, ApiError};

impl FleetService {
    /// A trigger the caller may see with `p`; others answer like unknown ids.
    async fn visible_trigger(
        &self,
        id: &str,
        p: Permission,
        rpc: &str,
    ) -> Result<TriggerView, ApiError> {
        self.check_any(p, rpc).await?;
        let v = self.rt.triggers.get(id)?;
        match v {
            Some(v) if self.caller().sees_row(p, Some(&v.tenant), Some(&v.project)) => Ok(v),
            _ => Err(self
                .refused(rpc, ApiError::not_found(format!("no trigger {id}")))
                .await),
        }
    }

    fn created(
        &self,
        trigger: TriggerView,
        token: Option<agenfleet_protocol::SecretValue>,
        secret: Option<agenfleet_protocol::SecretValue>,
    ) -> TriggerCreated {
        let path = trigger.path();
        TriggerCreated {
            url: self.rt.cfg.http.base_url().map(|b| format!("{b}{path}")),
            path,
            trigger,
            token,
            secret,
        }
    }

    pub(super) async fn do_triggers_add(
        &self,
        agent: AgentRef,
        new: TriggerNew,
    ) -> Result<TriggerCreated, ApiError> {
        let key = self
            .find_for(&agent, Permission::TriggersWrite, "triggers_add")
            .await?;
        let (_, project) = self.agent_scope(&key);
        let detail = match &new {
            TriggerNew::Webhook { rate_per_min } => {
                serde_json::json!({"kind": "webhook", "rate_per_min": rate_per_min})
            }
            TriggerNew::Schedule {
                cron,
                catch_up,
                overlap,
                input_json,
            } => serde_json::json!({
                "kind": "schedule",
                "cron": cron,
                "catch_up": catch_up.as_str(),
                "overlap": overlap,
                "input_bytes": input_json.len(),
            }),
        };
        let actor = self.actor();
        let (view, token, secret) = self
            .audited_with(
                "trigger.add",
                Some(&key),
                detail.to_string(),
                async { self.rt.triggers.add(&key, &project, &actor, &new) },
                |(v, _, _)| {
                    let mut d = detail.clone();
                    d["trigger"] = v.id.clone().into();
                    d.to_string()
                },
            )
            .await?;
        tracing::info!(trigger = %view.id, agent = %view.agent_ref(), kind = view.kind.as_str(), "trigger added");
        Ok(self.created(view, token, secret))
    }

    pub(super) async fn do_triggers_list(
        &self,
        agent: Option<AgentRef>,
    ) -> Result<Vec<TriggerView>, ApiError> {
        self.check_any(Permission::RunsRead, "triggers_list")
            .await?;
        let key = match &agent {
            Some(a) => Some(
                self.find_for(a, Permission::RunsRead, "triggers_list")
                    .await?,
            ),
            None => None,
        };
        let caller = self.caller();
        Ok(self
            .rt
            .triggers
            .list(key.as_ref())?
            .into_iter()
            .filter(|v| caller.sees_row(Permission::RunsRead, Some(&v.tenant), Some(&v.project)))
            .collect())
    }

    pub(super) async fn do_triggers_get(&self, id: String) -> Result<TriggerView, ApiError> {
        self.visible_trigger(&id, Permission::RunsRead, "triggers_get")
            .await
    }

    /// The trigger named `id` for a change: visible, and `triggers.write` at its project.
    async fn trigger_for_change(
        &self,
        id: &str,
        rpc: &str,
    ) -> Result<(TriggerView, AgentKey), ApiError> {
        let v = self
            .visible_trigger(id, Permission::TriggersWrite, rpc)
            .await?;
        let key = AgentKey {
            tenant: v.tenant.clone(),
            name: v.agent.clone(),
        };
        self.check(
            Permission::TriggersWrite,
            crate::authz::Scope::Project(&v.tenant, &v.project),
            rpc,
        )
        .await?;
        Ok((v, key))
    }

    pub(super) async fn do_triggers_revoke(&self, id: String) -> Result<TriggerView, ApiError> {
        let (v, key) = self.trigger_for_change(&id, "triggers_revoke").await?;
        if v.revoked_ms.is_some() {
            return Ok(v);
        }
        let detail = serde_json::json!({"trigger": v.id, "kind": v.kind.as_str()});
        let out = self
            .audited("trigger.revoke", Some(&key), detail.to_string(), async {
                self.rt.triggers.revoke(&v)
            })
            .await?;
        tracing::info!(trigger = %id, "trigger revoked");
        Ok(out)
    }

    pub(super) async fn do_triggers_rotate_secret(
        &self,
        id: String,
        overlap_secs: u64,
    ) -> Result<TriggerCreated, ApiError> {
        let (v, key) = self
            .trigger_for_change(&id, "triggers_rotate_secret")
            .await?;
        let detail = serde_json::json!({"trigger": v.id, "overlap_secs": overlap_secs});
        let (view, secret) = self
            .audited(
                "trigger.rotate-secret",
                Some(&key),
                detail.to_string(),
                async { self.rt.triggers.rotate_secret(&v, overlap_secs) },
            )
            .await?;
        Ok(self.created(view, None, Some(secret)))
    }
}
