//! Fleet benchmarks on the real engine (run with `cargo bench --bench fleet`; needs the
//! binaries: `cargo build --release --workspace --bins` — or debug ones, see below).
//!
//! 1. `agenfleet --json status` vs `docker ps --format json` with 50 (and, after 3b, 200)
//!    running agents, same engine, same run, and `agenfleet --version` vs `/bin/true`:
//!    paired runs, the two commands alternating (which goes first alternates too), wall
//!    time per call with process start; each command's median and the median of the
//!    per-pair ratios, so a noisy moment weighs on both sides of a pair alike.
//! 2. A container is killed → a client waiting in `watch` sees it: p50/p99 over 20 trials.
//! 3. Daemon resident memory with 50 and with 200 agents.
//!
//! The binaries used are those next to this bench executable (target/release when run by
//! `cargo bench`). Set AGENFLEET_BENCH_AGENTS=N to change the big fleet size (default 200).

use agenfleet_e2e::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Wall time of one run of `c` in ms (output discarded; it must succeed).
fn time_one(mut c: Command) -> f64 {
    let t = Instant::now();
    let out = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(out.success(), "{c:?} failed");
    t.elapsed().as_secs_f64() * 1000.0
}

/// `n` pairs of runs of `a` and `b`, alternating which goes first; prints each one's
/// median and p99 and the median of the per-pair ratios b/a, and returns that ratio.
fn paired(
    what: &str,
    (a_name, mut a): (&str, impl FnMut() -> Command),
    (b_name, mut b): (&str, impl FnMut() -> Command),
    n: usize,
) -> f64 {
    // A few unmeasured runs of each: page cache, the daemon's first connections.
    for _ in 0..3 {
        time_one(a());
        time_one(b());
    }
    let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (x, y) = if i % 2 == 0 {
            let x = time_one(a());
            (x, time_one(b()))
        } else {
            let y = time_one(b());
            (time_one(a()), y)
        };
        ta.push(x);
        tb.push(y);
        ratio.push(y / x);
    }
    for v in [&mut ta, &mut tb, &mut ratio] {
        v.sort_by(|p, q| p.total_cmp(q));
    }
    println!("{what} ({n} pairs, alternating; wall time incl. process start):");
    for (name, v) in [(a_name, &ta), (b_name, &tb)] {
        println!(
            "  {name:<28} p50 {:7.2} ms  p99 {:7.2} ms",
            quantile(v, 0.5),
            quantile(v, 0.99)
        );
    }
    let r = quantile(&ratio, 0.5);
    println!(
        "  median of per-pair ratios {b_name} / {a_name}: {r:.2}x  (pairs p10 {:.2}x, p90 {:.2}x)",
        quantile(&ratio, 0.1),
        quantile(&ratio, 0.9)
    );
    r
}

/// `agenfleet --json status` against `d`.
fn status_cmd(d: &Daemon) -> impl FnMut() -> Command + '_ {
    move || {
        let mut c = d.cli_cmd();
        c.args(["--json", "status"]);
        c
    }
}

fn docker_ps() -> Command {
    let mut c = Command::new("docker");
    c.args(["ps", "--format", "json"]);
    c
}

fn create_many(d: &Daemon, from: usize, to: usize) {
    let names: Vec<String> = (from..to).map(|i| format!("bench-{i:03}")).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len().div_ceil(4).max(1)) {
            s.spawn(move || {
                for n in chunk {
                    let spec = format!(
                        "name = \"{n}\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 32\ncpus = 0.1\n\
                         [workload]\nlog_interval_ms = 5000\n"
                    );
                    d.create(&spec);
                }
            });
        }
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("fleet bench") {
        return;
    }
    let big: usize = std::env::var("AGENFLEET_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let profile = bin("agenfleet")
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!(
        "# fleet benchmarks — binaries from {profile}, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let d = Daemon::start("bench", "stats_interval_ms = 2000");
    let t = Instant::now();
    create_many(&d, 0, 50);
    println!("created 50 agents in {:.1} s", t.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));

    // 1. status vs docker ps; the CLI's start vs a process's.
    let n = 30;
    let r = paired(
        "status of 50 running agents",
        ("agenfleet --json status", status_cmd(&d)),
        ("docker ps --format json", docker_ps),
        n,
    );
    println!("  → docker ps / agenfleet status: {r:.1}x  (target ≥ 20x)");
    let r = paired(
        "starting the CLI",
        ("/bin/true", || Command::new("true")),
        ("agenfleet --version", || {
            let mut c = Command::new(bin("agenfleet"));
            c.arg("--version");
            c
        }),
        n,
    );
    println!("  → agenfleet --version / true: {r:.2}x  (target ≤ 1.5x)");

    // In-process figure: the RPC alone, on one connection.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let rpc = rt.block_on(async {
        let c = agenfleet_protocol::transport::connect(
            &d.socket,
            agenfleet_protocol::DEFAULT_MAX_FRAME_BYTES,
        )
        .await
        .expect("connect");
        let mut v = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            c.status(agenfleet_protocol::transport::context_with_timeout(
                Duration::from_secs(10),
            ))
            .await
            .expect("rpc")
            .expect("status");
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v
    });
    println!(
        "  status RPC alone (one connection, 50 agents): p50 {:.3} ms  p99 {:.3} ms",
        quantile(&rpc, 0.5),
        quantile(&rpc, 0.99)
    );

    // 3a. memory at 50.
    let rss50 = rss_mb(d.pid());
    println!("daemon RSS with 50 agents: {rss50:.1} MB");

    // 2. kill → watch latency.
    d.create(
        "name = \"target\"\nimage = \"agenfleet/agent\"\n[restart]\nattempts = 1000\ndelay_ms = 200\nmax_delay_ms = 200\n",
    );
    let mut watcher = d
        .cli_cmd()
        .args(["--json", "watch", "--changes-only"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = watcher.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    for _ in 0..20 {
        let v = d.wait_agent("target", "running", Duration::from_secs(20), |v| {
            v["state"] == "Running"
        });
        let id = v["container_id"].as_str().expect("id").to_string();
        let pid = inspect(&id)["State"]["Pid"].as_i64().expect("pid");
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        loop {
            let (t, line) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("watch line");
            if line.contains("\"target\"") && line.contains("BackingOff") {
                lat.push(t.duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "kill → watch sees it (20 trials): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (target p50 ≤ 50 ms)",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // 3b. memory at the big fleet size.
    if big > 51 {
        let t = Instant::now();
        create_many(&d, 51, big + 1);
        println!(
            "created {} more agents in {:.1} s",
            big - 50,
            t.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_secs(5));
        let st = d.json(&["status"]);
        let running = st["agents"]
            .as_array()
            .map(|a| a.iter().filter(|v| v["state"] == "Running").count())
            .unwrap_or(0);
        println!(
            "daemon RSS with {} agents ({running} running): {:.1} MB  (target ≤ 40 MB at 200)",
            big + 1,
            rss_mb(d.pid())
        );
        paired(
            &format!("status of {} agents", big + 1),
            ("agenfleet --json status", status_cmd(&d)),
            ("docker ps --format json", docker_ps),
            n,
        );
    }
}
