//! agenfleetd: the AgenFleet daemon. Parses its command line, loads the config, sets up
//! logging (`RUST_LOG`), and runs the daemon (see the library).

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "agenfleetd",
    version,
    about = "AgenFleet daemon: supervises AI agents in hardened containers"
)]
struct Args {
    /// Config file (TOML). Default: /etc/agenfleet/agenfleetd.toml for root, else
    /// $XDG_CONFIG_HOME/agenfleet/agenfleetd.toml.
    #[arg(long, global = true, env = "AGENFLEETD_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (overrides the config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Operator socket path (overrides the config).
    #[arg(long, env = "AGENFLEET_SOCKET")]
    socket: Option<PathBuf>,
    /// Seconds before a labelled container that no agent owns is removed (overrides config).
    #[arg(long)]
    orphan_grace_secs: Option<u64>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Check the config (and the files it names: incident matrix, routes' secrets and
    /// CAs, the socket group) without starting; exit 0 if it is good, 78 if not.
    CheckConfig,
    /// Restore a state dir from an archive made by `agenfleet backup`, offline (no
    /// daemon): every file is checked against the manifest, the audit chain against the
    /// backup's signed checkpoint, the database's integrity — and only then put in place.
    /// Exit 65 if the archive is damaged (the damaged file is named), 73 if the target is
    /// not empty, 74 on an I/O error.
    Restore {
        /// The archive.
        archive: PathBuf,
        /// The state dir to create (it must not exist, or be empty).
        #[arg(long = "state-dir", value_name = "DIR")]
        into: PathBuf,
        /// Print what was restored as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify an audit log directory offline (no daemon needed); exit 12 if invalid.
    VerifyAudit {
        /// The audit directory (`<state_dir>/audit`).
        dir: PathBuf,
        /// A checkpoint (JSON) kept from earlier, to detect rollback or truncation.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
}

fn verify_audit(
    dir: &std::path::Path,
    checkpoint: Option<&std::path::Path>,
) -> std::process::ExitCode {
    let kept = match checkpoint {
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("agenfleetd: checkpoint {}: {e}", p.display());
                return std::process::ExitCode::from(6);
            }
        },
        None => None,
    };
    let report = agenfleet_daemon::audit::verify_dir(dir, kept.as_ref());
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.valid {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!(
            "agenfleetd: INVALID: {}",
            report.first_bad.unwrap_or_default()
        );
        std::process::ExitCode::from(12)
    }
}

/// Logs to stderr (`RUST_LOG`, default `info,tarpc=warn`): in colour on a terminal
/// unless `NO_COLOR` is set; under journald without our own timestamps and with syslog
/// priorities, so `journalctl -p err` finds the errors.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tarpc=warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if agenfleet_daemon::service::under_journald() {
        let plain = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .event_format(agenfleet_daemon::service::Journald(plain))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// `agenfleetd check-config`: everything `agenfleetd` checks before it starts.
fn check_config(path: Option<&std::path::Path>) -> std::process::ExitCode {
    let checked = agenfleet_daemon::config::Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            let source = cfg.source.clone();
            agenfleet_daemon::incidents::build_routes(&cfg)?;
            agenfleet_daemon::prepare(cfg).map_err(|e| e.to_string())?;
            Ok(source)
        });
    match checked {
        Ok(source) => {
            if source.is_file() {
                println!("agenfleetd: {} is good", source.display());
            } else {
                println!(
                    "agenfleetd: no config file at {}: the built-in defaults are good",
                    source.display()
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agenfleetd: {e}");
            std::process::ExitCode::from(78)
        }
    }
}

/// `agenfleetd restore`.
fn restore(
    archive: &std::path::Path,
    into: &std::path::Path,
    json: bool,
) -> std::process::ExitCode {
    match agenfleet_daemon::backup::restore::restore(archive, into) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                return std::process::ExitCode::SUCCESS;
            }
            let m = &r.manifest;
            println!(
                "agenfleetd: restored {} into {} ({:.1} MB in {:.2} s)",
                archive.display(),
                r.state_dir.display(),
                r.bytes as f64 / 1e6,
                r.seconds
            );
            println!(
                "  instance {}, backed up by agenfleetd {} at {} ms",
                m.instance_id, m.software_version, m.created_ms
            );
            match &m.tenant {
                Some(t) => println!(
                    "  dedicated tenant {t} alone, a new installation; no audit log (the source's stood at seq {}, hash {}…, when it was taken: its records of {t} are there)",
                    m.checkpoint.seq,
                    &m.checkpoint.hash[..m.checkpoint.hash.len().min(16)]
                ),
                None => println!(
                    "  audit log: {} records, the chain verified up to the backup's checkpoint (seq {}, hash {}…)",
                    r.audit_records,
                    m.checkpoint.seq,
                    &m.checkpoint.hash[..m.checkpoint.hash.len().min(16)]
                ),
            }
            println!(
                "  database: SQLite integrity check ok; {} files in all",
                m.files.len()
            );
            if let Some(c) = &r.config {
                println!(
                    "  config in force then ({}): {}",
                    m.config_source.as_deref().unwrap_or("?"),
                    c.display()
                );
            }
            println!(
                "Next: start agenfleetd with --state-dir {} (its audit log is in {}/audit: set audit_dir to it if your config names another).\n\
                 If this host's keyring does not hold the master key, the vault starts SEALED: `agenfleet vault unseal` with the recovery key.",
                r.state_dir.display(),
                r.state_dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agenfleetd: restore refused: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Cmd::Restore {
        archive,
        into,
        json,
    }) = &args.command
    {
        return restore(archive, into, *json);
    }
    if let Some(Cmd::VerifyAudit { dir, checkpoint }) = &args.command {
        return verify_audit(dir, checkpoint.as_deref());
    }
    if let Some(Cmd::CheckConfig) = &args.command {
        return check_config(args.config.as_deref());
    }
    init_logging();
    let mut cfg = match agenfleet_daemon::config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agenfleetd: {e}");
            return std::process::ExitCode::from(78);
        }
    };
    if let Some(d) = args.state_dir {
        cfg.state_dir = d;
    }
    if let Some(s) = args.socket {
        cfg.socket = s;
    }
    if let Some(g) = args.orphan_grace_secs {
        cfg.orphan_grace_secs = g;
    }
    // Join a session keyring of our own before any thread exists: each thread has its own
    // credentials, and threads made later inherit this one's.
    if let Err(e) = agenfleet_daemon::keyring::init() {
        tracing::error!(error = %e, "the OS keyring is not usable: the vault stays sealed and checkpoints unsigned");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenfleetd: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(71);
        }
    };
    let prepared = match agenfleet_daemon::prepare(cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("agenfleetd: {e}");
            return std::process::ExitCode::from(78);
        }
    };
    match rt.block_on(agenfleet_daemon::run(prepared)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agenfleetd: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
