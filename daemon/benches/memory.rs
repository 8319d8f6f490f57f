//! One agent's memory store in-process (`cargo bench -p agenfleet-daemon --bench memory`):
//! 100,000 text values written one by one (each sealed and committed with fsync), the
//! file opened again (every value unsealed into the in-memory search index), and a search
//! over them (FTS5, every word required, bm25). Real SQLite file, the vault's key in the
//! real kernel keyring.

use agenfleet_daemon::memory::{search_words, Kind, Limits, Memory};
use agenfleet_daemon::store::{AgentKey, Store};
use agenfleet_daemon::vault::Vault;
use std::sync::Arc;
use std::time::Instant;

const WORDS: &[&str] = &[
    "invoice",
    "customer",
    "email",
    "german",
    "refund",
    "ticket",
    "shipping",
    "delay",
    "warehouse",
    "berlin",
    "priority",
    "contract",
    "renewal",
    "discount",
    "complaint",
    "password",
    "reset",
    "billing",
    "address",
    "phone",
    "meeting",
    "monday",
    "report",
    "quarter",
    "budget",
    "server",
    "outage",
    "database",
    "backup",
    "restore",
];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = agenfleet_daemon::keyring::init() {
        eprintln!("!!! SKIPPED memory bench: {e}");
        return;
    }
    let n: usize = std::env::var("AGF_MEMORY_BENCH_VALUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("agf-memory-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("agenfleet.db")).expect("store");
    let vault = Arc::new(Vault::open(
        store,
        format!("bench{:08x}", rand::random::<u32>()),
    ));
    vault.init().expect("vault init");
    let limits = Limits {
        max_value_bytes: 4096,
        max_keys: 10_000_000,
        max_bytes: 1 << 40,
    };
    let mem = Memory::new(&dir, vault.clone(), limits);
    let agent = AgentKey {
        tenant: "t".into(),
        name: "a".into(),
    };
    let s = mem.store(&agent).expect("store");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t = Instant::now();
    for i in 0..n {
        let text: Vec<&str> = (0..12)
            .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
            .collect();
        let text = format!("note {i}: {}", text.join(" "));
        s.put(
            &format!("notes/{i:06}"),
            Kind::Text,
            text.as_bytes(),
            &limits,
            1,
        )
        .expect("put");
    }
    let fill = t.elapsed().as_secs_f64();
    drop(s);
    // A fresh registry opens the file again: every value unsealed into the search index.
    let t = Instant::now();
    let again = Memory::new(&dir, vault, limits);
    let s = again.store(&agent).expect("reopened");
    let reopen = t.elapsed().as_secs_f64();
    assert_eq!(s.usage().keys, n as u64);
    // Searches of one, two and three words, each many times.
    let mut lat = Vec::new();
    let mut hits = 0usize;
    for i in 0..300 {
        let q = match i % 3 {
            0 => WORDS[i % WORDS.len()].to_string(),
            1 => format!(
                "{} {}",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7) % WORDS.len()]
            ),
            _ => format!(
                "{} {} {}",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7) % WORDS.len()],
                WORDS[(i * 13) % WORDS.len()]
            ),
        };
        let words = search_words(&q).expect("words");
        let t = Instant::now();
        hits += s.search(&words, 20).expect("search").len();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let t = Instant::now();
    for i in 0..10_000 {
        let _ = s.get(&format!("notes/{:06}", i * 7 % n)).expect("get");
    }
    let get_us = t.elapsed().as_secs_f64() * 1e6 / 10_000.0;
    println!("# memory store in-process, one agent, {n} text values of 12 words each");
    println!(
        "written one by one (sealed, committed with fsync): {fill:.1} s, {:.0} puts/s",
        n as f64 / fill
    );
    println!("opened again (every value unsealed into the in-memory index): {reopen:.2} s");
    println!(
        "search, 20 best of {n} (1–3 words, bm25): p50 {:.0} µs, p99 {:.0} µs ({hits} hits in 300 searches)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    println!("get (unseal one value): {get_us:.1} µs");
    let _ = std::fs::remove_dir_all(&dir);
}
