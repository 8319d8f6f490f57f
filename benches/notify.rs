//! Delivery benchmarks on the real daemon, engine and an https receiver with a test CA
//! (`cargo bench --bench notify`, release binaries): (1) a real signal — an agent
//! reporting a tool endpoint down, through its gateway — until the tool provider's https
//! receiver has the incident, p50/p99 over 200 trials; (2) the outbox under a storm:
//! 10,000 model-provider incidents while that party's receiver is down for 60 s, then up:
//! all delivered, how long the drain takes, each incident once, and the daemon's memory.

use agenfleet_e2e::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn accepted() -> Answer {
    Answer::Json {
        status: 202,
        body: "{}".into(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("notify bench") {
        return;
    }
    println!(
        "# delivery benchmarks — binaries from {}",
        bin("agenfleet")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let ca = TestCa::new();
    let dir = tempdir("notify-bench");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("ca file");
    let secret_file = dir.join("hook.secret");
    std::fs::write(&secret_file, "a-shared-secret-of-some-length").expect("secret");
    let tools = ProviderStub::start(&ca, accepted());
    let down_port = free_port();
    let route = |party: &str, port: u16| {
        format!(
            "[[incident_route]]\nparty = \"{party}\"\nwebhook = \"https://127.0.0.1:{port}/hook\"\nsecret_file = {:?}\nca_file = {:?}\n",
            secret_file.display().to_string(),
            ca_file.display().to_string()
        )
    };
    let d = Daemon::start(
        "notifybench",
        &format!(
            "stats_interval_ms = 5000\n{}{}",
            route("tool_provider", tools.port),
            route("model_provider", down_port)
        ),
    );
    d.create("name = \"reporter\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n");
    let v = d.wait_agent("reporter", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    let cid = v["container_id"].as_str().expect("cid").to_string();

    // (1) signal → the receiver has it.
    let mut rep = Reporter::start(&cid);
    let mut lat = Vec::new();
    for i in 0..200 {
        let endpoint = format!("latency-{i}");
        let needle = format!("{endpoint} ");
        let t0 = Instant::now();
        rep.send_tool(&endpoint);
        let at = wait_for(Duration::from_secs(10), "the delivery", || {
            tools
                .requests()
                .into_iter()
                .find(|r| String::from_utf8_lossy(&r.body).contains(&needle))
                .map(|r| r.at)
        });
        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "signal (agent report through the gateway) → incident received by an https receiver, 200 trials: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0)
    );

    // (2) 10,000 incidents while the model providers' receiver is down for 60 s.
    let rss0 = rss_mb(d.pid());
    let total = 10_000usize;
    let start = Instant::now();
    for i in 0..total {
        rep.send(&format!("storm-{i}"));
    }
    for _ in 0..total {
        if rep.answers.recv_timeout(Duration::from_secs(60)).is_err() {
            break;
        }
    }
    let signalled = start.elapsed().as_secs_f64();
    let queued = wait_for(Duration::from_secs(300), "10,000 deliveries queued", || {
        let rows = d.json(&["incidents", "outbox", "--limit", "20000"]);
        let n = rows
            .as_array()?
            .iter()
            .filter(|r| r["state"] == "pending")
            .count();
        (n >= total).then_some(n)
    });
    let queued_s = start.elapsed().as_secs_f64();
    let rss_down = rss_mb(d.pid());
    let down_for = Duration::from_secs(60).saturating_sub(start.elapsed());
    std::thread::sleep(down_for);
    let rows = d.json(&["incidents", "outbox", "--limit", "20000"]);
    let attempts: u64 = rows
        .as_array()
        .map(|a| a.iter().map(|r| r["attempts"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0);
    let up = Instant::now();
    let receiver = ProviderStub::serve(
        &ca,
        accepted(),
        &format!("127.0.0.1:{down_port}"),
        &["127.0.0.1"],
    );
    wait_for(Duration::from_secs(600), "every delivery", || {
        (receiver.requests().len() >= total).then_some(())
    });
    let drained = up.elapsed().as_secs_f64();
    let rss1 = rss_mb(d.pid());
    let ids: HashSet<u64> = receiver
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter_map(|v| v["incident"]["id"].as_u64())
        .collect();
    println!(
        "outbox storm: {total} signals in {signalled:.1} s, {queued} deliveries queued (durable) by {queued_s:.1} s; receiver down 60 s: {attempts} attempts in all (the route backs off and probes with its oldest)"
    );
    println!(
        "receiver up → all {} delivered in {drained:.1} s ({:.0}/s), {} distinct incidents ({} extra)",
        receiver.requests().len(),
        receiver.requests().len() as f64 / drained,
        ids.len(),
        receiver.requests().len().saturating_sub(ids.len())
    );
    println!(
        "daemon RSS: {rss0:.1} MB before, {rss_down:.1} MB with 10,000 queued, {rss1:.1} MB after the drain"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
