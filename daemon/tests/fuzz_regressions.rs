//! Replays every input the fuzzers kept (`fuzz/regressions/<target>/`, crashes and hangs
//! found and fixed) and every seed through the fuzz targets' own entry points: a finding
//! stays fixed in the normal suite. (`fuzz/run-all.sh` writes the seeds to
//! `fuzz/seeds/<target>/` with the `fuzz_seeds` example.)

use agenfleet_daemon::fuzz;
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_kept_finding_and_seed_runs_clean() {
    let mut ran = 0;
    for target in fuzz::TARGETS {
        let dir = fuzz_dir().join("regressions").join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read a kept input");
            fuzz::run(target, &data);
            ran += 1;
        }
    }
    for (target, _, data) in fuzz::seeds() {
        fuzz::run(target, &data);
        ran += 1;
    }
    assert!(ran >= fuzz::TARGETS.len(), "only {ran} inputs replayed");
}

#[test]
fn every_target_has_seeds() {
    let seeds = fuzz::seeds();
    for t in fuzz::TARGETS {
        assert!(seeds.iter().any(|(s, _, _)| s == t), "no seed for {t}");
    }
}
