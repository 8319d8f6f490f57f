//! A new spec for a running agent (`agents apply`, `agents rollback`), taken up by its
//! runner so that it is ordered with everything else the runner does. The version is
//! stored (and put in force) before anything is touched; a change of the restart policy,
//! budget, fallbacks or description is then taken up as it is, any other change replaces
//! the container — stopped, removed, created from the new spec and started — keeping the
//! agent's record, credentials, scopes, workspace and history. A daemon that dies between
//! the two finds, at its next start, a running container whose digest is not its spec's,
//! and replaces it then (`engine.rs`, resync).

use super::Runner;
use agenfleet_protocol::spec::{ApplyAction, ApplyOutcome};
use agenfleet_protocol::{AgentSpec, AgentState, ApiError, DesiredState};

/// What the runner is asked to put in force.
pub struct Apply {
    pub spec: AgentSpec,
    /// The version the caller saw in force (a different one in force now is a conflict).
    pub expected: u32,
    pub author: String,
    /// Put before the change's description in the version's note ("rollback to 2: ").
    pub note_prefix: String,
}

impl Runner {
    pub(super) async fn on_apply(&mut self, a: Apply) -> Result<ApplyOutcome, ApiError> {
        let key = self.rec.key.clone();
        let change = a
            .spec
            .change_from(&self.rec.spec)
            .map_err(|e| ApiError::invalid(format!("invalid spec: {e}")))?;
        if change.is_empty() {
            let version =
                self.rt.store.spec_version(&key).map_err(|e| {
                    ApiError::internal(format!("cannot read the spec's version: {e}"))
                })?;
            return Ok(ApplyOutcome {
                action: ApplyAction::Unchanged,
                version,
                change,
                agent: self.view(),
            });
        }
        let note = format!("{}{}", a.note_prefix, change.describe());
        let version = match self
            .rt
            .store
            .put_spec_version(&key, &a.spec, a.expected, &a.author, &note)
        {
            Ok(Ok(v)) => v,
            Ok(Err(current)) => {
                return Err(ApiError::precondition(format!(
                    "the spec of {key} changed since you read it (version {} was expected, {current} is in force): look again (`agenfleet agents spec {key}`) and apply again",
                    a.expected
                )))
            }
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "cannot store the new spec: {e}"
                )))
            }
        };
        tracing::info!(agent = %key, version, change = %note, "spec applied");
        self.set_spec(a.spec);
        self.spec_version = version;
        let running = self.rec.desired == DesiredState::Running
            && matches!(
                self.rec.state,
                AgentState::Running | AgentState::BackingOff | AgentState::Pending
            );
        // In swarm mode the restart budget is part of the service (Swarm's restart
        // policy): a change of it replaces the task, now rather than at the next start.
        let mut change = change;
        if self.swarm_mode() && change.fields.iter().any(|f| f == "restart") {
            change.recreate = true;
        }
        let action = if change.recreate {
            ApplyAction::Recreated
        } else {
            ApplyAction::InPlace
        };
        if !(change.recreate && running) {
            // In place, or nothing runs: the next start makes a container of the new spec.
            let agent = self.commit()?;
            return Ok(ApplyOutcome {
                action,
                version,
                change,
                agent,
            });
        }
        let old = self
            .rec
            .container_id
            .as_deref()
            .map(|c| c[..c.len().min(12)].to_string())
            .unwrap_or_else(|| "none".into());
        self.rt
            .system_event(
                "agent.recreate",
                Some(&key),
                "requested",
                format!(
                    "spec version {version} ({}): container {old} is replaced",
                    change.fields.join(", ")
                ),
            )
            .await?;
        self.gen += 1;
        self.commit()?;
        self.stop_container().await?;
        let agent = self.start_or_fail().await?;
        Ok(ApplyOutcome {
            action,
            version,
            change,
            agent,
        })
    }

    /// Puts `spec` in force in the runner (what it shows and works from).
    fn set_spec(&mut self, spec: AgentSpec) {
        self.spec_hash = spec.hash();
        self.container_hash = spec.container_hash();
        self.file_views = spec
            .files
            .iter()
            .map(agenfleet_protocol::FileView::of)
            .collect();
        self.rec.spec = spec;
    }
}
