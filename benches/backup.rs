//! Backup and restore of a loaded host (run with `cargo bench --bench backup`; the
//! binaries next to this bench executable are used, target/release under `cargo bench`).
//!
//! State: 200 agents (each declaring one credential more than it is given, so they stay
//! pending and no container runs), 10,000 credentials (50 each, sealed in the vault) and
//! an audit log of AGENFLEET_BENCH_AUDIT_MB (default 1024) MB of 4 KB operator notes.
//! Then, alternating, N times (AGENFLEET_BENCH_TRIALS, default 3):
//! 1. `agenfleet backup --out FILE` (the daemon running) — wall time;
//! 2. `cp` of the same files (the database, its WAL, the audit dir) to a fresh dir, then
//!    `sync` of the copies — wall time; also without the sync;
//! 3. `agenfleetd restore FILE --state-dir DIR` — wall time (it verifies everything).
//!    Throughput is the archive's size over the time.

use agenfleet_e2e::*;
use agenfleet_protocol::{transport, AgentRef, SecretValue, DEFAULT_MAX_FRAME_BYTES};
use std::process::Command;
use std::time::{Duration, Instant};

const AGENTS: usize = 200;
const CREDS_PER_AGENT: usize = 50;
const IN_FLIGHT: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e
                        .metadata()
                        .map(|m| (m.is_dir(), m.len()))
                        .unwrap_or((false, 0));
                    if m.0 {
                        dir_bytes(&e.path())
                    } else {
                        m.1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `c` to a successful end; answers its wall time and its output.
fn timed(mut c: Command) -> (f64, std::process::Output) {
    let t = Instant::now();
    let out = c.output().expect("run");
    let s = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    (s, out)
}

/// A process's CPU seconds (user + system) from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted from the state at index 0 = field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn load(d: &Daemon, audit_mb: u64) {
    let names: Vec<String> = (0..CREDS_PER_AGENT + 1)
        .map(|i| format!("\"k{i}\""))
        .collect();
    let t = Instant::now();
    for a in 0..AGENTS {
        let spec = format!(
            "name = \"a{a:03}\"\nimage = \"agenfleet/agent\"\ncredentials = [{}]\n",
            names.join(", ")
        );
        d.create(&spec);
    }
    println!(
        "# {AGENTS} agents created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let socket = d.socket.clone();
    let audit = d.dir.join("state").join("audit");
    rt.block_on(async move {
        let c = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .expect("connect");
        let ctx = || transport::context_with_timeout(Duration::from_secs(60));
        let t = Instant::now();
        let jobs: Vec<(usize, usize)> = (0..AGENTS)
            .flat_map(|a| (0..CREDS_PER_AGENT).map(move |k| (a, k)))
            .collect();
        for batch in jobs.chunks(IN_FLIGHT) {
            let mut calls = tokio::task::JoinSet::new();
            for (a, k) in batch {
                let c = c.clone();
                let agent = AgentRef {
                    tenant: None,
                    name: format!("a{a:03}"),
                };
                let value =
                    SecretValue::new(format!("value-{a}-{k}-{}", "x".repeat(40)).into_bytes());
                let name = format!("k{k}");
                calls.spawn(async move {
                    c.creds_set(ctx(), agent, name, value)
                        .await
                        .expect("rpc")
                        .expect("creds set")
                });
            }
            calls.join_all().await;
        }
        println!(
            "# {} credentials set in {:.1} s",
            jobs.len(),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let note = "n".repeat(4000);
        let want = audit_mb * 1024 * 1024;
        while dir_bytes(&audit) < want {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..IN_FLIGHT * 4 {
                let c = c.clone();
                let note = note.clone();
                calls.spawn(
                    async move { c.audit_note(ctx(), note).await.expect("rpc").expect("note") },
                );
            }
            calls.join_all().await;
        }
        println!(
            "# audit log grown to {:.0} MB in {:.1} s",
            dir_bytes(&audit) as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    });
}

fn main() {
    if !docker_available("bench backup") {
        return;
    }
    let trials = env_or("AGENFLEET_BENCH_TRIALS", 3);
    let audit_mb = env_or("AGENFLEET_BENCH_AUDIT_MB", 1024);
    let d = Daemon::start("bench-backup", "");
    d.json(&["vault", "init"]);
    load(&d, audit_mb);
    let state = d.dir.join("state");
    let mut rows = Vec::new();
    for i in 0..trials {
        let archive = d.dir.join(format!("b{i}.tar"));
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "cli-cpu %U %S"]);
        c.arg(bin("agenfleet"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["backup", "--out", archive.to_str().unwrap()]);
        let daemon_before = cpu_secs(d.pid());
        let (backup, out) = timed(c);
        let daemon_cpu = cpu_secs(d.pid()) - daemon_before;
        let cli_cpu: f64 = String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|l| l.strip_prefix("cli-cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0);
        println!("# backup {i}: {backup:.2} s wall, daemon {daemon_cpu:.2} s CPU, CLI {cli_cpu:.2} s CPU");
        let bytes = std::fs::metadata(&archive).expect("archive").len();
        // cp of the same files, then their sync (what a durable copy costs).
        let copy = d.dir.join(format!("cp{i}"));
        std::fs::create_dir(&copy).expect("cp dir");
        let sources: Vec<String> = ["agenfleet.db", "agenfleet.db-wal", "audit"]
            .iter()
            .map(|f| state.join(f))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        let mut c = Command::new("cp");
        c.arg("-r").args(&sources).arg(&copy);
        let (cp, _) = timed(c);
        let mut c = Command::new("sync");
        c.arg("-f").arg(copy.join("agenfleet.db"));
        // `sync -f` syncs the whole filesystem the file is on: every copied file.
        let cp_sync = cp + timed(c).0;
        let target = d.dir.join(format!("restored{i}"));
        let (restore, _) = timed(restore_cmd(&archive, &target));
        rows.push((bytes, backup, cp, cp_sync, restore));
        for p in [&copy, &target] {
            let _ = std::fs::remove_dir_all(p);
        }
        let _ = std::fs::remove_file(&archive);
    }
    println!(
        "# backup vs cp: {AGENTS} agents, {} credentials, audit {audit_mb} MB",
        AGENTS * CREDS_PER_AGENT
    );
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
    for (bytes, backup, cp, cp_sync, restore) in &rows {
        println!(
            "archive {:.0} MB | backup {backup:.2} s ({:.0} MB/s) | cp+sync {cp_sync:.2} s ({:.0} MB/s), cp alone {cp:.2} s | backup/cp+sync {:.0}% | restore {restore:.2} s ({:.0} MB/s)",
            *bytes as f64 / 1e6,
            mb(*bytes, *backup),
            mb(*bytes, *cp_sync),
            cp_sync / backup * 100.0,
            mb(*bytes, *restore),
        );
    }
}
