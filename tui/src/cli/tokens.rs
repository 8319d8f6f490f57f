//! `agenfleet tokens create|list|revoke`: personal access tokens for scripts. A script
//! uses one by setting `AGENFLEET_TOKEN` (or `--token-file`); the secret is shown once.

use super::Out;
use crate::client::{CliError, Conn};
use crate::fmt;
use agenfleet_protocol::TokenInfo;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Create a token with some of your permissions at TENANT or TENANT/PROJECT.
    Create {
        name: String,
        #[arg(long)]
        scope: String,
        /// A permission (repeat): fleet.read, logs.read, agents.control, agents.create,
        /// agents.delete, audit.read, audit.write, creds.read, creds.write, scopes.write,
        /// policy.write, escalations.decide.
        #[arg(long = "perm", required = true)]
        perms: Vec<String>,
        /// Lifetime: 90s, 15m, 12h, 30d.
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// Your tokens (every token for platform admins).
    List,
    /// Revoke a token at once.
    Revoke { id: String },
}

fn describe(t: &TokenInfo) -> String {
    format!(
        "{}  {:<16} {}{}  [{}]  expires {}{}",
        t.id,
        t.name,
        t.tenant,
        t.project
            .as_deref()
            .map(|p| format!("/{p}"))
            .unwrap_or_default(),
        t.permissions.join(","),
        fmt::timestamp(t.expires_ms),
        t.revoked_ms
            .map(|r| format!("  REVOKED {}", fmt::timestamp(r)))
            .unwrap_or_default()
    )
}

pub async fn run(conn: &Conn, out: &Out, cmd: &TokensCmd) -> Result<(), CliError> {
    match cmd {
        TokensCmd::Create {
            name,
            scope,
            perms,
            expires,
        } => {
            let (tenant, project) = match scope.split_once('/') {
                Some((t, p)) => (t.to_string(), Some(p.to_string())),
                None => (scope.clone(), None),
            };
            let t = conn
                .client
                .tokens_create(
                    conn.ctx(),
                    name.clone(),
                    tenant,
                    project,
                    perms.clone(),
                    super::duration_secs(expires)?,
                )
                .await??;
            let secret = String::from_utf8_lossy(t.secret.expose()).to_string();
            if out.json {
                out.raw(&serde_json::json!({ "info": t.info, "token": secret }).to_string());
            } else {
                out.raw(&format!(
                    "{}\n\n    {secret}\n\nShown once; stored only as a hash. Use it with AGENFLEET_TOKEN=… agenfleet …",
                    describe(&t.info)
                ));
            }
            Ok(())
        }
        TokensCmd::List => {
            let list = conn.client.tokens_list(conn.ctx()).await??;
            out.print(&list, || {
                list.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        TokensCmd::Revoke { id } => {
            let t = conn.client.tokens_revoke(conn.ctx(), id.clone()).await??;
            out.print(&t, || describe(&t))
        }
    }
}
