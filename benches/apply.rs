//! `agents apply` on the real engine (run with `cargo bench --bench apply`; the binaries
//! next to this bench executable are used, target/release under `cargo bench`).
//!
//! One agent of an image of its own (Debian's static busybox), changed back and forth:
//! 1. a metadata-only change (restart budget and description): wall time of
//!    `agenfleet agents apply --yes` until it answers — the new spec is in force and the
//!    running container is the same (checked each time);
//! 2. a container-changing one (an environment variable): wall time until it answers,
//!    which it does once the new container runs (checked: a new container id each time).
//!
//! Each: N trials (AGENFLEET_BENCH_TRIALS, default 20), p50/p95/max.

use agenfleet_e2e::*;
use std::time::{Duration, Instant};

fn spec(image: &str, greeting: &str, attempts: u32) -> String {
    format!(
        "name = \"bench\"\nimage = \"{image}\"\ndescription = \"budget {attempts}\"\n\
         command = [\"sh\", \"-c\", \"echo hello $GREETING; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\"]\n\
         [env]\nGREETING = \"{greeting}\"\n[restart]\nattempts = {attempts}\n"
    )
}

fn apply(d: &Daemon, text: &str) -> (f64, serde_json::Value) {
    let f = d.file("bench.toml", text);
    let t = Instant::now();
    let out = d.cli(&["agents", "apply", "-f", &f, "--yes", "--json"]);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ms, serde_json::from_slice(&out.stdout).expect("json"))
}

fn main() {
    let Some(image) = busybox_image("bench apply") else {
        return;
    };
    let trials: usize = std::env::var("AGENFLEET_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let d = Daemon::start("benchapply", "");
    let (_, first) = apply(&d, &spec(&image, "a", 5));
    assert_eq!(first["action"], "created", "{first}");
    let mut cid = d.running_container("bench", Duration::from_secs(60));

    let mut in_place = Vec::new();
    for i in 0..trials {
        let (ms, o) = apply(&d, &spec(&image, "a", 6 + (i as u32 % 2)));
        assert_eq!(o["action"], "in_place", "{o}");
        assert_eq!(o["agent"]["container_id"], cid.as_str(), "{o}");
        in_place.push(ms);
    }
    let mut recreate = Vec::new();
    for i in 0..trials {
        let greeting = if i % 2 == 0 { "b" } else { "a" };
        let (ms, o) = apply(&d, &spec(&image, greeting, 6 + (trials as u32 % 2)));
        assert_eq!(o["action"], "recreated", "{o}");
        assert_eq!(o["agent"]["state"], "Running", "{o}");
        let now = o["agent"]["container_id"]
            .as_str()
            .expect("cid")
            .to_string();
        assert_ne!(now, cid);
        cid = now;
        recreate.push(ms);
    }
    report_ms("apply, metadata only (in place)", in_place);
    report_ms(
        "apply, container-changing (until the new container runs)",
        recreate,
    );
    let _ = d.cli(&["agents", "delete", "bench"]);
}
