//! `authorize` over the real gateway sockets with the durable audit record
//! (`cargo bench --bench gateway`, release binaries, real engine): 64 agents, each running
//! `agenfleet-agent bench` inside its own container (`docker exec`), all starting at the
//! same instant and making sequential decisions — 64 in flight. Prints decisions per second
//! over the whole run and the latency percentiles over every call, next to the target
//! (≥ 20,000/s, p99 ≤ 5 ms), and checks that every decision is in the audit log.

use agenfleet_e2e::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("gateway bench") {
        return;
    }
    let agents: usize = std::env::var("AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let cpus: f64 = std::env::var("CPUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    println!(
        "# authorize over the gateway socket, durable audit record per decision — {agents} agents × {calls} calls, binaries from {}",
        bin("agenfleet").parent().map(|p| p.display().to_string()).unwrap_or_default()
    );
    let d = Daemon::start(
        "gwbench",
        "stats_interval_ms = 5000\naudit_checkpoint_every = 100000",
    );
    let names: Vec<String> = (0..agents).map(|i| format!("gw-{i:03}")).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(16) {
            let d = &d;
            s.spawn(move || {
                for name in chunk {
                    d.create(&format!(
                        "name = \"{name}\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 64\ncpus = {cpus}\n[workload]\nlog_interval_ms = 0\n"
                    ));
                    let f = d.file(&format!("{name}.toml"), "tools = [\"search\", \"read_file\"]\nread_paths = [\"/data/\"]\n");
                    d.json(&["scopes", "publish", name, &f]);
                }
            });
        }
    });
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            d.wait_agent(n, "running", Duration::from_secs(60), |v| {
                v["state"] == "Running"
            })["container_id"]
                .as_str()
                .expect("container")
                .to_string()
        })
        .collect();
    let before = d.json(&["audit", "status"]);
    let cpu_before = cpu_ms(d.pid());
    let start_at = agenfleet_protocol_now_ms() + 3000;
    let args = r#"{"path":"/data/reports/2026-q3.csv"}"#;
    let summaries: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|cid| {
                s.spawn(move || {
                    let out = Command::new("docker")
                        .args(["exec", cid, "/agenfleet-agent", "bench"])
                        .args([
                            "--calls",
                            &calls.to_string(),
                            "--start-at",
                            &start_at.to_string(),
                        ])
                        .args(["--tool", "read_file", "--args", args])
                        .output()
                        .expect("docker exec");
                    serde_json::from_slice::<Value>(&out.stdout).unwrap_or_else(|e| {
                        panic!(
                            "bench output: {e}: {}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let total: u64 = summaries
        .iter()
        .map(|s| s["calls"].as_u64().unwrap_or(0))
        .sum();
    let allowed: u64 = summaries
        .iter()
        .map(|s| s["allowed"].as_u64().unwrap_or(0))
        .sum();
    let errors: u64 = summaries
        .iter()
        .map(|s| s["errors"].as_u64().unwrap_or(0))
        .sum();
    let begin = summaries
        .iter()
        .map(|s| s["began_ms"].as_u64().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let end_us = summaries
        .iter()
        .map(|s| s["began_ms"].as_u64().unwrap_or(0) * 1000 + s["elapsed_us"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let wall_s = (end_us - begin * 1000) as f64 / 1e6;
    let mut lat: Vec<u64> = summaries
        .iter()
        .flat_map(|s| s["latencies_us"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{agents} agents, {total} decisions ({allowed} allowed, {errors} errors) in {wall_s:.2} s: {:.0} decisions/s  (target ≥ 20,000/s)",
        total as f64 / wall_s
    );
    println!(
        "latency per decision incl. the durable audit record: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (target p99 ≤ 5 ms)",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    let cpu = cpu_ms(d.pid()) - cpu_before;
    println!(
        "daemon CPU: {:.2} s over the run = {:.0} µs per decision ({:.2} cores of 2)",
        cpu as f64 / 1000.0,
        cpu as f64 * 1000.0 / total as f64,
        cpu as f64 / 1000.0 / wall_s
    );
    let after = d.json(&["audit", "status"]);
    let head = |v: &Value| {
        v["head_seq"]
            .as_u64()
            .or_else(|| v["records"].as_u64())
            .unwrap_or(0)
    };
    println!(
        "audit records written during the run: {} (≥ {total} decisions)",
        head(&after).saturating_sub(head(&before))
    );
    assert_eq!(errors, 0);
    assert!(
        head(&after) - head(&before) >= total,
        "every decision is in the audit log"
    );
}

fn agenfleet_protocol_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// User + system CPU time of a process, in ms.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) in clock ticks; after ") " the state is field 3.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks * 1000 / 100
}
