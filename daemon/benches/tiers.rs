//! A tenant's move between isolation tiers (`cargo bench -p agenfleet-daemon --bench
//! tiers`): a tenant of 100 agents and 10,000 credentials (each stored by the vault:
//! sealed, counted, committed with fsync), beside 10 other tenants of 100 agents each, moved
//! to dedicated and back three times. Figures: how long the store was held per move (every
//! other statement waits that long), the longest wait a reader of another tenant saw
//! meanwhile, rows and file sizes. Real SQLite files, the vault's key in the real kernel
//! keyring.

use agenfleet_daemon::store::{AgentKey, AgentRecord, Store, Tier};
use agenfleet_daemon::vault::Vault;
use agenfleet_protocol::{AgentSpec, SecretValue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn agent(tenant: &str, name: &str) -> AgentRecord {
    let spec = AgentSpec::from_toml(&format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"agenfleet/agent\"\n"
    ))
    .expect("spec");
    AgentRecord::new(spec, 1)
}

fn mb(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = agenfleet_daemon::keyring::init() {
        eprintln!("!!! SKIPPED tiers bench: {e}");
        return;
    }
    let creds: usize = std::env::var("AGF_TIERS_BENCH_CREDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("agf-tiers-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("agenfleet.db");
    let store = Store::open(&db).expect("store");
    let vault = Vault::open(store.clone(), format!("bench{:08x}", rand::random::<u32>()));
    vault.init().expect("vault init");

    let t = Instant::now();
    for o in 0..10 {
        for i in 0..100 {
            store
                .insert_agent(&agent(&format!("other{o}"), &format!("a{i}")))
                .expect("agent");
        }
    }
    for i in 0..100 {
        store
            .insert_agent(&agent("big", &format!("a{i}")))
            .expect("agent");
    }
    for c in 0..creds {
        let key = AgentKey {
            tenant: "big".into(),
            name: format!("a{}", c % 100),
        };
        let value = SecretValue::new(format!("sk-bench-{c:06}-{}", "x".repeat(40)).into_bytes());
        vault
            .put(&key, &format!("k{c}"), &value, false, 0)
            .expect("credential");
    }
    println!(
        "filled: 1,100 agents in 11 tenants, {creds} credentials of tenant `big` through the vault in {:.1} s; shared file {:.1} MB",
        t.elapsed().as_secs_f64(),
        mb(&db)
    );

    // A reader of another tenant, all along: the longest any of its reads waited.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let key = AgentKey {
                tenant: "other3".into(),
                name: "a7".into(),
            };
            let (mut worst, mut reads) = (Duration::ZERO, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                store.spec_version(&key).expect("read");
                worst = worst.max(t.elapsed());
                reads += 1;
            }
            (worst, reads)
        })
    };
    let probe = AgentKey {
        tenant: "big".into(),
        name: "a42".into(),
    };
    let mut held = Vec::new();
    let mut walls = Vec::new();
    for round in 0..3 {
        for to in [Tier::Dedicated, Tier::Standard] {
            let t = Instant::now();
            let r = store.move_tenant("big", to).expect("move");
            walls.push(t.elapsed().as_secs_f64() * 1e3);
            held.push(r.held_ms as f64);
            let rows: u64 = r.tables.iter().map(|t| t.rows).sum();
            let file = dir.join("tenants/big.db");
            println!(
                "round {round}: to {:<9} {rows} rows in {} tables checked, held {} ms (file: {:.1} MB, shared {:.1} MB)",
                to.as_str(),
                r.tables.iter().filter(|t| t.rows > 0).count(),
                r.held_ms,
                mb(&file),
                mb(&db)
            );
            // Still whole: every credential of an agent opens.
            let vals = vault.current_values(&probe).expect("values");
            assert_eq!(vals.len(), creds / 100, "credentials of a42 after the move");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, reads) = reader.join().expect("reader");
    held.sort_by(|a, b| a.total_cmp(b));
    walls.sort_by(|a, b| a.total_cmp(b));
    println!(
        "tenants move (100 agents, {creds} credentials): held p50 {:.0} ms, max {:.0} ms; wall p50 {:.0} ms; another tenant's reader: {reads} reads, longest wait {:.0} ms",
        held[held.len() / 2],
        held[held.len() - 1],
        walls[walls.len() / 2],
        worst.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
