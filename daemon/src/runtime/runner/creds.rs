//! How an agent's credentials bear on its runner: whether it may start (the vault must
//! be able to give every credential its spec lists) and what a rotation does to a running
//! agent — a restart of the built-in shim, or, under the init, nothing here but a record
//! when the init restarts the program for a rotated variable.

use super::Runner;
use agenfleet_protocol::{AgentState, DesiredState, VaultState};

impl Runner {
    /// Why the agent may not start yet (it needs credentials the vault cannot give now).
    pub(super) fn hold_back_reason(&self) -> Option<String> {
        if self.rec.spec.credentials.is_empty() {
            return None;
        }
        match self.rt.vault.state() {
            VaultState::Unsealed => {}
            VaultState::Sealed => {
                return Some("held back: it needs credentials and the vault is SEALED (`agenfleet vault unseal`)".into())
            }
            VaultState::Uninitialized => {
                return Some("held back: it needs credentials and the vault is not initialised (`agenfleet vault init`)".into())
            }
        }
        let have = self.rt.vault.list(&self.rec.key).unwrap_or_default();
        for name in self.rec.spec.credentials.iter().map(|c| &c.name) {
            if !have
                .iter()
                .any(|c| &c.name == name && c.current_version.is_some())
            {
                return Some(format!(
                    "held back: credential `{name}` has no usable version (`agenfleet creds set {} {name}`)",
                    self.rec.key
                ));
            }
        }
        None
    }

    /// A credential was rotated: a running agent restarts to fetch the new value at start
    /// (audited before the restart); a held-back one re-checks.
    pub(super) async fn on_credentials_rotated(&mut self, name: &str) {
        if self.rec.state != AgentState::Running || self.rec.desired != DesiredState::Running {
            return self.look_again().await;
        }
        if self.rec.spec.credential_refresh == agenfleet_protocol::CredentialRefresh::Refresh {
            // The shim is waiting on its gateway and takes the new value in place.
            return;
        }
        if self.rec.spec.image != agenfleet_protocol::BUILTIN_IMAGE {
            // The shim as init keeps the credentials current itself: the API answers the
            // new version, a file is replaced; a variable needs the program restarted —
            // the init does that, not the container: recorded here before it happens.
            let Some(c) = self
                .rec
                .spec
                .credentials
                .iter()
                .find(|c| c.name == name && c.delivery == agenfleet_protocol::Delivery::Env)
            else {
                return;
            };
            let detail = format!(
                "the init restarts the program (not the container) to hand it rotated credential {name} in {}",
                c.env_var()
            );
            if let Err(e) = self
                .rt
                .system_event(
                    "agent.restart_program",
                    Some(&self.rec.key),
                    "requested",
                    detail,
                )
                .await
            {
                tracing::error!(agent = %self.rec.key, error = %e.message, "a rotated credential could not be recorded");
            }
            return;
        }
        if let Err(e) = self
            .rt
            .system_event(
                "agent.restart",
                Some(&self.rec.key),
                "requested",
                "to deliver a rotated credential".into(),
            )
            .await
        {
            tracing::error!(agent = %self.rec.key, error = %e.message, "not restarting after a rotation");
            return;
        }
        self.gen += 1;
        if self.stop_container().await.is_ok() {
            let _ = self.start_or_fail().await;
        }
    }
}
