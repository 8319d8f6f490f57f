//! The short histories behind `:pulse` in-process (`cargo bench -p agenfleet-daemon
//! --bench pulse`): what a decision costs the hot path, what closing a bucket costs with
//! 10,000 agents, what an answer costs, and the memory the histories hold at 10,000
//! agents over the full ten minutes.

use agenfleet_daemon::fleet_state::FleetState;
use agenfleet_daemon::pulse::History;
use agenfleet_daemon::store::AgentKey;
use agenfleet_protocol::policy::Verdict;
use agenfleet_protocol::pulse::{BUCKETS, BUCKET_MS};
use agenfleet_protocol::{AgentState, AgentView, DaemonInfo, EngineInfo};
use std::hint::black_box;
use std::time::Instant;

const AGENTS: usize = 10_000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn daemon() -> DaemonInfo {
    DaemonInfo {
        version: "bench".into(),
        pid: 1,
        started_at_ms: 0,
        instance_id: "bench".into(),
        engine: EngineInfo {
            connected: true,
            version: None,
            api_version: None,
            error: None,
        },
        orphans: vec![],
        audit_writable: true,
        audit_problem: None,
        vault: agenfleet_protocol::VaultState::Unsealed,
        operations: Vec::new(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tenant = |i: usize| format!("tenant-{:02}", i % 37);
    let project = |i: usize| format!("project-{}", i % 5);
    let fleet = FleetState::new(daemon());
    for i in 0..AGENTS {
        let state = if i % 20 == 0 {
            AgentState::Failed
        } else {
            AgentState::Running
        };
        fleet.upsert(AgentView::new(
            &tenant(i),
            &project(i),
            &format!("agent-{i:05}"),
            "img",
            state,
        ));
    }
    let rss_before = rss_kb();
    let h = History::new();
    let keys: Vec<AgentKey> = (0..AGENTS)
        .map(|i| AgentKey {
            tenant: tenant(i),
            name: format!("agent-{i:05}"),
        })
        .collect();
    let names: Vec<(String, String)> = (0..AGENTS).map(|i| (tenant(i), project(i))).collect();

    // Ten minutes (and one bucket more) of a busy fleet: every agent sampled each 2 s,
    // decisions at ~1,000/s, then each bucket closed.
    let start_ms = 1_800_000_000_000 - 1_800_000_000_000 % BUCKET_MS;
    let mut close_ns = Vec::new();
    let mut decisions = 0u64;
    let mut decide_ns = 0u128;
    for b in 0..=(BUCKETS as u64) {
        let t0 = start_ms + b * BUCKET_MS;
        for s in 0..5u64 {
            for (i, k) in keys.iter().enumerate() {
                h.agent_sample(
                    k,
                    (i % 300) as f32 / 10.0,
                    (i as u64 % 200 + 1) << 20,
                    t0 + s * 2_000,
                );
            }
        }
        let t = Instant::now();
        for n in 0..10_000usize {
            let (tn, p) = &names[n % AGENTS];
            let v = match n % 10 {
                0 => Verdict::Deny,
                1 => Verdict::Escalate,
                _ => Verdict::Allow,
            };
            h.decision(black_box(tn), black_box(p), v, t0 + (n as u64 % BUCKET_MS));
        }
        decide_ns += t.elapsed().as_nanos();
        decisions += 10_000;
        let t = Instant::now();
        h.close(t0 / BUCKET_MS, &fleet);
        close_ns.push(t.elapsed().as_nanos() as f64);
    }
    let rss_after = rss_kb();
    let t = Instant::now();
    let n = 200;
    let mut total = 0u64;
    for _ in 0..n {
        let p = h.pulse(|_, _| true, []);
        total += p.buckets.iter().map(|b| u64::from(b.allowed)).sum::<u64>();
    }
    let answer_us = t.elapsed().as_micros() as f64 / n as f64;
    black_box(total);
    let t = Instant::now();
    for k in keys.iter().take(1000) {
        black_box(h.agent(k));
    }
    let agent_us = t.elapsed().as_micros() as f64 / 1000.0;
    close_ns.sort_by(f64::total_cmp);
    println!(
        "# pulse histories, in-process, {AGENTS} agents in 185 projects, {BUCKETS} buckets of {} s",
        BUCKET_MS / 1000
    );
    println!(
        "decision counted (hot path): {:.0} ns",
        decide_ns as f64 / decisions as f64
    );
    println!(
        "bucket closed (states of {AGENTS} agents sampled): p50 {:.2} ms, max {:.2} ms",
        close_ns[close_ns.len() / 2] / 1e6,
        close_ns[close_ns.len() - 1] / 1e6
    );
    println!("fleet answer summed over every project (platform admin): {answer_us:.0} µs");
    println!("one agent's history answered: {agent_us:.1} µs");
    println!(
        "memory held at {AGENTS} agents after ten minutes: {:.1} MB RSS",
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
}
