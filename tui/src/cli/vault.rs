//! `agenfleet vault init|status|unseal|rekey|rotate-key` and
//! `agenfleet creds set|rotate|revoke|list|show AGENT NAME`. Values and recovery keys are
//! read from a masked prompt or stdin, never from the command line; `show` and `list` give
//! metadata only.

use super::secret_input::read_secret;
use super::Out;
use crate::client::{CliError, Conn};
use crate::fmt;
use agenfleet_protocol::{AgentRef, CredentialInfo};
use clap::Subcommand;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum VaultCmd {
    /// Sealed or unsealed, data keys, credentials.
    Status,
    /// Create the master key (kept in the OS keyring) and show the recovery key once.
    Init,
    /// Open a sealed vault: the recovery key is read from a prompt or stdin.
    Unseal,
    /// Seal now: the master key leaves memory and the keyring; only the recovery key opens it.
    Seal,
    /// Replace the master key (data keys are rewrapped) and show a new recovery key once.
    Rekey,
    /// Add a new data key for new writes.
    RotateKey,
}

#[derive(Subcommand, Debug)]
pub enum CredsCmd {
    /// Store a new credential (value from a masked prompt or stdin).
    Set { agent: String, name: String },
    /// Store the next version; the running agent gets it; older versions are revoked.
    Rotate {
        agent: String,
        name: String,
        /// Seconds the old version stays usable (default: revoke at once).
        #[arg(long, default_value_t = 0)]
        grace: u64,
    },
    /// Make a version (default: every usable version) unusable at once.
    Revoke {
        agent: String,
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// An agent's credentials (metadata only).
    List { agent: String },
    /// One credential's versions and dates (never the value).
    Show { agent: String, name: String },
}

fn agent_ref(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))
}

fn describe(c: &CredentialInfo) -> String {
    let when = |t: Option<u64>| t.map(fmt::timestamp).unwrap_or_else(|| "never".into());
    let mut s = format!(
        "{}/{}/{}  current version {}  created {}  last rotated {}  last delivered {}",
        c.tenant,
        c.agent,
        c.name,
        c.current_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none (all revoked)".into()),
        fmt::timestamp(c.created_ms),
        when(c.last_rotated_ms),
        when(c.last_delivered_ms)
    );
    for v in &c.versions {
        let state = match (v.revoked_ms, v.revoke_at_ms) {
            (Some(t), _) => format!("revoked {}", fmt::timestamp(t)),
            (None, Some(t)) => format!("revoked at {} (grace)", fmt::timestamp(t)),
            _ => "usable".into(),
        };
        s.push_str(&format!(
            "\n  v{:<3} created {}  data key {}  hmac {}  {state}",
            v.version,
            fmt::timestamp(v.created_ms),
            v.data_key,
            v.value_hmac
        ));
    }
    s
}

/// Prints a recovery key once, deliberately (it is the only output that shows a secret).
fn show_recovery(out: &Out, key: &agenfleet_protocol::SecretValue, what: &str) {
    let text = String::from_utf8_lossy(key.expose()).to_string();
    if out.json {
        out.raw(&serde_json::json!({ "recovery_key": text }).to_string());
    } else {
        out.raw(&format!(
            "{what}\n\n    {text}\n\nThis recovery key is shown once and stored nowhere. Keep it offline: after a reboot the\nkernel keyring forgets the master key, and `agenfleet vault unseal` needs this key."
        ));
    }
}

pub async fn run_vault(conn: &Conn, out: &Out, cmd: &VaultCmd) -> Result<(), CliError> {
    match cmd {
        VaultCmd::Status => {
            let st = conn.client.vault_status(conn.ctx()).await??;
            out.print(&st, || {
                format!(
                    "vault        {}\ndata keys    {} (active: {}, {} encryptions)\ncredentials  {}\nmaster key   {}",
                    st.state.as_str(),
                    st.data_keys,
                    st.active_key.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                    st.active_key_uses,
                    st.credentials,
                    st.keyring
                )
            })
        }
        VaultCmd::Init => {
            let rk = conn.client.vault_init(conn.ctx()).await??;
            show_recovery(
                out,
                &rk,
                "Vault initialised; the master key is in the OS keyring.",
            );
            Ok(())
        }
        VaultCmd::Unseal => {
            let rk = read_secret("recovery key")?;
            // The daemon answers once the agents have resynced (at most 45 s).
            let call = conn
                .client
                .vault_unseal(conn.ctx_wait(Duration::from_secs(60)), rk);
            let st = super::progress::during(conn, out, call).await??;
            out.print(&st, || format!("vault {}", st.state.as_str()))
        }
        VaultCmd::Seal => {
            let st = conn.client.vault_seal(conn.ctx()).await??;
            out.print(&st, || format!("vault {}", st.state.as_str()))
        }
        VaultCmd::Rekey => {
            let rk = conn
                .client
                .vault_rekey(conn.ctx_wait(Duration::from_secs(60)))
                .await??;
            show_recovery(
                out,
                &rk,
                "Master key replaced; the old recovery key no longer works.",
            );
            Ok(())
        }
        VaultCmd::RotateKey => {
            let id = conn.client.vault_rotate_key(conn.ctx()).await??;
            out.print(&serde_json::json!({ "data_key": id }), || {
                format!("data key {id} now encrypts new values")
            })
        }
    }
}

pub async fn run_creds(conn: &Conn, out: &Out, cmd: &CredsCmd) -> Result<(), CliError> {
    match cmd {
        CredsCmd::Set { agent, name } => {
            let r = agent_ref(agent)?;
            let value = read_secret(&format!("value of {name} for {agent}"))?;
            let c = conn
                .client
                .creds_set(
                    conn.ctx_wait(Duration::from_secs(60)),
                    r,
                    name.clone(),
                    value,
                )
                .await??;
            out.print(&c, || {
                format!("stored {}/{}/{} version 1", c.tenant, c.agent, c.name)
            })
        }
        CredsCmd::Rotate { agent, name, grace } => {
            let r = agent_ref(agent)?;
            let value = read_secret(&format!("new value of {name} for {agent}"))?;
            let c = conn
                .client
                .creds_rotate(
                    conn.ctx_wait(Duration::from_secs(120)),
                    r,
                    name.clone(),
                    value,
                    *grace,
                )
                .await??;
            out.print(&c, || {
                format!(
                    "rotated {}/{}/{} to version {}; older versions {}",
                    c.tenant,
                    c.agent,
                    c.name,
                    c.current_version.unwrap_or(0),
                    if *grace == 0 {
                        "revoked now".to_string()
                    } else {
                        format!("revoked in {grace}s")
                    }
                )
            })
        }
        CredsCmd::Revoke {
            agent,
            name,
            version,
        } => {
            let c = conn
                .client
                .creds_revoke(conn.ctx(), agent_ref(agent)?, name.clone(), *version)
                .await??;
            out.print(&c, || describe(&c))
        }
        CredsCmd::List { agent } => {
            let list = conn
                .client
                .creds_list(conn.ctx(), agent_ref(agent)?)
                .await??;
            out.print(&list, || {
                if list.is_empty() {
                    "no credentials".into()
                } else {
                    list.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            })
        }
        CredsCmd::Show { agent, name } => {
            let list = conn
                .client
                .creds_list(conn.ctx(), agent_ref(agent)?)
                .await??;
            let c = list.into_iter().find(|c| &c.name == name).ok_or_else(|| {
                CliError::new(5, "not_found", format!("no credential {agent}/{name}"))
            })?;
            out.print(&c, || describe(&c))
        }
    }
}
