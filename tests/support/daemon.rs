//! A daemon of our own per test (its own state dir, socket and config), the real
//! `agenfleetd` and `agenfleet` binaries, the CLI run as other uids, and `watch` in the
//! background.

use crate::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/<name>`, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        p.display()
    );
    p
}

/// `target/<profile>/<name>` copied where every uid can run it, for tests that run it as
/// other uids: the clone may live in a directory only its owner can enter (a home
/// directory, `mktemp -d`), so the binary goes, once per build of it, to a directory of
/// ours under the temp dir. Fails with what to change when the machine does not allow it.
pub fn bin_for_other_uids(name: &str) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let src = bin(name);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs `{name}` as other uids, which needs root: run the suite as root"
    );
    let tmp = std::env::temp_dir();
    let mut dir = tmp.as_path();
    loop {
        let mode = std::fs::metadata(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not traversable by other users (mode {:o}), so they cannot reach the \
             test's socket or binaries: set TMPDIR to a directory every user can enter, e.g. /tmp",
            dir.display(),
            mode & 0o7777
        );
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
    let meta = std::fs::metadata(&src).expect("binary metadata");
    let stamp = format!(
        "{}-{}",
        meta.len(),
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let dir = tmp.join(format!("agf-e2e-bin-{name}-{stamp}"));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", dir.display()),
    }
    let dm = std::fs::symlink_metadata(&dir).expect("bin dir metadata");
    assert!(
        dm.is_dir() && dm.uid() == euid,
        "{} exists but is not a directory of ours: remove it",
        dir.display()
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dst = dir.join(name);
    if std::fs::metadata(&dst).map(|m| m.len()).ok() != Some(meta.len()) {
        // Copy then rename: tests of other processes may be doing the same at once.
        let part = dir.join(format!("{name}.{}.part", std::process::id()));
        std::fs::copy(&src, &part).expect("copy the binary");
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&part, &dst).expect("rename the binary");
    }
    dst
}

/// `agenfleetd restore ARCHIVE --state-dir INTO`, run to its end.
pub fn restore_cmd(archive: &Path, into: &Path) -> Command {
    let mut c = Command::new(bin("agenfleetd"));
    c.arg("restore").arg(archive).arg("--state-dir").arg(into);
    c
}

/// A daemon of our own for one test.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub instance: String,
    /// Variables the daemon is started with (besides the test's own).
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon with a fresh state dir; `extra_config` is appended to its config.
    pub fn start(test: &str, extra_config: &str) -> Daemon {
        Daemon::start_with_env(test, extra_config, &[])
    }

    /// `start`, the daemon's environment given `env` too (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(test: &str, extra_config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "agf-e2e-{test}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let config = dir.join("agenfleetd.toml");
        // The test's own `socket = "…"` line, if it has one.
        let own_socket = extra_config.lines().find_map(|l| {
            let v = l.strip_prefix("socket")?.trim_start().strip_prefix('=')?;
            Some(PathBuf::from(v.trim().trim_matches('"')))
        });
        let socket = own_socket
            .clone()
            .unwrap_or_else(|| dir.join("agenfleet.sock"));
        // Test defaults, unless the test sets them itself.
        let mut text = format!("state_dir = {:?}\n", dir.join("state"));
        if own_socket.is_none() {
            text.push_str(&format!("socket = {socket:?}\n"));
        }
        for (k, v) in [("stats_interval_ms", "500"), ("stop_timeout_secs", "2")] {
            if !extra_config.contains(k) {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text.push_str(extra_config);
        text.push('\n');
        std::fs::write(&config, text).expect("config");
        let mut d = Daemon {
            dir,
            socket,
            config,
            child: None,
            instance: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        let st = d.json(&["status"]);
        d.instance = st["daemon"]["instance_id"]
            .as_str()
            .expect("instance")
            .to_string();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agenfleetd.log"))
            .expect("log file");
        let child = Command::new(bin("agenfleetd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,tarpc=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agenfleetd");
        self.child = Some(child);
        let socket = self.socket.clone();
        let child = self.child.as_mut().expect("child");
        wait_for(Duration::from_secs(20), "the daemon's socket", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agenfleetd exited early ({status})");
            }
            let ok = Command::new(bin("agenfleet"))
                .arg("--socket")
                .arg(&socket)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9` the daemon and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same state dir (its instance is read again: a state
    /// dir restored from another host's backup carries that host's).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        let out = self.cli(&["--json", "status"]);
        let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(i) = st["daemon"]["instance_id"].as_str() {
            self.instance = i.to_string();
        }
    }

    /// Opens an incident by hand (`incidents open`): its id.
    pub fn open_incident(&self, scenario: &str, summary: &str) -> u64 {
        self.json(&[
            "incidents",
            "open",
            "--scenario",
            scenario,
            "--summary",
            summary,
        ])["id"]
            .as_u64()
            .expect("an incident id")
    }

    /// Waits until exactly `n` escalations are pending; answers them.
    pub fn wait_pending(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_for(timeout, &format!("{n} pending escalation(s)"), || {
            let l = self.json(&["escalations", "list"]);
            let l = l.as_array().cloned().unwrap_or_default();
            (l.len() == n).then_some(l)
        })
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agenfleetd.log")).unwrap_or_default()
    }

    pub fn cli_cmd(&self) -> Command {
        let mut c = Command::new(bin("agenfleet"));
        c.arg("--socket").arg(&self.socket);
        c
    }

    /// Runs `agenfleet ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_cmd().args(args).output().expect("run agenfleet")
    }

    /// Runs `agenfleet ARGS` with `input` on stdin (secrets are never arguments).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cli_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run agenfleet");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        child.wait_with_output().expect("agenfleet output")
    }

    /// Runs `agenfleet --json ARGS`, asserts success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self
            .cli_cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run agenfleet");
        assert!(
            out.status.success(),
            "agenfleet {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// Writes a spec file and creates the agent from it.
    /// `runs start AGENT --input FILE [--wait]` with `input` as the file: its exit code and
    /// the run (JSON; null when none was answered).
    pub fn run_start(&self, agent: &str, input: &str, wait: bool) -> (Option<i32>, Value) {
        let file = self.file(&format!("in-{}.json", rand_suffix()), input);
        let mut args = vec!["--json", "runs", "start", agent, "--input", &file];
        if wait {
            args.push("--wait");
        }
        let out = self.cli(&args);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    }

    pub fn create(&self, spec: &str) -> Value {
        let f = self.dir.join(format!("spec-{}.toml", rand_suffix()));
        std::fs::write(&f, spec).expect("spec file");
        self.json(&["agents", "create", "-f", f.to_str().expect("path")])
    }

    pub fn agent(&self, name: &str) -> Value {
        self.json(&["agents", "show", name])
    }

    /// Waits until the agent's view satisfies `pred`, returning that view.
    pub fn wait_agent(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(timeout, &format!("{name}: {what}"), || {
            let v = self.agent(name);
            pred(&v).then_some(v)
        })
    }

    /// Waits until the agent is running and answers its container's id.
    pub fn running_container(&self, name: &str, timeout: Duration) -> String {
        self.wait_agent(name, "running", timeout, |v| v["state"] == "Running")["container_id"]
            .as_str()
            .expect("a running agent has a container id")
            .to_string()
    }

    /// Waits until `agenfleet logs AGENT` holds a line containing `needle`.
    pub fn wait_log(&self, agent: &str, needle: &str, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{agent}'s log to show `{needle}`"),
            || {
                let out = self.cli(&["logs", agent]);
                String::from_utf8_lossy(&out.stdout)
                    .contains(needle)
                    .then_some(())
            },
        );
    }

    /// Waits for a signed checkpoint and keeps it in a file, as an operator would;
    /// answers it and the file.
    pub fn keep_checkpoint(&self) -> (Value, PathBuf) {
        let kept = wait_for(Duration::from_secs(30), "a signed checkpoint", || {
            let st = self.json(&["audit", "status"]);
            (!st["last_checkpoint"].is_null()).then(|| st["last_checkpoint"].clone())
        });
        let file = self.dir.join(format!("kept-{}.json", rand_suffix()));
        std::fs::write(&file, kept.to_string()).expect("kept checkpoint");
        (kept, file)
    }

    /// `audit verify --checkpoint FILE` passes.
    pub fn assert_verifies_against(&self, kept: &Path) {
        let v = self.cli(&[
            "audit",
            "verify",
            "--checkpoint",
            &kept.display().to_string(),
        ]);
        assert!(
            v.status.success(),
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }

    /// Writes `content` to a file in the test's directory; answers its path.
    pub fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).expect("write test file");
        p.to_str().expect("utf-8 path").to_string()
    }

    /// Sends tool calls through the agent's real gateway socket, from a process inside its
    /// container (`docker exec … agenfleet-agent call`): one decision per call.
    pub fn gateway_calls(&self, agent: &str, calls: &[Value]) -> Vec<Value> {
        let cid = self.agent(agent)["container_id"]
            .as_str()
            .expect("a running agent has a container")
            .to_string();
        container_calls(&cid, &[], calls)
    }

    /// Ids of every container labelled with this daemon's instance.
    pub fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=agenfleet.instance={}", self.instance),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if !self.instance.is_empty() {
            let ids = self.containers();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = Command::new("docker").args(&args).output();
            }
            let nets = Command::new("docker")
                .args([
                    "network",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=agenfleet.instance={}", self.instance),
                ])
                .output();
            if let Ok(n) = nets {
                for id in String::from_utf8_lossy(&n.stdout).lines() {
                    let _ = Command::new("docker").args(["network", "rm", id]).output();
                }
            }
        }
        // Workspaces the daemon loop-mounted and did not purge (a failed test).
        let prefix = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in table.lines().filter_map(|l| l.split(' ').nth(4)) {
            if std::path::Path::new(point).starts_with(&prefix) {
                let _ = Command::new("umount").arg(point).output();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", t, N.fetch_add(1, Ordering::Relaxed))
}

/// A healthy agent's spec.
pub fn healthy(name: &str) -> String {
    format!(
        "name = \"{name}\"\nimage = \"agenfleet/agent\"\n[workload]\nmessage = \"{name} working\"\nlog_interval_ms = 200\n"
    )
}

/// A built-in-image agent in `tenant/project`, optionally needing an `api-key` credential.
pub fn scoped_spec(tenant: &str, project: &str, name: &str, creds: bool) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nproject = \"{project}\"\nimage = \"agenfleet/agent\"\n{}[workload]\nlog_interval_ms = 500\n",
        if creds { "credentials = [\"api-key\"]\n" } else { "" }
    )
}

impl Daemon {
    /// Lets clients running as other uids reach the socket (the test dir is traversable
    /// and the socket 0666); the daemon still decides what each uid may do.
    pub fn open_to_other_uids(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod socket");
    }

    /// Runs `agenfleet ARGS` as `uid` (real peer credentials), with a token in
    /// `AGENFLEET_TOKEN` if given and `stdin` on its standard input.
    pub fn cli_as(
        &self,
        uid: u32,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(bin_for_other_uids("agenfleet"));
        c.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .uid(uid)
            .gid(uid)
            .env("HOME", "/tmp");
        match token {
            Some(t) => c.env("AGENFLEET_TOKEN", t),
            None => c.env_remove("AGENFLEET_TOKEN"),
        };
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn agenfleet");
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(stdin.unwrap_or("").as_bytes());
        }
        child.wait_with_output().expect("agenfleet output")
    }
}

/// `agenfleet --json watch --changes-only` running in the background; lines are read on
/// a thread so a test can wait for the change it is after, whatever else arrives first.
pub struct Watcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
}

impl Watcher {
    pub fn start(d: &Daemon) -> Watcher {
        Self::spawn(d, &["--json", "watch", "--changes-only"])
    }

    /// A watch that prints the fleet first (one line per agent), then what changes: a
    /// test that waits for the snapshot knows the watch is connected.
    pub fn start_with_snapshot(d: &Daemon) -> Watcher {
        Self::spawn(d, &["--json", "watch"])
    }

    fn spawn(d: &Daemon, args: &[&str]) -> Watcher {
        use std::io::BufRead;
        let mut child = d
            .cli_cmd()
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("agenfleet watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send((std::time::Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines: rx }
    }

    /// The first change line for which `pred` holds, parsed, with when it arrived.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (std::time::Instant, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, line) = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("watch: timed out waiting for {what}"));
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if pred(&v) {
                    return (t, v);
                }
            }
        }
    }

    /// Whether the watch process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
