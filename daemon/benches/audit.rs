//! Audit log benchmarks (`cargo bench -p agenfleet-daemon --bench audit`). Each figure is
//! printed next to its physical reference, measured in the same run on the same disk:
//! durable appends/s with 64 writers vs the disk's fdatasync rate for one small append;
//! verification throughput vs this machine's SHA-256 throughput; append latency p50/p99
//! at 1 and at 64 writers. `AGENFLEET_BENCH_DIR` picks the directory (default: temp dir).

use agenfleet_daemon::audit::{checkpoint::Signer, verify_dir, AuditLog, Options};
use agenfleet_protocol::AuditEvent;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn event(w: usize, i: usize) -> AuditEvent {
    AuditEvent {
        actor: format!("bench-writer-{w} (uid 0)"),
        action: "operator.note".into(),
        tenant: Some("bench".into()),
        agent: Some(format!("agent-{}", w % 50)),
        outcome: "ok".into(),
        detail: format!("benchmark record {i} of writer {w}, padded to a realistic size ........"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var_os("AGENFLEET_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("agf-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("bench dir");
    println!(
        "# audit log benchmarks in {} ({} cores)",
        base.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // Reference: one 256-byte append + fdatasync, repeated.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("fsync-probe"))
        .expect("probe");
    let rec = [0x5au8; 256];
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&rec).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let fsync_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "disk: one 256-byte append + fdatasync: {fsync_rate:.0}/s ({:.0} µs each)",
        1e6 / fsync_rate
    );
    // The same with a 64-record batch's worth of bytes: the floor of one group commit.
    let batch = vec![0x5au8; 64 * 256];
    let t = Instant::now();
    for _ in 0..n / 4 {
        f.write_all(&batch).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let batch_us = t.elapsed().as_secs_f64() * 1e6 / (n / 4) as f64;
    println!("disk: one 16 KB append + fdatasync: {batch_us:.0} µs each");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let dir = base.join("log");
    let (log, _) = AuditLog::open(
        &dir,
        Some(Signer::ephemeral()),
        "bench".into(),
        Options::default(),
    )
    .expect("open");

    // Latency at 1 writer.
    let mut lat1: Vec<f64> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..2000 {
            let t = Instant::now();
            log.record(&event(0, i)).await.expect("append");
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        v
    });
    println!(
        "1 writer:   append latency p50 {:.0} µs  p99 {:.0} µs",
        pct(&mut lat1, 0.5),
        pct(&mut lat1, 0.99)
    );

    // Throughput and latency at 64 writers, for a fixed time.
    let run = Duration::from_secs(4);
    let (count, mut lat64) = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while start.elapsed() < run {
                    let t = Instant::now();
                    log.record(&event(w, i)).await.expect("append");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                    i += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        (all.len(), all)
    });
    let rate = count as f64 / run.as_secs_f64();
    let mean = lat64.iter().sum::<f64>() / lat64.len().max(1) as f64;
    println!(
        "64 writers: {rate:.0} durable appends/s = {:.1}x the fdatasync rate (target ≥ 15x); latency p50 {:.0} µs  p99 {:.0} µs",
        rate / fsync_rate,
        pct(&mut lat64, 0.5),
        pct(&mut lat64, 0.99)
    );
    // Each writer has one append in flight, so rate × mean latency ≈ 64 (Little's law):
    // the rate is 64 per round trip, and a round trip is one group commit (the 16 KB
    // fdatasync above) plus answering the 64 and their next submissions.
    println!(
        "  writers in flight (rate × mean latency): {:.1}; round trip {mean:.0} µs = 16 KB fdatasync {batch_us:.0} µs + {:.0} µs of answering and resubmitting",
        rate * mean / 1e6,
        mean - batch_us
    );

    // Grow the log to a size worth verifying.
    let target_bytes: u64 = 256 * 1024 * 1024;
    rt.block_on(async {
        let mut w = 0;
        loop {
            let size: u64 = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            if size >= target_bytes {
                break;
            }
            let mut tasks = Vec::new();
            for k in 0..64 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..500 {
                        log.record(&event(w + k, i)).await.expect("append");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            w += 64;
        }
    });
    drop(log);

    // SHA-256 throughput of this machine next to verification (read + crc + SHA-256 chain
    // + checkpoint signatures), paired in 5 rounds; this VM's CPU time is noisy, so the
    // best of each is reported, with the median ratio of the pairs.
    let buf = vec![0xa5u8; 64 * 1024 * 1024];
    let mut shas = Vec::new();
    let mut vrs = Vec::new();
    let mut ratios = Vec::new();
    let mut records = 0;
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut h = Sha256::new();
        for _ in 0..4 {
            h.update(&buf);
        }
        let _ = h.finalize();
        let sha = 4.0 * buf.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
        let t = Instant::now();
        let r = verify_dir(&dir, None);
        let secs = t.elapsed().as_secs_f64();
        assert!(r.valid, "{r:?}");
        records = r.records;
        bytes = r.bytes;
        let vr = r.bytes as f64 / secs / 1e6;
        shas.push(sha);
        vrs.push(vr);
        ratios.push(vr / sha);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let rounds: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:.0}%", 100.0 * r))
        .collect();
    println!(
        "verify rounds (verify / SHA-256 of the same round): {}",
        rounds.join(" ")
    );
    println!(
        "verify: {records} records, {:.0} MB: best {:.0} MB/s; SHA-256 (one core) best {:.0} MB/s; ratio of bests {:.0}%, median paired ratio {:.0}% (target ≥ 60%)",
        bytes as f64 / 1e6,
        best(&vrs),
        best(&shas),
        100.0 * best(&vrs) / best(&shas),
        100.0 * pct(&mut ratios, 0.5)
    );
    if std::env::var_os("AGENFLEET_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
}
