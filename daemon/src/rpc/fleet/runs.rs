//! Runs over the operator socket: `runs_start` (needs `runs.trigger` on the agent's
//! project; recorded as `run.start` before the run is queued), `runs_list` and `runs_get`
//! (`runs.read`; another project's runs are not shown, and one named by id answers like
//! an unknown one), `runs_cancel` (`runs.trigger`; recorded as the run's end),
//! `runs_timeline` (`runs.read`: the audit records that name the run — its start, its
//! agent's tool decisions and model/connection calls made while it was the agent's only
//! running run, its end).

use super::FleetService;
use crate::authz::Permission;
use crate::store::AgentKey;
use agenfleet_protocol::runs::{RunQuery, RunState, RunView};
use agenfleet_protocol::{AgentRef, ApiError};
use std::time::Duration;

/// The longest `runs_get` waits for a run's end.
const MAX_GET_WAIT: Duration = Duration::from_secs(600);

impl FleetService {
    pub(super) async fn do_runs_start(
        &self,
        agent: AgentRef,
        input_json: String,
    ) -> Result<RunView, ApiError> {
        let key = self
            .find_for(&agent, Permission::RunsTrigger, "runs_start")
            .await?;
        let (_, project) = self.agent_scope(&key);
        let v = self
            .rt
            .runs
            .start_recorded(crate::runs::StartRequest {
                key: &key,
                project: &project,
                trigger: "cli",
                requested_by: &self.actor(),
                input: &input_json,
                extra: serde_json::json!({}),
            })
            .await?;
        tracing::info!(run = v.id, agent = %v.agent_ref(), "run queued");
        Ok(v)
    }

    pub(super) async fn do_runs_list(&self, query: RunQuery) -> Result<Vec<RunView>, ApiError> {
        self.check_any(Permission::RunsRead, "runs_list").await?;
        let mut q = query;
        if let Some(a) = &q.agent {
            let key = self.find_for(a, Permission::RunsRead, "runs_list").await?;
            q.agent = Some(AgentRef {
                tenant: Some(key.tenant),
                name: key.name,
            });
        }
        let caller = self.caller();
        self.rt
            .runs
            .list(&q, |v| {
                caller.sees_row(Permission::RunsRead, Some(&v.tenant), Some(&v.project))
            })
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// A run the caller may see with `p`; others answer like unknown ids.
    async fn visible_run(&self, id: u64, p: Permission, rpc: &str) -> Result<RunView, ApiError> {
        self.check_any(p, rpc).await?;
        let v = self
            .rt
            .runs
            .get(id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match v {
            Some(v) if self.caller().sees_row(p, Some(&v.tenant), Some(&v.project)) => Ok(v),
            _ => Err(self
                .refused(rpc, ApiError::not_found(format!("no run {id}")))
                .await),
        }
    }

    pub(super) async fn do_runs_get(&self, id: u64, wait_ms: u64) -> Result<RunView, ApiError> {
        let v = self
            .visible_run(id, Permission::RunsRead, "runs_get")
            .await?;
        if wait_ms == 0 || v.state.ended() {
            return Ok(v);
        }
        let wait = Duration::from_millis(wait_ms).min(MAX_GET_WAIT);
        self.rt
            .runs
            .wait_end(id, wait)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
    }

    pub(super) async fn do_runs_cancel(&self, id: u64) -> Result<RunView, ApiError> {
        let v = self
            .visible_run(id, Permission::RunsTrigger, "runs_cancel")
            .await?;
        let key = AgentKey {
            tenant: v.tenant.clone(),
            name: v.agent.clone(),
        };
        self.check_agent(Permission::RunsTrigger, &key, "runs_cancel")
            .await?;
        let why = format!("cancelled by {}", self.actor());
        let v = self
            .rt
            .runs
            .end(id, None, RunState::Cancelled, None, Some(why))
            .await?;
        tracing::info!(run = id, agent = %v.agent_ref(), "run cancelled");
        Ok(v)
    }

    pub(super) async fn do_runs_timeline(
        &self,
        id: u64,
    ) -> Result<Vec<agenfleet_protocol::AuditEntry>, ApiError> {
        let v = self
            .visible_run(id, Permission::RunsRead, "runs_timeline")
            .await?;
        let q = agenfleet_protocol::AuditQuery {
            agent: Some(v.agent_ref()),
            since_ms: Some(v.created_ms),
            // A record is written just before the state it tells of is stored.
            until_ms: v.ended_ms.map(|e| e + 1000),
            limit: 5000,
            ..Default::default()
        };
        let audit = self.rt.audit.clone();
        tokio::task::spawn_blocking(move || {
            let of_run = |e: &agenfleet_protocol::AuditEntry| {
                serde_json::from_str::<serde_json::Value>(&e.event.detail)
                    .ok()
                    .and_then(|d| d.get("run").and_then(|r| r.as_u64()))
                    == Some(id)
            };
            audit.query(&q, &of_run)
        })
        .await
        .map_err(|e| ApiError::internal(format!("run timeline: {e}")))?
        .map_err(|e| ApiError::internal(format!("run timeline: {e}")))
    }

    pub(super) async fn do_runs_logs(
        &self,
        id: u64,
    ) -> Result<agenfleet_protocol::LogChunk, ApiError> {
        let v = self
            .visible_run(id, Permission::RunsRead, "runs_logs")
            .await?;
        let key = AgentKey {
            tenant: v.tenant.clone(),
            name: v.agent.clone(),
        };
        let chunk = |lines: Vec<agenfleet_protocol::LogLine>| agenfleet_protocol::LogChunk {
            next_seq: lines.last().map(|l| l.seq + 1).unwrap_or(0),
            lines,
            missed: 0,
            dropped_total: 0,
        };
        // A job in progress: its output so far.
        if let Some(ring) = self.rt.jobs.live_logs(id) {
            return Ok(chunk(ring.snapshot()));
        }
        let kept = self
            .rt
            .runs
            .logs(&v.tenant, id)
            .map_err(|e| ApiError::internal(format!("run {id}'s output: {e}")))?;
        if let Some(text) = kept {
            let lines = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            return Ok(chunk(lines));
        }
        // A service agent's run: what the agent printed while it ran (from its log, as
        // far back as the log holds; with several runs at once their lines interleave).
        let Some(start) = v.started_ms else {
            return Ok(chunk(vec![]));
        };
        let end = v.ended_ms.unwrap_or(u64::MAX);
        let lines = self
            .rt
            .logs(&key)
            .map(|r| r.snapshot())
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.ts_ms >= start && l.ts_ms <= end)
            .collect();
        Ok(chunk(lines))
    }
}
