//! Helpers for the end-to-end tests: the real `agenfleetd` and `agenfleet` binaries, a
//! daemon per test with its own state dir and socket, the real Docker engine, and cleanup
//! of everything a test's daemon created (found by the daemon's instance label).

pub mod hostile;

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

/// True when the Docker engine answers. Outside CI a test may skip without it (and says
/// so loudly); with `CI=true` a missing engine is a failure.
pub fn docker_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{test}: the Docker engine is required in CI (CI=true) but does not answer");
        }
        eprintln!(
            "\n!!! SKIPPED {test}: no Docker engine answers (this skip is not allowed in CI) !!!\n"
        );
    }
    ok
}

/// Runs `docker ARGS` and returns stdout (trimmed); panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect` of one object as JSON.
pub fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let v: Value = serde_json::from_str(&text).expect("inspect json");
    v[0].clone()
}

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

/// A daemon of our own for one test.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub instance: String,
}

impl Daemon {
    /// Starts a daemon with a fresh state dir; `extra_config` is appended to its config.
    pub fn start(test: &str, extra_config: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "agf-e2e-{test}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let socket = dir.join("agenfleet.sock");
        let config = dir.join("agenfleetd.toml");
        // Test defaults, unless the test sets them itself.
        let mut text = format!(
            "state_dir = {:?}\nsocket = {:?}\n",
            dir.join("state"),
            socket
        );
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

    /// Starts the daemon again on the same state dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
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

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", t, N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `agenfleet-agent call` in container `cid` (`docker exec -i`, extra `exec_args`
/// before the container id), feeding it `calls` as JSON lines; answers the decisions.
pub fn container_calls(cid: &str, exec_args: &[&str], calls: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("docker")
        .arg("exec")
        .arg("-i")
        .args(exec_args)
        .arg(cid)
        .args(["/agenfleet-agent", "call"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec");
    if let Some(mut stdin) = child.stdin.take() {
        for c in calls {
            writeln!(stdin, "{c}").expect("write a call");
        }
    }
    let out = child.wait_with_output().expect("docker exec output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad decision line {l:?}: {e}")))
        .collect()
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

/// Reads the whole file at `p` as text, or "".
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The real console in a real terminal: a private tmux server per instance.
pub struct Tmux {
    server: String,
}

impl Tmux {
    /// Runs `cmd` in an 80×24 terminal.
    pub fn start(cmd: &str) -> Tmux {
        Self::start_sized(cmd, 80, 24)
    }

    /// Runs `cmd` in a `w`×`h` terminal.
    pub fn start_sized(cmd: &str, w: u16, h: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let server = format!(
            "agf-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let st = std::process::Command::new("tmux")
            .args([
                "-L",
                &server,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "console",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                cmd,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        Tmux { server }
    }

    pub fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.server, "capture-pane", "-p", "-t", "console"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["-L", &self.server, "send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        let st = std::process::Command::new("tmux")
            .args(&args)
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    pub fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_screen_for(Duration::from_secs(15), what, pred)
    }

    pub fn wait_screen_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, what, || {
                let s = self.screen();
                last = s.clone();
                pred(&s).then_some(s)
            })
        }));
        match r {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; screen:\n{last}"),
        }
    }

    /// The pid of the program running in the terminal.
    pub fn pane_pid(&self) -> Option<u32> {
        let out = std::process::Command::new("tmux")
            .args([
                "-L",
                &self.server,
                "display-message",
                "-p",
                "-t",
                "console",
                "#{pane_pid}",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    pub fn alive(&self) -> bool {
        std::process::Command::new("tmux")
            .args(["-L", &self.server, "has-session", "-t", "console"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .status();
    }
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

/// A real HTTP server for agents to call (a model or tool provider stand-in): each path
/// answers the status and body set for it (default 200 `{"ok":true}`); counts requests.
pub struct StubServer {
    pub port: u16,
    routes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (u16, String)>>>,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StubServer {
    pub fn start() -> StubServer {
        let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a stub server");
        let port = listener.local_addr().expect("addr").port();
        let routes: std::sync::Arc<
            std::sync::Mutex<std::collections::HashMap<String, (u16, String)>>,
        > = Default::default();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 8192];
                    let n = s.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (status, body) = r
                        .lock()
                        .map(|m| m.get(&path).cloned())
                        .ok()
                        .flatten()
                        .unwrap_or((200, "{\"ok\":true}".into()));
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        StubServer { port, routes, hits }
    }

    /// Makes `path` answer `status` with `body` from now on.
    pub fn set(&self, path: &str, status: u16, body: &str) {
        if let Ok(mut m) = self.routes.lock() {
            m.insert(path.to_string(), (status, body.to_string()));
        }
    }
}

/// A webhook receiver that checks each request as a real one would: the HMAC signature
/// over timestamp and body, and the timestamp's age. Keeps what it accepted and counts what
/// it refused (with the reasons).
pub struct WebhookReceiver {
    pub accepted: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    pub refused: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl WebhookReceiver {
    /// Listens on 127.0.0.1:`port` (0: any) with HMAC `secret`; answers the port.
    pub fn start(port: u16, secret: &str) -> (WebhookReceiver, u16) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let port = listener.local_addr().expect("addr").port();
        let accepted: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let refused: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (a, r, secret) = (
            accepted.clone(),
            refused.clone(),
            secret.as_bytes().to_vec(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut data = Vec::new();
                let mut buf = [0u8; 16384];
                // Read the head, then exactly Content-Length bytes of body.
                let (head, mut body) = loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    data.extend_from_slice(&buf[..n]);
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (
                            String::from_utf8_lossy(&data[..i]).to_string(),
                            data[i + 4..].to_vec(),
                        );
                    }
                };
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.trim().to_string())
                    })
                };
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while body.len() < len {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let verdict = agenfleet_protocol::incidents::verify(
                    &secret,
                    header(agenfleet_protocol::incidents::TIMESTAMP_HEADER).as_deref(),
                    header(agenfleet_protocol::incidents::SIGNATURE_HEADER).as_deref(),
                    &body,
                    now,
                );
                let status = match verdict {
                    Ok(()) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                            if let Ok(mut a) = a.lock() {
                                a.push(v);
                            }
                        }
                        "204 No Content"
                    }
                    Err(e) => {
                        if let Ok(mut r) = r.lock() {
                            r.push(e.to_string());
                        }
                        "401 Unauthorized"
                    }
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (WebhookReceiver { accepted, refused }, port)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Unix-socket proxy to the real Docker socket: the daemon's engine for tests that take
/// the engine away (stop the proxy) and bring it back (start it again) without touching
/// the real engine other tests use.
pub struct EngineProxy {
    pub path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl EngineProxy {
    pub fn start(path: &Path) -> EngineProxy {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the engine proxy");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>> =
            Default::default();
        let (st, op) = (stop.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(engine) = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
                else {
                    continue;
                };
                if let (Ok(mut o), Ok(c)) = (op.lock(), client.try_clone()) {
                    o.push(c);
                }
                let (Ok(mut c1), Ok(mut e1)) = (client.try_clone(), engine.try_clone()) else {
                    continue;
                };
                let (mut c2, mut e2) = (client, engine);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut e1);
                    let _ = e1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut e2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        EngineProxy {
            path: path.to_path_buf(),
            stop,
            open,
        }
    }

    /// The engine goes away: no new connections, and every open one is cut.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
