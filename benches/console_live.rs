//! The console and its contexts against a real daemon (#16):
//! 1. an idle console for 60 s with nothing visible changing (three stopped agents): the
//!    CPU time it used and the bytes it wrote to its terminal (tmux pipe-pane);
//! 2. a change of one agent (its description, by `agents apply`) → seen by a client
//!    watching through the local socket and by one watching the same daemon through an
//!    `ssh://` context (sshd on localhost): p50/p99 from the apply's start.
//!
//! `cargo bench --bench console_live` (after `cargo build --release --workspace --bins`).

use agenfleet_e2e::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cpu_ms(pid: u32) -> f64 {
    // utime + stime, in clock ticks (100 a second here).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10.0
}

fn idle() {
    let d = Daemon::start("bench-idle", "");
    for n in ["idle-a", "idle-b", "idle-c"] {
        d.create(&healthy(n));
        d.json(&["agents", "stop", n]);
    }
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 120, 40);
    t.wait_screen("three stopped agents", |s| s.contains("3 stopped"));
    let pid = t.pane_pid().expect("the console's pid");
    let out = tempdir("bench-idle-out").join("terminal.bytes");
    // Let the first frames and the first tick pass before counting.
    std::thread::sleep(Duration::from_secs(3));
    t.pipe_output(&out);
    let (cpu0, t0) = (cpu_ms(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(60));
    let (cpu1, secs) = (cpu_ms(pid), t0.elapsed().as_secs_f64());
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "idle console, 3 stopped agents, {secs:.0} s: CPU {:.0} ms ({:.3} % of a core), {bytes} bytes written to the terminal, RSS {:.1} MB",
        cpu1 - cpu0,
        (cpu1 - cpu0) / (secs * 1000.0) * 100.0,
        rss_mb(pid)
    );
    let _ = std::fs::remove_dir_all(out.parent().unwrap_or(&out));
}

/// A `watch --changes-only` client whose lines are timestamped as they arrive.
fn watcher(mut c: Command, seen: Arc<Mutex<Vec<(Instant, String)>>>) -> std::process::Child {
    let mut child = c
        .args(["--json", "watch", "--changes-only"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            seen.lock().expect("lock").push((Instant::now(), line));
        }
    });
    child
}

fn when_seen(seen: &Mutex<Vec<(Instant, String)>>, marker: &str) -> Option<Instant> {
    seen.lock()
        .expect("lock")
        .iter()
        .find(|(_, l)| l.contains(marker))
        .map(|(t, _)| *t)
}

fn latency() {
    let Some(sshd) = Sshd::start("console_live bench") else {
        return;
    };
    let d = Daemon::start("bench-ctx", "");
    let spec = |desc: &str| format!("description = \"{desc}\"\n{}", healthy("moving"));
    d.create(&spec("start"));
    let config = tempdir("bench-ctx-client");
    let client = |c: &mut Command| {
        c.env_remove("AGENFLEET_SOCKET")
            .env("XDG_CONFIG_HOME", &config)
            .env("AGENFLEET_SSH_COMMAND", sshd.ssh_command());
    };
    let mut add = Command::new(bin("agenfleet"));
    client(&mut add);
    let url = format!("ssh://fleet-b{}", d.socket.display());
    let remote = bin("agenfleet");
    let st = add
        .args(["context", "add", "b", &url, "--remote-bin"])
        .arg(&remote)
        .status()
        .expect("context add");
    assert!(st.success());
    let local_seen = Arc::new(Mutex::new(Vec::new()));
    let ssh_seen = Arc::new(Mutex::new(Vec::new()));
    let mut local = watcher(d.cli_cmd(), local_seen.clone());
    let mut over_ssh = {
        let mut c = Command::new(bin("agenfleet"));
        client(&mut c);
        c.args(["--context", "b"]);
        watcher(c, ssh_seen.clone())
    };
    // Both watchers are connected once a first change reaches both.
    let file = config.join("spec.toml");
    let apply = |desc: &str| {
        std::fs::write(&file, spec(desc)).expect("spec");
        let out = d
            .cli_cmd()
            .args(["agents", "apply", "--yes", "-f"])
            .arg(&file)
            .output()
            .expect("apply");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    wait_for(Duration::from_secs(30), "both watchers", || {
        apply("warm");
        (when_seen(&local_seen, "\"warm\"").is_some() && when_seen(&ssh_seen, "\"warm\"").is_some())
            .then_some(())
    });
    let (mut l, mut s) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let marker = format!("change-{i}");
        let t0 = Instant::now();
        apply(&marker);
        let quoted = format!("\"{marker}\"");
        let (a, b) = wait_for(Duration::from_secs(10), "the change on both", || {
            Some((
                when_seen(&local_seen, &quoted)?,
                when_seen(&ssh_seen, &quoted)?,
            ))
        });
        l.push((a - t0).as_secs_f64() * 1e3);
        s.push((b - t0).as_secs_f64() * 1e3);
    }
    l.sort_by(f64::total_cmp);
    s.sort_by(f64::total_cmp);
    println!(
        "change → seen (from the apply's start), 100 changes: local socket p50 {:.2} ms p99 {:.2} ms · ssh:// context p50 {:.2} ms p99 {:.2} ms",
        quantile(&l, 0.5),
        quantile(&l, 0.99),
        quantile(&s, 0.5),
        quantile(&s, 0.99)
    );
    let _ = local.kill();
    let _ = over_ssh.kill();
    let _ = local.wait();
    let _ = over_ssh.wait();
    let _ = std::fs::remove_dir_all(&config);
}

fn main() {
    if !docker_available("console_live bench") {
        return;
    }
    latency();
    idle();
}
