//! One request to an upstream on an agent's behalf: the agent's request rebuilt for the
//! upstream (its hop-by-hop headers, any key it sent and `accept-encoding` dropped — the
//! answer is read for usage as it passes — and the upstream's key injected), sent over
//! the upstream's pooled TLS client, and for a provider retried down its fallback chain
//! on 429, 5xx, a timeout or a connection failure. Each attempt is a `Hop` on the call's
//! audit record. The body is held in memory (it has to be, to be sent again); the answer
//! is handed back as soon as its head arrives, so streaming is never buffered here.

use super::{Live, Upstreams};
use agenfleet_protocol::upstream::HOP_HEADERS;
use agenfleet_protocol::{Injection, SecretValue};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent's request, ready to be sent (again).
pub struct Outgoing {
    pub method: Method,
    /// The path below the upstream's base URL, with its query (starts with `/`).
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// An answer (any status); only the one handed back is read past its head.
    Status(u16),
    /// No status line within the upstream's `timeout_ms`.
    Timeout,
    /// No connection, or it broke before the status line.
    Unreachable(String),
    /// The upstream is not usable (removed since, its key cannot be opened).
    Unusable(String),
}

impl Attempt {
    /// Whether the next provider of the chain should be tried.
    pub fn falls_back(&self) -> bool {
        match self {
            Attempt::Status(s) => *s == 429 || *s >= 500,
            _ => true,
        }
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Status(s) => write!(f, "HTTP {s}"),
            Attempt::Timeout => f.write_str("timeout"),
            Attempt::Unreachable(e) => write!(f, "unreachable: {e}"),
            Attempt::Unusable(e) => write!(f, "unusable: {e}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hop {
    pub upstream: String,
    pub attempt: Attempt,
    pub latency_ms: u64,
}

/// What the chain came to: the answer to hand back (from `used`), or none.
pub struct Sent {
    pub hops: Vec<Hop>,
    pub answer: Option<(Arc<Live>, Response<Incoming>)>,
}

/// The headers the agent's request keeps on its way to the upstream.
fn forwarded(headers: &HeaderMap, inject: &Injection) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let n = name.as_str();
        let dropped = HOP_HEADERS.contains(&n)
            || matches!(
                n,
                "host" | "content-length" | "authorization" | "x-api-key" | "accept-encoding"
            )
            || inject.header() == Some(n);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `query` with `name=value` added (any earlier `name` dropped).
fn with_query_key(path_and_query: &str, name: &str, value: &str) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != name {
            ser.append_pair(&k, &v);
        }
    }
    ser.append_pair(name, value);
    format!("{path}?{}", ser.finish())
}

fn request_for(
    live: &Live,
    out: &Outgoing,
    key: &SecretValue,
) -> Result<Request<Full<Bytes>>, String> {
    let spec = &live.view.spec;
    let key_text = std::str::from_utf8(key.expose())
        .map_err(|_| "its key is not text, so it cannot go in a header or a URL".to_string())?;
    let (uri, header) = match &spec.auth {
        Injection::Query(name) => (
            spec.url_for(&with_query_key(&out.path_and_query, name, key_text)),
            None,
        ),
        other => {
            let value = match other {
                Injection::Bearer => format!("Bearer {key_text}"),
                _ => key_text.to_string(),
            };
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| "its key cannot be a header value".to_string())?;
            v.set_sensitive(true);
            (spec.url_for(&out.path_and_query), Some(v))
        }
    };
    let mut req = Request::builder()
        .method(out.method.clone())
        .uri(uri)
        .body(Full::new(out.body.clone()))
        .map_err(|e| format!("the request cannot be built: {e}"))?;
    *req.headers_mut() = forwarded(&out.headers, &spec.auth);
    if let (Some(v), Some(name)) = (header, spec.auth.header()) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        req.headers_mut().insert(name, v);
    }
    Ok(req)
}

/// Where an error from the client came from, in a few words.
pub(crate) fn reason(e: &hyper_util::client::legacy::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

impl Upstreams {
    /// Sends `out` to `first`, then down its fallback chain while attempts fail over.
    pub async fn send(&self, first: Arc<Live>, out: &Outgoing) -> Sent {
        let tenant = first.view.spec.tenant.clone();
        let chain: Vec<String> = first.view.spec.fallbacks.clone();
        let mut hops = Vec::with_capacity(1 + chain.len());
        let mut next: Option<Arc<Live>> = Some(first);
        let mut rest = chain.into_iter();
        let mut last: Option<(Arc<Live>, Response<Incoming>)> = None;
        loop {
            let Some(live) = next.take() else {
                // The next name of the chain, looked up now (it may have been removed).
                let Some(name) = rest.next() else { break };
                match self.get(&tenant, &name) {
                    Ok(Some(l)) => next = Some(l),
                    Ok(None) => hops.push(Hop {
                        upstream: name,
                        attempt: Attempt::Unusable("removed".into()),
                        latency_ms: 0,
                    }),
                    Err(e) => hops.push(Hop {
                        upstream: name,
                        attempt: Attempt::Unusable(e.to_string()),
                        latency_ms: 0,
                    }),
                }
                continue;
            };
            let t0 = Instant::now();
            let name = live.view.spec.name.clone();
            let attempt = self.attempt(&live, out).await;
            let latency_ms = t0.elapsed().as_millis() as u64;
            let (a, resp) = match attempt {
                Ok(resp) => (Attempt::Status(resp.status().as_u16()), Some(resp)),
                Err(a) => (a, None),
            };
            let more = a.falls_back() && rest.len() > 0;
            hops.push(Hop {
                upstream: name,
                attempt: a,
                latency_ms,
            });
            if let Some(resp) = resp {
                if !more {
                    return Sent {
                        hops,
                        answer: Some((live, resp)),
                    };
                }
                // Kept in case nothing later answers at all: the agent then gets this.
                last = Some((live, resp));
            }
        }
        Sent { hops, answer: last }
    }

    async fn attempt(&self, live: &Live, out: &Outgoing) -> Result<Response<Incoming>, Attempt> {
        let key = self
            .key(live)
            .map_err(|e| Attempt::Unusable(e.to_string()))?;
        let req = request_for(live, out, &key).map_err(Attempt::Unusable)?;
        drop(key);
        let timeout = Duration::from_millis(live.view.spec.timeout_ms);
        match tokio::time::timeout(timeout, live.client.request(req)).await {
            Err(_) => Err(Attempt::Timeout),
            Ok(Err(e)) => Err(Attempt::Unreachable(reason(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_own_key_and_hop_headers_do_not_travel() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer agf-placeholder"),
            ("x-api-key", "agf-placeholder"),
            ("connection", "keep-alive"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("x-goog-api-key", "mine"),
            ("anthropic-version", "2023-06-01"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let f = forwarded(&h, &Injection::Header("x-goog-api-key".into()));
        let mut names: Vec<&str> = f.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["anthropic-version", "content-type"]);
    }

    #[test]
    fn a_query_key_replaces_one_the_agent_sent() {
        assert_eq!(
            with_query_key("/v1/x?key=fake&q=a+b", "key", "s3cr&t"),
            "/v1/x?q=a+b&key=s3cr%26t"
        );
        assert_eq!(with_query_key("/v1/x", "key", "k"), "/v1/x?key=k");
    }

    #[test]
    fn what_falls_back() {
        assert!(Attempt::Status(429).falls_back());
        assert!(Attempt::Status(503).falls_back());
        assert!(!Attempt::Status(401).falls_back());
        assert!(!Attempt::Status(200).falls_back());
        assert!(Attempt::Timeout.falls_back());
    }
}
