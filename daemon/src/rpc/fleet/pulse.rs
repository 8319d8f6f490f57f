//! The short histories for the console's pictures: the fleet the caller sees (summed over
//! the projects it may read) and one agent it sees, each answered when a newer bucket has
//! closed (long-poll) — see `crate::pulse` — and the long operations in progress (`ops`).

use super::guard::capped;
use super::incidents::sees_incident;
use super::FleetService;
use crate::authz::Permission;
use agenfleet_protocol::pulse::{AgentHistory, Pulse};
use agenfleet_protocol::{AgentRef, ApiError};

impl FleetService {
    pub(super) async fn do_pulse(
        &self,
        after_ms: u64,
        max_wait_ms: u64,
    ) -> Result<Pulse, ApiError> {
        self.check_any(Permission::FleetRead, "pulse").await?;
        let history = crate::pulse::history();
        history.wait_newer(after_ms, capped(max_wait_ms)).await;
        let c = self.caller();
        let opened: Vec<u64> = self
            .rt
            .incidents
            .list(true, |i| sees_incident(&c, i))
            .iter()
            .map(|i| i.first_ms)
            .collect();
        Ok(history.pulse(
            |t, p| c.sees_row(Permission::FleetRead, Some(t), Some(p)),
            opened,
        ))
    }

    pub(super) async fn do_agent_history(
        &self,
        agent: AgentRef,
        after_ms: u64,
        max_wait_ms: u64,
    ) -> Result<AgentHistory, ApiError> {
        self.check_any(Permission::FleetRead, "agent_history")
            .await?;
        let key = self.find(&agent, "agent_history").await?;
        let history = crate::pulse::history();
        history.wait_newer(after_ms, capped(max_wait_ms)).await;
        Ok(history.agent(&key))
    }

    /// The long operations in progress (platform-level facts, like the engine's state:
    /// everyone who reads a fleet sees them in the daemon's facts already).
    pub(super) async fn do_operations(
        &self,
        since: u64,
        max_wait_ms: u64,
    ) -> Result<(u64, Vec<agenfleet_protocol::Operation>), ApiError> {
        self.check_any(Permission::FleetRead, "operations").await?;
        Ok(self.rt.ops.wait(since, capped(max_wait_ms)).await)
    }
}
