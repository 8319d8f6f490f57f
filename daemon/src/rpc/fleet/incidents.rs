//! The operator side of incidents: who sees which (an agent's incidents: those who see the
//! agent; platform-wide ones: platform admins, and everyone for the few that affect every
//! tenant — engine down, vault sealed, daemon down), and the lifecycle calls, each audited
//! before it takes effect.

use super::FleetService;
use crate::authz::{Caller, Permission, Scope};
use crate::incidents::Transition;
use agenfleet_protocol::incidents::{Incident, Matrix, OutboxRow, RoutesReport};
use agenfleet_protocol::{AgentRef, ApiError};

/// Platform-wide incidents every operator sees (they affect every tenant).
const PUBLIC: &[&str] = &["engine-down", "vault-sealed", "portal-unavailable"];

pub(crate) fn sees_incident(c: &Caller, i: &Incident) -> bool {
    let public = i.tenant.is_none()
        && PUBLIC.contains(&i.scenario.as_str())
        && c.holds_anywhere(Permission::FleetRead);
    public
        || c.sees_row(
            Permission::FleetRead,
            i.tenant.as_deref(),
            i.project.as_deref(),
        )
}

fn check_text(what: &str, s: &str, required: bool) -> Result<(), ApiError> {
    if required && s.trim().is_empty() {
        return Err(ApiError::invalid(format!("{what} is required")));
    }
    if s.len() > 2048 {
        return Err(ApiError::invalid(format!(
            "{what} is longer than 2048 bytes"
        )));
    }
    Ok(())
}

impl FleetService {
    /// The incident, if the caller may see it (else "no incident", audited).
    async fn visible_incident(&self, id: u64, rpc: &str) -> Result<Incident, ApiError> {
        self.check_any(Permission::FleetRead, rpc).await?;
        match self.rt.incidents.get(id) {
            Some(i) if sees_incident(&self.caller(), &i) => Ok(i),
            _ => Err(self
                .refused(rpc, ApiError::not_found(format!("no incident {id}")))
                .await),
        }
    }

    /// Managing an incident needs incidents.manage where it lives (platform-wide ones:
    /// platform admins).
    async fn check_manage(&self, i: &Incident, rpc: &str) -> Result<(), ApiError> {
        let scope = match &i.tenant {
            Some(t) => Scope::Project(t, i.project.as_deref().unwrap_or("")),
            None => Scope::Platform,
        };
        self.check(Permission::IncidentsManage, scope, rpc).await
    }

    pub(super) async fn do_incidents_list(&self, all: bool) -> Result<Vec<Incident>, ApiError> {
        self.check_any(Permission::FleetRead, "incidents_list")
            .await?;
        let c = self.caller();
        Ok(self.rt.incidents.list(all, |i| sees_incident(&c, i)))
    }

    pub(super) async fn do_incident_show(&self, id: u64) -> Result<Incident, ApiError> {
        self.visible_incident(id, "incident_show").await
    }

    pub(super) async fn do_incident_transition(
        &self,
        id: u64,
        t: Transition,
    ) -> Result<Incident, ApiError> {
        let (rpc, action) = match &t {
            Transition::Ack(_) => ("incident_ack", "incident.ack"),
            Transition::Resolve(_) => ("incident_resolve", "incident.resolve"),
            Transition::Reassign(..) => ("incident_reassign", "incident.reassign"),
            Transition::Silence(_) => ("incident_silence", "incident.silence"),
        };
        let i = self.visible_incident(id, rpc).await?;
        self.check_manage(&i, rpc).await?;
        let detail = match &t {
            Transition::Ack(note) | Transition::Resolve(note) => {
                check_text("note", note, false)?;
                format!("incident {id} ({}): {note}", i.title)
            }
            Transition::Reassign(p, reason) => {
                check_text("reason", reason, true)?;
                format!("incident {id} ({}): {} → {p}: {reason}", i.title, i.party)
            }
            Transition::Silence(ms) => {
                if *ms == 0 || *ms > 30 * 86_400_000 {
                    return Err(ApiError::invalid("silence for 1 s to 30 days"));
                }
                format!("incident {id} ({}) silenced for {} s", i.title, ms / 1000)
            }
        };
        let who = self.actor();
        let rt = self.rt.clone();
        let key = i.agent.as_ref().and_then(|a| {
            i.tenant.as_ref().map(|t| crate::store::AgentKey {
                tenant: t.clone(),
                name: a.clone(),
            })
        });
        self.audited(action, key.as_ref(), detail, async move {
            rt.incidents.transition(id, &who, t)
        })
        .await
    }

    pub(super) async fn do_incident_open(
        &self,
        scenario: String,
        agent: Option<AgentRef>,
        summary: String,
    ) -> Result<Incident, ApiError> {
        check_text("summary", &summary, true)?;
        let key = match &agent {
            Some(a) => Some(
                self.find_for(a, Permission::IncidentsManage, "incident_open")
                    .await?,
            ),
            None => {
                self.check(
                    Permission::IncidentsManage,
                    Scope::Platform,
                    "incident_open",
                )
                .await?;
                None
            }
        };
        if self.rt.incidents.scenario(&scenario).is_none() {
            return Err(self
                .refused(
                    "incident_open",
                    ApiError::not_found(format!(
                        "no scenario `{scenario}` in the matrix (`agenfleet incidents matrix` lists them)"
                    )),
                )
                .await);
        }
        let project = key.as_ref().map(|k| self.agent_scope(k).1);
        let who = self.actor();
        let rt = self.rt.clone();
        let k2 = key.clone();
        self.audited(
            "incident.open",
            key.as_ref(),
            format!("{scenario}: {summary}"),
            async move {
                let target = k2.as_ref().zip(project.as_deref());
                rt.incidents.open_manual(&scenario, summary, target, &who)
            },
        )
        .await
    }

    pub(super) async fn do_incidents_routes(&self) -> Result<RoutesReport, ApiError> {
        self.check_any(Permission::FleetRead, "incidents_routes")
            .await?;
        let c = self.caller();
        let tenants: Vec<String> = self
            .rt
            .store
            .tenant_ids()
            .map_err(|e| ApiError::internal(e.to_string()))?
            .into_iter()
            .filter(|t| c.sees_row(Permission::FleetRead, Some(t), None))
            .collect();
        Ok(self.rt.incidents.routes_report(&tenants, c.platform_admin))
    }

    pub(super) async fn do_incidents_outbox(&self, limit: u32) -> Result<Vec<OutboxRow>, ApiError> {
        self.check_any(Permission::FleetRead, "incidents_outbox")
            .await?;
        let c = self.caller();
        let rows = self
            .rt
            .incidents
            .outbox_rows(limit.clamp(1, 10_000) as usize)?;
        Ok(rows
            .into_iter()
            .filter(|r| c.sees_row(Permission::FleetRead, r.tenant.as_deref(), None))
            .collect())
    }

    pub(super) async fn do_incidents_matrix(&self) -> Result<Matrix, ApiError> {
        self.check_any(Permission::FleetRead, "incidents_matrix")
            .await?;
        Ok(self.rt.incidents.matrix().clone())
    }
}
