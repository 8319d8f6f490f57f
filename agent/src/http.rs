//! A small blocking HTTP/1.1 client for the scripted workload's model and tool calls (plain
//! http; the shim has no TLS), and the outcome of one call as the gateway's report wants
//! it: ok, server error, rate limited, timeout, unreachable — or malicious, when a tool's
//! answer carries a prompt injection the scripted agent recognises.

use agenfleet_protocol::policy::ReportOutcome;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// The container's default gateway (the host, on the agent's own bridge), from
/// /proc/net/route.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&"00000000") {
            let g = u32::from_str_radix(f.get(2)?, 16).ok()?;
            Some(Ipv4Addr::from(g.swap_bytes()))
        } else {
            None
        }
    })
}

/// Replaces `{gateway}` in a URL with the container's default gateway.
pub fn expand(url: &str) -> String {
    if url.contains("{gateway}") {
        let gw = default_gateway()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        url.replace("{gateway}", &gw)
    } else {
        url.to_string()
    }
}

/// What one call gave.
pub struct Outcome {
    pub outcome: ReportOutcome,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub endpoint: String,
    pub detail: String,
}

/// One request: `method url` with `body`; answers the outcome.
pub fn call(method: &str, url: &str, body: &str) -> Outcome {
    let t0 = Instant::now();
    let done = |outcome, status, endpoint: String, detail: String| Outcome {
        outcome,
        status,
        latency_ms: t0.elapsed().as_millis() as u64,
        endpoint,
        detail,
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return done(
            ReportOutcome::Unreachable,
            None,
            url.into(),
            "only http:// is supported".into(),
        );
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let endpoint = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = match endpoint.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => {
            return done(
                ReportOutcome::Unreachable,
                None,
                endpoint.clone(),
                "cannot resolve".into(),
            )
        }
    };
    let mut s = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return done(
                ReportOutcome::Timeout,
                None,
                endpoint,
                format!("connect: {e}"),
            )
        }
        Err(e) => {
            return done(
                ReportOutcome::Unreachable,
                None,
                endpoint,
                format!("connect: {e}"),
            )
        }
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return done(
            ReportOutcome::Unreachable,
            None,
            endpoint,
            format!("send: {e}"),
        );
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return done(
                        ReportOutcome::Timeout,
                        None,
                        endpoint,
                        format!("no answer within {IO_TIMEOUT:?}"),
                    );
                }
                break;
            }
            Err(e) => {
                if buf.is_empty() {
                    return done(
                        ReportOutcome::Unreachable,
                        None,
                        endpoint,
                        format!("read: {e}"),
                    );
                }
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let outcome = match status {
        Some(429) => ReportOutcome::RateLimited,
        Some(s) if s >= 500 => ReportOutcome::ServerError,
        Some(s) if (200..300).contains(&s) => {
            if body
                .to_ascii_lowercase()
                .contains("ignore previous instructions")
            {
                ReportOutcome::Malicious
            } else {
                ReportOutcome::Ok
            }
        }
        Some(_) => ReportOutcome::ServerError,
        None => ReportOutcome::Unreachable,
    };
    let detail = match outcome {
        ReportOutcome::Malicious => {
            "answer carries a prompt injection (\"ignore previous instructions\")".into()
        }
        _ => body.chars().take(200).collect(),
    };
    done(outcome, status, endpoint, detail)
}
