//! Vault end-to-end benchmarks on the real engine (`cargo bench --bench vault`, release
//! binaries): a rotation until the running agent holds the new value (both refresh modes),
//! and unseal until every one of 100 credentialed agents runs.

use agenfleet_e2e::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Rotates `n` times; each time waits for the shim's log line naming the new version.
fn rotations(d: &Daemon, agent: &str, n: u32) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        let version = i + 2;
        let mut follow = d
            .cli_cmd()
            .args(["logs", agent, "-f", "--tail", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("logs -f");
        let (tx, rx) = mpsc::channel();
        let stdout = follow.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let o = d.cli_stdin(
            &["creds", "rotate", agent, "api-key"],
            &format!("value-{i}-{}", rand()),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = format!("credential api-key version {version} in memory");
        loop {
            let (t, l) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the new version in the agent's log");
            if l.contains(&want) {
                out.push(t.duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
        }
        let _ = follow.kill();
        let _ = follow.wait();
        d.wait_agent(agent, "running", Duration::from_secs(30), |v| {
            v["state"] == "Running"
        });
    }
    out
}

fn rand() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("vault bench") {
        return;
    }
    println!(
        "# vault end-to-end benchmarks — binaries from {}",
        bin("agenfleet")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let mut d = Daemon::start("vaultbench", "stats_interval_ms = 2000");
    let rk = d.json(&["vault", "init"])["recovery_key"]
        .as_str()
        .expect("rk")
        .to_string();
    for (name, mode) in [("rot-restart", "restart"), ("rot-refresh", "refresh")] {
        d.create(&format!(
            "name = \"{name}\"\nimage = \"agenfleet/agent\"\ncredentials = [\"api-key\"]\ncredential_refresh = \"{mode}\"\n[workload]\nlog_interval_ms = 1000\n"
        ));
        assert!(d
            .cli_stdin(&["creds", "set", name, "api-key"], "first")
            .status
            .success());
        d.wait_agent(name, "running", Duration::from_secs(30), |v| {
            v["state"] == "Running"
        });
        let mut v = rotations(&d, name, 10);
        println!(
            "rotate → the running agent holds the new value ({mode} mode, 10 trials, incl. CLI start): p50 {:.0} ms  max {:.0} ms  (target ≤ 2000 ms)",
            pct(&mut v, 0.5),
            pct(&mut v, 1.0)
        );
    }
    // 100 credentialed agents; seal (as a reboot would), lose their containers, restart, unseal.
    let n = 100;
    let t = Instant::now();
    let all: Vec<usize> = (0..n).collect();
    std::thread::scope(|s| {
        for chunk in all.chunks(25) {
            let d = &d;
            s.spawn(move || {
                for i in chunk {
                    let name = format!("cred-{i:03}");
                    d.create(&format!(
                        "name = \"{name}\"\nimage = \"agenfleet/agent\"\ncredentials = [\"api-key\"]\n[limits]\nmemory_mb = 32\ncpus = 0.1\n[workload]\nlog_interval_ms = 5000\n"
                    ));
                    let o = d.cli_stdin(&["creds", "set", &name, "api-key"], &format!("secret-{i}"));
                    assert!(o.status.success());
                }
            });
        }
    });
    println!(
        "created {n} credentialed agents in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let running = |d: &Daemon| {
        d.json(&["agents", "list"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|v| {
                        v["name"].as_str().unwrap_or("").starts_with("cred-")
                            && v["state"] == "Running"
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(120), "all running", || {
        (running(&d) == n).then_some(())
    });
    d.json(&["vault", "seal"]);
    d.kill9();
    let ids = d.containers();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    docker(&args);
    d.restart();
    wait_for(Duration::from_secs(60), "all held back", || {
        let l = d.json(&["agents", "list"]);
        let held = l
            .as_array()
            .map(|a| a.iter().filter(|v| v["state"] == "Pending").count())
            .unwrap_or(0);
        (held >= n).then_some(())
    });
    let t = Instant::now();
    let o = d.cli_stdin(&["vault", "unseal"], &rk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(Duration::from_secs(300), "all running after unseal", || {
        (running(&d) == n).then_some(())
    });
    println!("unseal → all {n} credentialed agents running (containers recreated, credentials fetched): {:.2} s", t.elapsed().as_secs_f64());
}
