//! Agents' memory through their local API, from inside their containers
//! (`cargo bench --bench memory`, release binaries, real engine): `agenfleet-agent
//! http-bench post … --method GET|PUT` on one keep-alive connection to 127.0.0.1:4180 in
//! each agent's container (Debian's busybox image), relayed by the shim to the daemon.
//!
//! 1. One agent: PUT (sealed, audited first, fsynced) and GET (unsealed) latency.
//! 2. 16 agents at once, each reading its own memory: gets per second in all, p50/p99.

use agenfleet_e2e::*;
use std::process::Command;
use std::time::Duration;

fn q(v: &[f64], p: f64) -> f64 {
    let mut x = v.to_vec();
    x.sort_by(|a, b| a.total_cmp(b));
    x.get(((x.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

fn memory_call(cid: &str, method: &str, key: &str, n: usize, body: &str) -> Command {
    let mut c = Command::new("docker");
    c.args([
        "exec",
        cid,
        "/run/agenfleet/bin/agenfleet-agent",
        "http-bench",
        "post",
        &format!("http://127.0.0.1:4180/v1/memory/{key}"),
        &n.to_string(),
        body,
        "--method",
        method,
    ]);
    c
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("memory bench") {
        return;
    }
    let Some(image) = busybox_image("memory bench") else {
        return;
    };
    println!("# agent memory through the local API, from inside the containers — 2 cores");
    let d = Daemon::start(
        "membench",
        "stats_interval_ms = 5000\naudit_checkpoint_every = 100000",
    );
    d.json(&["vault", "init"]);
    let names: Vec<String> = (0..16).map(|i| format!("m{i:02}")).collect();
    for n in &names {
        d.create(&format!(
            "name = \"{n}\"\nimage = \"{image}\"\ncommand = [\"sleep\", \"1000000\"]\n[limits]\nmemory_mb = 64\n"
        ));
    }
    let cids: Vec<String> = names
        .iter()
        .map(|n| d.running_container(n, Duration::from_secs(60)))
        .collect();
    let value = r#"{"note":"the customer prefers email, in German, before 10:00 CET","seen":42}"#;
    for c in &cids {
        run_json(memory_call(c, "PUT", "profile", 1, value));
    }

    // 1. One agent, one call at a time.
    let put = run_json(memory_call(&cids[0], "PUT", "scratch", 1000, value));
    let get = run_json(memory_call(&cids[0], "GET", "profile", 5000, ""));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "1 agent, keep-alive: PUT p50 {:.0} µs p99 {:.0} µs ({} ok of {}); GET p50 {:.0} µs p99 {:.0} µs ({} ok of {})  (target: GET p50 ≤ 1000 µs)",
        f(&put, "p50_us"),
        f(&put, "p99_us"),
        put["ok"],
        put["n"],
        f(&get, "p50_us"),
        f(&get, "p99_us"),
        get["ok"],
        get["n"]
    );

    // 2. 16 agents at once, each its own memory.
    let each = 5000;
    let (rate, outs) = together(
        cids.iter()
            .map(|c| memory_call(c, "GET", "profile", each, ""))
            .collect(),
    );
    let ok: u64 = outs.iter().map(|o| o["ok"].as_u64().unwrap_or(0)).sum();
    let p50s: Vec<f64> = outs.iter().map(|o| f(o, "p50_us")).collect();
    let p99s: Vec<f64> = outs.iter().map(|o| f(o, "p99_us")).collect();
    println!(
        "16 agents at once ({each} GETs each): {rate:.0} gets/s in all ({ok} ok); per agent p50 {:.0} µs (median), p99 {:.0} µs (worst)  (target ≥ 10,000 gets/s)",
        q(&p50s, 0.5),
        q(&p99s, 1.0)
    );
}
