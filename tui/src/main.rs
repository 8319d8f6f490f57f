//! agenfleet: the console (no arguments) and the command line (one subcommand per daemon
//! action, `--json` for scripts). Exit codes are documented in the README.

use agenfleet::{cli, client, tui};
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // One thread is plenty for a client, and starts faster than a pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenfleet: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(71);
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Some(cmd) => cli::run(&cli, cmd).await,
            None => {
                let settings = agenfleet::config::ClientConfig::load()?;
                let theme = cli
                    .theme
                    .clone()
                    .or(settings.theme)
                    .unwrap_or_else(|| "default".into());
                let palette = agenfleet::ui::theme::Palette::load(&theme)
                    .map_err(|e| client::CliError::new(6, "invalid_argument", e))?;
                agenfleet::ui::theme::set_active(palette);
                let choice = cli::context::console_choice(&cli)?;
                let opts = tui::Options {
                    choice,
                    readonly: cli.readonly,
                    mouse: cli.mouse || settings.mouse,
                    timeout: std::time::Duration::from_secs(cli.timeout.max(1)),
                };
                tui::run(opts)
                    .await
                    .map_err(|e| client::CliError::new(1, "terminal", format!("console: {e}")))
            }
        }
    });
    // Long-polls may still be in flight; do not wait for them.
    rt.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e, cli.json);
            std::process::ExitCode::from(e.exit_code.clamp(1, 255) as u8)
        }
    }
}
