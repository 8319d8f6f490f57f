//! Helpers for the end-to-end tests: the real `agenfleetd` and `agenfleet` binaries, a
//! daemon per test with its own state dir and socket, the real Docker engine, the console
//! in tmux, stub servers, and cleanup of everything a test's daemon created (found by the
//! daemon's instance label). One file per concern; everything is re-exported here.

pub mod daemon;
pub mod docker;
pub mod engine_proxy;
pub mod hostile;
pub mod images;
pub mod measure;
pub mod provider_stub;
pub mod reporter;
pub mod sshd;
pub mod stubs;
pub mod swarm;
pub mod tmux;

pub use daemon::*;
pub use docker::*;
pub use engine_proxy::*;
pub use images::*;
pub use measure::*;
pub use provider_stub::*;
pub use reporter::*;
pub use sshd::*;
pub use stubs::*;
pub use swarm::*;
pub use tmux::*;

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory for one test (under the system's temp dir; the test removes it).
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "agf-{name}-{}-{}",
        std::process::id(),
        daemon::rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a test dir");
    d
}

/// Reads the whole file at `p` as text, or "".
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Asserts that no file of the engine's for container `cid` (its config, its logs) and no
/// file under the daemon's directory (its log, audit segments, SQLite files, state) holds
/// `canary`.
pub fn assert_on_no_disk(d: &Daemon, cid: &str, canary: &str) {
    let hits = files_containing(
        Path::new(&format!("/var/lib/docker/containers/{cid}")),
        canary.as_bytes(),
    );
    assert!(hits.is_empty(), "{canary} in the engine's files: {hits:?}");
    let hits = files_containing(&d.dir, canary.as_bytes());
    assert!(hits.is_empty(), "{canary} in the daemon's files: {hits:?}");
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(b) = std::fs::read(&p) {
            if b.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Occurrences of `needle` in a process's readable memory.
pub fn in_memory(pid: i64, needle: &[u8]) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return 0;
    };
    let mut n = 0;
    for l in maps.lines() {
        let mut parts = l.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        n += buf.windows(needle.len()).filter(|w| *w == needle).count();
    }
    n
}
