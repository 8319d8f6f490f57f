//! Webhooks in-process (`cargo bench -p agenfleet-daemon --bench webhooks`): the daemon's
//! own `[http]` listener on loopback, its triggers (vault-sealed secret, real SQLite file,
//! real audit log) and runs; an agent task waiting in `Runs::next`, as a service agent's
//! `GET /v1/runs/next` does. Measured:
//!
//! - quiet: a signed webhook sent (keep-alive connection) → the waiting agent holds its
//!   run, and → the sender has its 202; 500 of them one after another;
//! - flood: 10,000 invalid webhooks in 10 s (4 connections from another process, so the
//!   senders do not share the daemon's two workers; half carry the subscription's token
//!   with a bad signature — the costlier kind: the secret is opened and an HMAC computed —
//!   half an unknown token), with a valid webhook every 20 ms meanwhile: the rejections
//!   per second, the daemon side's CPU, and the valid ones' latency against quiet.

use agenfleet_daemon::audit::{AuditLog, Options};
use agenfleet_daemon::config::HttpConfig;
use agenfleet_daemon::runs::Runs;
use agenfleet_daemon::store::{AgentKey, AgentRecord, Store};
use agenfleet_daemon::triggers::{Limits, Triggers};
use agenfleet_daemon::vault::Vault;
use agenfleet_protocol::runs::RunState;
use agenfleet_protocol::triggers::{signature, TriggerNew};
use agenfleet_protocol::AgentSpec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn q(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// This process's CPU time (user + system), in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// One keep-alive HTTP/1.1 connection to the listener.
struct Conn {
    addr: std::net::SocketAddr,
    s: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: std::net::SocketAddr) -> Conn {
        Conn {
            addr,
            s: None,
            buf: Vec::new(),
        }
    }

    /// POSTs and answers the status (0 when the connection failed).
    async fn post(&mut self, path: &str, token: &str, ts: &str, sig: &str, body: &[u8]) -> u16 {
        for _ in 0..2 {
            if self.s.is_none() {
                let s = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .expect("connect");
                s.set_nodelay(true).expect("nodelay");
                self.s = Some(s);
                self.buf.clear();
            }
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nX-AgenFleet-Timestamp: {ts}\r\nX-AgenFleet-Signature: {sig}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let mut out = req.into_bytes();
            out.extend_from_slice(body);
            let Some(s) = self.s.as_mut() else { continue };
            if s.write_all(&out).await.is_err() {
                self.s = None;
                continue;
            }
            match read_response(s, &mut self.buf).await {
                Some(code) => return code,
                None => self.s = None,
            }
        }
        0
    }
}

/// Reads one response (headers and a Content-Length body); answers its status.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Some(status);
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The subscription the valid webhooks go to.
struct Hook {
    path: String,
    token: String,
    secret: Vec<u8>,
}

impl Hook {
    /// Sends one valid webhook: when it was sent, and its status.
    async fn send(&self, conn: &mut Conn, n: u64) -> (Instant, u16) {
        let body = format!("{{\"n\":{n}}}");
        let ts = now_s();
        let sig = signature(&self.secret, &ts, body.as_bytes());
        let t = Instant::now();
        let code = conn
            .post(&self.path, &self.token, &ts, &sig, body.as_bytes())
            .await;
        (t, code)
    }
}

fn now_s() -> String {
    (agenfleet_protocol::now_ms() / 1000).to_string()
}

/// The flood's sender (`--flood ADDR PATH TOKEN`, run as a child process): 4 connections,
/// 2,500 invalid webhooks each at one per 4 ms; prints "REJECTED OTHER".
async fn flood(addr: std::net::SocketAddr, path: String, token: String) {
    let tasks: Vec<_> = (0..4u32)
        .map(|i| {
            let (path, token) = (path.clone(), token.clone());
            tokio::spawn(async move {
                let mut c = Conn::new(addr);
                let mut tick = tokio::time::interval(Duration::from_micros(4000));
                let (mut rejected, mut other) = (0u32, 0u32);
                for k in 0..2500u32 {
                    tick.tick().await;
                    let body = format!("{{\"flood\":{k}}}");
                    let bad_sig = format!("sha256={}", "0".repeat(64));
                    let tok = if (k + i) % 2 == 0 {
                        token.clone()
                    } else {
                        format!("agfw_nope_{k}")
                    };
                    match c
                        .post(&path, &tok, &now_s(), &bad_sig, body.as_bytes())
                        .await
                    {
                        401 => rejected += 1,
                        _ => other += 1,
                    }
                }
                (rejected, other)
            })
        })
        .collect();
    let (mut rejected, mut other) = (0, 0);
    for t in tasks {
        let (r, o) = t.await.expect("flood task");
        rejected += r;
        other += o;
    }
    println!("{rejected} {other}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--flood") {
        let (Some(addr), Some(path), Some(token)) =
            (args.get(i + 1), args.get(i + 2), args.get(i + 3))
        else {
            eprintln!("--flood ADDR PATH TOKEN");
            return;
        };
        let addr = addr.parse().expect("ADDR");
        return flood(addr, path.clone(), token.clone()).await;
    }
    if let Err(e) = agenfleet_daemon::keyring::init() {
        eprintln!("!!! SKIPPED webhooks bench: {e}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("agf-webhooks-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("agenfleet.db")).expect("store");
    let spec = AgentSpec::from_toml(
        "name = \"a\"\ntenant = \"t\"\nimage = \"agenfleet/agent\"\n[runs]\nqueue = 10000\n",
    )
    .expect("spec");
    store
        .insert_agent(&AgentRecord::new(spec.clone(), 1))
        .expect("agent");
    let vault = Arc::new(Vault::open(
        store.clone(),
        format!("bench{:08x}", rand::random::<u32>()),
    ));
    vault.init().expect("vault init");
    let (audit, _) = AuditLog::open(&dir.join("audit"), None, "bench".into(), Options::default())
        .expect("audit");
    let runs = Arc::new(Runs::new(store.clone(), audit.clone()));
    runs.recover(|_| false).await.expect("recover");
    let triggers = Arc::new(Triggers::new(
        store,
        vault,
        audit,
        runs.clone(),
        Limits {
            skew_secs: 300,
            max_body_bytes: 65536,
        },
    ));
    let key = AgentKey {
        tenant: "t".into(),
        name: "a".into(),
    };
    let (view, token, secret) = triggers
        .add(
            &key,
            "default",
            "bench",
            &TriggerNew::Webhook {
                rate_per_min: 100_000,
            },
        )
        .expect("subscription");
    let token = String::from_utf8(token.expect("token").expose().to_vec()).expect("utf8");
    let secret = secret.expect("secret").expose().to_vec();
    let path = view.path();
    let cfg = HttpConfig {
        listen: "127.0.0.1:0".into(),
        ..HttpConfig::default()
    };
    let addr = agenfleet_daemon::triggers::http::serve(triggers.clone(), &cfg)
        .await
        .expect("listener");

    // The agent: holds each run as soon as it is queued, says when, answers it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    {
        let (runs, key, rs) = (runs.clone(), key.clone(), spec.runs);
        tokio::spawn(async move {
            loop {
                let Ok(Some(v)) = runs.next(&key, &rs, Duration::from_secs(60)).await else {
                    continue;
                };
                let _ = tx.send(Instant::now());
                let _ = runs
                    .end(
                        v.id,
                        Some(&key),
                        RunState::Succeeded,
                        Some("{}".into()),
                        None,
                    )
                    .await;
            }
        });
    }

    let hook = Hook {
        path: path.clone(),
        token: token.clone(),
        secret,
    };
    let mut conn = Conn::new(addr);
    for n in 0..50 {
        let (_, code) = hook.send(&mut conn, n).await;
        assert_eq!(code, 202, "warm-up");
        rx.recv().await.expect("held");
    }
    let (mut held, mut answered) = (Vec::new(), Vec::new());
    for n in 0..500 {
        let (t, code) = hook.send(&mut conn, 1000 + n).await;
        answered.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(code, 202);
        let h = rx.recv().await.expect("held");
        held.push(h.duration_since(t).as_secs_f64() * 1e3);
    }
    let (quiet_p50, quiet_p99) = (q(&mut held, 0.5), q(&mut held, 0.99));
    println!(
        "quiet, 500 signed webhooks: sent → agent holds the run p50 {quiet_p50:.2} ms p99 {quiet_p99:.2} (max {:.2}); sent → 202 p50 {:.2} ms p99 {:.2}",
        q(&mut held, 1.0),
        q(&mut answered, 0.5),
        q(&mut answered, 0.99)
    );

    // The baseline for the flood: valid webhooks paced as during it (one every 20 ms),
    // without it — back-to-back ones above keep every cache and core warm.
    let mut paced = Vec::new();
    for n in 0..250 {
        let (t, code) = hook.send(&mut conn, 5000 + n).await;
        assert_eq!(code, 202);
        let h = rx.recv().await.expect("held");
        paced.push(h.duration_since(t).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (paced_p50, paced_p99) = (q(&mut paced, 0.5), q(&mut paced, 0.99));
    println!(
        "quiet, 250 signed webhooks one every 20 ms: sent → held p50 {paced_p50:.2} ms p99 {paced_p99:.2}"
    );

    // The flood, and valid webhooks through it.
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let exe = std::env::current_exe().expect("this bench's executable");
    let sender = std::process::Command::new(exe)
        .args(["--flood", &addr.to_string(), &path, &token])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the flood's sender");
    let sender = tokio::task::spawn_blocking(move || sender.wait_with_output());
    let mut during = Vec::new();
    let mut n = 10_000;
    while !sender.is_finished() {
        let (t, code) = hook.send(&mut conn, n).await;
        n += 1;
        assert_eq!(code, 202, "a valid webhook during the flood");
        let h = rx.recv().await.expect("held");
        during.push(h.duration_since(t).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = sender
        .await
        .expect("the sender's task")
        .expect("the flood's sender");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut counts = text
        .split_whitespace()
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (rejected, other) = (counts.next().unwrap_or(0), counts.next().unwrap_or(0));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let (p50, p99) = (q(&mut during, 0.5), q(&mut during, 0.99));
    println!(
        "flood: {rejected} invalid webhooks refused (401) in {secs:.1} s = {:.0}/s ({other} other answers); daemon side's CPU {cpu:.1} s = {:.0}% of one core (the agent task and valid sender included; the flood's sender is another process)",
        rejected as f64 / secs,
        cpu / secs * 100.0
    );
    println!(
        "valid webhooks during the flood ({}, one every 20 ms): sent → held p50 {p50:.2} ms p99 {p99:.2} ms = {:.2}× the paced quiet p99 (target ≤ 2×), {:.2}× the back-to-back one",
        during.len(),
        p99 / paced_p99,
        p99 / quiet_p99
    );
    let _ = std::fs::remove_dir_all(&dir);
}
