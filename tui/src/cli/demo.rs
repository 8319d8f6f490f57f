//! `agenfleet demo`: starts a throw-away daemon with its own state dir, creates a small
//! demo fleet (healthy agents, one that crash-loops into `Failed`, one that gets OOM-killed)
//! and opens the console on it. Quitting the console deletes the demo agents and stops that
//! daemon, so nothing is left running that the user did not ask for (`--keep` leaves it up).

use crate::client::{CliError, Conn};
use agenfleet_protocol::AgentSpec;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Leave the demo daemon and fleet running after the console closes.
    #[arg(long)]
    pub keep: bool,
    /// Create the fleet but do not open the console (prints the socket to use).
    #[arg(long)]
    pub no_console: bool,
}

/// The demo fleet's specs.
pub const DEMO_FLEET: &[&str] = &[
    r#"name = "triage-bot"
tenant = "acme"
project = "support"
image = "agenfleet/agent"
[workload]
message = "triaged a ticket"
log_interval_ms = 1500
tool_call_interval_ms = 4000
tool_call_rounds = 0
[[workload.tool_calls]]
tool = "read_file"
args = { path = "/data/tickets/latest.json" }
[[workload.tool_calls]]
tool = "http_request"
args = { method = "POST", url = "https://pay.example.com/refunds", amount = 40 }
[[workload.tool_calls]]
tool = "http_request"
args = { method = "DELETE", url = "https://crm.example.com/tickets/17" }
"#,
    r#"name = "summarizer"
tenant = "acme"
project = "support"
image = "agenfleet/agent"
[limits]
memory_mb = 128
cpus = 0.5
[workload]
message = "summarised a thread"
log_interval_ms = 2500
"#,
    r#"name = "crawler"
tenant = "acme"
project = "research"
image = "agenfleet/agent"
[network]
mode = "internal"
[workload]
message = "fetched a page"
log_interval_ms = 1000
"#,
    r#"name = "flaky-bot"
tenant = "acme"
project = "ops"
image = "agenfleet/agent"
[restart]
mode = "fail"
attempts = 3
interval_secs = 120
delay_ms = 500
max_delay_ms = 4000
[workload]
message = "about to crash"
log_interval_ms = 500
exit_after_ms = 1500
exit_code = 3
"#,
    r#"name = "memory-hog"
tenant = "acme"
project = "ops"
image = "agenfleet/agent"
[limits]
memory_mb = 48
[restart]
mode = "fail"
attempts = 2
interval_secs = 120
delay_ms = 500
max_delay_ms = 2000
[workload]
message = "hoarding memory"
log_interval_ms = 500
alloc_mb_per_sec = 40
"#,
];

/// The demo's scopes (for triage-bot) and the tenant policy: refunds wait for a person.
const DEMO_SCOPES: &str = r#"tools = ["http_request", "read_file"]
read_paths = ["/data/tickets/"]
[[http]]
host = "*.example.com"
methods = ["GET", "POST", "DELETE"]
"#;
const DEMO_POLICY: &str = include_str!("../../../assets/policy/example.cedar");

/// The `agenfleetd` binary that sits next to this one.
pub fn daemon_binary() -> Result<PathBuf, CliError> {
    let me = std::env::current_exe()
        .map_err(|e| CliError::new(1, "internal", format!("cannot find my own executable: {e}")))?;
    let p = me.with_file_name("agenfleetd");
    if p.exists() {
        return Ok(p);
    }
    Err(CliError::new(
        1,
        "not_found",
        format!(
            "agenfleetd not found next to {} — build both binaries with `cargo build --release --workspace --bins`",
            me.display()
        ),
    ))
}

struct DemoDaemon {
    child: Child,
    dir: PathBuf,
    keep: bool,
}

impl Drop for DemoDaemon {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // SAFETY: kill with a pid we spawned.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for_socket(socket: &Path, timeout: Duration) -> Result<Conn, CliError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Conn::open(
            &crate::client::Endpoint::Unix(socket.to_path_buf()),
            timeout,
        )
        .await
        {
            Ok((c, _)) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn run(args: &DemoArgs, cli: &super::Cli) -> Result<(), CliError> {
    let bin = daemon_binary()?;
    let dir = std::env::temp_dir().join(format!("agenfleet-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::new(
            1,
            "internal",
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let socket = dir.join("agenfleet.sock");
    let config = dir.join("agenfleetd.toml");
    let cfg_text = format!(
        "state_dir = {:?}\nsocket = {:?}\nstats_interval_ms = 1000\norphan_grace_secs = 10\n",
        dir.join("state"),
        socket
    );
    std::fs::write(&config, cfg_text).map_err(|e| {
        CliError::new(
            1,
            "internal",
            format!("cannot write {}: {e}", config.display()),
        )
    })?;
    let log = std::fs::File::create(dir.join("agenfleetd.log"))
        .map_err(|e| CliError::new(1, "internal", format!("cannot create the daemon log: {e}")))?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            CliError::new(
                1,
                "internal",
                format!("cannot start {}: {e}", bin.display()),
            )
        })?;
    let guard = DemoDaemon {
        child,
        dir: dir.clone(),
        keep: args.keep,
    };
    eprintln!("demo daemon started (state and log in {})", dir.display());
    let conn = wait_for_socket(&socket, Duration::from_secs(cli.timeout.max(1))).await?;
    eprintln!("building the agent image if needed and creating the demo fleet…");
    let mut names = Vec::new();
    for text in DEMO_FLEET {
        let spec = AgentSpec::from_toml(text)
            .map_err(|e| CliError::new(70, "internal", format!("demo spec: {e}")))?;
        names.push(format!("{}/{}", spec.tenant, spec.name));
        let v = conn
            .client
            .create_agent(conn.ctx_wait(Duration::from_secs(300)), spec)
            .await??;
        eprintln!("  created {} ({})", v.qualified_name(), v.state);
    }
    let triage = agenfleet_protocol::AgentRef {
        tenant: Some("acme".into()),
        name: "triage-bot".into(),
    };
    conn.client
        .scopes_publish(conn.ctx(), triage, DEMO_SCOPES.into(), "demo".into())
        .await??;
    conn.client
        .policy_publish(conn.ctx(), "acme".into(), DEMO_POLICY.into(), "demo".into())
        .await??;
    eprintln!("  published triage-bot's scopes and tenant acme's policy (refunds wait for a person: press 3)");
    if args.no_console {
        println!("{}", socket.display());
        eprintln!(
            "demo fleet is up; try: AGENFLEET_SOCKET={} agenfleet status",
            socket.display()
        );
        if !args.keep {
            eprintln!("press Ctrl-C to tear it down");
            let _ = tokio::signal::ctrl_c().await;
        }
    } else {
        let opts = crate::tui::Options {
            choice: crate::tui::Choice::One {
                name: None,
                endpoint: crate::client::Endpoint::Unix(socket.clone()),
            },
            readonly: cli.readonly,
            mouse: cli.mouse,
            timeout: Duration::from_secs(cli.timeout.max(1)),
        };
        crate::tui::run(opts)
            .await
            .map_err(|e| CliError::new(1, "internal", format!("console: {e}")))?;
    }
    if args.keep {
        eprintln!(
            "demo left running: AGENFLEET_SOCKET={} agenfleet",
            socket.display()
        );
        return Ok(());
    }
    eprintln!("tearing the demo down…");
    for n in names {
        if let Ok(r) = agenfleet_protocol::AgentRef::parse(&n) {
            let _ = conn
                .client
                .delete_agent(conn.ctx_wait(Duration::from_secs(30)), r)
                .await;
        }
    }
    drop(guard);
    Ok(())
}
