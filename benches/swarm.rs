//! Swarm mode against container mode on the real engine (`cargo bench --bench swarm`;
//! the binaries next to this bench executable, target/release under `cargo bench`). The
//! engine joins a one-node swarm for the run (and leaves it after, as it was) unless it
//! is in one already.
//!
//! 1. Create → running for AGENTS agents (default 50, the built-in image), one daemon in
//!    container mode and one in swarm mode, the same run: from the first `agents create`
//!    to every agent shown running (the creates are sent one after the other, as a script
//!    would; swarm mode answers "pending" and Swarm starts the task).
//! 2. `authorize` from 16 of those agents at once (`agenfleet-agent bench` in each, CALLS
//!    sequential calls): over the Unix socket (container mode) and over the overlay
//!    network through the gateway endpoint with the token (swarm mode): p50 / p99.
//! 3. Fleet status with STATUS_AGENTS agents (default 200) in swarm mode, 20 of each,
//!    p50: the daemon's `list_agents` RPC (one connection, as the console holds) against
//!    `docker service ls` (the target, ≥ 20×); and, to be fair both ways, command against
//!    command (`agenfleet agents list --json`) and API against API (the engine's `GET
//!    /services` + `GET /tasks`, what `docker service ls` asks, over its socket).
//!
//! `ONLY_STATUS=1` skips 1 and 2 (the swarm daemon alone, STATUS_AGENTS agents).

use agenfleet_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn spec(name: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"bench\"\nproject = \"p\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n[limits]\nmemory_mb = 32\ncpus = 0.1\n"
    )
}

/// Creates `names` one after the other; answers the time until every one runs.
fn create_all(d: &Daemon, names: &[String]) -> Duration {
    let t0 = Instant::now();
    for n in names {
        let f = d.file(&format!("{n}.toml"), &spec(n));
        let out = d.cli(&["agents", "create", "-f", &f]);
        assert!(out.status.success(), "{out:?}");
    }
    wait_for(Duration::from_secs(1800), "every agent running", || {
        let list = d.json(&["agents", "list"]);
        let running = list
            .as_array()
            .map(|a| a.iter().filter(|v| v["state"] == "Running").count())
            .unwrap_or(0);
        (running >= names.len()).then_some(())
    });
    t0.elapsed()
}

/// `agenfleet-agent bench` in each agent's container at once; every call's latency (µs).
fn authorize(d: &Daemon, names: &[String], calls: usize) -> Vec<u64> {
    let cids: Vec<String> = names
        .iter()
        .map(|n| {
            d.agent(&format!("bench/{n}"))["container_id"]
                .as_str()
                .expect("a running agent's container")
                .to_string()
        })
        .collect();
    authorize_in(&["docker".to_string()], &cids, calls)
}

/// The p50 of `n` runs of a whole command, in ms.
fn command_p50(n: usize, mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(_swarm) = SwarmGuard::join("swarm bench") else {
        return;
    };
    let agents = env_usize("AGENTS", 50);
    let calls = env_usize("CALLS", 2000);
    let status_agents = env_usize("STATUS_AGENTS", 200).max(agents);
    println!(
        "# swarm mode vs container mode, one node — binaries from {}",
        bin("agenfleet")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let names: Vec<String> = (0..status_agents).map(|i| format!("a{i:03}")).collect();
    let quiet = "stats_interval_ms = 5000\naudit_checkpoint_every = 100000\n";
    if std::env::var("ONLY_STATUS").is_ok() {
        let swarm = Daemon::start("swarmbench-s", &format!("{quiet}{}", SwarmGuard::config()));
        let took = create_all(&swarm, &names);
        println!(
            "({status_agents} swarm agents created and running in {:.1} s)",
            took.as_secs_f64()
        );
        status(&swarm, status_agents);
        return;
    }

    let plain = Daemon::start("swarmbench-c", quiet);
    let took = create_all(&plain, &names[..agents]);
    println!(
        "create → running, {agents} agents, container mode: {:.1} s ({:.0} ms an agent)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / agents as f64
    );
    let swarm = Daemon::start("swarmbench-s", &format!("{quiet}{}", SwarmGuard::config()));
    let took = create_all(&swarm, &names[..agents]);
    println!(
        "create → running, {agents} agents, swarm mode:     {:.1} s ({:.0} ms an agent)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / agents as f64
    );

    let sixteen = &names[..16.min(agents)];
    for (label, d) in [
        ("Unix socket (containers)", &plain),
        ("overlay + endpoint (swarm)", &swarm),
    ] {
        let lat = authorize(d, sixteen, calls);
        println!(
            "authorize, {} agents × {calls} calls, {label}: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
            sixteen.len(),
            pct_ms(&lat, 0.50),
            pct_ms(&lat, 0.99),
            lat.len()
        );
    }
    drop(plain);

    let took = create_all(&swarm, &names[agents..]);
    println!(
        "(the other {} swarm agents created and running in {:.1} s)",
        status_agents - agents,
        took.as_secs_f64()
    );
    status(&swarm, status_agents);
}

/// One HTTP/1.1 GET to the engine's API over its socket; answers the body's length.
fn engine_get(path: &str) -> usize {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
        .expect("the engine's socket");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    out.len()
}

/// Part 3 (see the header).
fn status(swarm: &Daemon, status_agents: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(agenfleet_protocol::transport::connect(
            &swarm.socket,
            agenfleet_protocol::DEFAULT_MAX_FRAME_BYTES,
        ))
        .expect("connect");
    let rpc_p50 = command_p50(20, || {
        let ctx = agenfleet_protocol::transport::context_with_timeout(Duration::from_secs(30));
        let list = rt
            .block_on(client.list_agents(ctx))
            .expect("rpc")
            .expect("list");
        assert_eq!(list.len(), status_agents);
    });
    let daemon_p50 = command_p50(20, || {
        let out = swarm.cli(&["agents", "list", "--json"]);
        assert!(out.status.success());
    });
    let filter = format!("label=agenfleet.instance={}", swarm.instance);
    let docker_p50 = command_p50(20, || {
        let out = Command::new("docker")
            .args(["service", "ls", "--filter", &filter])
            .output()
            .expect("docker service ls");
        assert!(out.status.success());
    });
    let query = format!(
        "/v1.41/services?filters=%7B%22label%22%3A%5B%22agenfleet.instance%3D{}%22%5D%7D",
        swarm.instance
    );
    let api_p50 = command_p50(20, || {
        engine_get(&query);
        engine_get("/v1.41/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D");
    });
    println!(
        "fleet status, {status_agents} agents in swarm mode (p50 of 20):\n  list_agents RPC {rpc_p50:.2} ms vs docker service ls {docker_p50:.1} ms → {:.1}× (target ≥ 20×)\n  command vs command: agenfleet agents list --json {daemon_p50:.1} ms → {:.1}×\n  API vs API: the engine's GET /services + GET /tasks {api_p50:.2} ms → {:.1}×",
        docker_p50 / rpc_p50,
        docker_p50 / daemon_p50,
        api_p50 / rpc_p50
    );
    // The services go with the swarm when the guard made it; else remove them here.
    let ids = docker(&["service", "ls", "-q", "--filter", &filter]);
    for id in ids.lines() {
        let _ = Command::new("docker").args(["service", "rm", id]).output();
    }
}
