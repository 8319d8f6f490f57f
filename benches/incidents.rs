//! Incident benchmarks on the real daemon and engine (`cargo bench --bench incidents`,
//! release binaries): (1) a real signal — an agent reporting a failing model provider
//! through its gateway, from inside its container — until a watching client
//! (`agenfleet watch --json`) sees the incident, p50/p99 over 200 trials; (2) a storm of
//! 10,000 signals from 4 agents: how long it takes, how many incidents it makes (dedup),
//! the daemon's memory, and whether the console (in tmux) still answers a key press.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("incidents bench") {
        return;
    }
    println!(
        "# incident benchmarks — binaries from {}",
        bin("agenfleet")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let d = Daemon::start("incbench", "stats_interval_ms = 5000");
    let mut cids = Vec::new();
    for i in 0..4 {
        let name = format!("reporter-{i}");
        d.create(&format!(
            "name = \"{name}\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n"
        ));
        let v = d.wait_agent(&name, "running", Duration::from_secs(30), |v| {
            v["state"] == "Running"
        });
        cids.push(v["container_id"].as_str().expect("cid").to_string());
    }

    // (1) signal → incident visible to a watching client.
    let watcher = Watcher::start(&d);
    std::thread::sleep(Duration::from_millis(500));
    let mut rep = Reporter::start(&cids[0]);
    let mut lat = Vec::new();
    for i in 0..200 {
        let provider = format!("latency-{i}");
        let t0 = Instant::now();
        rep.send(&provider);
        let (t, _) = watcher.wait_for(Duration::from_secs(10), "the incident", |v: &Value| {
            v["change"]["Incident"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("{provider} ")))
        });
        lat.push(t.duration_since(t0).as_secs_f64() * 1000.0);
    }
    drop(rep);
    println!(
        "signal (agent report through the gateway) → incident seen by `agenfleet watch`, 200 trials: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    drop(watcher);

    // (2) a storm of 10,000 signals over 100 providers, from 4 agents at once, with the
    // console open in a terminal.
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 120, 40);
    t.wait_screen("the console", |s| s.contains("reporter-0"));
    let before = d
        .json(&["incidents", "list"])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    let rss0 = rss_mb(d.pid());
    let total = 10_000usize;
    let start = Instant::now();
    let senders: Vec<_> = cids
        .iter()
        .enumerate()
        .map(|(k, cid)| {
            let cid = cid.clone();
            std::thread::spawn(move || {
                let mut r = Reporter::start(&cid);
                let n = total / 4;
                for i in 0..n {
                    r.send(&format!("storm-{}", (i * 4 + k) % 100));
                }
                // Every report is answered once it is recorded.
                for _ in 0..n {
                    if r.answers.recv_timeout(Duration::from_secs(60)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    // Meanwhile: how fast does the console answer a key? (switch views and back)
    let mut key_ms = Vec::new();
    let mut view = "4";
    while senders.iter().any(|h| !h.is_finished()) && key_ms.len() < 40 {
        let t0 = Instant::now();
        t.keys(&[view]);
        let want = if view == "4" {
            "Incidents —"
        } else {
            "Fleet ("
        };
        t.wait_screen("the view to switch", |s| s.contains(want));
        key_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        view = if view == "4" { "1" } else { "4" };
    }
    for h in senders {
        let _ = h.join();
    }
    let took = start.elapsed().as_secs_f64();
    let rss1 = rss_mb(d.pid());
    let list = d.json(&["incidents", "list"]);
    let storm: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["summary"].as_str().unwrap_or("").contains("storm-"))
        .collect();
    let counted: u64 = storm.iter().map(|i| i["count"].as_u64().unwrap_or(0)).sum();
    println!(
        "storm: {total} signals from 4 agents in {took:.1} s ({:.0}/s, target 10,000 in a minute): {} incidents (dedup by provider; {} open before), counts sum to {counted}",
        total as f64 / took,
        storm.len(),
        before
    );
    println!("daemon RSS: {rss0:.1} MB before, {rss1:.1} MB after the storm");
    if key_ms.is_empty() {
        println!("console: the storm ended before a key could be timed");
    } else {
        println!(
            "console during the storm: key → view switched on screen, {} presses: p50 {:.0} ms  max {:.0} ms",
            key_ms.len(),
            pct(&mut key_ms, 0.5),
            pct(&mut key_ms, 1.0)
        );
    }
    assert_eq!(
        counted as usize, total,
        "every signal is counted in its incident"
    );
}
