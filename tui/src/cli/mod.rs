//! The command line: one subcommand per daemon action, each printed for people or, with
//! `--json`, as JSON for scripts. Errors go to stderr (and, with `--json`, as a JSON object
//! on stdout) and set the documented exit code.

pub mod agents;
pub mod audit;
pub mod backup;
pub mod context;
pub mod demo;
pub mod incidents;
pub mod info;
pub mod logs;
pub mod memory;
pub mod operators;
pub mod policy;
pub mod progress;
pub mod pulse;
pub mod runs;
pub mod secret_input;
pub mod status;
pub mod tokens;
pub mod triggers;
pub mod upstreams;
pub mod vault;
pub mod watch;

use crate::client::{CliError, Conn};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "agenfleet",
    version,
    about = "AgenFleet: operate fleets of AI agents from a terminal",
    long_about = "Without a subcommand, opens the console (TUI). Every subcommand also takes --json."
)]
pub struct Cli {
    /// The daemon's operator socket. Else `AGENFLEET_SOCKET`, else the first that exists
    /// of `$XDG_RUNTIME_DIR/agenfleet/agenfleet.sock`, this user's daemon's default and
    /// `/run/agenfleet/agenfleet.sock` (`agenfleet info` says which).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// The context (a named daemon, local or over ssh; `agenfleet context`) to talk to;
    /// `all` runs a read command on every context. Else the current context, else the
    /// local socket.
    #[arg(long, global = true, env = "AGENFLEET_CONTEXT")]
    pub context: Option<String>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
    /// A file holding a personal access token (else `AGENFLEET_TOKEN`, else your uid).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Console: turn every mutation off, whatever your role.
    #[arg(long)]
    pub readonly: bool,
    /// Console: use the mouse (wheel scrolls, click selects, double-click opens); the
    /// terminal's own text selection then needs Shift. Also `AGENFLEET_MOUSE=1`.
    #[arg(long, env = "AGENFLEET_MOUSE")]
    pub mouse: bool,
    /// Console: the theme (`default`, `high-contrast`, or `themes/NAME.toml` in the
    /// client's config dir); else `theme` in its `config.toml`.
    #[arg(long)]
    pub theme: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Daemon, engine and fleet at a glance.
    Status,
    /// Versions (client, daemon, protocol), the socket used and why, and the daemon's
    /// config file, directories, engine and keyring.
    Info,
    /// The daemon's metrics in the Prometheus text format (for node_exporter's textfile
    /// collector: `agenfleet metrics > /var/lib/node_exporter/agenfleet.prom`).
    Metrics,
    /// What the daemon keeps, for how long, and what goes when.
    Retention,
    /// Back up the daemon's whole state while it runs (platform admins): the database,
    /// the audit log up to a checkpoint signed for the backup, the config. Secrets stay
    /// sealed; restore with `agenfleetd restore FILE --state-dir DIR`.
    Backup(backup::BackupArgs),
    /// Print shell completions: bash, zsh, fish, elvish or powershell.
    Completions { shell: String },
    /// Write man pages (agenfleet.1 and one per subcommand) to a directory.
    Man {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Manage agents.
    Agents {
        #[command(subcommand)]
        cmd: agents::AgentsCmd,
    },
    /// Print an agent's log lines (`-f` to follow).
    Logs(logs::LogsArgs),
    /// Print fleet changes as they happen.
    Watch(watch::WatchArgs),
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// The credential vault: init, unseal, rekey, rotate-key, status.
    Vault {
        #[command(subcommand)]
        cmd: vault::VaultCmd,
    },
    /// Agents' credentials: set, rotate, revoke, list, show (values never on the command line).
    Creds {
        #[command(subcommand)]
        cmd: vault::CredsCmd,
    },
    /// Who the daemon thinks you are, and your roles.
    Whoami,
    /// Operators known to the daemon.
    Operators {
        #[command(subcommand)]
        cmd: operators::OperatorsCmd,
    },
    /// Tenants (deleting one purges everything in it).
    Tenants {
        #[command(subcommand)]
        cmd: operators::TenantsCmd,
    },
    /// Personal access tokens for scripts.
    Tokens {
        #[command(subcommand)]
        cmd: tokens::TokensCmd,
    },
    /// Grant and revoke roles.
    Roles {
        #[command(subcommand)]
        cmd: operators::RolesCmd,
    },
    /// What each agent may call: tools, hosts and methods, paths, MCP servers (versioned).
    Scopes {
        #[command(subcommand)]
        cmd: policy::ScopesCmd,
    },
    /// A tenant's Cedar policies on top of the scopes: show, validate, test, publish, rollback.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Tool calls waiting for a person: list, approve, deny.
    Escalations {
        #[command(subcommand)]
        cmd: policy::EscalationsCmd,
    },
    /// Incidents by responsible party: list, show, ack, resolve, reassign, silence, open.
    Incidents {
        #[command(subcommand)]
        cmd: incidents::IncidentsCmd,
    },
    /// A tenant's model providers: the gateway calls them for agents, which never hold the key.
    Providers {
        #[command(subcommand)]
        cmd: upstreams::UpstreamsCmd,
    },
    /// A tenant's tool APIs, called by the gateway the same way.
    Connections {
        #[command(subcommand)]
        cmd: upstreams::UpstreamsCmd,
    },
    /// Model calls, errors and tokens per agent and tenant: last hour, day, 30 days.
    Usage(upstreams::UsageArgs),
    /// Agents' private memory: stats, an admin's export, a handoff between two agents.
    Memory {
        #[command(subcommand)]
        cmd: memory::MemoryCmd,
    },
    /// Runs: units of work handed to agents — start, list, show, cancel.
    Runs {
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Triggers that start runs: signed webhook subscriptions and schedules — add, list,
    /// show, revoke, rotate-secret.
    Triggers {
        #[command(subcommand)]
        cmd: triggers::TriggersCmd,
    },
    /// The fleet's last ten minutes as sparklines: agents by state, restarts, decisions
    /// per second, incidents opened, model tokens (`--agent A`: its CPU and memory).
    Pulse(pulse::PulseArgs),
    /// Agent images: the built-in one, or one of yours from a Dockerfile directory.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Start a throw-away daemon with a demo fleet and open the console on it.
    Demo(demo::DemoArgs),
    /// Named daemons, local or on other hosts over ssh: add, use, list, remove, show.
    Context {
        #[command(subcommand)]
        cmd: context::ContextCmd,
    },
    /// Bridge stdin/stdout to the daemon's socket (what an ssh context runs remotely).
    DialStdio,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build an image: from DIR (a directory with a Dockerfile) as --tag, through the
    /// engine's build API (no registry is used); without DIR, the built-in agent image
    /// from the shim embedded in the daemon.
    Build {
        /// A directory with a Dockerfile at its top (sent as a tar, at most ~4 MiB).
        dir: Option<std::path::PathBuf>,
        /// The image's name[:tag] (with DIR).
        #[arg(long, short = 't')]
        tag: Option<String>,
        /// Rebuild the built-in image even if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Output settings of one invocation. A one-shot command's output is held back until
/// the protocol handshake (sent alongside the command) has been checked; once it has,
/// output goes straight to stdout through a buffer, without a copy of the whole of it.
#[derive(Debug, Clone)]
pub struct Out {
    pub json: bool,
    held: Option<Arc<Mutex<Held>>>,
}

/// Output written before the handshake was checked, and whether it has been.
#[derive(Debug, Default)]
struct Held {
    checked: bool,
    buf: Vec<u8>,
}

impl Out {
    /// Output printed as it comes.
    pub fn direct(json: bool) -> Out {
        Out { json, held: None }
    }

    /// Output held back until `release`.
    fn held(json: bool) -> Out {
        Out {
            json,
            held: Some(Arc::new(Mutex::new(Held::default()))),
        }
    }

    /// Writes one item (and a newline) with `write`. `many_lines`: the item is written in
    /// many small pieces with newlines (pretty JSON), so it goes through a buffer rather
    /// than stdout's line buffer (a system call per line).
    fn emit<E>(
        &self,
        many_lines: bool,
        write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(held) = &self.held {
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            if !h.checked {
                write(&mut h.buf)?;
                h.buf.push(b'\n');
                return Ok(());
            }
        }
        let cap = if many_lines { 16 * 1024 } else { 0 };
        let mut w = std::io::BufWriter::with_capacity(cap, std::io::stdout().lock());
        write(&mut w)?;
        // A closed pipe (`| head`) ends the command quietly, as other tools do.
        if w.write_all(b"\n").and_then(|_| w.flush()).is_err() {
            std::process::exit(0);
        }
        Ok(())
    }

    fn emit_text(&self, text: &str) {
        if self.emit(false, |w| w.write_all(text.as_bytes())).is_err() {
            std::process::exit(0);
        }
    }

    /// Prints `value` as JSON (`pretty` or one line), mapping an encoding failure.
    fn json_value<T: Serialize>(&self, value: &T, pretty: bool) -> Result<(), CliError> {
        self.emit(pretty, |w| {
            let r = if pretty {
                serde_json::to_writer_pretty(w, value)
            } else {
                serde_json::to_writer(w, value)
            };
            match r {
                Err(e) if e.is_io() => std::process::exit(0),
                r => {
                    r.map_err(|e| CliError::new(70, "internal", format!("cannot encode JSON: {e}")))
                }
            }
        })
    }

    /// Prints `value` as JSON, or `human` for people.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        if self.json {
            self.json_value(value, true)
        } else {
            let h = human();
            if !h.is_empty() {
                self.emit_text(&h);
            }
            Ok(())
        }
    }

    /// One JSON object per line (streams), or `human`.
    pub fn line<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        if self.json {
            self.json_value(value, false)
        } else {
            self.emit_text(&human());
            Ok(())
        }
    }

    /// One line as it is, whatever the format (already encoded).
    pub fn raw(&self, text: &str) {
        self.emit_text(text);
    }

    /// What a held output holds (and forgets it): `--context all` prints it itself.
    fn take(&self) -> Vec<u8> {
        self.held
            .as_ref()
            .map(|h| std::mem::take(&mut h.lock().unwrap_or_else(|p| p.into_inner()).buf))
            .unwrap_or_default()
    }

    /// The handshake was checked: writes what was held back; later output goes straight out.
    fn release(&self) {
        if let Some(held) = &self.held {
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            h.checked = true;
            let buf = std::mem::take(&mut h.buf);
            if !buf.is_empty() {
                let mut stdout = std::io::stdout().lock();
                if stdout.write_all(&buf).and_then(|_| stdout.flush()).is_err() {
                    std::process::exit(0);
                }
            }
        }
    }
}

/// A duration written `90s`, `15m`, `12h` or `30d`, in seconds.
pub fn duration_secs(s: &str) -> Result<u64, CliError> {
    crate::fmt::duration_secs(s).map_err(|e| CliError::new(6, "invalid_argument", e))
}

/// Prints an error for a person (stderr) and, with `--json`, for a script (stdout) —
/// except where the JSON answer already says it: a partial answer of `--context all`
/// (each failure named), a run waited for that did not succeed (the run, with its state).
pub fn report(err: &CliError, json: bool) {
    if json && err.code != "partial" && err.code != "run_failed" {
        let v = serde_json::json!({"error": {"code": err.code, "message": err.message, "exit_code": err.exit_code}});
        println!("{v}");
    }
    eprintln!("agenfleet: {}", err.message);
}

/// Runs one subcommand.
pub async fn run(cli: &Cli, cmd: &Command) -> Result<(), CliError> {
    match cmd {
        Command::Info => return info::run(cli).await,
        Command::Completions { shell } => return info::completions(shell),
        Command::Man { out } => return info::man(out),
        Command::Context { cmd } => return context::run(cli, cmd),
        Command::DialStdio => return context::dial_stdio(cli).await,
        _ => {}
    }
    if cli.context.as_deref() == Some("all") {
        return context::run_all(cli, cmd).await;
    }
    let timeout = Duration::from_secs(cli.timeout.max(1));
    if let Command::Demo(args) = cmd {
        return demo::run(args, cli).await;
    }
    let target = crate::contexts::resolve(cli.socket.as_deref(), cli.context.as_deref())?;
    let place = crate::pins::place_of(target.name.as_deref(), &target.endpoint);
    if let Command::Audit {
        cmd:
            audit::AuditCmd::Verify {
                offline: Some(dir),
                checkpoint,
                ..
            },
    } = cmd
    {
        return audit::verify_offline(dir, checkpoint.as_deref(), &place, cli.json);
    }
    let socket = target.endpoint;
    let streaming = matches!(
        cmd,
        Command::Watch(_)
            | Command::Logs(_)
            | Command::Backup(_)
            | Command::Audit {
                cmd: audit::AuditCmd::Tail { follow: true, .. } | audit::AuditCmd::Export { .. }
            }
    );
    let token = crate::client::token_from(cli.token_file.as_deref())?;
    if streaming || token.is_some() {
        // Long-running, or acting with a token: handshake (and authenticate) first.
        let (conn, _hello) = Conn::open(&socket, timeout).await?;
        if let Some(t) = token {
            conn.authenticate(t).await?;
        }
        let out = Out::direct(cli.json);
        if !streaming {
            if let Command::Whoami = cmd {
                let h = conn
                    .client
                    .hello(conn.ctx(), agenfleet_protocol::PROTOCOL_VERSION)
                    .await??;
                return operators::whoami(&conn, &out, &h.caller).await;
            }
            return one_shot(&conn, &out, cmd, &place).await;
        }
        return match cmd {
            Command::Logs(a) => logs::run(&conn, &out, a).await,
            Command::Watch(a) => watch::run(&conn, &out, a).await,
            Command::Backup(a) => backup::run(&conn, &out, a).await,
            Command::Audit { cmd } => audit::run(&conn, &out, cmd, &place).await,
            _ => Ok(()),
        };
    }
    // One-shot: send the handshake and the command together (one round trip, not two);
    // print only once the handshake says the versions match.
    let (conn, hello) = Conn::open_pipelined(&socket, timeout).await?;
    let out = Out::held(cli.json);
    if let Command::Whoami = cmd {
        let h = hello.await?;
        out.release();
        return operators::whoami(&conn, &out, &h.caller).await;
    }
    // The handshake's answer comes first and is polled first (`join` polls in order), so
    // the command's output normally goes straight out; a mismatch prints nothing.
    let hello = async {
        let h = hello.await;
        if h.is_ok() {
            out.release();
        }
        h
    };
    let (hello, result) = futures::future::join(hello, one_shot(&conn, &out, cmd, &place)).await;
    hello?;
    result
}

async fn one_shot(conn: &Conn, out: &Out, cmd: &Command, place: &str) -> Result<(), CliError> {
    match cmd {
        Command::Status => status::run(conn, out).await,
        Command::Retention => {
            let r = conn.client.retention(conn.ctx()).await??;
            let when = |ms: u64| agenfleet_protocol::time::rfc3339(ms);
            out.print(&r, || {
                let mut s = format!(
                    "deleted agents' data    purged {} after the deletion\nresolved incidents      {}\n",
                    if r.purge_after_secs == 0 {
                        "at once".to_string()
                    } else {
                        format!("{} s", r.purge_after_secs)
                    },
                    if r.incident_retention_days == 0.0 {
                        "kept".to_string()
                    } else {
                        format!(
                            "removed {} days after their resolution ({} kept now{})",
                            r.incident_retention_days,
                            r.resolved_incidents,
                            r.next_incident_removal_ms
                                .map(|t| format!("; the next goes at {}", when(t)))
                                .unwrap_or_default()
                        )
                    }
                );
                for (a, at) in &r.agent_purges {
                    s += &format!("purge of {a:<30} at {}\n", when(*at));
                }
                for t in &r.tenant_purges {
                    s += &format!("tenant {t} goes with its last agent's purge\n");
                }
                s += &format!(
                    "audit log               {}\n",
                    if r.audit_retention_days == 0.0 {
                        format!("kept ({} segments)", r.audit_segments)
                    } else {
                        format!(
                            "segments removed once every record in them is {} days old ({} kept now{})",
                            r.audit_retention_days,
                            r.audit_segments,
                            r.next_audit_removal_ms
                                .map(|t| format!("; the next goes at {}", when(t)))
                                .unwrap_or_default()
                        )
                    }
                );
                for (t, d) in &r.audit_tenant_retention {
                    s += &format!(
                        "  tenant {t:<16} its records {}\n",
                        if *d == 0.0 { "kept for ever".to_string() } else { format!("kept {d} days") }
                    );
                }
                if let Some(a) = &r.audit_anchor {
                    s += &format!(
                        "  the log starts after record {} (removed by retention; anchor signed at {})\n",
                        a.seq,
                        when(a.time_ms)
                    );
                }
                for k in &r.kept {
                    s += &format!("kept: {k}\n");
                }
                s
            })
        }
        Command::Metrics => {
            let text = conn.client.metrics_text(conn.ctx()).await??;
            out.print(&serde_json::json!({ "text": text }), || text.clone())
        }
        Command::Agents { cmd } => agents::run(conn, out, cmd).await,
        Command::Audit { cmd } => audit::run(conn, out, cmd, place).await,
        Command::Vault { cmd } => vault::run_vault(conn, out, cmd).await,
        Command::Operators { cmd } => operators::run_operators(conn, out, cmd).await,
        Command::Roles { cmd } => operators::run_roles(conn, out, cmd).await,
        Command::Tokens { cmd } => tokens::run(conn, out, cmd).await,
        Command::Tenants { cmd } => operators::run_tenants(conn, out, cmd).await,
        Command::Creds { cmd } => vault::run_creds(conn, out, cmd).await,
        Command::Scopes { cmd } => policy::run_scopes(conn, out, cmd).await,
        Command::Policy { cmd } => policy::run_policy(conn, out, cmd).await,
        Command::Escalations { cmd } => policy::run_escalations(conn, out, cmd).await,
        Command::Incidents { cmd } => incidents::run(conn, out, cmd).await,
        Command::Providers { cmd } => {
            upstreams::run(conn, out, agenfleet_protocol::UpstreamClass::Provider, cmd).await
        }
        Command::Connections { cmd } => {
            upstreams::run(
                conn,
                out,
                agenfleet_protocol::UpstreamClass::Connection,
                cmd,
            )
            .await
        }
        Command::Usage(a) => upstreams::usage(conn, out, a).await,
        Command::Pulse(a) => pulse::run(conn, out, a).await,
        Command::Memory { cmd } => memory::run(conn, out, cmd).await,
        Command::Runs { cmd } => runs::run(conn, out, cmd).await,
        Command::Triggers { cmd } => triggers::run(conn, out, cmd).await,
        Command::Image {
            cmd: ImageCmd::Build { dir, tag, force },
        } => {
            let info = match (dir, tag) {
                (None, None) => {
                    let call = conn
                        .client
                        .build_image(conn.ctx_wait(Duration::from_secs(300)), *force);
                    progress::during(conn, out, call).await??
                }
                (Some(dir), Some(tag)) => {
                    let context = build_context(dir)?;
                    let call = conn.client.build_context_image(
                        conn.ctx_wait(Duration::from_secs(600)),
                        tag.clone(),
                        context,
                    );
                    progress::during(conn, out, call).await??
                }
                (Some(_), None) => {
                    return Err(CliError::new(
                        2,
                        "invalid_argument",
                        "image build DIR needs --tag NAME[:TAG]",
                    ))
                }
                (None, Some(_)) => return Err(CliError::new(
                    2,
                    "invalid_argument",
                    "--tag names an image built from a directory: image build DIR --tag NAME[:TAG]",
                )),
            };
            out.print(&info, || {
                let mut s = String::new();
                for l in &info.log {
                    s.push_str(l);
                    s.push('\n');
                }
                s.push_str(&format!(
                    "{} {} ({}, {})",
                    if info.built { "built" } else { "present" },
                    info.tag,
                    info.id,
                    crate::fmt::bytes(info.size_bytes)
                ));
                s
            })
        }
        Command::Logs(_)
        | Command::Backup(_)
        | Command::Watch(_)
        | Command::Demo(_)
        | Command::Whoami
        | Command::Info
        | Command::Context { .. }
        | Command::DialStdio
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
    }
}

/// The tar of a Dockerfile directory, as the engine's build API takes it (symlinks kept
/// as links, not followed); refused, naming the reason, when it has no Dockerfile or is
/// too large to travel.
fn build_context(dir: &std::path::Path) -> Result<Vec<u8>, CliError> {
    let bad = |m: String| CliError::new(6, "invalid_argument", m);
    if !dir.join("Dockerfile").is_file() {
        return Err(bad(format!(
            "{}: no Dockerfile in this directory",
            dir.display()
        )));
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)
        .map_err(|e| bad(format!("{}: cannot pack the directory: {e}", dir.display())))?;
    let tar = b
        .into_inner()
        .map_err(|e| bad(format!("{}: cannot pack the directory: {e}", dir.display())))?;
    if tar.len() > agenfleet_protocol::MAX_BUILD_CONTEXT_BYTES {
        return Err(bad(format!(
            "{}: the build context is {} bytes packed; at most {} travel to the daemon (leave large files out of the directory)",
            dir.display(),
            tar.len(),
            agenfleet_protocol::MAX_BUILD_CONTEXT_BYTES
        )));
    }
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Subcommands are built only when used (`defer`), so clap's own consistency checks
    /// would see just the one typed: check every subcommand here.
    #[test]
    fn every_subcommand_is_well_formed() {
        Cli::command().debug_assert();
    }
}
