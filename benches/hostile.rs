//! A normal client's `status` latency while hostile clients run (`cargo bench --bench
//! hostile`): 1,000 connections held open that send nothing, 20 clients sending frames a
//! byte every 100 ms (cut off and reconnecting), 4 clients that never read their answers
//! (cut off and reconnecting) — next to the same figure on a quiet daemon, and its memory.

use agenfleet_e2e::hostile::*;
use agenfleet_e2e::*;
use agenfleet_protocol::{transport, DEFAULT_MAX_FRAME_BYTES};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("hostile bench") {
        return;
    }
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    // Every hostile connection is held (the per-uid limit is above them): the daemon
    // carries all of them, the harder case.
    let d = Daemon::start(
        "hostilebench",
        "max_connections = 4096\nmax_connections_per_uid = 2048\nframe_timeout_secs = 2\n",
    );
    d.create("name = \"one\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let socket = d.socket.clone();
    let c = rt
        .block_on(transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES))
        .expect("connect");
    rt.block_on(status_latencies(&c, 200));
    let rss0 = rss_mb(d.pid());
    let quiet = rt.block_on(status_latencies(&c, calls));

    let stop = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicU64::new(0));
    let idle = idle_connections(&d.socket, 1000);
    let mut threads = Vec::new();
    for _ in 0..20 {
        let (s, stop, cuts) = (d.socket.clone(), stop.clone(), cuts.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if slow_frame(&s, Duration::from_millis(100), Duration::from_secs(30)).is_some() {
                    cuts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for _ in 0..4 {
        let (s, stop, cuts) = (d.socket.clone(), stop.clone(), cuts.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if never_reads(&s, Duration::from_secs(30)).await.is_some() {
                    cuts.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Let the hostile clients reach their steady state (the first cut-offs) first.
    wait_for(Duration::from_secs(60), "the first cut-off", || {
        (cuts.load(Ordering::Relaxed) > 0).then_some(())
    });
    let hostile = rt.block_on(status_latencies(&c, calls));
    let rss1 = rss_mb(d.pid());
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(idle);
    println!("status over one connection, {calls} sequential calls, ms:");
    println!(
        "  quiet daemon:              p50 {:.3}  p99 {:.3}  max {:.3}",
        quantile(&quiet, 0.5),
        quantile(&quiet, 0.99),
        quantile(&quiet, 1.0)
    );
    println!(
        "  with the hostile clients:  p50 {:.3}  p99 {:.3}  max {:.3}   (p99 ratio {:.2}×)",
        quantile(&hostile, 0.5),
        quantile(&hostile, 0.99),
        quantile(&hostile, 1.0),
        quantile(&hostile, 0.99) / quantile(&quiet, 0.99)
    );
    println!(
        "  hostile connections cut off meanwhile: {}; daemon RSS {rss0:.1} → {rss1:.1} MB",
        cuts.load(Ordering::Relaxed)
    );
}
