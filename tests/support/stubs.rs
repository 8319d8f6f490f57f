//! Real servers for agents and the daemon to call: a provider stand-in and a webhook
//! receiver that checks signatures as a real one would.

use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

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

/// The address of this host's outward interface (a UDP "connect" sends nothing): where
/// the daemon reaches a stub that listens on every address — not loopback.
pub fn host_address() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    s.connect("192.0.2.1:9").expect("a route out");
    s.local_addr().expect("local address").ip().to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// POSTs `body` to `path` on 127.0.0.1:`port` with `headers` (one request, then the
/// connection closes); answers (status, body). A webhook sender.
pub fn post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the listener");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    // A body over the daemon's limit is refused on its declared length alone: not sent,
    // so the answer is read before the connection closes.
    if body.len() <= 64 * 1024 {
        s.write_all(body).expect("send the body");
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}
