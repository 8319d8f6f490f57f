//! What the benchmarks and the load tests read off: quantiles of latencies and a process's
//! resident memory.

/// The `q` quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Resident memory of a process, in MB (from /proc).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Unix time in ms (what the load generators' `--start-at` takes).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs a load generator and reads the one JSON line it prints; panics with its output
/// when it fails.
pub fn run_json(mut c: std::process::Command) -> serde_json::Value {
    let out = c.output().expect("run the load generator");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Runs load generators (`agenfleet-agent http-bench …`) so that all start sending at one
/// wall-clock instant, 3 s from now (`--start-at`: a `docker exec` takes a while to start,
/// which is not the server's time), and answers the rate — their `ok` requests over the
/// start to the last end — and each one's JSON line. A generator that started after the
/// instant fails the run.
pub fn together(cmds: Vec<std::process::Command>) -> (f64, Vec<serde_json::Value>) {
    let at = crate::now_ms() + 3000;
    let outs: Vec<serde_json::Value> = std::thread::scope(|s| {
        let hs: Vec<_> = cmds
            .into_iter()
            .map(|mut c| {
                c.args(["--start-at", &at.to_string()]);
                s.spawn(move || run_json(c))
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    assert!(
        outs.iter().all(|o| o["late"] == false),
        "a generator started after the start time: {outs:?}"
    );
    let ok: u64 = outs.iter().map(|o| o["ok"].as_u64().unwrap_or(0)).sum();
    let end = outs
        .iter()
        .map(|o| o["end_ms"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(at);
    (
        ok as f64 / (end.saturating_sub(at).max(1) as f64 / 1000.0),
        outs,
    )
}

/// Prints `what: n=… p50 … ms, p95 … ms, max … ms` for latencies in ms; answers the p50.
pub fn report_ms(what: &str, mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let p50 = quantile(&v, 0.5);
    println!(
        "{what}: n={} p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        v.len(),
        p50,
        quantile(&v, 0.95),
        v.last().copied().unwrap_or(f64::NAN)
    );
    p50
}

/// `agenfleet-agent bench` (CALLS sequential `authorize` calls through the gateway) in
/// each of the built-in-image containers `cids` at once, reached with `engine` (`docker`,
/// or another node's engine); every call's latency in µs, sorted.
pub fn authorize_in(engine: &[String], cids: &[String], calls: usize) -> Vec<u64> {
    let start_at = now_ms() + 2000;
    let handles: Vec<_> = cids
        .iter()
        .map(|cid| {
            let mut c = std::process::Command::new(&engine[0]);
            c.args(&engine[1..])
                .args(["exec", cid.as_str(), "/agenfleet-agent", "bench"])
                .args(["--calls", &calls.to_string()])
                .args(["--start-at", &start_at.to_string()]);
            std::thread::spawn(move || {
                let out = c.output().expect("docker exec");
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                        panic!(
                            "bench output: {e}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    });
                assert_eq!(v["errors"], 0, "{v}");
                v["latencies_us"]
                    .as_array()
                    .expect("latencies")
                    .iter()
                    .filter_map(serde_json::Value::as_u64)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("bench thread"))
        .collect();
    all.sort_unstable();
    all
}

/// The `p` quantile of latencies in µs (sorted), in ms.
pub fn pct_ms(sorted_us: &[u64], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// A bench's setting from the environment (`NAME=…`), else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
