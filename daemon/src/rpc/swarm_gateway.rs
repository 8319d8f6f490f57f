//! Swarm mode: the gateway for agents on any node. Their tasks reach the daemon's gateway
//! endpoint (a container on this node joined to every agent's overlay network), which
//! hands each connection to the socket served here after a line naming the address it
//! came in on — that is, whose network. The task's own first line carries its gateway
//! token (a Swarm secret mounted for it alone) and the channel it wants. The daemon takes
//! the connection only when the token is in force and is the token of the agent whose
//! network it came from; anything else is refused, recorded, and — a token presented
//! from another agent's network — raised as the cross-agent incident. An accepted
//! connection is served exactly as the agent's own socket would be (`gateway.rs`) — or,
//! on the `logs` channel, its lines are the agent's output (the engine keeps none, and a
//! task on another node cannot be attached to). A job run's task holds a token of its
//! own, which names the run: its connections are the run's, as a job container's are on
//! one host, and its output is the run's as well as the agent's.

use super::gateway::{record_refused, serve_conn, Conn, GatewayService};
use crate::runtime::{stats, Runtime};
use crate::store::AgentKey;
use agenfleet_protocol::gateway::{ENDPOINT_HELLO, LOG_LINE_MAX, REMOTE_HELLO, REMOTE_LINE_MAX};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Connections open at once through the endpoint: per agent, and in all.
const PER_AGENT: usize = 128;
const TOTAL: usize = 8192;

/// Serves the endpoint socket (`<state_dir>/swarm/endpoint.sock`, the daemon's uid alone)
/// until the task is aborted.
pub fn start(rt: Arc<Runtime>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let dir = crate::runtime::endpoint::endpoint_dir(&rt.cfg.state_dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(crate::runtime::endpoint::ENDPOINT_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let admission = super::conn::Admission::new(PER_AGENT, TOTAL);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (rt, admission) = (rt.clone(), admission.clone());
            tokio::spawn(async move { handle(rt, stream, admission).await });
        }
    }))
}

/// Reads one `\n`-ended line of at most `REMOTE_LINE_MAX` bytes, byte by byte (what
/// follows it is the channel's own protocol and must stay unread).
async fn read_line(stream: &mut tokio::net::UnixStream) -> Option<String> {
    let mut line = Vec::with_capacity(96);
    loop {
        let b = stream.read_u8().await.ok()?;
        if b == b'\n' {
            return String::from_utf8(line).ok();
        }
        if line.len() >= REMOTE_LINE_MAX {
            return None;
        }
        line.push(b);
    }
}

/// What a connection from a task is for.
enum Channel {
    /// One of the gateway's sockets, served as on one host.
    Serve(Conn),
    /// The task's output (`output.rs` of the shim), taken into the agent's log ring.
    Logs,
}

/// What the two lines say: the endpoint's address the task reached, the token, the
/// channel.
fn parse(ep: &str, gw: &str) -> Result<(IpAddr, String, Channel), String> {
    let ip = ep
        .strip_prefix(ENDPOINT_HELLO)
        .map(str::trim)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or("the endpoint's line is not `AGF-EP1 <address>`")?;
    let mut parts = gw.split(' ');
    if parts.next() != Some(REMOTE_HELLO) {
        return Err("the first line is not `AGF-GW1 <token> <channel>`".into());
    }
    let token = parts.next().filter(|t| !t.is_empty()).ok_or("no token")?;
    let channel = match parts.next() {
        Some("gateway") => Channel::Serve(Conn::Gateway),
        Some("api") => Channel::Serve(Conn::Api),
        Some("proxy") => Channel::Serve(Conn::Proxy),
        Some("logs") => Channel::Logs,
        other => return Err(format!("unknown channel {other:?}")),
    };
    Ok((ip, token.to_string(), channel))
}

async fn handle(
    rt: Arc<Runtime>,
    mut stream: tokio::net::UnixStream,
    admission: Arc<super::conn::Admission>,
) {
    let timeouts = super::conn::Timeouts::gateway(&rt.cfg);
    let lines = tokio::time::timeout(timeouts.frame, async {
        let ep = read_line(&mut stream).await?;
        let gw = read_line(&mut stream).await?;
        Some((ep, gw))
    })
    .await;
    let Ok(Some((ep, gw))) = lines else {
        return;
    };
    let (ip, token, channel) = match parse(&ep, &gw) {
        Ok(p) => p,
        Err(why) => {
            // Recorded against the agent whose network it came from, when that is known.
            let from = ep
                .strip_prefix(ENDPOINT_HELLO)
                .and_then(|a| a.trim().parse::<IpAddr>().ok())
                .and_then(|ip| rt.gateway_keys.agent_of_ip(ip));
            tracing::warn!(%why, agent = ?from.as_ref().map(|k| k.to_string()), "swarm gateway: a malformed connection closed");
            if let Some(key) = from {
                record_malformed(&rt, &key, format!("malformed connection: {why}")).await;
            }
            return;
        }
    };
    let keys = &rt.gateway_keys;
    let network = keys.agent_of_ip(ip);
    let holder = keys.holder_of_token(&token);
    let (key, run) = match (network, holder) {
        (Some(n), Some(t)) if n == t.key => (n, t.run),
        (network, holder) => return refuse(&rt, network, holder.map(|h| h.key)).await,
    };
    let permit = match admission.admit(uid_of(&key)) {
        Ok(p) => p,
        Err(_) => {
            tracing::warn!(agent = %key, "swarm gateway: the agent holds too many connections; one closed");
            return;
        }
    };
    let conn = match channel {
        Channel::Serve(conn) => conn,
        Channel::Logs => {
            return match run {
                Some(run) => take_run_logs(rt, key, run, stream).await,
                None => take_logs(rt, key, None, stream).await,
            }
        }
    };
    let mode_ok = !matches!(conn, Conn::Proxy)
        || rt
            .agent_spec(&key)
            .is_some_and(|s| s.network.mode == agenfleet_protocol::NetworkMode::Gateway);
    if !mode_ok {
        tracing::warn!(agent = %key, "swarm gateway: an egress proxy connection from an agent without one closed");
        return;
    }
    let service = GatewayService::for_task(rt.clone(), key, run);
    serve_conn(conn, stream, service, timeouts, Some(permit)).await;
}

/// A job run's task's output: the run's as well as the agent's; its follower is told when
/// the connection closes (the task's last words are in).
async fn take_run_logs(rt: Arc<Runtime>, key: AgentKey, run: u64, stream: tokio::net::UnixStream) {
    let Some(ring) = rt.jobs.stream_opened(run) else {
        return;
    };
    take_logs(rt.clone(), key, Some((run, ring)), stream).await;
    rt.jobs.stream_closed(run);
}

/// Takes a task's output into its agent's log ring (and a job run's ring), line by
/// line, until the task closes the connection: `<1|2> <text>` (stdout, stderr). The
/// agent's credential values are redacted before a line is kept (known before the first
/// line, learnt again on every change), as for output read from a container. A job run's
/// readings are not the agent's (it has no task of its own): they are not shown.
async fn take_logs(
    rt: Arc<Runtime>,
    key: AgentKey,
    run: Option<(u64, crate::runtime::logs::LogRing)>,
    stream: tokio::net::UnixStream,
) {
    use tokio::io::AsyncBufReadExt;
    let (run, run_ring) = match run {
        Some((id, ring)) => (Some(id), Some(ring)),
        None => (None, None),
    };
    let Some(ring) = rt.logs(&key) else {
        return;
    };
    let learn = |rt: &Runtime| {
        let secrets = crate::runtime::runner::secrets_of(rt, &key);
        if let Some(r) = &run_ring {
            r.learn_secrets(secrets.clone());
        }
        ring.learn_secrets(secrets);
    };
    learn(&rt);
    let mut changes = rt.credential_changes(&key);
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let mut prev: Option<(stats::Sample, std::time::Instant)> = None;
    tracing::debug!(agent = %key, "swarm gateway: taking the task's output");
    // A line is at most the text, its stream, a space and the newline.
    let limit = (LOG_LINE_MAX + 3) as u64;
    loop {
        let changed = async {
            match changes.as_mut() {
                Some(c) => c.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        // What was read before a credential change stays in `line`: the read goes on.
        let room = limit.saturating_sub(line.len() as u64);
        let read = tokio::select! {
            r = async { (&mut reader).take(room).read_until(b'\n', &mut line).await } => r,
            alive = changed => {
                if alive {
                    learn(&rt);
                } else {
                    changes = None;
                }
                continue;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match task_line(&line) {
            Some(TaskLine::Output(stream, text)) => {
                if let Some(r) = &run_ring {
                    r.push_now(stream, text.clone());
                }
                ring.push_now(stream, text)
            }
            Some(TaskLine::Oom) => match run {
                Some(run) => rt.jobs.note_oom(run),
                None => rt.task_oom(&key),
            },
            Some(TaskLine::Stats(_)) if run_ring.is_some() => {}
            Some(TaskLine::Stats(s)) => {
                let now = std::time::Instant::now();
                let cpu = prev
                    .map(|(p, t)| {
                        stats::cpu_percent(&p, &s, now.duration_since(t).as_nanos() as u64)
                    })
                    .unwrap_or(0.0);
                prev = Some((s, now));
                stats::publish_one(
                    &rt.fleet,
                    &key,
                    Some(((cpu * 10.0).round() / 10.0, s.memory_bytes)),
                );
            }
            None => {
                // Not the shim's (it frames every line): recorded, and the connection closed.
                tracing::warn!(agent = %key, "swarm gateway: a malformed output line; the connection closed");
                record_malformed(
                    &rt,
                    &key,
                    "malformed line on the logs channel (not `<1|2> <text>`, `s <cpu> <memory>` or `o`); connection closed".into(),
                )
                .await;
                break;
            }
        }
        line.clear();
    }
    // Its readings stop with the connection: not shown as if they held.
    if prev.is_some() {
        stats::publish_one(&rt.fleet, &key, None);
    }
}

/// Records a malformed connection or line from a task on `key`'s network, against it.
async fn record_malformed(rt: &Runtime, key: &AgentKey, detail: String) {
    let _ = record_refused(rt, key, format!("a task on {key}'s network"), detail).await;
}

/// One line of a task's `logs` channel.
#[derive(Debug, PartialEq)]
enum TaskLine {
    Output(agenfleet_protocol::LogStream, String),
    Stats(stats::Sample),
    /// The kernel's OOM killer ended the program (`o`).
    Oom,
}

/// `<1|2> <text>\n` → its stream and text (invalid UTF-8 replaced); `s <cpu ns> <memory
/// bytes>\n` → a reading; `o\n` → the OOM killer ended the program; None otherwise.
fn task_line(line: &[u8]) -> Option<TaskLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (stream, text) = match line {
        [b'1', b' ', text @ ..] => (agenfleet_protocol::LogStream::Stdout, text),
        [b'2', b' ', text @ ..] => (agenfleet_protocol::LogStream::Stderr, text),
        [b'o'] => return Some(TaskLine::Oom),
        [b's', b' ', rest @ ..] => {
            let rest = std::str::from_utf8(rest).ok()?;
            let (cpu, mem) = rest.split_once(' ')?;
            return Some(TaskLine::Stats(stats::Sample {
                cpu_ns: cpu.parse().ok()?,
                memory_bytes: mem.parse().ok()?,
            }));
        }
        _ => return None,
    };
    Some(TaskLine::Output(
        stream,
        String::from_utf8_lossy(text).into_owned(),
    ))
}

/// A stable number for an agent, for the admission's per-caller count.
fn uid_of(key: &AgentKey) -> u32 {
    key.to_string().bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Records a refused connection and, when a token was presented from another agent's
/// network (or an unknown token from an agent's), raises the cross-agent incident.
async fn refuse(rt: &Runtime, network: Option<AgentKey>, holder: Option<AgentKey>) {
    let on = network
        .as_ref()
        .map(|n| format!("a task on {n}'s network"))
        .unwrap_or_else(|| "a connection from a network that is no agent's".into());
    let (victim, detail) = match (&network, &holder) {
        (_, Some(h)) => (
            h.clone(),
            format!("not permitted: {on} presented the gateway token of {h}"),
        ),
        (Some(n), None) => (
            n.clone(),
            format!("not permitted: {on} presented a gateway token that is not in force (an old or made-up one)"),
        ),
        (None, None) => {
            tracing::warn!("swarm gateway: a connection with no known token from no agent's network refused");
            return;
        }
    };
    tracing::warn!(agent = %victim, %detail, "swarm gateway connection refused");
    let project = rt.fleet.get(&victim).map(|v| v.project).unwrap_or_default();
    let seq = record_refused(rt, &victim, on.clone(), detail).await;
    if let Ok(seq) = seq {
        let caller = match &holder {
            Some(h) if network.is_some() => format!("{on} with {h}'s token"),
            _ => format!("{on} with a token not in force"),
        };
        rt.incidents
            .signal(crate::incidents::detect::Signal::CrossAgent {
                key: victim,
                project,
                caller,
                seq,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_lines_are_read_strictly() {
        let (ip, token, conn) = parse("AGF-EP1 10.231.0.5", "AGF-GW1 abcd api").expect("parsed");
        assert_eq!(ip, "10.231.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(token, "abcd");
        assert!(matches!(conn, Channel::Serve(Conn::Api)));
        let (_, _, logs) = parse("AGF-EP1 10.231.0.5", "AGF-GW1 abcd logs").expect("parsed");
        assert!(matches!(logs, Channel::Logs));
        assert!(parse("AGF-EP1 nonsense", "AGF-GW1 abcd api").is_err());
        assert!(parse("AGF-EP1 10.0.0.1", "AGF-GW1  api").is_err());
        assert!(parse("AGF-EP1 10.0.0.1", "AGF-GW1 abcd shell").is_err());
        assert!(parse("AGF-EP1 10.0.0.1", "GET / HTTP/1.1").is_err());
    }

    #[test]
    fn a_tasks_lines_are_its_output_or_its_readings() {
        use agenfleet_protocol::LogStream;
        let out = |s: LogStream, t: &str| Some(TaskLine::Output(s, t.into()));
        assert_eq!(task_line(b"1 hello\n"), out(LogStream::Stdout, "hello"));
        assert_eq!(task_line(b"2 \n"), out(LogStream::Stderr, ""));
        assert_eq!(
            task_line(b"2 cut, no newline"),
            out(LogStream::Stderr, "cut, no newline")
        );
        assert_eq!(
            task_line(b"s 1500 4096\n"),
            Some(TaskLine::Stats(stats::Sample {
                cpu_ns: 1500,
                memory_bytes: 4096
            }))
        );
        assert_eq!(task_line(b"o\n"), Some(TaskLine::Oom));
        assert_eq!(task_line(b"s 1500\n"), None);
        assert_eq!(task_line(b"s x 1\n"), None);
        assert_eq!(task_line(b"3 what\n"), None);
        assert_eq!(task_line(b"1hello\n"), None);
    }
}
