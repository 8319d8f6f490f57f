//! `agenfleet triggers`: add a webhook subscription (its URL path, signing secret and
//! automation token shown once) or a schedule (cron, UTC) to an agent, list them, show
//! one, revoke one (at once), rotate a webhook's signing secret (the old one verifies for
//! an overlap).

use super::{CliError, Out};
use crate::client::Conn;
use agenfleet_protocol::triggers::{CatchUp, TriggerCreated, TriggerKind, TriggerNew, TriggerView};
use agenfleet_protocol::AgentRef;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TriggersCmd {
    /// Add a trigger to AGENT (triggers.write): `--webhook` (a subscription: URL path,
    /// signing secret and automation token shown once) or `--cron EXPR` (UTC; five
    /// fields, or six with seconds first).
    Add {
        agent: String,
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        webhook: bool,
        /// Webhook: runs a minute it may start (default 60).
        #[arg(long, requires = "webhook")]
        rate_per_min: Option<u32>,
        #[arg(long)]
        cron: Option<String>,
        /// Schedule: each run's input, a JSON file (`{}` when none is given).
        #[arg(long, requires = "cron")]
        input: Option<PathBuf>,
        /// Schedule: due times missed while the daemon was down — `skip` them (recorded)
        /// or run `once` at start.
        #[arg(long, default_value = "skip", requires = "cron")]
        catch_up: String,
        /// Schedule: start a run even while its previous one is still open.
        #[arg(long, requires = "cron")]
        overlap: bool,
    },
    /// Triggers you can see (of AGENT), revoked ones included.
    List { agent: Option<String> },
    /// One trigger.
    Show { id: String },
    /// Revoke a trigger at once: its token and secret stop working, its schedule stops.
    Revoke { id: String },
    /// A new signing secret for a webhook (shown once); the old one still verifies for
    /// `--overlap` (default 1h; `0s`: not at all).
    RotateSecret {
        id: String,
        #[arg(long, default_value = "1h")]
        overlap: String,
    },
}

fn agent(s: &str) -> Result<AgentRef, CliError> {
    AgentRef::parse(s)
        .map_err(|e| CliError::new(6, "invalid_argument", format!("bad agent name: {e}")))
}

fn what(v: &TriggerView) -> String {
    match v.kind {
        TriggerKind::Webhook => format!("webhook, {}/min", v.rate_per_min),
        TriggerKind::Schedule => format!(
            "cron `{}`{}{}",
            v.cron.as_deref().unwrap_or("?"),
            match v.catch_up {
                CatchUp::Once => ", catch-up once",
                CatchUp::Skip => "",
            },
            if v.overlap { ", overlap" } else { "" }
        ),
    }
}

fn line(v: &TriggerView) -> String {
    let state = match (v.revoked_ms, v.next_due_ms) {
        (Some(_), _) => "revoked".to_string(),
        (None, Some(n)) => format!("next {}", crate::fmt::timestamp(n)),
        (None, None) => "active".to_string(),
    };
    format!(
        "{:<20}  {:<28} {:<36} {}",
        v.id,
        v.agent_ref(),
        what(v),
        state
    )
}

fn describe(v: &TriggerView) -> String {
    let t = |ms: Option<u64>| ms.map(crate::fmt::timestamp).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "trigger {} of {} ({})\n  kind       {}\n  created    {} by {}",
        v.id,
        v.agent_ref(),
        v.project,
        what(v),
        crate::fmt::timestamp(v.created_ms),
        v.created_by
    );
    match v.kind {
        TriggerKind::Webhook => {
            s.push_str(&format!("\n  path       {}", v.path()));
            if let Some(r) = v.rotated_ms {
                s.push_str(&format!(
                    "\n  rotated    {} (the secret before verifies until {})",
                    crate::fmt::timestamp(r),
                    t(v.old_secret_until_ms)
                ));
            }
        }
        TriggerKind::Schedule => {
            s.push_str(&format!(
                "\n  last due   {}\n  next due   {}\n  input      {}",
                t(v.last_due_ms),
                t(v.next_due_ms),
                v.input_json
            ));
        }
    }
    if let Some(r) = v.revoked_ms {
        s.push_str(&format!("\n  revoked    {}", crate::fmt::timestamp(r)));
    }
    s
}

/// Prints what is shown once: the JSON object (with `--json`), or the text with a warning.
fn print_created(out: &Out, c: &TriggerCreated) {
    let text = |v: &Option<agenfleet_protocol::SecretValue>| {
        v.as_ref()
            .map(|s| String::from_utf8_lossy(s.expose()).to_string())
    };
    let (token, secret) = (text(&c.token), text(&c.secret));
    if out.json {
        out.raw(
            &serde_json::json!({
                "trigger": c.trigger,
                "path": c.path,
                "url": c.url,
                "token": token,
                "secret": secret,
            })
            .to_string(),
        );
        return;
    }
    let mut s = describe(&c.trigger);
    if c.trigger.kind == TriggerKind::Webhook {
        s.push_str(&format!(
            "\n\n  POST       {}",
            c.url.clone().unwrap_or_else(|| format!(
                "{} (the daemon's [http] listener is off: set [http] listen)",
                c.path
            ))
        ));
        if let Some(t) = &token {
            s.push_str(&format!("\n  token      {t}"));
        }
        if let Some(x) = &secret {
            s.push_str(&format!("\n  secret     {x}"));
        }
        s.push_str("\n\nShown once; kept only as a hash (token) and sealed (secret). Send with assets/examples/send-webhook.sh.");
    }
    out.raw(&s);
}

pub async fn run(conn: &Conn, out: &Out, cmd: &TriggersCmd) -> Result<(), CliError> {
    match cmd {
        TriggersCmd::Add {
            agent: a,
            webhook,
            rate_per_min,
            cron,
            input,
            catch_up,
            overlap,
        } => {
            let new = match (webhook, cron) {
                (true, _) => TriggerNew::Webhook {
                    rate_per_min: rate_per_min.unwrap_or(0),
                },
                (false, Some(c)) => TriggerNew::Schedule {
                    cron: c.clone(),
                    input_json: match input {
                        Some(p) => std::fs::read_to_string(p).map_err(|e| {
                            CliError::new(
                                6,
                                "invalid_argument",
                                format!("cannot read {}: {e}", p.display()),
                            )
                        })?,
                        None => "{}".into(),
                    },
                    catch_up: CatchUp::parse(catch_up).ok_or_else(|| {
                        CliError::new(
                            6,
                            "invalid_argument",
                            format!("--catch-up `{catch_up}` is not skip or once"),
                        )
                    })?,
                    overlap: *overlap,
                },
                (false, None) => {
                    return Err(CliError::new(
                        6,
                        "invalid_argument",
                        "give --webhook or --cron EXPR",
                    ))
                }
            };
            let c = conn
                .client
                .triggers_add(conn.ctx(), agent(a)?, new)
                .await??;
            print_created(out, &c);
            Ok(())
        }
        TriggersCmd::List { agent: a } => {
            let list = conn
                .client
                .triggers_list(conn.ctx(), a.as_deref().map(agent).transpose()?)
                .await??;
            out.print(&list, || {
                let mut s = format!(
                    "{:<20}  {:<28} {:<36} {}",
                    "TRIGGER", "AGENT", "KIND", "STATE"
                );
                for v in &list {
                    s.push('\n');
                    s.push_str(&line(v));
                }
                s
            })
        }
        TriggersCmd::Show { id } => {
            let v = conn.client.triggers_get(conn.ctx(), id.clone()).await??;
            out.print(&v, || describe(&v))
        }
        TriggersCmd::Revoke { id } => {
            let v = conn
                .client
                .triggers_revoke(conn.ctx(), id.clone())
                .await??;
            out.print(&v, || {
                format!("trigger {} of {} revoked", v.id, v.agent_ref())
            })
        }
        TriggersCmd::RotateSecret { id, overlap } => {
            let secs = super::duration_secs(overlap)?;
            let c = conn
                .client
                .triggers_rotate_secret(conn.ctx(), id.clone(), secs)
                .await??;
            print_created(out, &c);
            Ok(())
        }
    }
}
