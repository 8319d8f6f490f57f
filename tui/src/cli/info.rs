//! `agenfleet info`: this client and the daemon it reaches — versions (client, daemon,
//! protocol), the socket and why it was chosen, and (for platform admins) the daemon's
//! config file, directories, engine and keyring. `completions` and `man` make shell
//! completions and man pages from the command-line definitions.

use super::{Cli, Out};
use crate::client::{choose_socket, CliError, Conn};
use clap::CommandFactory;
use std::time::Duration;

/// Prints what `info` knows; the daemon's part is an error when it cannot be reached
/// (exit 3, with every place looked at).
pub async fn run(cli: &Cli) -> Result<(), CliError> {
    let choice = choose_socket(cli.socket.as_deref());
    let target = crate::contexts::resolve(cli.socket.as_deref(), cli.context.as_deref())?;
    let out = Out::direct(cli.json);
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let client = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": agenfleet_protocol::PROTOCOL_VERSION,
        "socket": choice.path.display().to_string(),
        "socket_from": choice.why,
        "socket_candidates": choice.tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "context": target.name,
        "endpoint": target.endpoint.to_string(),
        "endpoint_from": target.why,
    });
    // Where the daemon is: the context used, else the local socket and why.
    let place = match &target.name {
        Some(n) => format!("context   {n} → {} (from {})", target.endpoint, target.why),
        None => format!("socket    {} (from {})", choice.path.display(), choice.why),
    };
    let daemon = match Conn::open(&target.endpoint, timeout).await {
        Ok((conn, _)) => conn.client.host_info(conn.ctx()).await??,
        Err(mut e) => {
            if choice.tried.len() > 1 {
                e.message = format!(
                    "{} (looked at {})",
                    e.message,
                    choice
                        .tried
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            out.print(
                &serde_json::json!({"client": client, "daemon": null}),
                || {
                    format!(
                        "client    agenfleet {} (protocol {})\n{place}\n",
                        env!("CARGO_PKG_VERSION"),
                        agenfleet_protocol::PROTOCOL_VERSION,
                    )
                },
            )?;
            return Err(e);
        }
    };
    let v = serde_json::json!({"client": client, "daemon": daemon});
    out.print(&v, || {
        let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "(platform admins)".into());
        let mut s = format!(
            "client    agenfleet {} (protocol {})\n{place}\ndaemon    agenfleetd {} (protocol {}), instance {}\n",
            env!("CARGO_PKG_VERSION"),
            agenfleet_protocol::PROTOCOL_VERSION,
            daemon.daemon_version,
            daemon.protocol_version,
            daemon.instance_id
        );
        s += &format!(
            "config    {}\nstate     {}\naudit     {}\nengine    {} (Docker {}, API {})\nkeyring   {}\n",
            match (&daemon.config_file, &daemon.state_dir) {
                (Some(f), _) => f.clone(),
                (None, Some(_)) => "none: built-in defaults".into(),
                (None, None) => "(platform admins)".into(),
            },
            or(&daemon.state_dir),
            or(&daemon.audit_dir),
            or(&daemon.engine_address),
            daemon.engine_version.as_deref().unwrap_or("?"),
            daemon.engine_api_version.as_deref().unwrap_or("?"),
            daemon.keyring
        );
        s
    })
}

/// Prints the completion script for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(shell: &str) -> Result<(), CliError> {
    let shell: clap_complete::Shell = shell.parse().map_err(|_| {
        CliError::new(
            6,
            "invalid_argument",
            format!("unknown shell `{shell}` (bash, zsh, fish, elvish, powershell)"),
        )
    })?;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "agenfleet", &mut script);
    use std::io::Write;
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new(
            1,
            "io",
            format!("cannot write the completions: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Writes `agenfleet.1` and one page per subcommand (`agenfleet-agents.1`, …) to `dir`.
pub fn man(dir: &std::path::Path) -> Result<(), CliError> {
    let io = |e: std::io::Error| {
        CliError::new(
            6,
            "invalid_argument",
            format!("cannot write man pages to {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir).map_err(io)?;
    Ok(())
}
