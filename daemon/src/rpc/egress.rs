//! The egress proxy of an agent in `gateway` network mode: its container has loopback
//! only, the shim relays `127.0.0.1:3128` to `proxy.sock` in the agent's gateway
//! directory, and this module serves it. Each request — absolute-form `http://` or
//! `CONNECT host:port` for https — is decided exactly as an `http_request` tool call
//! (scopes, Cedar, escalations; durable in the audit log before a byte goes upstream).
//! Only then is the name resolved, here on the host; an address that is loopback,
//! link-local, private or the host's own is refused unless the agent's rule for that host
//! says `private = true`; the connection goes to the very address that was checked (no
//! second lookup: DNS rebinding gains nothing). Denied: 403 with
//! `X-AgenFleet-Decision: deny` and a JSON body naming the reason and the audit record.
//! Upstream unreachable: 502, and a tool-provider report for incident detection.
//! Malformed input, a Host header that disagrees with the URL, https in absolute form:
//! 400, recorded as `egress.refused`.

use super::gateway::GatewayService;
use agenfleet_protocol::gateway::Gateway;
use agenfleet_protocol::policy::{AgentReport, ReportKind, ReportOutcome, ToolCall};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How long connecting upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `ip` may not be reached without `private = true`, if it may not. `own` are the
/// addresses of the daemon's host.
pub fn forbidden_address(ip: IpAddr, own: &[IpAddr]) -> Option<&'static str> {
    let class = address_class(ip);
    if class.is_none() && own.contains(&ip) {
        return Some("an address of the daemon's own host");
    }
    class
}

/// Why `ip` is not a public unicast address, if it is not.
fn address_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_link_local() {
                Some("a link-local address (where cloud metadata services live)")
            } else if a.is_private() {
                Some("a private address")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("a shared (carrier-grade NAT) address")
            } else if o[0] == 0 || a.is_broadcast() || a.is_multicast() || o[0] >= 240 {
                Some("not a unicast Internet address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return address_class(IpAddr::V4(v4));
            }
            let s = a.segments();
            if a.is_loopback() {
                Some("a loopback address")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address (where cloud metadata services live)")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a private (unique local) address")
            } else if a.is_unspecified() || a.is_multicast() {
                Some("not a unicast Internet address")
            } else {
                None
            }
        }
    }
}

/// The addresses of this host's interfaces, read again when the last reading is a second
/// old (a request costs no `getifaddrs` walk; an address added since is private or
/// link-local in practice — a bridge the engine made — and refused by its class anyway).
fn host_addresses() -> std::sync::Arc<Vec<IpAddr>> {
    type Cached = Option<(std::time::Instant, std::sync::Arc<Vec<IpAddr>>)>;
    static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    match c.as_ref() {
        Some((at, a)) if at.elapsed() < Duration::from_secs(1) => a.clone(),
        _ => {
            let a = std::sync::Arc::new(read_host_addresses());
            *c = Some((std::time::Instant::now(), a.clone()));
            a
        }
    }
}

fn read_host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// A request head as the proxy needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    pub method: String,
    pub host: String,
    pub port: u16,
    /// The URL the decision is about (`https://host:port` for a CONNECT).
    pub url: String,
    /// Its path (`/` for a CONNECT).
    pub path: String,
    /// For http: the request head rewritten to origin form for the upstream server.
    pub upstream_head: Vec<u8>,
}

/// Parses a proxy request head (the bytes up to and including the blank line). Errors name
/// the problem.
pub fn parse_head(head: &[u8]) -> Result<ProxyRequest, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the request head is incomplete".into()),
        Err(e) => return Err(format!("not an HTTP proxy request ({e})")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if method == "CONNECT" {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("CONNECT `{target}`: expected host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("CONNECT `{target}`: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("CONNECT `{target}`: no host"));
        }
        let url = url::Url::parse(&format!("https://{host}:{port}"))
            .map_err(|e| format!("CONNECT `{target}`: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() || url.path() != "/" {
            return Err(format!("CONNECT `{target}`: expected host:port"));
        }
        let Some(name) = url.host_str() else {
            return Err(format!("CONNECT `{target}`: no host"));
        };
        // The decision and the connection are about this one spelling of the host.
        return Ok(ProxyRequest {
            method,
            url: format!("https://{name}:{port}"),
            path: "/".into(),
            host: name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            upstream_head: Vec::new(),
        });
    }
    let url = url::Url::parse(target).map_err(|_| {
        format!("`{target}` is not an absolute http:// URL (a proxy request names the whole URL)")
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "https goes through a CONNECT tunnel, not as an absolute-form request".into(),
            )
        }
        other => {
            return Err(format!(
                "scheme `{other}` is not proxied (http, or CONNECT for https)"
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{target}` carries credentials"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{target}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    if port == 0 {
        // `http://h:0/` or `:00`: no server listens there; refused before any decision.
        return Err(format!("`{target}`: bad port"));
    }
    if let Some(h) = header("host") {
        let authority = url.host_str().unwrap_or_default();
        let want = match url.port() {
            Some(p) => format!("{authority}:{p}"),
            None => authority.to_string(),
        };
        let same =
            h.eq_ignore_ascii_case(&want) || h.eq_ignore_ascii_case(&format!("{authority}:{port}"));
        if !same {
            return Err(format!(
                "the Host header `{h}` disagrees with the URL's host `{want}`"
            ));
        }
    }
    // Origin form for the upstream server; hop-by-hop and proxy headers dropped.
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut up = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let mut has_host = false;
    for h in req.headers.iter() {
        let n = h.name.to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "connection"
                | "proxy-connection"
                | "proxy-authorization"
                | "keep-alive"
                | "te"
                | "upgrade"
        ) {
            continue;
        }
        has_host |= n == "host";
        up.extend_from_slice(h.name.as_bytes());
        up.extend_from_slice(b": ");
        up.extend_from_slice(h.value);
        up.extend_from_slice(b"\r\n");
    }
    if !has_host {
        up.extend_from_slice(format!("Host: {}\r\n", url.authority()).as_bytes());
    }
    up.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut canon = url.clone();
    canon.set_query(None);
    canon.set_fragment(None);
    Ok(ProxyRequest {
        method,
        host,
        port,
        path: url.path().to_string(),
        url: canon.to_string(),
        upstream_head: up,
    })
}

async fn answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &str,
    decision: &str,
    body: &serde_json::Value,
) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-AgenFleet-Decision: {decision}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.write_all(body.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// The gateway refused the caller, or could not decide: 403 with its reason.
async fn not_permitted<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) {
    answer(
        w,
        "403 Forbidden",
        "deny",
        &serde_json::json!({ "reason": reason }),
    )
    .await;
}

/// A request refused before any decision (malformed, too slow) or by the address check:
/// recorded as `egress.refused`, answered with `status`.
async fn refused<W: AsyncWrite + Unpin>(
    w: &mut W,
    svc: &GatewayService,
    status: &str,
    why: String,
) {
    let seq = svc.egress_refused(&why).await;
    let decision = if status.starts_with("403") {
        "deny"
    } else {
        "refused"
    };
    answer(
        w,
        status,
        decision,
        &serde_json::json!({"reason": why, "audit_seq": seq}),
    )
    .await;
}

/// An allowed request whose upstream cannot be reached: reported as the tool provider's
/// problem, answered 502.
pub(super) async fn unreachable<W: AsyncWrite + Unpin>(
    w: &mut W,
    svc: &GatewayService,
    host: &str,
    why: String,
) {
    svc.report_unreachable(host, &why).await;
    answer(
        w,
        "502 Bad Gateway",
        "allow",
        &serde_json::json!({"reason": why}),
    )
    .await;
}

/// Reads up to the end of the request head; answers (head, bytes read after it).
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a whole request head arrived".into());
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("the request head is larger than {MAX_HEAD} bytes"));
        }
    }
}

/// Serves one proxied request on `stream`, then closes it.
pub(super) async fn serve<S>(mut stream: S, svc: GatewayService, head_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + agenfleet_protocol::relay::Spliceable + Unpin + Send + 'static,
{
    if let Err(e) = svc.check() {
        not_permitted(&mut stream, &e.message).await;
        return;
    }
    let (head, rest) = match tokio::time::timeout(head_timeout, read_head(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => return refused(&mut stream, &svc, "400 Bad Request", why).await,
        Err(_) => {
            let why = format!("no whole request head within {head_timeout:?}");
            return refused(&mut stream, &svc, "408 Request Timeout", why).await;
        }
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(why) => return refused(&mut stream, &svc, "400 Bad Request", why).await,
    };
    // A tunnel to a connection marked `tls_inspect`: its TLS ends here, and each request
    // inside is decided and sent like a call at /connections/NAME/.
    if req.method == "CONNECT" {
        let rt = svc.runtime().clone();
        let live = rt.agent_spec(svc.key()).and_then(|spec| {
            rt.upstreams
                .inspected(&svc.key().tenant, &spec, &req.host, req.port)
        });
        if let Some(live) = live {
            if !rest.is_empty() {
                let why = "bytes after a CONNECT before its answer".to_string();
                return refused(&mut stream, &svc, "400 Bad Request", why).await;
            }
            return super::tls_inspect::serve(stream, svc, live, &req.host, head_timeout).await;
        }
    }
    // 1. The decision, durable before anything leaves (no DNS lookup for a denied name).
    let call = ToolCall {
        tool: "http_request".into(),
        args_json: serde_json::json!({"method": req.method, "url": req.url}).to_string(),
    };
    let decision = match svc.clone().authorize(tarpc::context::current(), call).await {
        Ok(d) => d,
        Err(e) => {
            not_permitted(&mut stream, &e.message).await;
            return;
        }
    };
    if !decision.allowed {
        answer(
            &mut stream,
            "403 Forbidden",
            "deny",
            &serde_json::json!({"reason": decision.reason, "audit_seq": decision.decision_id}),
        )
        .await;
        return;
    }
    // 2. Resolve here, check the address, connect to that same address.
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((req.host.as_str(), req.port)).await
    {
        Ok(a) => a.collect(),
        Err(e) => {
            let why = format!("cannot resolve {}: {e}", req.host);
            return unreachable(&mut stream, &svc, &req.host, why).await;
        }
    };
    let private_ok = svc.allows_private((&req.method, &req.host, req.port, &req.path));
    let own = host_addresses();
    let mut blocked = None;
    let target = addrs
        .iter()
        .copied()
        .find(|a| match forbidden_address(a.ip(), &own) {
            Some(why) if !private_ok => {
                blocked.get_or_insert((a.ip(), why));
                false
            }
            _ => true,
        });
    let Some(target) = target else {
        let why = match blocked {
            Some((ip, what)) => format!(
                "{} resolves to {ip}, {what}: refused unless the agent's [[http]] rule for it says private = true",
                req.host
            ),
            None => format!("{} resolves to no address", req.host),
        };
        return refused(&mut stream, &svc, "403 Forbidden", why).await;
    };
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(s)) => {
                // Bytes are handed on as they come: no waiting to fill a segment.
                let _ = s.set_nodelay(true);
                s
            }
            Ok(Err(e)) => {
                let why = format!("cannot connect to {} ({target}): {e}", req.host);
                return unreachable(&mut stream, &svc, &req.host, why).await;
            }
            Err(_) => {
                let why = format!("connecting to {} ({target}) timed out", req.host);
                return unreachable(&mut stream, &svc, &req.host, why).await;
            }
        };
    // 3. Relay.
    let ok = if req.method == "CONNECT" {
        stream
            .write_all(
                b"HTTP/1.1 200 Connection established\r\nX-AgenFleet-Decision: allow\r\n\r\n",
            )
            .await
            .is_ok()
    } else {
        upstream.write_all(&req.upstream_head).await.is_ok()
    };
    if !ok || (!rest.is_empty() && upstream.write_all(&rest).await.is_err()) {
        return;
    }
    agenfleet_protocol::relay::relay(stream, upstream).await;
}

impl GatewayService {
    /// Records a refused egress request; answers the record's sequence number.
    pub(super) async fn egress_refused(&self, why: &str) -> Option<u64> {
        let (tenant, agent) = self.agent();
        let ev = agenfleet_protocol::AuditEvent {
            actor: format!("agent {tenant}/{agent}"),
            action: "egress.refused".into(),
            tenant: Some(tenant.to_string()),
            agent: Some(agent.to_string()),
            outcome: "deny".into(),
            detail: why.to_string(),
        };
        self.audit(ev).await
    }

    /// Tells incident detection the tool provider `host` could not be reached.
    async fn report_unreachable(&self, host: &str, detail: &str) {
        let report = AgentReport {
            kind: ReportKind::ToolCall,
            provider: host.chars().take(256).collect(),
            outcome: ReportOutcome::Unreachable,
            status: None,
            latency_ms: 0,
            fallback_used: false,
            detail: detail.chars().take(2048).collect(),
        };
        let _ = self.clone().report(tarpc::context::current(), report).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_lead_into_the_host_or_its_networks_are_named() {
        let own: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap()];
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("0.0.0.0", "unicast"),
            ("224.0.0.1", "unicast"),
            ("255.255.255.255", "unicast"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("203.0.113.9", "own host"),
        ] {
            let why = forbidden_address(ip.parse().unwrap(), &own)
                .unwrap_or_else(|| panic!("{ip} let through"));
            assert!(why.contains(want), "{ip}: {why}");
        }
        for ok in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(forbidden_address(ok.parse().unwrap(), &own), None, "{ok}");
        }
        // This host's own interface addresses are found (loopback at least).
        assert!(host_addresses().iter().any(|a| a.is_loopback()));
    }

    #[test]
    fn mutated_heads_never_decide_on_one_host_and_connect_to_another() {
        // The fuzz target's checks (fuzz/: proxy_head) on 30,000 mutations of its seeds:
        // byte flips, insertions of the characters that matter in a URL or a head.
        let seeds: Vec<Vec<u8>> = crate::fuzz::seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == "proxy_head")
            .map(|(_, _, b)| b)
            .collect();
        assert!(!seeds.is_empty());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let special = b"@:/[]%.\\#?\r\n \t\0AZaz09";
        for i in 0..30_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (b.len() + 1);
                match next() % 3 {
                    0 if at < b.len() => b[at] ^= 1 << (next() % 8),
                    1 => b.insert(at, special[(next() as usize) % special.len()]),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            crate::fuzz::run("proxy_head", &b);
        }
    }

    #[test]
    fn proxy_requests_are_parsed_and_rewritten_or_refused_with_a_reason() {
        let r = parse_head(
            b"GET http://api.example.com:8080/v1/x?q=1 HTTP/1.1\r\nHost: api.example.com:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.port),
            ("GET", "api.example.com", 8080)
        );
        assert_eq!(r.url, "http://api.example.com:8080/v1/x");
        let up = String::from_utf8(r.upstream_head).unwrap();
        assert!(up.starts_with("GET /v1/x?q=1 HTTP/1.1\r\n"), "{up}");
        assert!(
            up.contains("Accept: */*\r\n") && up.ends_with("Connection: close\r\n\r\n"),
            "{up}"
        );
        assert!(
            !up.to_ascii_lowercase().contains("proxy-connection"),
            "{up}"
        );

        let c = parse_head(
            b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.url.as_str()),
            ("api.example.com", 443, "https://api.example.com:443")
        );

        for (bad, want) in [
            (
                &b"GET http://a.example.com/ HTTP/1.1\r\nHost: b.example.com\r\n\r\n"[..],
                "disagrees",
            ),
            (b"GET /relative HTTP/1.1\r\nHost: a\r\n\r\n", "absolute"),
            (b"GET https://a.example.com/ HTTP/1.1\r\n\r\n", "CONNECT"),
            (b"GET ftp://a.example.com/ HTTP/1.1\r\n\r\n", "scheme"),
            (b"CONNECT a.example.com HTTP/1.1\r\n\r\n", "host:port"),
            (b"CONNECT a.example.com:0 HTTP/1.1\r\n\r\n", "port"),
            (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", "not an HTTP"),
        ] {
            let e = parse_head(bad).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }
}
