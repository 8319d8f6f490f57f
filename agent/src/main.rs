//! agenfleet-agent: the entrypoint of every agent container (the shim).
//!
//! It is built as a static binary and placed alone in a `FROM scratch` image. For demos and
//! tests it runs the scripted workload that the daemon passes as its arguments: print log
//! lines, allocate memory until the limit kills it, exit with a given code after a time.
//! As PID 1 it handles SIGTERM/SIGINT itself (the kernel ignores unhandled signals for PID 1).
//!
//! At start it fetches its agent's credentials over the gateway socket that the daemon
//! bind-mounts into this container alone, and keeps them in memory only (never in the
//! environment, never on disk, never in its output: it logs names, versions and sizes).
//! Before each tool call of its workload it asks the gateway (`authorize`) and makes the
//! call only if allowed. `agenfleet-agent call` and `agenfleet-agent bench`, run inside
//! the container (`docker exec`), send tool calls given on stdin or measure decisions.
//! `agenfleet-agent run -- PROGRAM…` is the init of an agent whose image is not ours
//! (`init.rs`): the daemon bind-mounts this binary into such containers.

use std::io::Write;
use std::time::{Duration, Instant};

use agenfleet_protocol::Workload;

mod http;
mod httpbench;
mod init;
mod output;
mod remote;
mod tools;

extern "C" fn on_term(_sig: libc::c_int) {
    // Only async-signal-safe calls here.
    let msg = b"agenfleet-agent: terminated by signal, exiting\n";
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(0);
    }
}

fn install_signal_handlers() {
    let handler = on_term as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// A credential held in memory; zeroed when dropped, never printed.
pub(crate) struct Held {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) value: agenfleet_protocol::SecretValue,
}

/// Fetches this agent's credentials from its gateway.
pub(crate) fn fetch_credentials(socket: &std::path::Path) -> Result<Vec<Held>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let ctx = || agenfleet_protocol::transport::context_with_timeout(Duration::from_secs(10));
        let gw = agenfleet_protocol::transport::connect_gateway(socket, 1024 * 1024)
            .await
            .map_err(|e| format!("cannot reach the gateway at {}: {e}", socket.display()))?;
        let hello = gw
            .hello(ctx(), agenfleet_protocol::PROTOCOL_VERSION)
            .await
            .map_err(|e| format!("gateway: {e}"))?
            .map_err(|e| format!("gateway refused: {e}"))?;
        let creds = gw
            .credentials(ctx())
            .await
            .map_err(|e| format!("gateway: {e}"))?
            .map_err(|e| format!("credentials refused: {e}"))?;
        println!(
            "agenfleet-agent: gateway says this is agent {}/{}; {} credential(s) fetched",
            hello.tenant,
            hello.agent,
            creds.len()
        );
        Ok(creds
            .into_iter()
            .map(|c| Held {
                name: c.name,
                version: c.version,
                value: c.value,
            })
            .collect())
    })
}

struct Args {
    workload: Workload,
    needs: Vec<String>,
    gateway: std::path::PathBuf,
    refresh: bool,
}

/// Keeps `held` current: waits on the gateway for rotated credentials and swaps them in
/// place (the `refresh` mode; the default mode restarts the agent instead).
fn refresh_forever(socket: std::path::PathBuf, held: std::sync::Arc<std::sync::Mutex<Vec<Held>>>) {
    let known = || {
        held.lock()
            .map(|h| h.iter().map(|c| (c.name.clone(), c.version)).collect())
            .unwrap_or_default()
    };
    watch_gateway_credentials(socket.clone(), known, |fresh| {
        for h in &fresh {
            println!(
                "agenfleet-agent: credential {} version {} in memory ({} bytes), refreshed in place",
                h.name,
                h.version,
                h.value.len()
            );
        }
        if let Ok(mut g) = held.lock() {
            *g = fresh;
        }
    });
}

/// Waits on the gateway, for ever, for this agent's credentials to differ from `known()`
/// (name, version pairs), and hands each new set to `on_fresh`. Reconnects when the
/// gateway goes away (a daemon restart).
pub(crate) fn watch_gateway_credentials(
    socket: std::path::PathBuf,
    known: impl Fn() -> Vec<(String, u32)>,
    mut on_fresh: impl FnMut(Vec<Held>),
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        loop {
            let Ok(gw) = agenfleet_protocol::transport::connect_gateway(&socket, 1024 * 1024).await
            else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            loop {
                let ctx =
                    agenfleet_protocol::transport::context_with_timeout(Duration::from_secs(40));
                match gw.wait_credentials(ctx, known(), 25_000).await {
                    Ok(Ok(Some(creds))) => on_fresh(
                        creds
                            .into_iter()
                            .map(|c| Held {
                                name: c.name,
                                version: c.version,
                                value: c.value,
                            })
                            .collect(),
                    ),
                    Ok(Ok(None)) => {}
                    _ => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut workload = Workload::default();
    let mut needs = Vec::new();
    let mut refresh = false;
    let mut gateway = std::path::Path::new(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER)
        .join(agenfleet_protocol::gateway::GATEWAY_SOCKET_NAME);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workload" => {
                let json = args.next().ok_or("--workload needs a JSON argument")?;
                workload =
                    serde_json::from_str(&json).map_err(|e| format!("bad --workload: {e}"))?;
            }
            "--credentials" => {
                let list = args.next().ok_or("--credentials needs a list of names")?;
                needs = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "--refresh" => refresh = true,
            "--gateway" => {
                gateway = args.next().ok_or("--gateway needs a socket path")?.into();
            }
            "--version" => {
                println!("agenfleet-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args {
        workload,
        needs,
        gateway,
        refresh,
    })
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("run") {
        // The init of an agent whose image is not ours (before any handler is installed:
        // it takes its signals with sigwait).
        let rest: Vec<String> = std::env::args().skip(2).collect();
        init::run(&rest);
    }
    install_signal_handlers();
    match std::env::args().nth(1).as_deref() {
        Some("endpoint") => std::process::exit(remote::endpoint_main()),
        Some("call") => std::process::exit(tools::call_main()),
        Some("bench") => std::process::exit(tools::bench_main()),
        Some("report") => std::process::exit(tools::report_main()),
        Some("http-bench") => std::process::exit(httpbench::main()),
        Some("health-http") => std::process::exit(httpbench::health_main()),
        _ => {}
    }
    let Args {
        workload,
        needs,
        gateway,
        refresh,
    } = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agenfleet-agent: {e}");
            std::process::exit(64);
        }
    };
    // Swarm mode: the gateway's sockets are served here and relayed over the overlay.
    remote::start_if_remote("agenfleet-agent");
    let held = if gateway.exists() || !needs.is_empty() {
        match fetch_credentials(&gateway) {
            Ok(h) => h,
            Err(e) if needs.is_empty() => {
                eprintln!("agenfleet-agent: no credentials: {e}");
                Vec::new()
            }
            Err(e) => {
                eprintln!("agenfleet-agent: cannot start without credentials: {e}");
                std::process::exit(70);
            }
        }
    } else {
        Vec::new()
    };
    for name in &needs {
        if !held.iter().any(|h| &h.name == name) {
            eprintln!("agenfleet-agent: credential `{name}` was not delivered; cannot start");
            std::process::exit(70);
        }
    }
    for h in &held {
        // Names, versions and sizes only — never the value.
        println!(
            "agenfleet-agent: credential {} version {} in memory ({} bytes)",
            h.name,
            h.version,
            h.value.len()
        );
    }
    // The workload's credentials, kept current in `refresh` mode.
    let held = std::sync::Arc::new(std::sync::Mutex::new(held));
    if refresh {
        let (socket, h) = (gateway.clone(), held.clone());
        std::thread::spawn(move || refresh_forever(socket, h));
    }
    if !workload.model_calls.is_empty() {
        let (socket, w) = (gateway.clone(), workload.clone());
        std::thread::spawn(move || tools::run_models(socket, w));
    }
    if !workload.tool_calls.is_empty() {
        let (socket, w) = (gateway.clone(), workload.clone());
        std::thread::spawn(move || tools::run_workload(socket, w));
    }
    let start = Instant::now();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "agenfleet-agent {} started: {}",
        env!("CARGO_PKG_VERSION"),
        workload.message
    );
    let _ = out.flush();

    let mut hoard: Vec<Vec<u8>> = Vec::new();
    let mut ticks: u64 = 0;
    let tick = Duration::from_millis(if workload.log_interval_ms > 0 {
        workload.log_interval_ms.min(100)
    } else {
        100
    });
    let mut next_log = start + Duration::from_millis(workload.log_interval_ms);
    let mut last_alloc = start;
    loop {
        std::thread::sleep(tick);
        let now = Instant::now();
        if workload.exit_after_ms > 0
            && now.duration_since(start) >= Duration::from_millis(workload.exit_after_ms)
        {
            let _ = writeln!(
                out,
                "agenfleet-agent: exiting with code {} as scripted",
                workload.exit_code
            );
            let _ = out.flush();
            std::process::exit(workload.exit_code);
        }
        if workload.alloc_mb_per_sec > 0 {
            let elapsed = now.duration_since(last_alloc).as_millis() as u64;
            let bytes = (workload.alloc_mb_per_sec * 1024 * 1024 * elapsed / 1000) as usize;
            if bytes > 0 {
                // Touch every page so the memory is really resident.
                hoard.push(vec![0xa5u8; bytes]);
                last_alloc = now;
            }
        }
        if workload.log_interval_ms > 0 && now >= next_log {
            ticks += 1;
            let held_mb = hoard.iter().map(|v| v.len()).sum::<usize>() / (1024 * 1024);
            let _ = if held_mb > 0 {
                writeln!(out, "{} #{ticks} (holding {held_mb} MiB)", workload.message)
            } else {
                writeln!(out, "{} #{ticks}", workload.message)
            };
            let _ = out.flush();
            next_log = now + Duration::from_millis(workload.log_interval_ms);
        }
    }
}
