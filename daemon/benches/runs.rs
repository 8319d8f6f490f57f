//! Runs in-process (`cargo bench -p agenfleet-daemon --bench runs`): a run queued (stored
//! with fsync) → the agent waiting in `next` holds it (stored running, its timer armed);
//! the agent's result → the end recorded in the audit log and stored → a caller waiting
//! for the end hears it. Real SQLite file and audit log; no engine, no sockets (the local
//! API's HTTP adds its own, measured by the e2e runs test's figures in BENCHMARKS.md).

use agenfleet_daemon::audit::{AuditLog, Options};
use agenfleet_daemon::runs::Runs;
use agenfleet_daemon::store::{AgentKey, AgentRecord, Store};
use agenfleet_protocol::runs::RunState;
use agenfleet_protocol::{AgentSpec, RunsSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn q(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agf-runs-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("agenfleet.db")).expect("store");
    let spec = AgentSpec::from_toml("name = \"a\"\ntenant = \"t\"\nimage = \"agenfleet/agent\"\n")
        .expect("spec");
    store
        .insert_agent(&AgentRecord::new(spec, 1))
        .expect("agent");
    let (audit, _) = AuditLog::open(&dir.join("audit"), None, "bench".into(), Options::default())
        .expect("audit");
    let runs = Arc::new(Runs::new(store, audit));
    runs.recover(|_| false).await.expect("recover");
    let key = AgentKey {
        tenant: "t".into(),
        name: "a".into(),
    };
    let rs = RunsSpec::default();
    let n = 500;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    // The agent: waits for a run, says when it holds it, answers it.
    let agent = {
        let (runs, key) = (runs.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..n {
                let v = runs
                    .next(&key, &rs, Duration::from_secs(30))
                    .await
                    .expect("next")
                    .expect("a run");
                let held = Instant::now();
                let _ = tx.send((v.id, held));
                runs.end(
                    v.id,
                    Some(&key),
                    RunState::Succeeded,
                    Some("{}".into()),
                    None,
                )
                .await
                .expect("end");
            }
        })
    };
    let (mut start_ms, mut held_ms, mut round_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let v = runs
            .start(&key, "p", &rs, "cli", "bench", "{\"n\":1}")
            .expect("start");
        start_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let (id, held) = rx.recv().await.expect("held");
        assert_eq!(id, v.id);
        held_ms.push(held.duration_since(t).as_secs_f64() * 1e3);
        let end = runs
            .wait_end(id, Duration::from_secs(30))
            .await
            .expect("end")
            .expect("run");
        assert_eq!(end.state, RunState::Succeeded);
        round_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    agent.await.expect("agent");
    println!(
        "{n} runs, one agent: queued (stored, fsync) p50 {:.2} ms p99 {:.2}; queued → held by the waiting agent p50 {:.2} ms p99 {:.2}; → result recorded, stored and heard by the waiting caller p50 {:.2} ms p99 {:.2}",
        q(&mut start_ms.clone(), 0.5),
        q(&mut start_ms, 0.99),
        q(&mut held_ms.clone(), 0.5),
        q(&mut held_ms, 0.99),
        q(&mut round_ms.clone(), 0.5),
        q(&mut round_ms, 0.99),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
