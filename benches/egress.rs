//! The gateway's egress path against the direct one (`cargo bench --bench egress`, release
//! binaries, real engine). The same load generator (`agenfleet-agent http-bench`) runs on
//! the host, straight to a server, and inside agents' containers (Debian's busybox image,
//! network mode `gateway`), through the shim's relay and the daemon's egress proxy — where
//! every request is decided and its record made durable before a byte goes upstream.
//!
//! 1. One GET (1 KiB answer) at a time, new connection each: added latency p50/p99.
//! 2. 16 agents at once vs 16 host processes: requests per second.
//! 3. A 100 MB download through a CONNECT tunnel vs directly: throughput.
//! 4. A container started with the shim as its init vs the same image started plainly.

use agenfleet_e2e::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn host_bench(args: &[&str]) -> Command {
    let mut c = Command::new(bin("agenfleet-agent"));
    c.arg("http-bench").args(args);
    c
}

fn agent_bench(cid: &str, args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args([
        "exec",
        cid,
        "/run/agenfleet/bin/agenfleet-agent",
        "http-bench",
    ])
    .args(args)
    .args(["--proxy", "127.0.0.1:3128"]);
    c
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("egress bench") {
        return;
    }
    let Some(image) = busybox_image("egress bench") else {
        return;
    };
    let stub = StubServer::start();
    stub.set("/k", 200, &"x".repeat(1024));
    // A bulk source: each connection gets BULK bytes.
    const BULK: u64 = 100 * 1024 * 1024;
    let bulk = std::net::TcpListener::bind("0.0.0.0:0").expect("bulk server");
    let bulk_port = bulk.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in bulk.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                use std::io::Write;
                let chunk = vec![0u8; 256 * 1024];
                let mut sent = 0;
                while sent < BULK {
                    if c.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                }
            });
        }
    });
    let host = host_address();
    let p = stub.port;
    let url = format!("http://{host}:{p}/k");
    let tunnel = format!("{host}:{bulk_port}");
    println!("# egress: gateway proxy vs direct — 2 cores, stub at {url}");

    let d = Daemon::start(
        "egressbench",
        "stats_interval_ms = 5000\naudit_checkpoint_every = 100000",
    );
    let scopes = format!(
        "tools = [\"http_request\"]\n[[http]]\nhost = \"{host}\"\nmethods = [\"GET\", \"CONNECT\"]\nports = [{p}, {bulk_port}]\nprivate = true\n"
    );
    let names: Vec<String> = (0..16).map(|i| format!("eg-{i:02}")).collect();
    for n in &names {
        d.create(&format!(
            "name = \"{n}\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000000\"]\n[limits]\nmemory_mb = 64\n"
        ));
        let f = d.file(&format!("{n}.toml"), &scopes);
        d.json(&["scopes", "publish", n, &f]);
    }
    let cids: Vec<String> = names
        .iter()
        .map(|n| d.running_container(n, Duration::from_secs(60)))
        .collect();

    // 1. Latency, one request at a time, 3 rounds alternating.
    let n = "1000";
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let run_direct = || run_json(host_bench(&["get", &url, n]));
        let run_proxied = || run_json(agent_bench(&cids[0], &["get", &url, n]));
        if round % 2 == 0 {
            direct.push(run_direct());
            proxied.push(run_proxied());
        } else {
            proxied.push(run_proxied());
            direct.push(run_direct());
        }
    }
    let med = |v: &[Value], k: &str| {
        let mut x: Vec<f64> = v.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    let (d50, d99, p50, p99) = (
        med(&direct, "p50_us"),
        med(&direct, "p99_us"),
        med(&proxied, "p50_us"),
        med(&proxied, "p99_us"),
    );
    println!(
        "1 GET at a time, 1 KiB answer, new connection each ({n} × 3 rounds, medians of rounds):"
    );
    println!("  direct from the host        p50 {d50:7.0} µs  p99 {d99:7.0} µs");
    println!("  through the gateway proxy   p50 {p50:7.0} µs  p99 {p99:7.0} µs");
    println!(
        "  added: p50 {:.0} µs, p99 {:.0} µs  (target: p50 ≤ 1000 µs added)",
        p50 - d50,
        p99 - d99
    );

    // 2. Throughput with 16 agents vs 16 host processes: all 16 generators start sending at
    // one wall-clock instant (a `docker exec` takes a while to start; that is not the
    // proxy's time), the rate is their requests over first start to last end.
    let each = "300";
    let rate_of = |cmds: Vec<Command>| together(cmds).0;
    let direct_rate = rate_of((0..16).map(|_| host_bench(&["get", &url, each])).collect());
    let url = url.as_str();
    let proxied_rate = rate_of(
        cids.iter()
            .map(|c| agent_bench(c, &["get", url, each]))
            .collect(),
    );
    println!("16 at once ({each} GETs each):");
    println!("  direct: {direct_rate:.0} requests/s; through the gateway: {proxied_rate:.0} requests/s = {:.0}%  (target ≥ 50%)", 100.0 * proxied_rate / direct_rate);

    // 3. Bulk through a CONNECT tunnel.
    let bytes = BULK.to_string();
    let mut rates = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let r = run_json(host_bench(&["connect", &tunnel, &bytes]));
        rates
            .0
            .push(r["bytes"].as_f64().unwrap_or(0.0) / r["secs"].as_f64().unwrap_or(1.0) / 1e6);
        let r = run_json(agent_bench(&cids[0], &["connect", &tunnel, &bytes]));
        rates
            .1
            .push(r["bytes"].as_f64().unwrap_or(0.0) / r["secs"].as_f64().unwrap_or(1.0) / 1e6);
    }
    rates.0.sort_by(|a, b| a.total_cmp(b));
    rates.1.sort_by(|a, b| a.total_cmp(b));
    let (rd, rp) = (rates.0[1], rates.1[1]);
    println!(
        "100 MB download (median of 3): direct {rd:.0} MB/s; through a CONNECT tunnel {rp:.0} MB/s = {:.0}%  (target ≥ 80%)",
        100.0 * rp / rd
    );

    // 4. Start with the shim as init vs plain, same image.
    let shim = std::fs::read_dir(d.dir.join("state/bin"))
        .expect("the shim on the host")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agenfleet-agent-"))
        })
        .expect("the shim file");
    let mount = format!("{}:/run/agenfleet/bin/agenfleet-agent:ro", shim.display());
    let time = |args: &[&str]| {
        let t = Instant::now();
        let ok = Command::new("docker")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "docker {args:?}");
        t.elapsed().as_secs_f64() * 1000.0
    };
    let (mut plain, mut init) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        plain.push(time(&["run", "--rm", "--network", "none", &image, "true"]));
        init.push(time(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount,
            "--entrypoint",
            "/run/agenfleet/bin/agenfleet-agent",
            &image,
            "run",
            "--",
            "true",
        ]));
    }
    plain.sort_by(|a, b| a.total_cmp(b));
    init.sort_by(|a, b| a.total_cmp(b));
    println!(
        "container run to exit (docker run --rm, 10 each, p50): plain {:.0} ms, shim as init {:.0} ms: added {:.0} ms  (target ≤ 50 ms)",
        plain[5],
        init[5],
        init[5] - plain[5]
    );
}
