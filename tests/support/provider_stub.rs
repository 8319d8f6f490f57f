//! A model provider stand-in the tests run on the host: HTTPS with a certificate from a
//! CA made for the test (rcgen; rustls), keep-alive, and per stub what it answers — a JSON
//! body with a status, or server-sent events spaced in time. It keeps every request it
//! got (path, headers, body) and the monotonic time each event left, so a test can compare
//! with when the agent saw it (the container shares the host's CLOCK_MONOTONIC).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A CA made for one test: its PEM (for `--ca-file`) and what it signs.
pub struct TestCa {
    pub pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "agenfleet test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for `names` (host names and IP addresses): (chain, key).
    fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => rcgen::SanType::IpAddress(ip),
                    Err(_) => rcgen::SanType::DnsName((*n).try_into().expect("a DNS name")),
                });
        }
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// What the stub answers.
#[derive(Clone, Debug)]
pub enum Answer {
    Json {
        status: u16,
        body: String,
    },
    /// `events` as `data:` lines, `gap` apart, then the end.
    Sse {
        events: Vec<String>,
        gap: Duration,
    },
}

/// One request the stub got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct ProviderStub {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// CLOCK_MONOTONIC (ns) when each SSE event was written and flushed.
    pub sent_ns: Arc<Mutex<Vec<u64>>>,
}

/// CLOCK_MONOTONIC in nanoseconds (what Python's `time.monotonic_ns()` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read_request(r: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body,
        at: std::time::Instant::now(),
    })
}

impl ProviderStub {
    /// Listens on 127.0.0.1 with a certificate from `ca` for localhost and 127.0.0.1.
    pub fn start(ca: &TestCa, answer: Answer) -> ProviderStub {
        ProviderStub::serve(ca, answer, "127.0.0.1:0", &["localhost", "127.0.0.1"])
    }

    /// Listens on `bind` (`[::1]:0`, `127.0.0.1:PORT`…) with a certificate from `ca` for
    /// `names` (a name the client does not ask for makes a certificate that does not match).
    pub fn serve(ca: &TestCa, answer: Answer, bind: &str, names: &[&str]) -> ProviderStub {
        let (chain, key) = ca.leaf(names);
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate"),
        );
        let listener = std::net::TcpListener::bind(bind).expect("bind the stub");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new(answer));
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let sent_ns: Arc<Mutex<Vec<u64>>> = Default::default();
        let (a, s, t) = (answer.clone(), seen.clone(), sent_ns.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let _ = tcp.set_nodelay(true);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let (a, s, t) = (a.clone(), s.clone(), t.clone());
                std::thread::spawn(move || {
                    let mut tls = BufReader::new(rustls::StreamOwned::new(server, tcp));
                    while let Some(req) = read_request(&mut tls) {
                        if let Ok(mut v) = s.lock() {
                            v.push(req);
                        }
                        let answer = a.lock().map(|x| x.clone()).ok();
                        let w = tls.get_mut();
                        let ok = match answer {
                            Some(Answer::Json { status, body }) => write!(
                                w,
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .and_then(|_| w.flush())
                            .is_ok(),
                            Some(Answer::Sse { events, gap }) => {
                                let mut ok = write!(
                                    w,
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                                )
                                .and_then(|_| w.flush())
                                .is_ok();
                                for e in &events {
                                    if !ok {
                                        break;
                                    }
                                    std::thread::sleep(gap);
                                    let chunk = format!("data: {e}\n\n");
                                    ok = write!(w, "{:x}\r\n{chunk}\r\n", chunk.len())
                                        .and_then(|_| w.flush())
                                        .is_ok();
                                    if let Ok(mut v) = t.lock() {
                                        v.push(monotonic_ns());
                                    }
                                }
                                ok && write!(w, "0\r\n\r\n").and_then(|_| w.flush()).is_ok()
                            }
                            None => false,
                        };
                        if !ok {
                            break;
                        }
                    }
                });
            }
        });
        ProviderStub {
            port,
            answer,
            seen,
            sent_ns,
        }
    }

    pub fn set(&self, answer: Answer) {
        if let Ok(mut a) = self.answer.lock() {
            *a = answer;
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}
