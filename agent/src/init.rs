//! `agenfleet-agent run [--secret-file NAME] [--secret-env VAR=NAME] -- PROGRAM ARGS…`:
//! the shim as the init (PID 1) of an agent whose
//! image is not ours. It starts the agent's program as its only child, forwards SIGTERM,
//! SIGINT, SIGHUP and SIGQUIT to it, reaps every process that ends up re-parented to it
//! (orphans the program leaves behind included, so none stays a zombie), and exits with the
//! program's exit code — 128 + n when a signal n ended it, as a shell reports it — once the
//! program itself has ended. A program that cannot be started exits 127 (not found) or 126
//! (not executable), with the reason on stderr.
//!
//! Before the program starts it listens on `127.0.0.1:4180` in the container's network
//! namespace and relays each connection to the local API socket that the daemon serves in
//! the gateway directory (`/run/agenfleet/api.sock`); the program is told both addresses
//! (`AGENFLEET_API`, `AGENFLEET_API_SOCKET`). For an agent whose only way out is the
//! gateway (the daemon then serves `proxy.sock` there) it also relays `127.0.0.1:3128` to
//! that egress proxy and sets `HTTP_PROXY`/`HTTPS_PROXY` (both spellings) and `NO_PROXY`.
//! The relays are bytes only: every decision is the daemon's.
//!
//! Credentials the spec delivers other than through the API are named on its command line
//! (`--secret-file NAME`, `--secret-env VAR=NAME`; never a value): it fetches them over the
//! gateway before the program starts, writes each `file` one to `/run/agenfleet/secrets/`
//! (0400, on the tmpfs the daemon mounts there) and puts each `env` one into the program's
//! environment only. Then it waits on the gateway for rotations: a file is replaced
//! atomically; a rotated variable makes it stop the program (SIGTERM, SIGKILL after a
//! grace) and start it again with the new value, in the same container.

use std::os::unix::process::CommandExt;

/// Signals handed on to the program.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// The exit code a shell would report for a wait status.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// What `run` was asked to do: the program, and the credentials it hands the program
/// other than through the API.
struct RunArgs {
    argv: Vec<String>,
    /// Credentials written to `/run/agenfleet/secrets/NAME`.
    files: Vec<String>,
    /// (variable, credential) pairs put in the program's environment.
    envs: Vec<(String, String)>,
}

fn parse(args: &[String]) -> Result<RunArgs, String> {
    let mut r = RunArgs {
        argv: Vec::new(),
        files: Vec::new(),
        envs: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => break,
            "--secret-file" => r.files.push(
                it.next()
                    .ok_or("--secret-file needs a credential name")?
                    .clone(),
            ),
            "--secret-env" => {
                let pair = it.next().ok_or("--secret-env needs VAR=NAME")?;
                let (var, name) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--secret-env `{pair}` is not VAR=NAME"))?;
                r.envs.push((var.to_string(), name.to_string()));
            }
            other => {
                // No `--`: the program starts here.
                r.argv.push(other.to_string());
                break;
            }
        }
    }
    r.argv.extend(it.cloned());
    Ok(r)
}

/// The credentials the program gets as files and variables, as last fetched.
struct Secrets {
    held: Vec<crate::Held>,
    /// The program is to be started again once it has exited.
    restart_pending: bool,
}

impl Secrets {
    fn version(&self, name: &str) -> Option<u32> {
        self.held.iter().find(|h| h.name == name).map(|h| h.version)
    }

    /// Writes each `file` credential whose version differs from `before` (all of them at
    /// start): a new file of mode 0400 renamed over the old one, so a reader sees the old
    /// value or the new one, never half of either.
    fn write_files(&self, files: &[String], before: Option<&Secrets>) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::path::Path::new(agenfleet_protocol::spec::SECRETS_DIR_IN_CONTAINER);
        for name in files {
            let Some(h) = self.held.iter().find(|h| &h.name == name) else {
                return Err(format!("credential `{name}` was not delivered"));
            };
            if before.is_some_and(|b| b.version(name) == Some(h.version)) {
                continue;
            }
            let tmp = dir.join(format!(".{name}.new"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&tmp)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            f.write_all(h.value.expose())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, dir.join(name))
                .map_err(|e| format!("cannot put {name} in {}: {e}", dir.display()))?;
            eprintln!(
                "agenfleet-agent run: credential {name} version {} in {}/{name}",
                h.version,
                dir.display()
            );
        }
        Ok(())
    }

    /// Whether an `env` credential's version differs between the two sets.
    fn env_changed(&self, envs: &[(String, String)], before: &Secrets) -> Vec<String> {
        envs.iter()
            .filter(|(_, n)| self.version(n) != before.version(n))
            .map(|(_, n)| format!("{n} v{}", self.version(n).unwrap_or(0)))
            .collect()
    }
}

/// Builds the program's command: its environment gets the API and proxy addresses and the
/// `env` credentials; it starts with an empty signal mask and default dispositions, and
/// with `no_new_privs` set (no setuid binary or file capability can raise it — the engine
/// sets it for a container, but a Swarm task spec cannot ask for it, so the init does).
fn command(
    argv: &[String],
    base_env: &[(String, String)],
    envs: &[(String, String)],
    secrets: &Secrets,
) -> std::process::Command {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.envs(base_env.iter().map(|(k, v)| (k, v)));
    for (var, name) in envs {
        if let Some(h) = secrets.held.iter().find(|h| &h.name == name) {
            cmd.env(var, std::ffi::OsStr::from_bytes(h.value.expose()));
        }
    }
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (open, write, close, sigprocmask, signal, prctl).
    unsafe {
        cmd.pre_exec(|| {
            // The program, not its init, is the one the kernel's OOM killer picks first (a
            // rise needs no privilege): the init stays to reap it and say what happened.
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, b"500".as_ptr().cast(), 3);
                libc::close(fd);
            }
            let mut empty = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for s in FORWARDED {
                libc::signal(s, libc::SIG_DFL);
            }
            // Fails closed: a program that cannot be so confined is not started.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn spawn_or_exit(mut cmd: std::process::Command, program: &str) -> libc::pid_t {
    match cmd.spawn() {
        // The child is waited for with waitpid; the handle is not needed.
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            eprintln!("agenfleet-agent run: cannot start `{program}`: {e}");
            std::process::exit(code);
        }
    }
}

/// How long a program asked to stop for a rotation has before it is killed.
const RESTART_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the program as the child and never returns.
pub fn run(args: &[String]) -> ! {
    let RunArgs { argv, files, envs } = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agenfleet-agent run: {e}");
            std::process::exit(64);
        }
    };
    let Some(program) = argv.first().cloned() else {
        eprintln!(
            "agenfleet-agent run: no program given (usage: agenfleet-agent run [--secret-file NAME] [--secret-env VAR=NAME] -- PROGRAM ARGS…)"
        );
        std::process::exit(64);
    };
    // Block the signals we handle before any thread or child exists, so none is lost in
    // between and only the sigwait below takes them (SIGUSR1: the credential watcher
    // asks for the program to be restarted).
    let set = signal_set();
    // SAFETY: changes this thread's signal mask only; `set` is initialised.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // Swarm mode: the gateway's sockets are served here and relayed over the overlay.
    crate::remote::start_if_remote("agenfleet-agent run");
    let gateway = std::path::Path::new(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER)
        .join(agenfleet_protocol::gateway::GATEWAY_SOCKET_NAME);
    let wanted: Vec<String> = files
        .iter()
        .cloned()
        .chain(envs.iter().map(|(_, n)| n.clone()))
        .collect();
    let secrets = if wanted.is_empty() {
        Secrets {
            held: Vec::new(),
            restart_pending: false,
        }
    } else {
        let held = match crate::fetch_credentials(&gateway) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("agenfleet-agent run: cannot start without credentials: {e}");
                std::process::exit(70);
            }
        };
        if let Some(missing) = wanted.iter().find(|n| !held.iter().any(|h| &h.name == *n)) {
            eprintln!(
                "agenfleet-agent run: credential `{missing}` was not delivered; cannot start"
            );
            std::process::exit(70);
        }
        Secrets {
            held,
            restart_pending: false,
        }
    };
    if let Err(e) = secrets.write_files(&files, None) {
        eprintln!("agenfleet-agent run: {e}; cannot start");
        std::process::exit(70);
    }
    let api_socket = std::path::Path::new(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER)
        .join(agenfleet_protocol::gateway::API_SOCKET_NAME);
    let mut base_env = vec![(
        "AGENFLEET_API_SOCKET".to_string(),
        api_socket.display().to_string(),
    )];
    let mut relays = Vec::new();
    match std::net::TcpListener::bind(agenfleet_protocol::gateway::LOCAL_API_ADDR) {
        Ok(listener) => {
            base_env.push((
                "AGENFLEET_API".into(),
                format!("http://{}", agenfleet_protocol::gateway::LOCAL_API_ADDR),
            ));
            relays.push((listener, api_socket));
        }
        Err(e) => eprintln!(
            "agenfleet-agent run: cannot listen on {} for the local API ({e}); it stays reachable at {}",
            agenfleet_protocol::gateway::LOCAL_API_ADDR,
            api_socket.display()
        ),
    }
    let proxy_socket = std::path::Path::new(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER)
        .join(agenfleet_protocol::gateway::PROXY_SOCKET_NAME);
    if proxy_socket.exists() {
        match std::net::TcpListener::bind(agenfleet_protocol::gateway::EGRESS_PROXY_ADDR) {
            Ok(listener) => {
                let url = format!("http://{}", agenfleet_protocol::gateway::EGRESS_PROXY_ADDR);
                for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                    base_env.push((var.into(), url.clone()));
                }
                for var in ["NO_PROXY", "no_proxy"] {
                    base_env.push((var.into(), "localhost,127.0.0.1".into()));
                }
                relays.push((listener, proxy_socket));
            }
            Err(e) => eprintln!(
                "agenfleet-agent run: cannot listen on {} for the egress proxy ({e}); the program has no way out",
                agenfleet_protocol::gateway::EGRESS_PROXY_ADDR
            ),
        }
    }
    if !relays.is_empty() {
        // Spawned after the signal mask is set, so this thread never takes them.
        std::thread::spawn(move || relay(relays));
    }
    let secrets = std::sync::Arc::new(std::sync::Mutex::new(secrets));
    if !wanted.is_empty() {
        let (s, f, e) = (secrets.clone(), files.clone(), envs.clone());
        std::thread::spawn(move || watch_credentials(gateway, s, f, e));
    }
    let spawn = |s: &Secrets| spawn_or_exit(command(&argv, &base_env, &envs, s), &program);
    // The cgroup's OOM kills so far: one more when the program dies of SIGKILL is the
    // kernel's OOM killer, which the daemon is told of (it cannot inspect a task's
    // container on another node).
    let mut ooms_before = crate::output::oom_kills();
    let mut pid = spawn(&lock(&secrets));
    // Set while the program is being stopped to be started again with rotated values.
    let mut restart_deadline: Option<std::time::Instant> = None;
    loop {
        // Waits for a signal; with a deadline only while a stopped program is awaited (no
        // wake-up otherwise).
        let sig = match restart_deadline {
            None => {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialised; `sig` is written by sigwait.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                sig
            }
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                let timeout = libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
                };
                // SAFETY: `set` is initialised; a null siginfo is allowed.
                unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) }
            }
        };
        if sig < 0 {
            if restart_deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                eprintln!("agenfleet-agent run: the program did not stop for the rotation in time; killing it");
                // SAFETY: sends a signal to our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                restart_deadline = None;
            }
            continue;
        }
        if sig == libc::SIGCHLD {
            loop {
                let mut status: libc::c_int = 0;
                // SAFETY: plain waitpid on any child, without blocking.
                let done = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if done <= 0 {
                    break;
                }
                if done != pid {
                    continue;
                }
                let again = std::mem::take(&mut lock(&secrets).restart_pending);
                if again {
                    restart_deadline = None;
                    ooms_before = crate::output::oom_kills();
                    pid = spawn(&lock(&secrets));
                    eprintln!(
                        "agenfleet-agent run: program restarted with the rotated credential(s)"
                    );
                } else {
                    let killed =
                        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL;
                    if killed && crate::output::oom_kills() > ooms_before {
                        eprintln!("agenfleet-agent run: the program was killed by the kernel's OOM killer (the agent's memory limit)");
                        crate::output::report_oom();
                    }
                    std::process::exit(exit_code(status));
                }
            }
        } else if sig == libc::SIGUSR1 {
            if restart_deadline.is_none() {
                restart_deadline = Some(std::time::Instant::now() + RESTART_GRACE);
                // SAFETY: sends a signal to our own child.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        } else {
            if sig == libc::SIGTERM || sig == libc::SIGINT {
                // A stop: the program is not started again once it ends.
                lock(&secrets).restart_pending = false;
            }
            // SAFETY: sends a signal to our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

fn lock(s: &std::sync::Mutex<Secrets>) -> std::sync::MutexGuard<'_, Secrets> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on the gateway for rotated credentials: replaces the files in place, and for a
/// rotated `env` credential asks the main thread (SIGUSR1) to restart the program.
fn watch_credentials(
    gateway: std::path::PathBuf,
    secrets: std::sync::Arc<std::sync::Mutex<Secrets>>,
    files: Vec<String>,
    envs: Vec<(String, String)>,
) {
    crate::watch_gateway_credentials(
        gateway,
        || {
            lock(&secrets)
                .held
                .iter()
                .map(|c| (c.name.clone(), c.version))
                .collect()
        },
        |fresh| {
            let fresh = Secrets {
                held: fresh,
                restart_pending: false,
            };
            let mut cur = lock(&secrets);
            if let Err(e) = fresh.write_files(&files, Some(&cur)) {
                eprintln!("agenfleet-agent run: rotated credential not written: {e}");
                return;
            }
            let rotated = fresh.env_changed(&envs, &cur);
            cur.held = fresh.held;
            if !rotated.is_empty() {
                eprintln!(
                    "agenfleet-agent run: restarting the program to hand it {}",
                    rotated.join(", ")
                );
                cur.restart_pending = true;
                // SAFETY: raises a blocked signal at our own process; the main thread's
                // sigwait takes it.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGUSR1);
                }
            }
        },
    );
}

/// Relays each TCP connection on each listener to its Unix socket, both ways, all on one
/// thread.
fn relay(pairs: Vec<(std::net::TcpListener, std::path::PathBuf)>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("agenfleet-agent run: cannot start the local API relay");
        return;
    };
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for (listener, to) in pairs {
            if listener.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                continue;
            };
            tasks.push(tokio::spawn(accept_loop(listener, to)));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

async fn accept_loop(listener: tokio::net::TcpListener, to: std::path::PathBuf) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, say: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Bytes are handed on as they come: no waiting to fill a segment.
        let _ = tcp.set_nodelay(true);
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(unix) = tokio::net::UnixStream::connect(&to).await else {
                return;
            };
            agenfleet_protocol::relay::relay(tcp, unix).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{command, exit_code, Secrets};

    fn no_new_privs(status: &str) -> Option<&str> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NoNewPrivs:"))
            .map(str::trim)
    }

    #[test]
    fn the_program_starts_with_no_new_privs_set() {
        let own = std::fs::read_to_string("/proc/self/status").expect("own status");
        if no_new_privs(&own) == Some("1") {
            eprintln!("skipped: this test process already runs with no_new_privs, so the program's flag would prove nothing");
            return;
        }
        let secrets = Secrets {
            held: vec![],
            restart_pending: false,
        };
        let argv = vec!["cat".to_string(), "/proc/self/status".to_string()];
        let out = command(&argv, &[], &[], &secrets)
            .output()
            .expect("run cat");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(no_new_privs(&text), Some("1"), "{text}");
    }

    #[test]
    fn exit_codes_are_reported_as_a_shell_does() {
        // Wait statuses as the kernel encodes them: exit code in bits 8–15, signal in 0–6.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
