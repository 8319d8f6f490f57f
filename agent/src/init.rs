//! `agenfleet-agent run -- PROGRAM ARGS…`: the shim as the init (PID 1) of an agent whose
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

/// Runs `argv` as the child and never returns.
pub fn run(argv: &[String]) -> ! {
    let Some((program, args)) = argv.split_first() else {
        eprintln!(
            "agenfleet-agent run: no program given (usage: agenfleet-agent run -- PROGRAM ARGS…)"
        );
        std::process::exit(64);
    };
    // Block the signals we handle before the child exists, so none is lost in between;
    // the child starts with an empty mask and default dispositions (std resets both).
    let set = signal_set();
    // SAFETY: changes this thread's signal mask only; `set` is initialised.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let api_socket = std::path::Path::new(agenfleet_protocol::gateway::GATEWAY_DIR_IN_CONTAINER)
        .join(agenfleet_protocol::gateway::API_SOCKET_NAME);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    cmd.env("AGENFLEET_API_SOCKET", &api_socket);
    let mut relays = Vec::new();
    match std::net::TcpListener::bind(agenfleet_protocol::gateway::LOCAL_API_ADDR) {
        Ok(listener) => {
            cmd.env(
                "AGENFLEET_API",
                format!("http://{}", agenfleet_protocol::gateway::LOCAL_API_ADDR),
            );
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
                    cmd.env(var, &url);
                }
                cmd.env("NO_PROXY", "localhost,127.0.0.1");
                cmd.env("no_proxy", "localhost,127.0.0.1");
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
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (sigprocmask, signal).
    unsafe {
        cmd.pre_exec(|| {
            let mut empty = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for s in FORWARDED {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            eprintln!("agenfleet-agent run: cannot start `{program}`: {e}");
            std::process::exit(code);
        }
    };
    let pid = child.id() as libc::pid_t;
    // The child is waited for below with waitpid; the handle is not needed any more.
    drop(child);
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised; `sig` is written by sigwait.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
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
                if done == pid {
                    std::process::exit(exit_code(status));
                }
            }
        } else {
            // SAFETY: sends a signal to our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
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
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(unix) = tokio::net::UnixStream::connect(&to).await else {
                return;
            };
            agenfleet_protocol::transport::relay(tcp, unix).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn exit_codes_are_reported_as_a_shell_does() {
        // Wait statuses as the kernel encodes them: exit code in bits 8–15, signal in 0–6.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
