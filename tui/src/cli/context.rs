//! `agenfleet context add|use|list|remove|show` (the daemons this client knows by name),
//! `agenfleet dial-stdio` (what an ssh context runs on the remote host: stdin/stdout
//! bridged to the local daemon's socket), and `--context all` for read commands (each
//! context asked at once; one that does not answer is said so without holding the others).

use super::{one_shot, Cli, Command, Out};
use crate::client::{CliError, Conn, EXIT_NOT_RUNNING};
use crate::contexts::{self, Context, Contexts, Endpoint, Target};
use clap::Subcommand;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ContextCmd {
    /// Add (or replace) a context: `unix:///path/to.sock` or
    /// `ssh://[user@]host[:port][/path/to.sock]` (the system's ssh, its config and agent).
    Add {
        name: String,
        url: String,
        /// The `agenfleet` to run on the remote host of an ssh context.
        #[arg(long)]
        remote_bin: Option<String>,
        /// Make it the current context too.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make NAME the current context (every command and the console use it).
    Use { name: String },
    /// The contexts, the current one marked.
    List,
    /// Remove a context.
    Remove { name: String },
    /// Which daemon a command would talk to now, and why.
    Show,
}

pub fn run(cli: &Cli, cmd: &ContextCmd) -> Result<(), CliError> {
    let out = Out::direct(cli.json);
    let mut file = Contexts::load()?;
    match cmd {
        ContextCmd::Add {
            name,
            url,
            remote_bin,
            make_current,
        } => {
            contexts::check_name(name)?;
            let c = Context {
                name: name.clone(),
                url: url.clone(),
                remote_bin: remote_bin.clone(),
            };
            let ep = c.endpoint()?;
            file.contexts.retain(|o| o.name != *name);
            file.contexts.push(c);
            if *make_current {
                file.current = Some(name.clone());
            }
            let path = file.save()?;
            out.print(
                &serde_json::json!({"name": name, "endpoint": ep.to_string(), "file": path, "current": file.current}),
                || format!("context {name} → {ep} (in {})", path.display()),
            )
        }
        ContextCmd::Use { name } => {
            if file.get(name).is_none() {
                return Err(contexts::resolve(None, Some(name))
                    .err()
                    .unwrap_or_else(|| {
                        CliError::new(6, "invalid_argument", format!("no context `{name}`"))
                    }));
            }
            file.current = Some(name.clone());
            let path = file.save()?;
            out.print(&serde_json::json!({"current": name, "file": path}), || {
                format!("current context: {name}")
            })
        }
        ContextCmd::Remove { name } => {
            let before = file.contexts.len();
            file.contexts.retain(|c| c.name != *name);
            if file.contexts.len() == before {
                return Err(CliError::new(
                    6,
                    "invalid_argument",
                    format!("no context `{name}`"),
                ));
            }
            if file.current.as_deref() == Some(name) {
                file.current = None;
            }
            file.save()?;
            out.print(&serde_json::json!({"removed": name}), || {
                format!("removed context {name}")
            })
        }
        ContextCmd::List => {
            let rows: Vec<serde_json::Value> = file
                .contexts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "url": c.url,
                        "remote_bin": c.remote_bin,
                        "current": file.current.as_deref() == Some(c.name.as_str()),
                    })
                })
                .collect();
            out.print(&rows, || {
                if file.contexts.is_empty() {
                    return "no contexts (`agenfleet context add NAME URL`)".to_string();
                }
                file.contexts
                    .iter()
                    .map(|c| {
                        let mark = if file.current.as_deref() == Some(c.name.as_str()) {
                            "*"
                        } else {
                            " "
                        };
                        format!("{mark} {:<20} {}", c.name, c.url)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ContextCmd::Show => {
            let t = contexts::resolve(cli.socket.as_deref(), cli.context.as_deref())?;
            out.print(
                &serde_json::json!({"context": t.name, "endpoint": t.endpoint.to_string(), "from": t.why}),
                || match &t.name {
                    Some(n) => format!("context {n} → {} (from {})", t.endpoint, t.why),
                    None => format!("no context: {} (from {})", t.endpoint, t.why),
                },
            )
        }
    }
}

/// `dial-stdio`: bridges this process's stdin and stdout to the daemon's socket (found as
/// any command here would find it), until either side closes. Nothing else is written to
/// stdout; the daemon sees this process's uid, as with any local client.
pub async fn dial_stdio(cli: &Cli) -> Result<(), CliError> {
    let path = crate::client::socket_path(cli.socket.as_deref());
    let mut sock = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        CliError::new(
            EXIT_NOT_RUNNING,
            "not_running",
            format!("dial-stdio: cannot connect to {}: {e}", path.display()),
        )
    })?;
    // Either direction ending ends the bridge: the daemon gone must reach the client as
    // the end of ssh's output (so it reconnects), the client gone must close the socket.
    let (mut from_daemon, mut to_daemon) = sock.split();
    let (mut stdin, mut stdout) = (tokio::io::stdin(), tokio::io::stdout());
    let r = tokio::select! {
        r = tokio::io::copy(&mut from_daemon, &mut stdout) => r,
        r = tokio::io::copy(&mut stdin, &mut to_daemon) => r,
    };
    match r {
        Ok(_) => Ok(()),
        // The other side going away is how a bridge ends.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(CliError::new(
            EXIT_NOT_RUNNING,
            "disconnected",
            format!("dial-stdio: {e}"),
        )),
    }
}

/// Whether `cmd` only reads (so `--context all` may run it everywhere).
fn reads_only(cmd: &Command) -> bool {
    use super::agents::AgentsCmd as A;
    use super::incidents::IncidentsCmd as I;
    use super::policy::EscalationsCmd as E;
    matches!(
        cmd,
        Command::Status
            | Command::Retention
            | Command::Usage(_)
            | Command::Pulse(_)
            | Command::Memory {
                cmd: super::memory::MemoryCmd::Stats { .. }
            }
            | Command::Agents {
                cmd: A::List | A::Show { .. }
            }
            | Command::Incidents {
                cmd: I::List { .. } | I::Show { .. }
            }
            | Command::Escalations {
                cmd: E::List { .. }
            }
    )
}

/// What one context answered: its output (held, never printed by the command), or why not.
async fn ask(
    t: &Target,
    cmd: &Command,
    json: bool,
    timeout: Duration,
) -> Result<Vec<u8>, CliError> {
    let (conn, _hello) = Conn::open(&t.endpoint, timeout).await?;
    let out = Out::held(json);
    let place = crate::pins::place_of(t.name.as_deref(), &t.endpoint);
    one_shot(&conn, &out, cmd, &place).await?;
    Ok(out.take())
}

/// `--context all CMD`: the command on every context at once. Text: each context's output
/// under its name; JSON: `[{"context", "endpoint", "result" | "error"}]`. Exit 3 when a
/// context did not answer (the others are printed all the same).
pub async fn run_all(cli: &Cli, cmd: &Command) -> Result<(), CliError> {
    if !reads_only(cmd) {
        return Err(CliError::new(
            6,
            "invalid_argument",
            "--context all is for commands that only read (status, agents list|show, incidents list|show, escalations list, usage, retention); name one context to change something",
        ));
    }
    let targets = contexts::all()?;
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let answers =
        futures::future::join_all(targets.iter().map(|t| ask(t, cmd, cli.json, timeout))).await;
    let mut failed = 0;
    let out = Out::direct(cli.json);
    if cli.json {
        let rows: Vec<serde_json::Value> = targets
            .iter()
            .zip(&answers)
            .map(|(t, a)| {
                let mut row = serde_json::json!({
                    "context": t.name,
                    "endpoint": t.endpoint.to_string(),
                });
                match a {
                    Ok(bytes) => {
                        row["result"] = serde_json::from_slice(bytes).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(bytes).into())
                        })
                    }
                    Err(e) => {
                        failed += 1;
                        row["error"] = serde_json::json!({"code": e.code, "message": e.message, "exit_code": e.exit_code});
                    }
                }
                row
            })
            .collect();
        out.print(&rows, String::new)?;
    } else {
        for (t, a) in targets.iter().zip(&answers) {
            let name = t.name.as_deref().unwrap_or("-");
            let body = match a {
                Ok(bytes) => String::from_utf8_lossy(bytes).trim_end().to_string(),
                Err(e) => {
                    failed += 1;
                    format!("UNREACHABLE: {}", e.message)
                }
            };
            out.print(&serde_json::Value::Null, || {
                format!("── {name} ({}) ──\n{body}", t.endpoint)
            })?;
        }
    }
    if failed > 0 {
        return Err(CliError::new(
            EXIT_NOT_RUNNING,
            "partial",
            format!("{failed} of {} contexts did not answer", targets.len()),
        ));
    }
    Ok(())
}

/// The endpoint a plain command (not `all`) uses.
pub fn endpoint(cli: &Cli) -> Result<Endpoint, CliError> {
    Ok(contexts::resolve(cli.socket.as_deref(), cli.context.as_deref())?.endpoint)
}

/// What the console shows first: `--context all` (every context), else the one target.
pub fn console_choice(cli: &Cli) -> Result<crate::tui::Choice, CliError> {
    if cli.context.as_deref() == Some("all") && cli.socket.is_none() {
        return Ok(crate::tui::Choice::All(
            contexts::all()?
                .into_iter()
                .map(|t| (t.name.unwrap_or_default(), t.endpoint))
                .collect(),
        ));
    }
    let t = contexts::resolve(cli.socket.as_deref(), cli.context.as_deref())?;
    Ok(crate::tui::Choice::One {
        name: t.name,
        endpoint: t.endpoint,
    })
}
